"""Retries of transient failures: exponential backoff with full jitter, bounded in tries and time.

One `Retry` carries the settings for a transfer. The requests this package sends itself (object
bytes over urllib3) are retried here; the SDKs' own requests (listing, multipart bookkeeping) get
the same bounds through their retry configuration (see the providers).
"""
import random
import time
from dataclasses import dataclass

from cloudmesh.transfer.limits import DEFAULT_RETRIES

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # SlowDown, ServerBusy, OperationTimedOut...


@dataclass(frozen=True)
class Retry:
    """`attempts` tries of one request in all, waiting about base, 2 base, 4 base... (at most
    `cap` each, with full jitter) between them, and giving up once `seconds` have passed."""

    attempts: int = DEFAULT_RETRIES + 1
    base: float = 0.5
    cap: float = 8.0
    seconds: float = 120.0

    def pauses(self):
        """The waits before each retry, cut short when the time budget runs out."""
        deadline = time.monotonic() + self.seconds
        for attempt in range(self.attempts - 1):
            pause = random.uniform(0, min(self.cap, self.base * 2 ** attempt))
            if time.monotonic() + pause > deadline:
                return
            yield pause
