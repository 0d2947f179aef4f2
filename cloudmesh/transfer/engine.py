"""The transfer engine: stream each planned object through bounded memory, verified.

Every worker holds at most one part in memory, so a transfer uses about `parallel x part size`
whatever the object sizes. Each object is hashed (MD5) while it streams, checked against what
the source and the target say of it, and only then marked done (and, for a move, recorded as
copied, deleted at the source and then marked done), so a crash at any point never loses an
object and never records one as done that is not verified at the target.

A run holds a lease on its transfer (a heartbeat in the records): it stops when the transfer is
cancelled, and a run whose process died is seen as interrupted. Large objects record their
upload's token before the first part, so that a resumed run reuses the parts already stored.
"""
import contextlib
import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from cloudmesh.transfer.errors import IntegrityError, NotFound, TransferError
from cloudmesh.transfer.planner import Item
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import MiB, ObjectInfo, Reader, Resumable, ServerCopy, Storage, Upload
from cloudmesh.transfer.records import Records
from cloudmesh.transfer.records.base import HEARTBEAT


SMALL = 1 * MiB  # objects up to this size take no memory slot: a worker holds at most this much


@dataclass
class Options:
    """`parallel` parts (and so about `parallel x chunk_size` bytes) in flight; twice as many
    objects, since small objects are bound by round trips rather than memory."""

    parallel: int = 8
    chunk_size: int = 8 * MiB

    @property
    def objects(self) -> int:
        return 2 * self.parallel


def part_size(size: int, options: Options, target: Storage) -> int:
    """The part size for an object: the chunk size, raised to respect the target's limits."""
    needed = math.ceil(size / target.max_parts / MiB) * MiB if size else 0
    chosen = max(options.chunk_size, target.min_part_size, needed)
    if chosen > target.max_part_size or size > target.max_object_size:
        raise TransferError(f"an object of {size} bytes is too large for storage '{target.name}'")
    return chosen


class Sent:
    """One object's parts in flight: the bytes uploaded so far, and the first part that failed
    (so that reading stops at once instead of after the whole object)."""

    def __init__(self, path: str):
        self.path, self.total, self.failed, self.lock = path, 0, None, threading.Lock()

    def add(self, nbytes: int) -> int:
        with self.lock:
            self.total += nbytes
            return self.total


class Stopped(Exception):
    """The run was told to stop (cancel, Ctrl-C, or another process took the transfer over)."""


class Lease(threading.Thread):
    """Renews an owner's hold on a transfer every HEARTBEAT seconds, from the moment it is taken
    (before planning, which can be long) until it is given up; a cancel request or a takeover
    by another process ("cancel", "lost") is passed on to the engine once one listens."""

    def __init__(self, records: Records, transfer_id: str, owner: str):
        super().__init__(name=f"lease {transfer_id}", daemon=True)
        self.records, self.transfer_id, self.owner = records, transfer_id, owner
        self.done, self.lock = threading.Event(), threading.Lock()
        self.answer: str | None = None
        self.listener = None

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT):
            try:
                answer = self.records.heartbeat(self.transfer_id, self.owner)
            except Exception:
                continue  # a busy or locked store: the next beat tries again
            if answer != "run":
                with self.lock:
                    self.answer, listener = self.answer or answer, self.listener
                if listener:
                    listener(answer)

    def listen(self, listener) -> None:
        """Call `listener(answer)` on a cancel or takeover, at once if one came already."""
        with self.lock:
            self.listener, answer = listener, self.answer
        if answer:
            listener(answer)

    def end(self) -> None:
        self.done.set()
        self.join()


