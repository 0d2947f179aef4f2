"""In memory: a storage that lives as long as the process, for tests and benchmarks of the engine at
scale (as rclone's memory backend and fsspec's MemoryFileSystem).

Its settings, under `default:` of a cloudmesh.yaml storage with `cm.kind: memory`:
- none: an empty store of objects and their bytes;
- `keep: digest`: a sink that keeps each object's size, MD5 and metadata but not its bytes, so that
  a million objects can be copied to it without holding them (reading one back is an error);
- `keep: nothing`: a sink that proves what is written to it (its MD5) and keeps none of it, so that
  a benchmark of the engine measures the engine, not the store (it lists nothing afterwards);
- `generate: N` (and `size: BYTES`, 1024 by default): a read-only source of N objects `g/00000000`,
  `g/00000001`, ... whose bytes are made from their key when read and whose listing is lazy, so
  that a million of them cost no memory.

A store is shared by every storage opened under its name (with the same settings) in the process,
and is gone when the process ends. Every object's MD5 is known and claimed by its reader (strictly),
so that the engine proves what it reads from here. One lock per store guards its objects.
"""
import bisect
import hashlib
import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Iterator

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import Changed, ConfigError, IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import Claim, Proof
from cloudmesh.transfer.limits import GENERATED_SIZE, MAX_GENERATED, MAX_GENERATED_SIZE, MiB
from cloudmesh.transfer.providers.base import ObjectInfo, Reader, Storage, Upload
from cloudmesh.transfer.retry import Retry

log = logging.getLogger(__name__)

SETTINGS = ("generate", "size", "keep")
GENERATED_KEY = re.compile(r"g/[0-9]{8}")
KEY_BYTES = len("g/00000000")
GENERATED_MTIME = 1_700_000_000.0  # 2023-11-14: every generated object has this time
# What generated objects are filled with before their key: 4 KiB of SHA-256 output, repeated.
FILLER = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(128))


class Keep(StrEnum):
    """What a writable store keeps of each object: its bytes, only its digest (size, MD5, metadata),
    or nothing."""

    BYTES = "bytes"
    DIGEST = "digest"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Settings:
    """A memory storage's validated settings; `generate` is None for a writable store."""

    generate: int | None = None
    size: int = GENERATED_SIZE
    keep: Keep = Keep.BYTES

    @classmethod
    def parse(cls, config: StorageConfig) -> "Settings":
        """The settings of a cloudmesh.yaml entry, each problem one ConfigError naming the setting."""
        given = config.settings
        unknown = sorted(str(k) for k in given if k not in SETTINGS)
        if unknown:
            raise ConfigError(f"storage '{config.name}' has the unknown setting '{unknown[0]}' (a memory storage "
                              f"knows {', '.join(SETTINGS)})")
        if "generate" not in given:
            if "size" in given:
                raise ConfigError(f"storage '{config.name}' has 'size' but no 'generate': size is the size of "
                                  f"each generated object")
            keep = str(given.get("keep", Keep.BYTES))
            if keep not in tuple(Keep):
                raise ConfigError(f"storage '{config.name}' has keep: {given['keep']!r}; it is bytes, digest or "
                                  f"nothing")
            return cls(keep=Keep(keep))
        if "keep" in given:
            raise ConfigError(f"storage '{config.name}' has both 'generate' and 'keep': a generating storage is "
                              f"read-only, so it keeps nothing that is written")
        generate = whole(config, "generate", MAX_GENERATED, f"{MAX_GENERATED} (keys have 8 digits)")
        size = whole(config, "size", MAX_GENERATED_SIZE, f"{MAX_GENERATED_SIZE} ({MAX_GENERATED_SIZE // MiB} MiB)",
                     GENERATED_SIZE)
        return cls(generate=generate, size=size)


def whole(config: StorageConfig, name: str, most: int, shown: str, default: int | None = None) -> int:
    """A setting that is a whole number from 0 to `most` (an integer, or a string of digits)."""
    value = config.settings.get(name, default)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ConfigError(f"storage '{config.name}' has {name}: {value!r}; it is a whole number from 0 to {shown}")
    return value


# The stores, shared by name within the process.


