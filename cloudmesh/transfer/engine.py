"""The transfer engine: stream each planned object through bounded memory, verified.

Every worker holds at most one part in memory, so a transfer uses about `parallel x part size`
whatever the object sizes. Each object is hashed (MD5) while it streams, checked against what
the source and the target say of it, and only then marked done (and, for a move, deleted at
the source).
"""
import contextlib
import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from cloudmesh.transfer.errors import IntegrityError, TransferError
from cloudmesh.transfer.planner import Item
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import MiB, ObjectInfo, Reader, ServerCopy, Storage
from cloudmesh.transfer.records import Records


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
    """

    def __init__(self, source: Storage, target: Storage, records: Records, options: Options,
                 progress: Progress = Progress()):
        self.source, self.target, self.records, self.options = source, target, records, options
        self.progress = progress
        self.slots = threading.BoundedSemaphore(options.parallel)

    def run(self, transfer_id: str, items: list[Item], move: bool) -> str:
        """Transfer every item; the transfer ends `completed` only if every object did."""
        self.transfer_id = transfer_id
        try:
            with ThreadPoolExecutor(self.options.parallel, thread_name_prefix="part") as self.part_pool, \
                    ThreadPoolExecutor(self.options.objects, thread_name_prefix="object") as objects:
                outcomes = list(objects.map(lambda item: self.transfer(item, move), items))
        except BaseException:
            self.records.finish(transfer_id, "failed", "interrupted")
            raise
        state = "completed" if all(outcomes) else "failed"
        self.records.finish(transfer_id, state)
        return state

    def transfer(self, item: Item, move: bool) -> bool:
        """Copy (unless already in sync) and for a move then delete one object; record the
        outcome (one write per object: the record changes only when the object is settled), never
        raise."""
        try:
            md5, method = (item.source.md5, "skip") if item.skip else self.copy(item)
        except (TransferError, OSError) as e:
            self.records.update_object(self.transfer_id, item.path, state="failed", message=one_line(e))
            return False
        except Exception as e:
            self.records.update_object(self.transfer_id, item.path, state="failed",
                                       message=f"{e.__class__.__name__} while copying")
            return False
        message = None
        if move:
            try:
                self.source.delete(item.source.key)
            except (TransferError, OSError) as e:
                message = f"copied and verified, but the source was not deleted: {one_line(e)}"
        state = "failed" if message else "skipped" if item.skip else "done"
        self.records.update_object(self.transfer_id, item.path, state=state, md5=md5, method=method,
                                   message=message, bytes_done=0 if item.skip else item.source.size)
        self.progress.update(0, 1)
        return message is None

    def copy(self, item: Item) -> tuple[str | None, str]:
        """Copy one object inside the clouds where the target can, else stream it through bounded
        memory, verified; returns its MD5 (hex, where known) and how it went."""
        self.target.check_key(item.target_key)
        size = item.source.size
        psize = part_size(size, self.options, self.target)
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

    def upload(self, item: Item, reader: Reader, psize: int, shaped: ObjectInfo):
        """Read parts in order, hashing the whole object; upload them in parallel, each with its
        MD5. A slot is taken before a part is read and given back once it is uploaded."""
        upload = self.target.begin(item.target_key, shaped)
        digest, pending, offset, sent = hashlib.md5(), [], 0, Sent(item.path)
        try:
            while offset < item.source.size:
                if sent.failed:
                    raise sent.failed
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
                pending.append(self.part_pool.submit(self.put_part, upload, len(pending) + 1, offset, data, sent))
                offset += len(data)
            self.check_length(item, offset + len(reader.read(1)))
            for future in pending:
                future.result()
            upload.complete(digest.digest())
        except BaseException:
            for future in pending:
                if future.cancel():
                    self.slots.release()
            wait(pending)
            upload.abort()
            raise
        return digest

    def put_part(self, upload, number: int, offset: int, data: bytes, sent: Sent) -> None:
        try:
            upload.put_part(number, offset, data, hashlib.md5(data).digest())
        except BaseException as e:
            sent.failed = sent.failed or e
            raise
        finally:
            self.slots.release()
        self.records.update_object(self.transfer_id, sent.path, bytes_done=sent.add(len(data)))
        self.progress.update(len(data), 0)

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