def read_exact(reader: Reader, size: int) -> bytes:
    """Up to `size` bytes from a reader, fewer only at the end of the object. A single read is
    returned as it is; only several short reads are joined (one copy)."""
    chunks, got = [], 0
    while got < size:
        chunk = reader.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Engine:
    """Copies planned items from one storage to another and records each object's outcome.

    Objects run `options.objects` at a time; the parts of large objects are uploaded by a second
    pool, and a semaphore of `parallel` slots bounds the parts held in memory across the transfer
    (a cancelled part gives its slot back, or later objects would wait for it forever).
    Setting `stop` (Ctrl-C) cancels the run: no new object or part starts, open uploads are aborted.
    """

    def __init__(self, source: Storage, target: Storage, records: Records, options: Options,
                 progress: Progress = Progress(), stop: threading.Event | None = None):
        self.source, self.target, self.records, self.options = source, target, records, options
        self.progress = progress
        self.slots = threading.BoundedSemaphore(options.parallel)
        self.stop = stop or threading.Event()
        self.reason: str | None = None  # why the run stops: "cancel", "lost" or "interrupt"

    def halt(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.stop.set()

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set() and self.reason in (None, "cancel")

    def run(self, transfer_id: str, items: list[Item], move: bool, lease: Lease) -> str:
        """Transfer every item under the lease; returns how the run ended (the caller records it):
        completed only if every object is settled, cancelled, failed; or "lost" when another run
        took the transfer over, "interrupt" when told to stop as a crash would."""
        self.transfer_id = transfer_id
        lease.listen(self.halt)
        with ThreadPoolExecutor(self.options.parallel, thread_name_prefix="part") as self.part_pool, \
                ThreadPoolExecutor(self.options.objects, thread_name_prefix="object") as objects:
            try:
                outcomes = list(objects.map(lambda item: self.transfer(item, move), items))
            except BaseException:
                self.halt("interrupt")
                raise
        if self.reason in ("lost", "interrupt"):
            return self.reason
        return "completed" if all(outcomes) else "cancelled" if self.cancelled else "failed"

    def transfer(self, item: Item, move: bool) -> bool | None:
        """Copy (unless already in sync, or copied by an earlier run) and for a move then delete one
        object; record the outcome and never raise. None when the run stopped before it finished."""
        record = item.record or {}
        try:
            if self.stop.is_set():
                raise Stopped
            if record.get("state") == "copied":
                md5, method = record["md5"], record["method"]
            else:
                md5, method = (item.source.md5, "skip") if item.skip else self.copy(item)
        except Stopped:
            return None
        except (TransferError, OSError) as e:
            self.records.update_object(self.transfer_id, item.path, state="failed", message=one_line(e))
            return False
        except Exception as e:
            self.records.update_object(self.transfer_id, item.path, state="failed",
                                       message=f"{e.__class__.__name__} while copying")
            return False
        size = 0 if item.skip else item.source.size
        message = None
        if move:
            self.records.update_object(self.transfer_id, item.path, state="copied", md5=md5, method=method,
                                       bytes_done=size, upload=None)
            try:
                if self.changed(item.source):
                    message = "copied and verified, but the source changed since it was read, so it was kept"
                else:
                    self.source.delete(item.source.key)
            except NotFound:
                pass
            except (TransferError, OSError) as e:
                message = f"copied and verified, but the source was not deleted: {one_line(e)}"
        state = "failed" if message else "skipped" if item.skip else "done"
        self.records.update_object(self.transfer_id, item.path, state=state, md5=md5, method=method,
                                   message=message, bytes_done=size, upload=None)
        self.progress.update(0, 1)
        return message is None

    def changed(self, read: ObjectInfo) -> bool:
        """Whether the source object is no longer the version that was read (by its ETag where it
        has one, else size and time), so that a move never deletes bytes it did not copy."""
        now = self.source.stat(read.key)
        if now is None:
            return False
        if now.etag and read.etag:  # listings and lookups may quote an ETag differently
            return now.etag.strip('"') != read.etag.strip('"')
        return (now.size, now.mtime) != (read.size, read.mtime)

    def copy(self, item: Item) -> tuple[str | None, str]:
        """Copy one object inside the clouds where the target can, else stream it through bounded
        memory, verified; returns its MD5 (hex, where known) and how it went."""
        self.target.check_key(item.target_key)
        size = item.source.size
        psize = (item.record or {}).get("part_size") or part_size(size, self.options, self.target)
        if isinstance(self.target, ServerCopy):
            method = self.target.server_copy(self.source, item.source, item.target_key, psize)
            if method:
                self.progress.update(size, 0)
                return item.source.md5, method
        reader = self.source.open(item.source.key)
        try:
            shaped = ObjectInfo(key=item.source.key, size=size, mtime=item.source.mtime,
                                md5=item.source.md5 or reader.md5,
                                content_type=reader.content_type or item.source.content_type,
                                metadata=dict(reader.metadata or item.source.metadata))
            if size <= psize:
                with self.slots if size > SMALL else contextlib.nullcontext():
                    data = read_exact(reader, size + 1)
                    self.check_length(item, len(data))
                    digest = hashlib.md5(data)
                    self.target.put(item.target_key, data, shaped, digest.digest())
                self.progress.update(size, 0)
            else:
                digest = self.upload(item, reader, psize, shaped)
        finally:
            reader.close()
        md5 = digest.hexdigest()
        if shaped.md5 and shaped.md5 != md5:
            self.discard(item)
            raise IntegrityError(f"the bytes read of '{item.path}' do not match the source's MD5")
        return md5, "stream"

    def open_upload(self, item: Item, shaped: ObjectInfo, psize: int) -> tuple[Upload, dict[int, str]]:
        """The upload an earlier run left for this object, when the target still has it, with the
        MD5s recorded for its parts; else a new one, whose token is recorded before any part is sent."""
        token = (item.record or {}).get("upload")
        if token and isinstance(self.target, Resumable):
            recorded = self.records.parts(self.transfer_id, item.path, token)
            upload = self.target.resume_upload(item.target_key, shaped, token, recorded)
            if upload is not None:
                return upload, recorded
            self.target.discard_upload(item.target_key, token)
        upload = self.target.begin(item.target_key, shaped)
        if upload.token:
            self.records.update_object(self.transfer_id, item.path, upload=upload.token, part_size=psize)
        return upload, {}

    def upload(self, item: Item, reader: Reader, psize: int, shaped: ObjectInfo):
        """Read parts in order, hashing the whole object; upload them in parallel, each with its
        MD5, except parts the target already holds with the same size and MD5 (as the target
        reports it, or as recorded when the part was sent: Azure lists blocks without one).
        A slot is taken before a part is read and given back once it is uploaded.

        A failed upload is aborted when its bytes are wrong, when the run is cancelled, or when the
        target keeps no parts; otherwise it stays open for `resume` (and `cleanup`)."""
        upload, recorded = self.open_upload(item, shaped, psize)
        digest, pending, offset, sent = hashlib.md5(), [], 0, Sent(item.path)
        try:
            while offset < item.source.size:
                if sent.failed:
                    raise sent.failed
                if self.stop.is_set():
                    raise Stopped
                self.slots.acquire()
                try:
                    data = read_exact(reader, min(psize, item.source.size - offset))
                except BaseException:
                    self.slots.release()
                    raise
                if not data:
                    self.slots.release()
                    break
                digest.update(data)
                number = offset // psize + 1
                there = upload.uploaded.get(number)
                if there and there.size in (None, len(data)) and \
                        (there.md5 or recorded.get(number)) == hashlib.md5(data).hexdigest():
                    upload.keep(number)
                    self.slots.release()
                    self.settle_part(sent, len(data))
                else:
                    pending.append(self.part_pool.submit(self.put_part, upload, number, offset, data, sent))
                offset += len(data)
            self.check_length(item, offset + len(reader.read(1)))
            for future in pending:
                future.result()
            upload.complete(digest.digest())
        except BaseException as e:
            for future in pending:
                if future.cancel():
                    self.slots.release()
            wait(pending)
            if isinstance(e, IntegrityError) or self.cancelled or not upload.keeps_parts:
                try:
                    upload.abort()
                except (TransferError, OSError):
                    pass  # its token stays recorded, for `cleanup`
                else:
                    self.records.update_object(self.transfer_id, item.path, upload=None)
            raise
        return digest

    def put_part(self, upload: Upload, number: int, offset: int, data: bytes, sent: Sent) -> None:
        md5 = hashlib.md5(data).digest()
        try:
            upload.put_part(number, offset, data, md5)
        except BaseException as e:
            sent.failed = sent.failed or e
            raise
        finally:
            self.slots.release()
        if upload.token:
            self.records.part_done(self.transfer_id, sent.path, upload.token, number, md5.hex(), sent.add(len(data)))
            self.progress.update(len(data), 0)
        else:
            self.settle_part(sent, len(data))

    def settle_part(self, sent: Sent, nbytes: int) -> None:
        self.records.update_object(self.transfer_id, sent.path, bytes_done=sent.add(nbytes))
        self.progress.update(nbytes, 0)

    def check_length(self, item: Item, length: int) -> None:
        if length != item.source.size:
            raise IntegrityError(f"read {length} bytes of '{item.path}' but the source has {item.source.size}")

    def discard(self, item: Item) -> None:
        """Remove an object that was written but failed verification."""
        try:
            self.target.delete(item.target_key)
        except (TransferError, OSError):
            pass


def one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, TransferError) else (getattr(error, "strerror", None) or str(error))
    return " ".join(text.split()) or error.__class__.__name__
