"""The transfer-record interface: what `status`, `statistic` and the engine need from a store.

A transfer has a row of its own and one row per object. Totals and progress are derived from
the object rows, never stored twice, so a record cannot contradict itself.
"""
import time
from abc import ABC, abstractmethod
from datetime import datetime, timezone

STATES = ("running", "completed", "failed")
# Objects are "pending" until settled as "done", "skipped" (already in place) or "failed".


def iso(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds") if seconds else None


def status_view(transfer: dict, counts: dict, errors: list[dict]) -> dict:
    """The public status of a transfer (the JSON of `status --id`) from its row and object totals."""
    finished = transfer.get("finished")
    end = finished or time.time()
    return {
        "id": transfer["id"],
        "state": transfer["state"],
        "source": transfer["source"],
        "target": transfer["target"],
        "copy": bool(transfer["copy"]),
        "recursive": bool(transfer["recursive"]),
        "route": transfer["route"],
        "objects_total": counts["objects_total"],
        "objects_done": counts["objects_done"],
        "objects_failed": counts["objects_failed"],
        "objects_skipped": counts["objects_skipped"],
        "bytes_total": counts["bytes_total"],
        "bytes_done": counts["bytes_done"],
        "methods": counts["methods"],
        "started": iso(transfer["started"]),
        "finished": iso(finished),
        "seconds": round(end - transfer["started"], 3),
        "message": transfer.get("message"),
        "errors": errors,
    }


class Records(ABC):
    """A store of transfers and their objects. Implementations: records/sqlite.py."""

    @abstractmethod
    def create(self, transfer: dict, objects: list[dict]) -> None:
        """Record a new transfer and its planned objects at once; IdInUse if the id exists."""

    @abstractmethod
    def update_object(self, transfer_id: str, path: str, **fields) -> None:
        """Change an object's state, bytes_done, md5, method or message."""

    @abstractmethod
    def finish(self, transfer_id: str, state: str, message: str | None = None) -> None:
        """Mark the transfer completed or failed, with the time it ended."""

    @abstractmethod
    def status(self, transfer_id: str) -> dict | None:
        """The transfer's status view (see status_view), or None for an unknown id."""

    @abstractmethod
    def transfers(self, state: str | None = None) -> list[dict]:
        """Status views of all transfers (optionally in one state), newest first."""

    @abstractmethod
    def objects(self, transfer_id: str) -> list[dict]:
        """The transfer's object rows, in plan order."""

    @abstractmethod
    def statistic(self) -> dict:
        """Totals over all transfers (the JSON of `statistic`)."""

    def close(self) -> None:
        """Release the store."""
