"""The Python API of cloudmesh-transfer; the `cms transfer` command and the REST service call it.

    from cloudmesh.transfer import Transfer
    status = Transfer().copy("awss3:data", "azure:data", recursive=True)
    print(status["state"], status["bytes_done"])
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterator

from cloudmesh.transfer import config as settings
from cloudmesh.transfer import location
from cloudmesh.transfer.engine import Engine, Halt, Lease, one_line
from cloudmesh.transfer.errors import Conflict, IdInUse, NotFound, OptionError, TransferError, UsageError
from cloudmesh.transfer.identity import inside, probe, refuse_overlap
from cloudmesh.transfer.limits import LIST_PAGE, MAX_LOCAL_WORKERS
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.options import TransferConfig, parse_bool, whole_number
from cloudmesh.transfer.pipeline import discard_upload, recorded, resumed
from cloudmesh.transfer.planner import Page, Selection, stream
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import MiB, Storage
from cloudmesh.transfer.records import Records, open_records
from cloudmesh.transfer.records.base import State
from cloudmesh.transfer.retry import Retry
from cloudmesh.transfer.sampling import Sampler
from cloudmesh.transfer.storages import Storages

log = logging.getLogger(__name__)
TRANSFER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CANCEL_WAIT = 30.0  # seconds `cancel` waits for a running transfer to stop


def new_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def peeked(pages: Iterator[Page]) -> Iterator[Page]:
    """The pages, the first one planned at once: a missing source, or a folder named without
    recursive, is then one clear error before anything is recorded or printed."""
    first = next(pages)
    return itertools.chain([first], pages)


@dataclass
class Run:
    """A recorded transfer ready for the engine: its pages of objects (planned as the engine takes
    them), who runs it, and that owner's lease (held from the moment the transfer is recorded or claimed)."""

    id: str
    pages: Iterator[Page]
    move: bool
    owner: str
    storages: tuple[Storage, Storage]
    lease: Lease


