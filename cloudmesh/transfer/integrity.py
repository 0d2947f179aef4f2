"""Proofs: how the bytes read of an object are shown to be the bytes its source holds.

A source says what it can prove an object by (a `Claim`): the MD5 of the whole object, the MD5s
of its multipart parts behind an S3 ETag, the MD5 the service computes for each range it sends,
a CRC, or nothing at all. A `Verifier` hashes the bytes once, in the order they stream, by what
the claim needs, and `finish` proves them (or raises IntegrityError) before the object is
committed at the target. MD5 is the expensive hash (about 0.75 GB/s here); each byte is put
through it at most once, and the MD5 of a part computed for the proof is handed on to the target
as that part's Content-MD5 (see `part_md5`).
"""
import base64
import hashlib
import zlib
from dataclasses import dataclass, field
from enum import StrEnum

from cloudmesh.transfer.errors import IntegrityError

MiB = 1024 * 1024
RANGE_MD5_LIMIT = 4 * MiB  # Azure computes the MD5 (or CRC64) of ranges of at most this size


class Proof(StrEnum):
    """What an object's bytes were proven by; recorded per object."""

    MD5 = "md5"  # the whole-object MD5 the source claims (S3 single-part ETag or md5 metadata, Azure Content-MD5)
    PARTS = "etag-parts"  # an S3 multipart ETag: the MD5 of the MD5s of the source's parts
    RANGES = "range-md5"  # the MD5 the service computed of each range it sent
    CRC = "crc"  # a CRC the source keeps (S3 additional checksums)
    READ = "read"  # a local file: what was read is the source
    SERVER = "server-copy"  # the cloud copied its own bytes (see README: what is compared, per copy)
    NONE = "none"  # nothing proves it: the object is recorded unverified


SPENDS_MD5 = (Proof.MD5, Proof.PARTS, Proof.RANGES)

def crc32c(data, crc: int = 0) -> int:
    from awscrt import checksums  # imported on first use: it costs 30 ms at every start
    return checksums.crc32c(data, crc)


def crc64(data, crc: int = 0) -> int:
    """CRC-64/NVME, which Azure calls its storage CRC64 (x-ms-content-crc64) and S3 CRC64NVME."""
    from awscrt import checksums
    return checksums.crc64nvme(data, crc)


def combine_crc64(first: int, second: int, second_length: int) -> int:
    """The CRC64 of two byte strings one after the other, from the CRC64 of each."""
    from awscrt import checksums
    return checksums.combine_crc64nvme(first, second, second_length)


CRCS = {"crc32": zlib.crc32, "crc32c": crc32c, "crc64nvme": crc64}
CRC_BYTES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8}


def composite_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives an object completed from parts with these MD5s."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def md5_hex(value: str | None) -> str | None:
    """An MD5 as 32 lowercase hex digits, from hex or base64 (rclone's md5chksum); None if it is not one."""
    value = (value or "").strip().strip('"')
    if len(value) == 32:
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 16 else None


@dataclass
class Claim:
    """What a source says about the bytes of one object, by which they are proven.

    MD5: `value` is the whole object's MD5 (hex). PARTS: `value` is the ETag and `parts` the sizes
    of the source's parts; `assumed` when all but the last part were taken to have the first one's
    size. RANGES: `segment` is the range size and `ranges` receives, as the reader opens each range,
    the MD5 the service sent for it (None when it sent none). CRC: `algorithm` and `value` (base64)
    of the whole object, or with `parts` a composite CRC. NONE: `reason` says why nothing proves it.
    `strict` when the claim is what the service itself computed, with exact part sizes: when a
    claim that is not strict fails, the object is read once more by its strict claim.
    """

    proof: Proof
    value: str | None = None
    parts: tuple[int, ...] = ()
    assumed: bool = False
    segment: int = 0
    ranges: list = field(default_factory=list)
    algorithm: str | None = None
    reason: str | None = None
    strict: bool = False

    @property
    def spends_md5(self) -> bool:
        return self.proof in SPENDS_MD5


@dataclass
class Outcome:
    """How an object's bytes were proven: by what, the whole-object MD5 where it was computed, and
    for an unverified object why."""

    proof: Proof
    md5: str | None = None
    reason: str | None = None


