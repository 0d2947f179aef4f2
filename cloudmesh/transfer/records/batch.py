"""Group commit: object updates of one run gathered and written together, every BATCH_OBJECTS
updates or BATCH_SECONDS, whichever comes first, instead of one transaction per object.

Only what a crash may forget goes through a batch: that an object was done or failed (resume
finds a done object at the target and does not send it again). What must be durable before the
next step (a move's "copied" before its source is deleted, an upload's token before its first
part) is written with `sync=True`, which also writes everything gathered before it, in order.
"""
import threading

from cloudmesh.transfer.limits import BATCH_OBJECTS, BATCH_SECONDS
from cloudmesh.transfer.records.base import Records


class Batch:
    """The pending object updates of one transfer, and the thread that writes them in time."""

    def __init__(self, records: Records, transfer_id: str, size: int = BATCH_OBJECTS,
                 seconds: float = BATCH_SECONDS):
        self.records, self.transfer_id, self.size, self.seconds = records, transfer_id, size, seconds
        self.pending: dict[str, dict] = {}  # by path, in the order first changed; later fields win
        self.lock = threading.Lock()  # guards `pending`, briefly
        self.writing = threading.Lock()  # held while a batch is written, so that batches reach the store in order
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.writer = threading.Thread(target=self.run, name=f"records {transfer_id}", daemon=True)
        self.writer.start()

    def update(self, path: str, sync: bool = False, **fields) -> None:
        """Record changes to an object: at the next batch, or with `sync` now (with all before it)."""
        self.raise_error()
        with self.lock:
            self.pending[path] = {**self.pending.get(path, {}), **fields}
            full = len(self.pending) >= self.size
        if sync or full:
            self.flush()

    def flush(self) -> None:
        """Write what is pending, in one call to the store."""
        with self.writing:
            with self.lock:
                updates, self.pending = list(self.pending.items()), {}
            if updates:
                self.records.update_objects(self.transfer_id, updates)

    def run(self) -> None:
        while not self.closed.wait(self.seconds):
            try:
                self.flush()
            except BaseException as e:  # raised in the run's own thread, at its next update or close
                self.error = self.error or e

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the writer and write what is left."""
        self.closed.set()
        self.writer.join()
        self.raise_error()
        self.flush()
