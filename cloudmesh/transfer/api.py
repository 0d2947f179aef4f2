"""The Python API of cloudmesh-transfer; the `cms transfer` command and the REST service call it.

    from cloudmesh.transfer import Transfer
    status = Transfer().copy("awss3:data", "azure:data", recursive=True)
    print(status["state"], status["bytes_done"])
"""
from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from cloudmesh.transfer import config as settings
from cloudmesh.transfer import check, location
from cloudmesh.transfer.engine import Engine, Halt, Lease, one_line
from cloudmesh.transfer.errors import Conflict, IdInUse, NotFound, OptionError, TransferError, UsageError
from cloudmesh.transfer.limits import LIST_PAGE
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.options import TransferConfig, parse_bool
from cloudmesh.transfer.pipeline import discard_upload, recorded, resumed
from cloudmesh.transfer.planner import Item, Page, Selection, stream
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import MiB, ObjectInfo, Storage, open_storage
from cloudmesh.transfer.records import Records, open_records
from cloudmesh.transfer.records.base import State, iso
from cloudmesh.transfer.retry import Retry

TRANSFER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CANCEL_WAIT = 30.0  # seconds `cancel` waits for a running transfer to stop


def new_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def inside(path: str, folder: str) -> bool:
    """Whether `path` lies under `folder` ('' is the root of a storage, '/' of a disk)."""
    return not folder or folder == "/" or path.startswith(folder.rstrip("/") + "/")


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