class Verifier:
    """Hashes one object's bytes as they stream, in order, by what its claim needs, and proves them.

    `whole` asks for the whole object's MD5 as well when the claim does not need it (for the target
    to store, or to tell a wrong stored MD5 from a corrupted read); the engine asks for it only
    where no byte is then hashed twice, but after a doubted claim.
    """

    def __init__(self, claim: Claim, size: int, name: str, whole: bool = False):
        self.claim, self.size, self.name = claim, size, name
        self.whole = hashlib.md5() if claim.proof is Proof.MD5 or whole else None
        self.offset = 0
        self.segments: list[bytes] = []  # the finished segments' MD5s (or CRCs), in order
        self.ends: list[int] = []  # where each finished segment ends
        self.current = None
        self.crc = 0
        self.limits = self.segment_ends()

    @property
    def md5_spent(self) -> bool:
        """Whether every byte already goes through MD5 (so a part's MD5 costs a second pass)."""
        return self.claim.spends_md5 or self.whole is not None

    def segment_ends(self) -> list[int]:
        """The offsets at which the claim's segments end."""
        if self.claim.proof is Proof.RANGES:
            return list(range(self.claim.segment, self.size, self.claim.segment)) + [self.size] if self.size else []
        ends, offset = [], 0
        for part in self.claim.parts:
            offset += part
            ends.append(offset)
        return ends

    def new_segment(self):
        if self.claim.proof is Proof.CRC:
            return [0]
        return hashlib.md5()

    def update(self, data) -> None:
        """Hash the next bytes of the object."""
        view = memoryview(data)
        if self.whole is not None:
            self.whole.update(view)
        if self.claim.proof is Proof.CRC and not self.claim.parts:
            self.crc = CRCS[self.claim.algorithm](view, self.crc)
        elif self.limits:
            self.split(view)
        self.offset += len(view)

    def split(self, view: memoryview) -> None:
        """Feed bytes to the segment they belong to, closing each segment at its end."""
        offset = self.offset
        while view:
            index = len(self.segments)
            end = self.limits[index] if index < len(self.limits) else self.size
            take = view[:max(0, end - offset)] if index < len(self.limits) else view
            if self.current is None:
                self.current = self.new_segment()
            if self.claim.proof is Proof.CRC:
                self.current[0] = CRCS[self.claim.algorithm](take, self.current[0])
            else:
                self.current.update(take)
            offset += len(take)
            view = view[len(take):]
            if index < len(self.limits) and offset == end:
                self.close_segment(end)
            elif not take:
                break  # bytes beyond the claimed size: the length check reports them

    def close_segment(self, end: int) -> None:
        digest = self.current if isinstance(self.current, list) else self.current.digest()
        self.current = None
        self.segments.append(digest)
        self.ends.append(end)
        if self.claim.proof is Proof.RANGES:
            self.check_range(len(self.segments) - 1, digest)

    def check_range(self, index: int, digest: bytes) -> None:
        """Compare a range with the MD5 the service sent for it, as soon as it is complete."""
        sent = self.claim.ranges[index] if index < len(self.claim.ranges) else None
        if sent is not None and sent != digest:
            start = self.ends[index - 1] if index else 0
            raise IntegrityError(f"the bytes read of {self.name} do not match the MD5 the source sent for "
                                 f"bytes {start}-{self.ends[index] - 1}")

    def part_md5(self, offset: int, length: int) -> bytes | None:
        """The MD5 computed for the proof of exactly these bytes, if they are one of its segments."""
        if self.claim.proof not in (Proof.PARTS, Proof.RANGES) or not self.ends:
            return None
        end = offset + length
        for index in range(len(self.ends) - 1, -1, -1):
            if self.ends[index] == end:
                start = self.ends[index - 1] if index else 0
                return self.segments[index] if start == offset else None
            if self.ends[index] < end:
                return None
        return None

    @property
    def md5(self) -> str | None:
        """The whole object's MD5 (hex), where it was computed."""
        return self.whole.hexdigest() if self.whole is not None else None

    def finish(self) -> Outcome:
        """Prove the bytes read against the claim; IntegrityError when they differ from it. Called
        once every byte was read, before the object is committed at the target."""
        claim, md5 = self.claim, self.md5
        if self.offset != self.size:
            raise IntegrityError(f"read {self.offset} bytes of {self.name} but the source has {self.size}")
        if claim.parts and sum(claim.parts) != self.size:
            raise IntegrityError(f"the parts the source names for {self.name} do not add up to its size")
        while self.limits and len(self.segments) < len(self.limits) and self.limits[len(self.segments)] == self.offset:
            self.current = self.current or self.new_segment()  # a last part of no bytes
            self.close_segment(self.offset)
        if claim.proof is Proof.MD5:
            if md5 != claim.value:
                raise IntegrityError(f"the bytes read of {self.name} do not match the source's MD5")
        elif claim.proof is Proof.PARTS:
            if composite_etag(self.segments) != claim.value.strip('"'):
                layout = " (read as parts of the first part's size)" if claim.assumed else ""
                raise IntegrityError(f"the bytes read of {self.name} do not match the source's multipart ETag{layout}")
        elif claim.proof is Proof.RANGES:
            missing = sum(1 for i in range(len(self.segments)) if i >= len(claim.ranges) or claim.ranges[i] is None)
            if missing:
                return Outcome(Proof.NONE, md5, f"the source sent no MD5 for {missing} of {len(self.segments)} ranges")
        elif claim.proof is Proof.CRC:
            if self.crc_value() != claim.value:
                raise IntegrityError(f"the bytes read of {self.name} do not match the source's {claim.algorithm.upper()}")
        elif claim.proof is Proof.NONE:
            return Outcome(Proof.NONE, md5, claim.reason)
        return Outcome(claim.proof, md5)

    def crc_value(self) -> str:
        """The CRC of the bytes read, as S3 writes it: of the whole object, or composite over the parts."""
        width = CRC_BYTES[self.claim.algorithm]
        if not self.claim.parts:
            return base64.b64encode(self.crc.to_bytes(width, "big")).decode()
        joined = b"".join(segment[0].to_bytes(width, "big") for segment in self.segments)
        whole = CRCS[self.claim.algorithm](joined, 0)
        return f"{base64.b64encode(whole.to_bytes(width, 'big')).decode()}-{len(self.segments)}"


