"""The transfer-record interface: what `status`, `statistic` and the engine need from a store.

A transfer has a row of its own and one row per object. Totals and progress are the object rows'
(SQLite keeps per-transfer counters of them in the same transactions, by triggers, so that a status
of millions of objects reads a few rows; MongoDB counts them with indexed aggregations), so a
record cannot contradict itself.
"""
import dataclasses
import os
import socket
import time
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Iterator

from cloudmesh.transfer.limits import STATISTIC_DAYS


class State(StrEnum):
    """A transfer's state: stored as running, completed, failed or cancelled; a running one whose
    owner is gone reads as interrupted."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ObjectState(StrEnum):
    """An object's state: pending until settled as done, skipped (already in place), unverified
    (copied, but nothing proves its bytes) or failed; a moved object is copied between its verified
    copy and its source's delete."""

    PENDING = "pending"
    COPIED = "copied"
    DONE = "done"
    SKIPPED = "skipped"
    UNVERIFIED = "unverified"
    FAILED = "failed"


class Beat(StrEnum):
    """A heartbeat's answer to the owner of a running transfer."""

    RUN = "run"  # go on
    CANCEL = "cancel"  # a cancel was requested
    LOST = "lost"  # another owner has claimed the transfer


@dataclasses.dataclass
class ObjectRow:
    """One object of a transfer as recorded: where it comes from and goes, its source's size, ETag
    and time as planned, its state and bytes done, what proved it, and its open upload."""

    transfer_id: str
    seq: int  # its place in the plan
    path: str
    source_key: str
    target_key: str
    size: int
    state: ObjectState = ObjectState.PENDING
    bytes_done: int = 0
    md5: str | None = None
    method: str | None = None
    proof: str | None = None
    message: str | None = None
    warning: str | None = None
    etag: str | None = None
    mtime: float | None = None
    upload: str | None = None  # the token of its partial upload at the target
    part_size: int | None = None

    @classmethod
    def of(cls, columns: dict) -> "ObjectRow":
        """A row from a store's columns (extra columns are not ours and are left out)."""
        row = cls(**{name: columns.get(name) for name in OBJECT_COLUMNS})
        row.state = ObjectState(row.state)
        return row


@dataclasses.dataclass(frozen=True)
class Sample:
    """A running transfer's progress at one moment (sampling.py), what its throughput over time is
    plotted from: bytes done and objects settled (done, skipped, unverified or failed) at `at`."""

    at: float  # epoch seconds
    bytes_done: int
    objects_done: int


OBJECT_COLUMNS = tuple(field.name for field in dataclasses.fields(ObjectRow))
STATES = tuple(State)
SETTLED = (ObjectState.DONE, ObjectState.SKIPPED, ObjectState.UNVERIFIED)  # object states a resume leaves alone

HEARTBEAT = 1.0  # seconds between a running transfer's lease renewals
LEASE = 30.0  # a running transfer whose lease is this old has lost its owner (e.g. on another host)


def watched(owner: str, transfer: dict | None, now: float) -> Beat:
    """A watch's answer from a transfer's row: its owner, state, cancel flag and heartbeat."""
    if not transfer or transfer["owner"] != owner or transfer["state"] != State.RUNNING or \
            now - (transfer["heartbeat"] or 0) > LEASE:
        return Beat.LOST
    return Beat.CANCEL if transfer["cancel"] else Beat.RUN


