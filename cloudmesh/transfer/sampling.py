"""Progress samples of a running transfer, which the dashboard plots its throughput over time from."""
import logging
import threading
import time

from cloudmesh.transfer.limits import SAMPLE_EVERY
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.records.base import Records, Sample, progress_of

log = logging.getLogger(__name__)


class Sampler(Progress):
    """Passes every call on to `shown`, and records a Sample of the transfer every `every` seconds
    (twice as long after each thinning, so that the samples stay evenly spaced) and one at close:
    what the records showed at start (earlier runs' work) plus what this run has reported since.
    A sample the records fail to take is lost (logged at DEBUG: the transfer itself says what matters
    about its records); the transfer goes on."""

    def __init__(self, shown: Progress, records: Records, transfer_id: str, every: float = SAMPLE_EVERY):
        self.shown, self.records, self.transfer_id, self.every = shown, records, transfer_id, every
        self.lock, self.done = threading.Lock(), threading.Event()
        self.bytes, self.objects = 0, 0
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.shown.start()
        try:
            self.bytes, self.objects = progress_of(self.records.status(self.transfer_id))
        except Exception as e:
            log.debug("transfer %s records no progress samples: %s", self.transfer_id, e)
            return
        self.thread = threading.Thread(target=self.run, name=f"samples {self.transfer_id}", daemon=True)
        self.thread.start()

    def grow(self, nbytes: int, nobjects: int) -> None:
        self.shown.grow(nbytes, nobjects)

    def update(self, nbytes: int, nobjects: int) -> None:
        with self.lock:
            self.bytes += nbytes
            self.objects += nobjects
        self.shown.update(nbytes, nobjects)

    def run(self) -> None:
        while not self.done.wait(self.every):
            if self.record():
                self.every *= 2

    def record(self) -> bool:
        """Record a sample now; True when the records thinned the samples."""
        with self.lock:
            sample = Sample(time.time(), self.bytes, self.objects)
        try:
            return self.records.add_sample(self.transfer_id, sample)
        except Exception as e:
            log.debug("a progress sample of transfer %s was not recorded: %s", self.transfer_id, e)
            return False

    def close(self) -> None:
        if self.thread is not None:
            self.done.set()
            self.thread.join()
            self.record()
        self.shown.close()