def divisible(claim: Claim, part_size: int) -> bool:
    """Whether an object can be proven from the MD5s of its parts of `part_size`, each computed by
    whoever read it (cluster.py spreads such an object's parts over several hosts): a local file
    (what was read is the source), an object nothing proves, or an S3 multipart object whose parts
    are those parts. A whole-object MD5 or CRC needs every byte hashed in order, in one place."""
    if claim.proof in (Proof.READ, Proof.NONE):
        return True
    parts = claim.parts
    return claim.proof is Proof.PARTS and len(parts) > 1 and all(p == part_size for p in parts[:-1]) and \
        0 < parts[-1] <= part_size


def parts_outcome(claim: Claim, part_md5s: list[bytes], name: str) -> Outcome:
    """Prove an object read in parts by others from their MD5s (a `divisible` claim); IntegrityError
    when they do not make up the source's multipart ETag."""
    if claim.proof is Proof.PARTS:
        if composite_etag(part_md5s) != claim.value.strip('"'):
            raise IntegrityError(f"the bytes read of {name} do not match the source's multipart ETag")
        return Outcome(Proof.PARTS)
    return Outcome(claim.proof, reason=claim.reason)


def part_record(md5: bytes | None, crc: int | None) -> str | None:
    """A part's checksum as the records keep it for a resumed run: its MD5 (hex), else 'crc64:' and its CRC64."""
    if md5 is not None:
        return md5.hex()
    return None if crc is None else f"crc64:{crc:016x}"


def part_matches(recorded: str | None, data) -> bool:
    """Whether `data` has the checksum recorded for a part (see part_record)."""
    if not recorded:
        return False
    if recorded.startswith("crc64:"):
        return recorded == f"crc64:{crc64(data):016x}"
    return recorded == hashlib.md5(data).hexdigest()