@dataclass(frozen=True, slots=True)
class Stored:
    """One object of a writable store: its bytes (None where the store keeps digests only), size,
    MD5 (16 bytes), time, content type, metadata (None for none), S3 multipart ETag and version."""

    data: bytes | None
    size: int
    md5: bytes
    mtime: float
    content_type: str | None
    metadata: dict | None
    s3etag: str | None
    version: int


class Objects:
    """The objects of one writable store. Its lock guards `entries`, the sorted keys (`order`,
    rebuilt on the first listing after a write) and the version counter."""

    def __init__(self, serial: int, keep: Keep):
        self.serial, self.keep = serial, keep
        self.lock = threading.Lock()
        self.entries: dict[str, Stored] = {}
        self.order: list[str] | None = []
        self.versions = itertools.count(1)

    def sorted_keys(self) -> list[str]:
        """The keys in order, as of now; a listing goes on over this list while others write."""
        with self.lock:
            if self.order is None:
                self.order = sorted(self.entries)
            return self.order

    def get(self, key: str) -> Stored | None:
        with self.lock:
            return self.entries.get(key)

    def write(self, key: str, data: bytes | None, source: ObjectInfo, size: int, md5: bytes) -> None:
        """Store an object shaped like `source` (its bytes only when the store keeps bytes; nothing
        when it keeps nothing)."""
        if self.keep is Keep.NOTHING:
            return
        mtime = time.time() if source.mtime is None else source.mtime
        with self.lock:
            self.entries[key] = Stored(data if self.keep is Keep.BYTES else None, size, md5, mtime,
                                       source.content_type, dict(source.metadata) or None, source.s3etag,
                                       next(self.versions))
            self.order = None

    def remove(self, key: str, version: str | None, where: str) -> None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                raise NotFound(f"'{where}' does not exist")
            if version and str(entry.version) != version.strip('"'):
                raise Changed(f"'{where}' changed after it was read, so it was not deleted")
            del self.entries[key]
            self.order = None


class Generated:
    """N read-only objects `g/00000000`... of `size` bytes each: FILLER repeated, then the last
    bytes of the key (so that objects differ), made when read. Each one's MD5 costs a copy of the
    filler's MD5, computed once, updated with its key's bytes."""

    def __init__(self, serial: int, count: int, size: int):
        self.serial, self.count, self.size = serial, count, size
        self.tail = min(size, KEY_BYTES)
        self.head = size - self.tail
        self.head_md5 = hashlib.md5()
        for start in range(0, self.head, MiB):
            self.head_md5.update(filler(start, min(start + MiB, self.head)))

    def index(self, key: str) -> int | None:
        """The number of the generated object at `key`, or None when there is none."""
        if not GENERATED_KEY.fullmatch(key):
            return None
        index = int(key[2:])
        return index if index < self.count else None

    def first_after(self, key: str | None) -> int:
        """The number of the first generated object whose key sorts after `key` (0 for None)."""
        if key is None:
            return 0
        return bisect.bisect_right(range(self.count), key, key=lambda index: f"g/{index:08d}")

    def key_tail(self, key: str) -> bytes:
        return key.encode()[KEY_BYTES - self.tail:]

    def info(self, index: int) -> ObjectInfo:
        key = f"g/{index:08d}"
        md5 = self.head_md5.copy()
        md5.update(self.key_tail(key))
        digest = md5.hexdigest()
        return ObjectInfo(key=key, size=self.size, mtime=GENERATED_MTIME, md5=digest, etag=digest)

    def content(self, index: int, start: int, stop: int) -> bytes:
        """Bytes `start` to `stop` (exclusive) of object `index`."""
        head = filler(start, min(stop, self.head)) if start < self.head else b""
        if stop <= self.head:
            return head
        return head + self.key_tail(f"g/{index:08d}")[max(start - self.head, 0):stop - self.head]


def filler(start: int, stop: int) -> bytes:
    """Bytes `start` to `stop` of FILLER repeated without end."""
    if stop <= start:
        return b""
    offset = start % len(FILLER)
    repeats = (offset + stop - start - 1) // len(FILLER) + 1
    return (FILLER * repeats)[offset:offset + stop - start]