class Transfer(Storages):
    """Copy and move across configured storages (and list, delete and check them: storages.py),
    and read the transfer records. Setting `stop` (e.g. on Ctrl-C) cancels the transfer this
    object is running. Transfers run on this host, or spread over a Dask cluster (cluster.py):
    the scheduler at `cluster` (None: `cloudmesh.transfer.cluster` in cloudmesh.yaml, if set;
    False: this host alone), or a LocalCluster of `workers` processes started for each transfer;
    `notify` is told where its dashboard is."""

    def __init__(self, records: Records | None = None, config: TransferConfig | None = None, *,
                 cluster: str | bool | None = None, workers=None, notify=log.info, **options):
        """`config`, or the options it is built from (parallel, chunksize, retries: see TransferConfig.of)."""
        self.options = config or TransferConfig.of(**options)
        super().__init__(Retry(attempts=self.options.retries + 1))
        if cluster and workers is not None:
            raise UsageError("give a cluster or a number of workers, not both")
        self.cluster = cluster
        self.workers = None if workers is None else whole_number(workers, "workers", 1, MAX_LOCAL_WORKERS)
        self.notify = notify
        self._cluster = None
        self._records = records
        self.stop = threading.Event()
        self.engine: Engine | None = None

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = open_records()
        return self._records

    def copy(self, source: str, target: str, recursive: bool = False, id: str | None = None, *,
             include=(), exclude=(), sync: str | None = None, progress: Progress | None = None) -> dict:
        """Copy a file, or with `recursive` a folder's contents; returns the final status.
        `include`/`exclude` are globs on the path inside the source folder; `sync` ('checksum' or
        'mtime') skips objects whose target already matches."""
        return self.start(source, target, recursive, id, False, Selection(list(include), list(exclude), sync),
                          progress)

    def move(self, source: str, target: str, recursive: bool = False, id: str | None = None, *,
             include=(), exclude=(), sync: str | None = None, progress: Progress | None = None) -> dict:
        """Like copy, but each source object is deleted once its copy is verified."""
        return self.start(source, target, recursive, id, True, Selection(list(include), list(exclude), sync),
                          progress)

    def preview(self, source: str, target: str, recursive: bool = False, move: bool = False, *,
                include=(), exclude=(), sync: str | None = None) -> Iterator[dict]:
        """What copy or move would do, object by object as the source is listed, changing nothing
        (--dryrun). The locations are checked before the first row."""
        _, _, _, pages = self.prepare(source, target, recursive, Selection(list(include), list(exclude), sync))
        pages = peeked(pages)
        deletes = {False: ", delete source", True: ", delete source if its bytes are proven the same"}
        return ({"action": ("skip" if item.skip else "copy") + (deletes[item.unproven] if move else ""),
                 "path": item.path, "target": item.target_key, "size": item.source.size}
                for page in pages for item in page.items)

    def prepare(self, source: str, target: str, recursive: bool, selection: Selection):
        """Check the locations and open both storages; the objects' pages are planned as they are
        taken. A target folder that holds the source folder is refused when the source holds the
        folder its objects would be written into, since that folder is being listed meanwhile."""
        src, dst = Location.parse(source), Location.parse(target)
        source_storage, target_storage = self.storage(src.storage), self.storage(dst.storage)
        (space, src_at), (target_space, dst_at) = source_storage.place(src.path), target_storage.place(dst.path)
        same = space == target_space or (target_storage.may_share(source_storage) and
                                         probe(source_storage, target_storage, dst, recursive))
        if same and recursive and (dst_at == src_at or inside(dst_at, src_at)):
            raise UsageError(f"target '{dst}' is the source folder or lies inside it")
        if same and recursive and inside(src_at, dst_at):
            nested = location.join(src.path, src_at[len(dst_at.rstrip("/")) + 1:] if dst_at else src_at)
            if next(iter(source_storage.list(nested)), None) is not None:
                raise UsageError(f"target '{dst}' holds the source folder, so the objects under "
                                 f"'{src.storage}:{nested}/' would overwrite the source's own objects while it is "
                                 f"listed; choose a target outside the source")
        if self.options.chunksize > target_storage.max_part_size:
            raise OptionError("chunksize", f"must be at most {target_storage.max_part_size // MiB}MiB for storage "
                                           f"'{target_storage.name}'")
        target_storage.is_folder(dst.path)  # wrong credentials, a missing bucket: one error, before any object
        pages = stream(source_storage, src, target_storage, dst, recursive, selection)
        if same:
            pages = refuse_overlap(pages, source_storage, target_storage)
        return src, dst, (source_storage, target_storage), pages

    def start(self, source: str, target: str, recursive: bool, id: str | None, move: bool,
              selection: Selection, progress: Progress | None = None) -> dict:
        """Create and run a transfer. `stop` is cleared first: it cancels the transfer under way
        (also while it is being planned), not a later one."""
        self.stop.clear()
        self.connect()
        try:
            run = self.create(source, target, recursive, id, move, selection)
        except BaseException:
            self.disconnect()
            raise
        return self.execute(run, progress)

    def connect(self) -> None:
        """Reach the cluster the next transfer runs on, if any, before anything is recorded (a
        wrong address is then one clear error); on this host, nothing (and Dask is not imported)."""
        if self._cluster is not None:
            return
        if self.cluster is False or self.workers:
            address = None
        else:
            address = self.cluster or settings.load_cluster()
        if address or self.workers:
            from cloudmesh.transfer.cluster import Cluster
            self._cluster = Cluster(address, self.workers)
            if self._cluster.dashboard:
                self.notify(f"Dask dashboard of the {self.workers} local workers: {self._cluster.dashboard}")

    def engine_for(self, storages: tuple[Storage, Storage], progress: Progress) -> Engine:
        if self._cluster is None:
            return Engine(*storages, self.records, self.options, progress, self.stop)
        from cloudmesh.transfer.cluster import ClusterEngine
        return ClusterEngine(*storages, self.records, self.options, progress, self.stop, self._cluster)

    def disconnect(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def create(self, source: str, target: str, recursive: bool, id: str | None, move: bool,
               selection: Selection) -> Run:
        """Check everything, plan the objects and record the transfer, ready to `execute`; the
        REST service answers between the two."""
        transfer_id = id or new_id()
        if not TRANSFER_ID.match(transfer_id):
            raise UsageError(f"--id '{transfer_id}' must be letters, digits, '.', '_' or '-' (at most 128)")
        if self.records.status(transfer_id):
            raise IdInUse(f"transfer id '{transfer_id}' is already used; choose another id")
        src, dst, (source_storage, target_storage), pages = self.prepare(source, target, recursive, selection)
        pages = peeked(pages)
        owner = secrets.token_hex(8)
        self.records.create(
            {"id": transfer_id, "source": str(src), "target": str(dst), "copy": not move,
             "recursive": recursive, "route": f"{source_storage.kind}->{target_storage.kind}", "owner": owner,
             "listing": True, "selection": asdict(selection)})
        return Run(transfer_id, pages, move, owner, (source_storage, target_storage), self.hold(transfer_id, owner))

    def hold(self, transfer_id: str, owner: str) -> Lease:
        lease = Lease(self.records, transfer_id, owner)
        lease.start()
        return lease

    def execute(self, run: Run, progress: Progress | None = None) -> dict:
        """Run the engine over a created or reopened transfer and record how it ended, sampling its
        progress (sampling.py); a cancelled run leaves no partial upload behind."""
        progress = Sampler(progress or Progress(), self.records, run.id)
        try:
            self.connect()
        except BaseException:
            run.lease.end()
            self.records.finish(run.id, State.FAILED, "the cluster could not be reached", owner=run.owner)
            raise
        progress.start()
        self.engine = self.engine_for(run.storages, progress)
        try:
            try:
                state = self.engine.run(run.id, recorded(self.records, run.id, run.pages, progress), run.move,
                                        run.lease)
            except BaseException as e:
                self.records.finish(run.id, State.FAILED, one_line(e) if isinstance(e, TransferError) else
                                    "interrupted", owner=run.owner)
                raise
            finally:
                progress.close()
            message = None
            if state == Halt.LOST:
                raise TransferError(f"transfer '{run.id}' was taken over by another run (its lease lapsed and it "
                                    f"was resumed or cancelled elsewhere), so this run stopped; see 'cms transfer "
                                    f"status --id={run.id}'")
            if state == State.CANCELLED:
                self.discard_uploads(run.id, run.storages[1])
            elif state in (State.COMPLETED, State.FAILED):
                status = self.records.status(run.id)
                kept = status["objects_unverified"] if run.move else 0
                if status["objects_failed"] or kept:
                    state = State.FAILED  # objects that resume found without a source count too
                if kept:
                    message = f"{kept} objects were copied but not verified, so their sources were kept"
            if state not in (Halt.LOST, Halt.INTERRUPT):
                self.records.finish(run.id, state, message, owner=run.owner)
        finally:
            run.lease.end()
            self.disconnect()
        return self.records.status(run.id)

    def interrupt(self) -> None:
        """Stop the run under way as a crash would, but at once and tidily: nothing is aborted and
        the record stays running until this process ends, then reads interrupted (to resume)."""
        if self.engine:
            self.engine.halt(Halt.INTERRUPT)

    def resume(self, id: str, progress: Progress | None = None) -> dict:
        """Go on with an interrupted, failed or cancelled transfer: objects already done are kept;
        a large object's parts still at the target are reused unless its source changed since
        (size, etag or mtime), in which case it is copied afresh. An object that a killed run
        finished but did not record is found at the target (size and MD5) and not sent again."""
        self.stop.clear()
        self.connect()
        try:
            run = self.reopen(id)
        except BaseException:
            self.disconnect()
            raise
        if run is None:
            self.disconnect()
            return self.records.status(id)
        return self.execute(run, progress)

    def reopen(self, id: str) -> Run | None:
        """Take a transfer over for `resume`; None when it is completed. What is left is planned as
        the engine takes it (pipeline.resumed)."""
        status = self.status(id)
        if status["state"] == State.COMPLETED:
            return None
        source = self.storage(Location.parse(status["source"]).storage)
        target = self.storage(Location.parse(status["target"]).storage)
        owner, lease = self.take(id)
        return Run(id, resumed(self.records, status, source, target), not status["copy"], owner, (source, target),
                   lease)

    def take(self, id: str, reset: bool = True) -> tuple[str, Lease]:
        """Claim a transfer for a new owner (atomically; Conflict while it runs) and hold its lease;
        with `reset`, its unsettled objects start afresh."""
        owner = secrets.token_hex(8)
        self.records.claim(id, owner, reset)
        return owner, self.hold(id, owner)

    @contextlib.contextmanager
    def claimed(self, id: str, state: str, message: str | None = None):
        """Hold a stopped transfer for the block (to cancel or clean it up), then end it as `state`
        with `message`, whatever happens in the block."""
        owner, lease = self.take(id, reset=False)
        try:
            yield
        finally:
            lease.end()
            self.records.finish(id, state, message, owner=owner)

    def cancel(self, id: str, wait: bool = True) -> dict:
        """Stop a transfer: a running one is asked to stop (and with `wait` this waits until it
        has, aborting its open uploads); an interrupted or failed one has its partial uploads
        discarded and is cancelled at once."""
        status = self.status(id)
        if status["state"] in (State.COMPLETED, State.CANCELLED):
            raise Conflict(f"transfer '{id}' is already {status['state']}")
        if status["state"] == State.RUNNING:
            self.records.request_cancel(id)
            if not wait:
                return self.records.status(id)
            deadline = time.monotonic() + CANCEL_WAIT
            while (status := self.status(id))["state"] == State.RUNNING:
                if time.monotonic() > deadline:
                    raise TransferError(f"transfer '{id}' was asked to cancel but has not stopped yet")
                time.sleep(0.2)
            if status["state"] != State.INTERRUPTED:
                return status
        with self.claimed(id, State.CANCELLED):
            self.discard_uploads(id, self.storage(Location.parse(status["target"]).storage))
        return self.records.status(id)

    def cleanup(self, id: str) -> list[str]:
        """Discard the partial uploads (open S3 multipart uploads, uncommitted Azure blocks, local
        partial files) a stopped transfer left, so that they stop costing storage; its objects
        then start afresh on resume. Returns the target keys cleaned."""
        status = self.status(id)
        if status["state"] == State.RUNNING:
            raise Conflict(f"transfer '{id}' is running; cancel it instead")
        if not status["uploads_open"]:
            return []
        ended = State.FAILED if status["state"] == State.INTERRUPTED else status["state"]
        with self.claimed(id, ended, "interrupted" if ended != status["state"] else status["message"]):
            return self.discard_uploads(id, self.storage(Location.parse(status["target"]).storage))

    def discard_uploads(self, id: str, target: Storage) -> list[str]:
        cleaned = []
        for rows in self.records.unsettled(id, LIST_PAGE):
            for row in rows:
                if row.upload:
                    discard_upload(target, row)
                    self.records.update_object(id, row.path, upload=None, part_size=None, bytes_done=0)
                    cleaned.append(row.target_key)
        return cleaned

    def run(self, id: str, data: str, copy=True) -> dict:
        """Transfer `data` (a path under the configured source) to the same path under the target."""
        defaults = settings.load_defaults()
        if defaults is None:
            raise UsageError("no transfer config yet; set one with 'cms transfer config FILE'")
        relative = location.normalize_path(data)
        if any(part == ".." for part in data.replace("\\", "/").split("/")) or not relative:
            raise UsageError(f"--data '{data}' must be a path inside the configured source")
        src = Location.parse(defaults["source"]).child(relative)
        dst = Location.parse(defaults["target"]).child(relative)
        recursive = self.storage(src.storage).stat(src.path) is None
        return self.start(str(src), str(dst), recursive, id, not parse_bool(copy, "copy"), Selection())

    def transfers(self, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        """The status of every transfer (in one state), newest first; with `limit`, a page from `offset`."""
        return self.records.transfers(state, limit, offset)

    def count(self, state: str | None = None) -> int:
        """How many transfers there are (in one state)."""
        return self.records.count(state)

    def status(self, id: str) -> dict:
        """One transfer's status."""
        found = self.records.status(id)
        if found is None:
            raise NotFound(f"no transfer with id '{id}'")
        return found

    def statistic(self) -> dict:
        return self.records.statistic()

