"""The storage interface every provider implements, in the spirit of rclone's Fs/Object.

A provider lists, stats, reads as a stream (saying by what the bytes read can be proven, see
integrity.py), writes whole small objects or uploads large ones in parts (visible only after
`complete`), and deletes. Keys are '/'-separated paths inside the storage's bucket, container or
directory. Optional capabilities are mixin classes (SignedURLs, ServerCopy, Resumable) that the
engine detects with `isinstance`, never by the provider's kind.
"""
import ipaddress
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator
from urllib.parse import urlsplit

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import UsageError
from cloudmesh.transfer.integrity import Claim, Proof
from cloudmesh.transfer.limits import LIST_PAGE
from cloudmesh.transfer.retry import Retry

MiB = 1024 * 1024


@dataclass
class ObjectInfo:
    """What a storage knows of one object. `md5` is the whole-object MD5 (hex) when the storage
    keeps one; `s3etag` the S3 multipart ETag of these bytes (an S3 multipart object's own ETag, or
    the one this tool stored beside a copy of such an object), by which two copies compare.
    `mode` holds a local file's permission bits (0o777 at most), which a local target gives its copy."""

    key: str
    size: int
    mtime: float | None = None
    md5: str | None = None
    etag: str | None = None
    content_type: str | None = None
    metadata: dict = field(default_factory=dict)
    s3etag: str | None = None
    mode: int | None = None


Listed = tuple[list[ObjectInfo], str | None]  # a page of a listing, and the cursor to list on from after it


@dataclass(frozen=True)
class Folder:
    """A sub-folder in a one-level listing (Storage.entries): its key, without the trailing '/'."""

    key: str


def entry_order(entry: ObjectInfo | Folder) -> str:
    """Where an entry of a one-level listing sorts: a folder as its key and '/', as its objects do."""
    return f"{entry.key}/" if isinstance(entry, Folder) else entry.key


class Reader(ABC):
    """An open object being read: its content type, metadata and the claim its bytes are proven
    by (integrity.Claim), then its bytes."""

    content_type: str | None = None
    metadata: dict = {}
    claim: Claim = Claim(Proof.NONE, reason="its storage makes no claim about its bytes")

    @abstractmethod
    def read(self, size: int) -> bytes:
        """Up to `size` bytes (fewer is allowed); b"" at the end."""

    def close(self) -> None:
        """Release the connection or file."""


@dataclass(frozen=True)
class Part:
    """A part an earlier run already uploaded: its size, MD5 (hex) and CRC64, where the target tells."""

    size: int | None = None
    md5: str | None = None
    crc64: int | None = None


class Upload(ABC):
    """A multi-part write; nothing is visible at the key until `complete` succeeds.

    `token` names the upload for a later run (see Resumable), and `uploaded` holds the parts a
    resumed upload already has (they count for `complete` unless sent again). `keeps_parts` says
    whether the target keeps parts after a failure, so that a resume can reuse them.
    """

    token: str | None = None
    uploaded: dict[int, Part] = {}
    keeps_parts: bool = False

    @abstractmethod
    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> str | None:
        """Store part `number` (1-based) that starts at byte `offset`, with a checksum the target
        checks on arrival (IntegrityError when the bytes that arrived differ): `md5` where it is at
        hand, else the storage's `part_checksum`. Parts may come in parallel. Returns the part's
        checksum as a resumed run compares it (see integrity.part_matches), or None."""

    def keep(self, number: int, data: bytes) -> None:
        """Count part `number` of `uploaded` (whose bytes are `data`) in the object instead of
        sending it again."""
        raise NotImplementedError(f"{self.__class__.__name__} has no uploaded parts to keep")

    def adopt(self, number: int) -> None:
        """Count part `number` of `uploaded` in the object as the target holds it, without its
        bytes (they were sent by another process: see cluster.py)."""
        raise NotImplementedError(f"{self.__class__.__name__} cannot complete parts sent elsewhere")

    @abstractmethod
    def complete(self, md5: bytes | None) -> None:
        """Make the object visible from its parts; `md5` is the digest of the whole object, where
        it was computed (it is then stored with the object)."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the parts; leaves nothing visible at the key."""