class Transfer:
    """Copy, move, list and delete across configured storages, and read the transfer records.
    Setting `stop` (e.g. on Ctrl-C) cancels the transfer this object is running."""

    def __init__(self, records: Records | None = None, config: TransferConfig | None = None, **options):
        """`config`, or the options it is built from (parallel, chunksize, retries: see TransferConfig.of)."""
        self._records = records
        self._config = None
        self._opened: dict[str, Storage] = {}
        self.options = config or TransferConfig.of(**options)
        self.retry = Retry(attempts=self.options.retries + 1)
        self.stop = threading.Event()
        self.engine: Engine | None = None

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = open_records()
        return self._records

    def storage(self, name: str) -> Storage:
        """The provider for a configured storage name, opened once per Transfer."""
        if self._config is None:
            self._config = settings.load_storages()
        if name not in self._opened:
            self._opened[name] = open_storage(settings.storage_config(name, self._config), self.retry)
        return self._opened[name]

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
                                         self.probe(source_storage, target_storage, dst, recursive))
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
            pages = self.refuse_overlap(pages, source_storage, target_storage)
        return src, dst, (source_storage, target_storage), pages

    @staticmethod
    def probe(source: Storage, target: Storage, dst: Location, recursive: bool) -> bool:
        """Whether two storages that may be one service are: an empty object written at the target
        is looked for at the source, then deleted. It lies beside the target (inside it, for a folder)."""
        folder = dst.path if recursive or dst.folder else dst.path.rpartition("/")[0]
        key = location.join(folder, f".cmtransfer-probe-{secrets.token_hex(8)}")
        target.put(key, b"", ObjectInfo(key=key, size=0), hashlib.md5(b"").digest())
        try:
            return source.stat(key) is not None
        finally:
            target.delete(key)

    @staticmethod
    def refuse_overlap(pages: Iterator[Page], source: Storage, target: Storage) -> Iterator[Page]:
        """Refuse a page in which an object would land on itself or on another object of the page,
        judged by where each really lives (an alias, nested roots, another spelling of an endpoint),
        before any of its objects is written."""
        for page in pages:
            Transfer.refuse_page(page.items, source, target)
            yield page

    @staticmethod
    def refuse_page(items: list[Item], source: Storage, target: Storage) -> None:
        """Each object's place is its folder's, looked up once per folder, and its name: a symlink
        as the last component cannot make two objects one (a write replaces the link, and a copy
        through a linked source file writes the bytes it read), folders on the way can."""
        folders: dict[tuple[Storage, str], str] = {}

        def place(storage: Storage, key: str) -> str:
            folder, _, name = key.rpartition("/")
            if (storage, folder) not in folders:
                folders[storage, folder] = storage.place(folder)[1]
            return location.join(folders[storage, folder], name)

        sources = {place(source, item.source.key): item for item in items}
        for item in items:
            hit = sources.get(place(target, item.target_key))
            if hit is item:
                raise UsageError(f"'{source.name}:{item.source.key}' would be copied onto itself "
                                 f"('{target.name}:{item.target_key}' is the same object)")
            if hit is not None:
                raise UsageError(f"'{target.name}:{item.target_key}' is the source object "
                                 f"'{source.name}:{hit.source.key}' of this transfer, which it would overwrite")

    def start(self, source: str, target: str, recursive: bool, id: str | None, move: bool,
              selection: Selection, progress: Progress | None = None) -> dict:
        """Create and run a transfer. `stop` is cleared first: it cancels the transfer under way
        (also while it is being planned), not a later one."""
        self.stop.clear()
        return self.execute(self.create(source, target, recursive, id, move, selection), progress)

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
        """Run the engine over a created or reopened transfer and record how it ended; a cancelled
        run leaves no partial upload behind."""
        progress = progress or Progress()
        progress.start()
        self.engine = Engine(*run.storages, self.records, self.options, progress, self.stop)
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
        run = self.reopen(id)
        return self.execute(run, progress) if run else self.records.status(id)

    def reopen(self, id: str) -> Run | None:
        """Take a transfer over for `resume`; None when it is completed. What is left is planned as
        the engine takes it (pipeline.resumed)."""
        status = self.status(id)
        if status["state"] == State.COMPLETED:
            return None
        owner = secrets.token_hex(8)
        self.records.claim(id, owner)
        lease = self.hold(id, owner)
        try:
            source = self.storage(Location.parse(status["source"]).storage)
            target = self.storage(Location.parse(status["target"]).storage)
        except BaseException as e:
            lease.end()
            self.records.finish(id, State.FAILED, one_line(e) if isinstance(e, TransferError) else "interrupted",
                                owner=owner)
            raise
        return Run(id, resumed(self.records, status, source, target), not status["copy"], owner, (source, target),
                   lease)

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
        owner = secrets.token_hex(8)
        self.records.claim(id, owner, reset=False)
        lease = self.hold(id, owner)
        try:
            self.discard_uploads(id, self.storage(Location.parse(status["target"]).storage))
        finally:
            lease.end()
            self.records.finish(id, State.CANCELLED, owner=owner)
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
        owner = secrets.token_hex(8)
        self.records.claim(id, owner, reset=False)
        lease = self.hold(id, owner)
        try:
            return self.discard_uploads(id, self.storage(Location.parse(status["target"]).storage))
        finally:
            lease.end()
            ended = State.FAILED if status["state"] == State.INTERRUPTED else status["state"]
            self.records.finish(id, ended, "interrupted" if ended != status["state"] else status["message"],
                                owner=owner)

    def discard_uploads(self, id: str, target: Storage) -> list[str]:
        cleaned = []
        for rows in self.records.unsettled(id, LIST_PAGE):
            for row in rows:
                if row["upload"]:
                    discard_upload(target, row)
                    self.records.update_object(id, row["path"], upload=None, part_size=None, bytes_done=0)
                    cleaned.append(row["target_key"])
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

    def configure(self, file: str | None = None) -> dict:
        """Record `file` as the default source and target when given; return the current
        configuration (defaults and storages) with every secret masked."""
        if file:
            settings.save_defaults(settings.read_defaults(Path(file).expanduser()))
        self._config = settings.load_storages()
        return {
            "defaults": settings.load_defaults(),
            "storages": {name: {"kind": s.kind, **settings.masked(s.settings)} for name, s in self._config.items()},
        }

    def list(self, target: str, recursive: bool = False) -> list[dict]:
        """The objects under a path; without `recursive`, its direct files and sub-folders."""
        where = Location.parse(target)
        storage = self.storage(where.storage)
        single = storage.stat(where.path)
        objects = [single] if single else list(storage.list(where.path))
        if not objects and not storage.is_folder(where.path):
            raise NotFound(f"'{where}' does not exist")
        rows, folders = [], set()
        for info in objects:
            relative = info.key[len(where.path):].lstrip("/") if not single else location.basename(info.key)
            if not recursive and "/" in relative:
                folder = relative.split("/", 1)[0] + "/"
                if folder not in folders:
                    folders.add(folder)
                    rows.append({"name": folder, "size": None, "modified": None, "md5": None})
                continue
            rows.append({"name": relative, "size": info.size, "modified": iso(info.mtime), "md5": info.md5})
        return rows

    def delete(self, target: str, recursive: bool = False) -> list[str]:
        """Delete a file, or with `recursive` every object under a folder; returns the keys."""
        where = Location.parse(target)
        storage = self.storage(where.storage)
        if storage.stat(where.path):
            keys = [where.path]
        elif recursive:
            keys = [info.key for info in storage.list(where.path)]
            if not keys and not storage.is_folder(where.path):
                raise NotFound(f"'{where}' does not exist")
        elif storage.is_folder(where.path):
            raise UsageError(f"'{where}' is a folder; add -r to delete everything under it")
        else:
            raise NotFound(f"'{where}' does not exist")
        for key in keys:
            storage.delete(key)
        return keys

    def check(self, source: str, target: str, recursive: bool = False, download: bool = False) -> dict:
        """Compare a source and a target object by object, as a user's proof that a copy is complete:
        by size and the checksums both storages keep (local files are read), or with `download` by
        reading both. The report (check.check) names what is missing, extra, different or unproven;
        `ok` is True only when there is nothing of these."""
        src, dst = Location.parse(source), Location.parse(target)
        source_storage, target_storage = self.storage(src.storage), self.storage(dst.storage)
        target_storage.is_folder(dst.path)  # wrong credentials, a missing bucket: one error, before any object
        return check.check(source_storage, src, target_storage, dst, recursive, download)

    def status(self, id: str | None = None):
        """One transfer's status, or with no id the status of every transfer (newest first)."""
        if id is None:
            return self.records.transfers()
        found = self.records.status(id)
        if found is None:
            raise NotFound(f"no transfer with id '{id}'")
        return found

    def statistic(self) -> dict:
        return self.records.statistic()

