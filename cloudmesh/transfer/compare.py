"""Whether two objects hold the same bytes (for --sync, resume and `check`), by what their
storages keep of them, reading an object only where nothing kept compares.

Kept proofs compare when both sides keep a whole-object MD5 (S3 single-part ETag or md5 /
md5chksum metadata, Azure Content-MD5), or both carry the same S3 multipart ETag (S3's own, or
the one this tool stores beside a copy of such an object). Otherwise one side is read and the
other's kind of proof computed over it: its MD5, or its multipart ETag over the other's part sizes.
"""
import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cloudmesh.transfer.integrity import composite_etag
from cloudmesh.transfer.providers import MiB, ObjectInfo, Storage

READ_SIZE = 8 * MiB


class Reading(StrEnum):
    """Which objects a comparison may read where nothing kept compares: those on local disk, any,
    or (`download`) both whole, ignoring what the storages keep."""

    CHEAP = "cheap"
    ANY = "any"
    DOWNLOAD = "download"


@dataclass(frozen=True)
class Verdict:
    """`same` is None when nothing kept compares and reading was not allowed; `how` says what decided."""

    same: bool | None
    how: str


def compare(source: Storage, s: ObjectInfo, target: Storage, t: ObjectInfo, reading: Reading) -> Verdict:
    """Whether object `s` of `source` and object `t` of `target` hold the same bytes."""
    if s.size != t.size:
        return Verdict(False, "size")
    if reading is Reading.DOWNLOAD:
        return Verdict(digest(source, s) == digest(target, t), "download")
    verdict = kept(s, t)
    if verdict is None or not verdict.same:  # a lookup adds what a listing lacks (S3 metadata, encryption)
        s, t = source.describe(s), target.describe(t)
        verdict = kept(s, t)
    if verdict is not None:
        return verdict
    readable = [side for side in ((source, s, target, t), (target, t, source, s))
                if reading is Reading.ANY or (reading is Reading.CHEAP and side[0].reads_cheaply)]
    for storage, info, other, theirs in readable:
        if theirs.md5:
            return Verdict(digest(storage, info) == theirs.md5, "read")
        if theirs.s3etag:
            sizes = other.part_sizes(theirs)
            if sizes and sum(sizes) == info.size:
                return Verdict(digest(storage, info, sizes) == theirs.s3etag, "read")
    if len(readable) == 2:
        return Verdict(digest(source, s) == digest(target, t), "read")
    return Verdict(None, "no checksum that both keep")


def kept(s: ObjectInfo, t: ObjectInfo) -> Verdict | None:
    """The verdict of the proofs both objects keep, or None when they keep none in common."""
    if s.md5 and t.md5:
        return Verdict(s.md5 == t.md5, "md5")
    if s.s3etag and s.s3etag == t.s3etag:
        return Verdict(True, "s3etag")
    return None


def digest(storage: Storage, info: ObjectInfo, parts: tuple[int, ...] | None = None) -> str:
    """The MD5 (hex) of an object read whole, or with `parts` its S3 multipart ETag over those sizes.
    It is read as a range of its size: a comparison needs no proof of the read (a corrupted one
    only makes the objects differ), so the lookups that build one are spared."""
    if not info.size:
        return composite_etag([hashlib.md5().digest()] * len(parts)) if parts else hashlib.md5().hexdigest()
    reader = storage.open(info.key, 0, info.size)
    try:
        if not parts:
            whole = hashlib.md5()
            while chunk := reader.read(READ_SIZE):
                whole.update(chunk)
            return whole.hexdigest()
        md5s = []
        for size in parts:
            part, left = hashlib.md5(), size
            while left and (chunk := reader.read(min(READ_SIZE, left))):
                part.update(chunk)
                left -= len(chunk)
            md5s.append(part.digest())
        return composite_etag(md5s)
    finally:
        reader.close()