STORES: dict[tuple[str, Settings], Objects | Generated] = {}
STORES_LOCK = threading.Lock()
SERIALS = itertools.count(1)


def shared(name: str, settings: Settings) -> Objects | Generated:
    """The store of this name and settings, made on first use; it lasts as long as the process."""
    with STORES_LOCK:
        store = STORES.get((name, settings))
        if store is None:
            if settings.generate is None:
                store = Objects(next(SERIALS), settings.keep)
                log.info("memory storage '%s': a new store that keeps %s", name, settings.keep.value)
            else:
                store = Generated(next(SERIALS), settings.generate, settings.size)
                log.info("memory storage '%s': %d generated objects of %d bytes", name, settings.generate,
                         settings.size)
            STORES[(name, settings)] = store
        return store


# Reading and writing.


class MemoryReader(Reader):
    """Bytes `start` to `stop` of an object, made by `content(start, stop)`; a whole object's
    reader claims the MD5 the store knows of it."""

    def __init__(self, content: Callable[[int, int], bytes], start: int, stop: int, md5: str | None,
                 content_type: str | None, metadata: dict):
        self.content, self.position, self.stop = content, start, stop
        self.content_type, self.metadata = content_type, metadata
        if md5 is not None:
            self.claim = Claim(Proof.MD5, value=md5, strict=True)

    def read(self, size: int) -> bytes:
        end = min(self.stop, self.position + size)
        if end <= self.position:
            return b""
        data, self.position = self.content(self.position, end), end
        return data


def span(size: int, offset: int, length: int | None) -> tuple[int, int]:
    """Where a read of `length` bytes (None: to the end) from `offset` starts and stops in an object of `size`."""
    start = min(offset, size)
    return start, size if length is None else min(size, start + length)


class MemoryUpload(Upload):
    """Parts held by the upload until `complete` checks that they join into the object's size and
    MD5 and stores it; nothing is visible at the key before."""

    def __init__(self, storage: "MemoryStorage", key: str, source: ObjectInfo):
        self.storage, self.key, self.source = storage, key, source
        self.parts: dict[int, tuple[int, bytes]] | None = {}

    @property
    def where(self) -> str:
        return f"{self.storage.name}:{self.key}"

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> None:
        if md5 is not None and hashlib.md5(data).digest() != md5:
            raise IntegrityError(f"part {number} of '{self.where}' arrived with other bytes than its MD5 says")
        with self.storage.objects.lock:
            if self.parts is None:
                raise TransferError(f"the upload of '{self.where}' has ended")
            self.parts[number] = (offset, bytes(data))

    def complete(self, md5: bytes | None) -> None:
        with self.storage.objects.lock:
            parts, self.parts = self.parts, None
        if parts is None:
            raise TransferError(f"the upload of '{self.where}' has ended")
        ordered = sorted(parts.values(), key=lambda part: part[0])
        digest, size = hashlib.md5(), 0
        for offset, data in ordered:
            if offset != size:
                raise IntegrityError(f"the parts of '{self.where}' do not join: one starts at byte {offset}, "
                                     f"not {size}")
            digest.update(data)
            size += len(data)
        if size != self.source.size:
            raise IntegrityError(f"wrote {size} bytes to '{self.where}' instead of {self.source.size}")
        if md5 is not None and digest.digest() != md5:
            raise IntegrityError(f"the parts of '{self.where}' do not match the object's MD5")
        data = b"".join(part for _, part in ordered) if self.storage.objects.keep is Keep.BYTES else None
        self.storage.objects.write(self.key, data, self.source, size, digest.digest())

    def abort(self) -> None:
        with self.storage.objects.lock:
            self.parts = None