def pid_alive(pid: int) -> bool:
    """True while process `pid` of this host runs (a zombie has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_alive(transfer: dict) -> bool:
    """Whether the process that runs a transfer still does: its lease is fresh and, on this host,
    its process exists."""
    beat = transfer.get("heartbeat") or transfer["started"]
    if time.time() - beat > LEASE:
        return False
    if transfer.get("pid") and transfer.get("host") == socket.gethostname():
        return pid_alive(transfer["pid"])
    return True


def state_of(transfer: dict) -> str:
    """The state to show: a running transfer whose owner is gone is interrupted."""
    if transfer["state"] == State.RUNNING and not owner_alive(transfer):
        return State.INTERRUPTED
    return transfer["state"]


def iso(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds") if seconds else None


def status_view(transfer: dict, counts: dict, notes: list[dict]) -> dict:
    """The public status of a transfer (the JSON of `status --id`) from its row, its object totals
    and the objects with something to say (path, state, message, warning: failed or unverified
    ones, and those with a warning), in plan order."""
    finished = transfer.get("finished")
    end = finished or time.time()
    state = state_of(transfer)
    message = transfer.get("message")
    if state == State.RUNNING and transfer.get("cancel"):
        message = "cancel requested"
    return {
        "id": transfer["id"],
        "state": state,
        "source": transfer["source"],
        "target": transfer["target"],
        "copy": bool(transfer["copy"]),
        "recursive": bool(transfer["recursive"]),
        "route": transfer["route"],
        "listing": bool(transfer.get("listing")),
        "selection": transfer.get("selection") or {"include": [], "exclude": [], "sync": None},
        "objects_total": counts["objects_total"],
        "objects_done": counts["objects_done"],
        "objects_failed": counts["objects_failed"],
        "objects_skipped": counts["objects_skipped"],
        "objects_unverified": counts["objects_unverified"],
        "bytes_total": counts["bytes_total"],
        "bytes_done": counts["bytes_done"],
        "methods": counts["methods"],
        "proofs": counts["proofs"],
        "started": iso(transfer["started"]),
        "finished": iso(finished),
        "seconds": round(end - transfer["started"], 3),
        "message": message,
        "host": transfer.get("host"),
        "pid": transfer.get("pid"),
        "uploads_open": counts.get("uploads_open", 0),
        "workers": counts.get("workers", {}),
        "errors": [{"path": n["path"], "message": n["message"]} for n in notes if n["state"] == ObjectState.FAILED],
        "unverified": [{"path": n["path"], "message": n["message"]} for n in notes if n["state"] == ObjectState.UNVERIFIED],
        "warnings": [{"path": n["path"], "message": n["warning"]} for n in notes if n.get("warning")],
    }


def progress_of(status: dict) -> tuple[int, int]:
    """A status view's bytes done and objects settled (done, skipped, unverified or failed), as
    progress and samples count them."""
    settled = ("done", "skipped", "unverified", "failed")
    return status["bytes_done"], sum(status[f"objects_{state}"] for state in settled)


def workers_view(objects: dict[str, int], nbytes: dict[str, int]) -> dict:
    """Per worker address of a cluster: the objects it settled and the bytes it sent."""
    return {worker: {"objects": objects.get(worker, 0), "bytes": nbytes.get(worker, 0)}
            for worker in sorted({*objects, *nbytes})}


def statistic_days(now: float) -> list[str]:
    """The STATISTIC_DAYS days (UTC, YYYY-MM-DD) of `by_day`, up to the day of `now`, oldest first."""
    today = datetime.fromtimestamp(now, timezone.utc).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(STATISTIC_DAYS - 1, -1, -1)]


def statistic_since(now: float) -> float:
    """When the first day of `by_day` began (epoch seconds): the transfers started since count in it."""
    first = datetime.fromisoformat(statistic_days(now)[0])
    return first.replace(tzinfo=timezone.utc).timestamp()


def day_of(seconds: float) -> str:
    """The UTC day of a time, as `by_day` names it."""
    return datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


def statistic_view(states: dict, by_route: dict, seconds: float, by_day: dict[str, int], now: float) -> dict:
    """The public totals (the JSON of `statistic`) from transfers counted by state, bytes and
    objects done per route, the summed run time of finished transfers, and bytes done by the day
    their transfers started (at `now`: every day of `statistic_days` is shown, 0 if it has none,
    so that a plot of them has no holes)."""
    total_bytes = sum(r["bytes"] for r in by_route.values())
    return {
        "transfers": {**{state: 0 for state in STATES}, **states},
        "bytes_total": total_bytes,
        "objects_total": sum(r["objects"] for r in by_route.values()),
        "seconds_total": round(seconds, 3),
        "throughput_bytes_per_second": round(total_bytes / seconds) if seconds else 0,
        "by_route": by_route,
        "by_day": {day: by_day.get(day, 0) for day in statistic_days(now)},
    }


class Records(ABC):
    """A store of transfers and their objects. Implementations: records/sqlite.py, records/mongo.py.

    `create` records the owner (a token per run, with its host and pid); the owner renews its
    lease with `heartbeat` while it runs, which is how a dead run is told from a live one.
    """

    @abstractmethod
    def create(self, transfer: dict, objects: list[dict] = ()) -> None:
        """Record a new transfer (with `listing` true while its objects are still to be listed, and
        the `selection` that lists them: include, exclude, sync) and any planned objects at once;
        IdInUse if the id exists."""

    @abstractmethod
    def add_objects(self, transfer_id: str, objects: list[dict], cursor: str | None, last: bool) -> None:
        """Record a page of planned objects (numbered on from those recorded) with the listing's
        cursor after it, at once; with `last`, the listing has ended."""

    @abstractmethod
    def cursor(self, transfer_id: str) -> str | None:
        """Where a transfer's listing goes on from: the cursor recorded with its last page."""

    @abstractmethod
    def update_object(self, transfer_id: str, path: str, **fields) -> None:
        """Change an object's state, bytes_done, md5, method, proof, message, warning, upload token
        or part_size, or (when its source changed) its size, etag and mtime."""

    def update_objects(self, transfer_id: str, updates: list[tuple[str, dict]]) -> None:
        """Apply several objects' changes (path, fields), in order; stores override this to write
        them in one transaction or bulk request (records/batch.py sends them so)."""
        for path, fields in updates:
            self.update_object(transfer_id, path, **fields)

    @abstractmethod
    def part_done(self, transfer_id: str, path: str, upload: str, number: int, md5: str, bytes_done: int | None,
                  size: int = 0) -> None:
        """Record that part `number` of the object's upload `upload` is stored, with its checksum
        (integrity.part_record: MD5 hex, or 'crc64:...'; the column is named md5), and the object's
        bytes done, at once; `bytes_done` None adds the part's `size` instead (parts sent by
        several processes at once: cluster.py)."""

    @abstractmethod
    def parts(self, transfer_id: str, path: str, upload: str) -> dict[int, str]:
        """The checksums of the parts recorded for the object's upload, by part number."""

    @abstractmethod
    def claim(self, transfer_id: str, owner: str, reset: bool = True) -> None:
        """Make `owner` hold a transfer (to resume, cancel or clean it up): atomically, and only if
        no live owner runs it; with `reset` its unsettled objects become pending (their errors are
        kept otherwise). NotFound for an unknown id, Conflict while it runs."""

    @abstractmethod
    def heartbeat(self, transfer_id: str, owner: str) -> Beat:
        """Renew the owner's lease, and say whether it goes on (see Beat)."""

    @abstractmethod
    def watch(self, transfer_id: str, owner: str) -> Beat:
        """What the owner's heartbeat would answer, without renewing its lease: for the workers of a
        cluster, which stop on a cancel, or once the owner lost the transfer or stopped renewing
        its lease (its client died)."""

    @abstractmethod
    def found(self, transfer_id: str, paths: list[str]) -> dict[str, ObjectRow]:
        """The rows of these objects, by path (as a worker's task finds them when it starts)."""

    @abstractmethod
    def worker_done(self, transfer_id: str, worker: str, objects: int, nbytes: int) -> None:
        """Add to what one worker of a cluster settled: objects, and bytes it sent (status' `workers`)."""

    @abstractmethod
    def request_cancel(self, transfer_id: str) -> None:
        """Ask the owner of a running transfer to stop (it sees it at its next heartbeat)."""

    @abstractmethod
    def finish(self, transfer_id: str, state: str, message: str | None = None, owner: str | None = None) -> None:
        """Mark the transfer completed, failed or cancelled, with the time it ended; with `owner`,
        only while that owner still holds it."""

    @abstractmethod
    def status(self, transfer_id: str) -> dict | None:
        """The transfer's status view (see status_view), or None for an unknown id."""

    @abstractmethod
    def transfers(self, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        """Status views of the transfers (optionally in one state), newest first; with `limit`,
        that many from `offset` on."""

    @abstractmethod
    def count(self, state: str | None = None) -> int:
        """How many transfers there are (in one state)."""

    @abstractmethod
    def objects(self, transfer_id: str, after: int = -1, limit: int | None = None,
                unsettled: bool = False) -> list[ObjectRow]:
        """The transfer's object rows in plan order, from the one after number `after` (its `seq`)
        on, at most `limit` of them; with `unsettled`, only those not settled (see SETTLED)."""

    def unsettled(self, transfer_id: str, page: int) -> Iterator[list[ObjectRow]]:
        """The transfer's unsettled object rows, `page` at a time, read as they are needed."""
        after = -1
        while rows := self.objects(transfer_id, after, page, unsettled=True):
            yield rows
            after = rows[-1].seq

    @abstractmethod
    def add_sample(self, transfer_id: str, sample: Sample) -> bool:
        """Record a progress sample; past SAMPLES_MAX, drop every other one but the first and newest: True if so."""

    @abstractmethod
    def samples(self, transfer_id: str) -> list[Sample]:
        """The transfer's progress samples in time order (none for a transfer that has none)."""

    @abstractmethod
    def statistic(self) -> dict:
        """Totals over all transfers (the JSON of `statistic`)."""

    def close(self) -> None:
        """Release the store."""
