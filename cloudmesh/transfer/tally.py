"""Process-wide counts of retried requests and failed objects, by kind, which the REST service
shows at /metrics (service/metrics.py); plain counters, so that nothing else pays for them."""
import threading
from collections import Counter


class Tally:
    """Counts by kind, safe across threads."""

    def __init__(self):
        self.lock, self.counts = threading.Lock(), Counter()

    def add(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


RETRIES = Tally()  # a request tried again: by HTTP status, connection error, broken download or SDK
ERRORS = Tally()  # an object failed: by the kind of error