class MemoryStorage(Storage):
    """A writable store in this process's memory. `from_config` gives a GeneratedStorage where
    the settings say `generate`."""

    kind = "memory"
    keeps_md5 = True

    def __init__(self, name: str, store: Objects | Generated, retry: Retry = Retry()):
        super().__init__(name, retry)
        self.store = store
        self.reads_cheaply = not isinstance(store, Objects) or store.keep is Keep.BYTES

    @classmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "MemoryStorage":
        store = shared(config.name, Settings.parse(config))
        return (GeneratedStorage if isinstance(store, Generated) else MemoryStorage)(config.name, store, retry)

    @property
    def objects(self) -> Objects:
        return self.store

    def place(self, key: str) -> tuple[tuple, str]:
        """One store per name (and settings) in the process, which no other storage shares."""
        return ("memory", self.store.serial), key

    def info(self, key: str, entry: Stored) -> ObjectInfo:
        """An object as listed; its ETag is its version, so that a rewrite of the same bytes is seen."""
        return ObjectInfo(key=key, size=entry.size, mtime=entry.mtime, md5=entry.md5.hex(), etag=str(entry.version),
                          content_type=entry.content_type, metadata=dict(entry.metadata or {}), s3etag=entry.s3etag)

    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """The objects under the folder `prefix`, sorted by key (as S3 sorts them: by code point,
        which is UTF-8 byte order), looked up one by one so that a listing goes on while others write."""
        folder = prefix if not prefix or prefix.endswith("/") else f"{prefix}/"
        keys = self.objects.sorted_keys()
        first = max(bisect.bisect_left(keys, folder), bisect.bisect_right(keys, after) if after else 0)
        for key in itertools.islice(keys, first, None):
            if not key.startswith(folder):
                return
            entry = self.objects.get(key)
            if entry is not None:
                yield self.info(key, entry)

    def stat(self, key: str) -> ObjectInfo | None:
        entry = self.objects.get(key)
        return None if entry is None else self.info(key, entry)

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        entry = self.objects.get(key)
        if entry is None:
            raise NotFound(f"'{self.name}:{key}' does not exist")
        if entry.data is None:
            raise TransferError(f"'{self.name}:{key}' cannot be read: storage '{self.name}' keeps digests only "
                                f"(keep: digest), not bytes")
        start, stop = span(entry.size, offset, length)
        whole = start == 0 and stop == entry.size
        return MemoryReader(lambda a, b: entry.data[a:b], start, stop, entry.md5.hex() if whole else None,
                            entry.content_type, dict(entry.metadata or {}))

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        self.check_key(key)
        if hashlib.md5(data).digest() != md5:
            raise IntegrityError(f"the bytes written to '{self.name}:{key}' do not match their MD5")
        self.objects.write(key, bytes(data), source, len(data), md5)

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        self.check_key(key)
        return MemoryUpload(self, key, source)

    def delete(self, key: str, etag: str | None = None) -> None:
        """Remove the object; with `etag`, only while it is still that version (Changed otherwise)."""
        self.objects.remove(key, etag, f"{self.name}:{key}")


class GeneratedStorage(MemoryStorage):
    """A read-only store of generated objects (see Generated), listed lazily in key order."""

    @property
    def generated(self) -> Generated:
        return self.store

    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """Every generated object (after `after`), one at a time, when `prefix` is the root or `g`; else none."""
        if prefix in ("", "g", "g/"):
            for index in range(self.generated.first_after(after), self.generated.count):
                yield self.generated.info(index)

    def stat(self, key: str) -> ObjectInfo | None:
        index = self.generated.index(key)
        return None if index is None else self.generated.info(index)

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        index = self.generated.index(key)
        if index is None:
            raise NotFound(f"'{self.name}:{key}' does not exist")
        start, stop = span(self.generated.size, offset, length)
        whole = start == 0 and stop == self.generated.size
        return MemoryReader(lambda a, b: self.generated.content(index, a, b), start, stop,
                            self.generated.info(index).md5 if whole else None, None, {})

    def check_key(self, key: str) -> None:
        """Nothing can be written: the store generates its objects."""
        raise self.read_only(key, "written")

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        raise self.read_only(key, "written")

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        raise self.read_only(key, "written")

    def delete(self, key: str, etag: str | None = None) -> None:
        raise self.read_only(key, "deleted")

    def read_only(self, key: str, done: str) -> UsageError:
        return UsageError(f"'{self.name}:{key}' cannot be {done}: storage '{self.name}' generates its objects "
                          f"(generate: {self.generated.count}) and is read-only")