class Storage(ABC):
    """One configured storage. Subclasses set `kind`, their part-size limits and `from_config`."""

    kind: str = ""
    min_part_size: int = 1
    max_part_size: int = 2**62
    max_parts: int = 2**31
    max_object_size: int = 2**62
    max_key_bytes: int = 1024
    part_checksum: str | None = None  # what a part carries when its MD5 is not at hand: "md5" (required), a CRC, or nothing
    keeps_md5: bool = False  # whether the whole object's MD5, when computed, is stored with it
    reads_cheaply: bool = False  # whether reading an object costs no transfer (local disk): compared by reading
    objects_at_once: int | None = None  # objects in flight that still help (None: as many as a transfer allows)

    def __init__(self, name: str, retry: Retry = Retry()):
        self.name, self.retry = name, retry

    @classmethod
    @abstractmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "Storage":
        """Build the provider from its cloudmesh.yaml entry, retrying transient failures as `retry`
        says; raise ConfigError for missing fields."""

    @abstractmethod
    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key is under the folder `prefix` ('' is the whole storage), in key
        order (by code point, which is S3's UTF-8 byte order), from the first key after `after` on."""

    def entries(self, prefix: str) -> Iterator[ObjectInfo | Folder]:
        """The files and sub-folders directly in the folder `prefix` ('' is the root), in key order
        (see entry_order), as rclone's List(dir) gives one directory. A sub-folder is there when an
        object lies under it, so that it shows exactly when `list` shows something under it: one
        that holds nothing but folder markers is left out, like the markers themselves. This
        default collapses the whole `list`; a storage that can read one level overrides it."""
        start = f"{prefix}/" if prefix else ""
        last = None
        for info in self.list(prefix):
            name, nested, _ = info.key[len(start):].partition("/")
            if not nested:
                yield info
            elif name != last:
                last = name
                yield Folder(start + name)

    def pages(self, prefix: str, cursor: str | None = None) -> Iterator[Listed]:
        """The listing a page at a time, each page with the cursor to list on from after it (None
        after the last page): a transfer records it, so that a resumed one lists on from there.
        Here a cursor is the page's last key; a storage that lists by tokens overrides this."""
        page = []
        for info in self.list(prefix, after=cursor):
            page.append(info)
            if len(page) == LIST_PAGE:
                yield page, info.key
                page = []
        yield page, None

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object at `key`, or None when there is none."""

    @abstractmethod
    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        """Open the object at `key` (or a byte range of it) for reading; NotFound when it does not
        exist. A whole object's reader carries the claim it is proven by: with `strict`, only what
        the service itself computed (never an MD5 some writer stored), with exact part sizes."""

    @abstractmethod
    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        """Write a whole (small) object in one request; IntegrityError when the target reports
        other bytes than `md5` says."""

    @abstractmethod
    def begin(self, key: str, source: ObjectInfo) -> Upload:
        """Start a multi-part upload of an object shaped like `source`."""

    @abstractmethod
    def delete(self, key: str, etag: str | None = None) -> None:
        """Remove the object at `key`; with `etag`, only while it is still that version (Changed
        when it is not), where the storage can make a delete conditional."""

    def describe(self, info: ObjectInfo) -> ObjectInfo:
        """A listed object with what a lookup adds, where a listing lacks something (S3)."""
        return info

    def part_sizes(self, info: ObjectInfo) -> tuple[int, ...] | None:
        """The sizes of the parts behind `info.s3etag`, where the storage can tell (S3)."""
        return None

    def lost_metadata(self, info: ObjectInfo) -> tuple[str, ...]:
        """The names of `info`'s metadata that this storage cannot keep (so that it is never lost silently)."""
        return ()

    def check_key(self, key: str) -> None:
        """Raise UsageError when `key` cannot be stored here; the common rules for every kind."""
        if not key:
            raise UsageError(f"an empty object name cannot be stored in '{self.name}'")
        if "\x00" in key:
            raise UsageError(f"object name {key!r} contains a NUL character")
        if len(key.encode("utf-8")) > self.max_key_bytes:
            raise UsageError(f"object name '{key[:60]}...' is longer than {self.max_key_bytes} bytes")

    def place(self, key: str) -> tuple[tuple, str]:
        """Where `key` really lives, whatever this storage is called and however its address is
        spelled: (namespace, path). Two storages hold the same object when both are equal, and a
        key lies inside another's folder when the namespaces are equal and its path is under the
        other's. By default a storage shares its objects with no other."""
        return ("storage", self.name), key

    def may_share(self, other: "Storage") -> bool:
        """Whether `other`, though its place differs, might hold this storage's objects (the same
        bucket name at another spelling of what may be one service): a probe then decides."""
        return False

    def is_folder(self, prefix: str) -> bool:
        """True when `prefix` is the root or at least one object lies under it."""
        return not prefix or next(iter(self.list(prefix)), None) is not None

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=64)
def endpoint_place(url: str) -> tuple:
    """A service endpoint as (port, addresses), however its host is spelled: `localhost` and
    `127.0.0.1` are the one loopback service, and a name is the set of addresses it resolves to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        return port, frozenset([host])
    return port, frozenset("loopback" if ipaddress.ip_address(a.split("%")[0]).is_loopback else a for a in found)


class SignedURLs(ABC):
    """Optional capability: hand out a time-limited URL that reads an object without credentials,
    so that another service can fetch it directly."""

    @abstractmethod
    def signed_url(self, key: str, seconds: int = 3600) -> str | None:
        """A URL that reads `key` for `seconds`, or None when this storage cannot sign one."""


class ServerCopy(ABC):
    """Optional capability of a target: copy an object inside the clouds, so that its bytes never
    pass through this client."""

    @abstractmethod
    def server_copy(self, source: Storage, info: ObjectInfo, key: str, part_size: int) -> str | None:
        """Copy `info` from `source` to `key` and return how (e.g. 'server-copy'), or None when this
        pair cannot be copied that way (the engine then streams)."""

    def copies_from(self, source: Storage) -> bool:
        """Whether `server_copy` may copy from `source` (as far as is known before trying)."""
        return True


class Resumable(ABC):
    """Optional capability of a target: reopen, or discard, a multi-part upload that an earlier
    run began, by the `token` it recorded."""

    @abstractmethod
    def resume_upload(self, key: str, source: ObjectInfo, token: str, recorded: dict[int, str]) -> Upload | None:
        """The upload again, with `uploaded` filled from what the target holds; None when it is
        gone (the caller then begins afresh). `recorded` holds the checksums of the parts the caller
        knows it sent (integrity.part_record: MD5 hex, or 'crc64:...'), by which a target may
        recognise an upload that was completed already."""

    @abstractmethod
    def discard_upload(self, key: str, token: str) -> None:
        """Remove what the upload stored so far (it stops costing storage); nothing visible changes."""
