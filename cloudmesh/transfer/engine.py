"""The transfer engine: plan which objects go where, then stream each one through bounded memory.

Every worker holds at most one part in memory, so a transfer uses about `parallel x part size`
whatever the object sizes. Each object is hashed (MD5) while it streams, checked against what
the source and the target say of it, and only then marked done (and, for a move, deleted at
the source).
"""
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from cloudmesh.transfer import location
from cloudmesh.transfer.errors import NotFound, TransferError, UsageError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.providers import MiB, ObjectInfo, Storage
from cloudmesh.transfer.records import Records


class IntegrityError(TransferError):
    """The bytes at the target are not the bytes of the source."""


@dataclass
class Options:
    parallel: int = 4
    chunk_size: int = 8 * MiB


@dataclass
class Item:
    """One planned object: its path relative to the transfer's source, and where it goes."""

    path: str
    source: ObjectInfo
    target_key: str


def plan(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool) -> list[Item]:
    """The objects to transfer. A folder's contents land under the target path without nesting;
    a single file lands at the target path, or inside it when that names a folder."""
    if recursive:
        items = []
        for info in source.list(src.path):
            relative = info.key[len(src.path):].lstrip("/")
            items.append(Item(relative, info, location.join(dst.path, relative)))
        if items:
            return items
    single = source.stat(src.path)
    if single is None:
        if source.is_folder(src.path):
            if recursive:
                return []
            raise UsageError(f"'{src}' is a folder; add -r to copy it recursively")
        raise NotFound(f"'{src}' does not exist")
    name = location.basename(src.path)
    into_folder = recursive or dst.folder or target.is_folder(dst.path)
    return [Item(name, single, location.join(dst.path, name) if into_folder else dst.path)]


def part_size(size: int, options: Options, target: Storage) -> int:
    """The part size for an object: the chunk size, raised to respect the target's limits."""
    needed = math.ceil(size / target.max_parts / MiB) * MiB if size else 0
    chosen = max(options.chunk_size, target.min_part_size, needed)
    if chosen > target.max_part_size or size > target.max_object_size:
        raise TransferError(f"an object of {size} bytes is too large for storage '{target.name}'")
    return chosen


def parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup a stream of chunks into parts of exactly `size` bytes (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class Engine:
    """Copies planned items from one storage to another and records each object's outcome."""

    def __init__(self, source: Storage, target: Storage, records: Records, options: Options):
        self.source, self.target, self.records, self.options = source, target, records, options

    def run(self, transfer_id: str, items: list[Item], move: bool) -> str:
        """Transfer every item; the transfer ends `completed` only if every object did."""
        self.transfer_id = transfer_id
        try:
            with ThreadPoolExecutor(max_workers=self.options.parallel) as pool:
                outcomes = list(pool.map(lambda item: self.transfer(item, move), items))
        except BaseException:
            self.records.finish(transfer_id, "failed", "interrupted")
            raise
        state = "completed" if all(outcomes) else "failed"
        self.records.finish(transfer_id, state)
        return state

    def transfer(self, item: Item, move: bool) -> bool:
        """Copy (and for a move, then delete) one object; record the outcome, never raise."""
        self.records.update_object(self.transfer_id, item.path, state="running")
        try:
            md5 = self.copy(item)
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
        self.records.update_object(self.transfer_id, item.path, state="failed" if message else "done",
                                   md5=md5, method="stream", message=message, bytes_done=item.source.size)
        return message is None

    def copy(self, item: Item) -> str:
        """Stream one object to the target and verify it; returns the MD5 (hex) of its bytes."""
        self.target.check_key(item.target_key)
        size = item.source.size
        psize = part_size(size, self.options, self.target)
        digest = hashlib.md5()
        reader = self.source.open(item.source.key)
        try:
            shaped = ObjectInfo(key=item.source.key, size=size, mtime=item.source.mtime,
                                content_type=reader.content_type or item.source.content_type,
                                metadata=dict(reader.metadata or item.source.metadata))
            if size <= psize:
                data = b"".join(reader.chunks())
                digest.update(data)
                self.check_length(item, len(data))
                self.target.put(item.target_key, data, shaped, digest.digest())
            else:
                self.upload(item, reader.chunks(), psize, shaped, digest)
        finally:
            reader.close()
        md5 = digest.hexdigest()
        self.verify(item, md5)
        return md5

    def upload(self, item: Item, chunks: Iterable[bytes], psize: int, shaped: ObjectInfo, digest) -> None:
        upload = self.target.begin(item.target_key, shaped)
        try:
            offset = 0
            for number, part in enumerate(parts(chunks, psize), start=1):
                digest.update(part)
                upload.put_part(number, offset, part)
                offset += len(part)
                self.records.update_object(self.transfer_id, item.path, bytes_done=offset)
            self.check_length(item, offset)
            upload.complete(digest.digest())
        except BaseException:
            upload.abort()
            raise

    def check_length(self, item: Item, length: int) -> None:
        if length != item.source.size:
            raise IntegrityError(f"read {length} bytes of '{item.path}' but the source has {item.source.size}")

    def verify(self, item: Item, md5: str) -> None:
        """Compare the streamed MD5 with the source's, and the target's size and MD5 with ours."""
        problem = None
        if item.source.md5 and item.source.md5 != md5:
            problem = f"checksum of '{item.path}' differs from the source's MD5"
        else:
            landed = self.target.stat(item.target_key)
            if landed is None or landed.size != item.source.size:
                problem = f"'{item.path}' has the wrong size at the target"
            elif landed.md5 and landed.md5 != md5:
                problem = f"checksum of '{item.path}' at the target differs from the bytes sent"
        if problem:
            try:
                self.target.delete(item.target_key)
            except (TransferError, OSError):
                pass
            raise IntegrityError(problem)


def one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, TransferError) else (getattr(error, "strerror", None) or str(error))
    return " ".join(text.split()) or error.__class__.__name__
