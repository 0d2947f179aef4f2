"""A thread pool with a bounded number of places, in the manner of s3transfer's BoundedExecutor:
taking a place blocks while all are taken, and a place is given back in one spot, when the task
that holds it is done (its future's done-callback), or when it was never handed to a task.

The engine bounds with it the objects in flight (so that a listing of any length is consumed as
fast as objects finish, never held whole) and the parts held in memory (a place per part, taken
before the part is read)."""
import threading
from concurrent.futures import Future, ThreadPoolExecutor


class Place:
    """One taken place: handed to a task with `submit`, or given back when the block ends."""

    def __init__(self, executor: "BoundedExecutor"):
        self.executor, self.handed = executor, False

    def submit(self, fn, *args) -> Future:
        future = self.executor.pool.submit(fn, *args)
        self.handed = True
        future.add_done_callback(self.executor.give_back)
        return future

    def __enter__(self) -> "Place":
        return self

    def __exit__(self, *exc) -> None:
        if not self.handed:
            self.executor.give_back()


class BoundedExecutor:
    """`workers` threads running at most `places` tasks, queued ones included."""

    def __init__(self, workers: int, places: int, name: str):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.places = threading.BoundedSemaphore(places)

    def place(self) -> Place:
        """Take a place (waiting for one), to read into and then hand to a task."""
        self.places.acquire()
        return Place(self)

    def submit(self, fn, *args) -> Future:
        """Take a place and run `fn(*args)` in it."""
        with self.place() as place:
            return place.submit(fn, *args)

    def give_back(self, _future: Future | None = None) -> None:
        self.places.release()

    def __enter__(self) -> "BoundedExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)
