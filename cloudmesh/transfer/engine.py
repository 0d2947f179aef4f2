"""The transfer engine: stream each planned object through bounded memory, verified.

Every worker holds at most one part in memory, so a transfer uses about `parallel x part size`
whatever the object sizes. Each object's bytes are proven against what its source claims (see
integrity.py) as they stream, each byte hashed by MD5 once on most routes (the exceptions are in
the README), and every part is checked by the target on arrival. The proof comes before the object becomes visible at the
target: a failed one aborts the upload and leaves the target as it was. Only then is an object
marked done (and, for a move, recorded as copied, deleted at the source and then marked done),
so a crash at any point never loses an object and never records one as done that is not
verified. An object that nothing can prove is committed and recorded unverified, and a move
keeps its source. Outcomes reach the records in batches (group commit, records/batch.py): a crash
may forget that an object was done, which resume finds at the target, but a move's "copied" and
an upload's token are written before the step that needs them.

A run holds a lease on its transfer (a heartbeat in the records): it stops when the transfer is
cancelled, and a run whose process died is seen as interrupted. Large objects record their
upload's token before the first part, so that a resumed run reuses the parts already stored.
"""
import contextlib
import hashlib
import logging
import math
import mimetypes
import threading
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Iterable

from cloudmesh.transfer.compare import Reading, compare
from cloudmesh.transfer.executor import BoundedExecutor
from cloudmesh.transfer.errors import Changed, IntegrityError, NotFound, RecordsError, TransferError
from cloudmesh.transfer.integrity import Claim, Outcome, Proof, Verifier, part_matches
from cloudmesh.transfer.options import TransferConfig
from cloudmesh.transfer.planner import Item
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import MiB, ObjectInfo, Reader, Resumable, ServerCopy, Storage, Upload
from cloudmesh.transfer.records import Records
from cloudmesh.transfer.records.base import HEARTBEAT, Beat, ObjectState, State
from cloudmesh.transfer.records.batch import Batch
from cloudmesh.transfer.tally import ERRORS


SMALL = 1 * MiB  # objects up to this size take no memory slot: a worker holds at most this much
log = logging.getLogger(__name__)


def part_size(size: int, options: TransferConfig, target: Storage, claim: Claim | None = None) -> int:
    """The part size for an object: the chunk size, raised to respect the target's limits. An S3
    multipart source's own part size is taken instead where it is no larger than the chunk size and
    the target accepts it, so that each part's MD5, computed for the proof, is also the MD5 the
    target checks the part by."""
    if size > target.max_object_size:
        raise TransferError(f"an object of {size} bytes is too large for storage '{target.name}'")
    mirrored = mirror_size(claim)
    if mirrored and target.part_checksum and target.min_part_size <= mirrored <= options.chunksize \
            and math.ceil(size / mirrored) <= target.max_parts:
        return mirrored
    needed = math.ceil(size / target.max_parts / MiB) * MiB if size else 0
    chosen = max(options.chunksize, target.min_part_size, needed)
    if chosen > target.max_part_size:
        raise TransferError(f"an object of {size} bytes is too large for storage '{target.name}'")
    return chosen


def objects_at_once(options: TransferConfig, source: Storage, target: Storage) -> int:
    """Objects in flight: as many as the options allow, unless neither storage gains from that many
    (local disk to local disk: see Storage.objects_at_once)."""
    caps = (source.objects_at_once, target.objects_at_once)
    return options.objects if None in caps else min(options.objects, max(caps))


def mirror_size(claim: Claim | None) -> int | None:
    """The size of a multipart source's parts when all but the last have it, else None."""
    if claim is None or claim.proof is not Proof.PARTS or len(claim.parts) < 2:
        return None
    first = claim.parts[0]
    return first if all(p == first for p in claim.parts[:-1]) and claim.parts[-1] <= first else None


@dataclass
class Copied:
    """How one object was copied: the method, what proved its bytes (Proof.NONE: unverified, with
    `reason`), its MD5 where known, and warnings (metadata the target could not keep...)."""

    method: str
    proof: Proof | None
    md5: str | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)


class Doubted(IntegrityError):
    """The bytes read do not match a claim that is not the service's own (an MD5 a writer stored,
    or part sizes taken to be equal): the object is read once more by its strict claim."""

    def __init__(self, error: IntegrityError, claim: Claim):
        super().__init__(str(error))
        self.claim = claim


class Sent:
    """One object's parts in flight: the bytes uploaded so far, and the first part that failed
    (so that reading stops at once instead of after the whole object)."""

    def __init__(self, path: str):
        self.path, self.total, self.failed, self.lock = path, 0, None, threading.Lock()

    def add(self, nbytes: int) -> int:
        with self.lock:
            self.total += nbytes
            return self.total


class Halt(StrEnum):
    """Why a run stops before its objects are settled."""

    CANCEL = Beat.CANCEL.value  # cancelled (cancel, Ctrl-C): nothing new starts, open uploads are aborted
    LOST = Beat.LOST.value  # another process took the transfer over
    INTERRUPT = "interrupt"  # told to stop as a crash would: nothing is aborted, the record reads interrupted


class Stopped(Exception):
    """The run was told to stop (cancel, Ctrl-C, or another process took the transfer over)."""


class Lease(threading.Thread):
    """Renews an owner's hold on a transfer every HEARTBEAT seconds, from the moment it is taken
    (before planning, which can be long) until it is given up; a cancel request or a takeover
    by another process (Beat.CANCEL, Beat.LOST) is passed on to the engine once one listens."""

    def __init__(self, records: Records, transfer_id: str, owner: str):
        super().__init__(name=f"lease {transfer_id}", daemon=True)
        self.records, self.transfer_id, self.owner = records, transfer_id, owner
        self.done, self.lock = threading.Event(), threading.Lock()
        self.answer: str | None = None
        self.listener = None

    def beat(self) -> Beat:
        """Renew the lease; the records' answer."""
        return self.records.heartbeat(self.transfer_id, self.owner)

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT):
            self.check()

    def check(self) -> None:
        try:
            answer = self.beat()
        except Exception:
            return  # a busy or locked store: the next beat tries again
        if answer != Beat.RUN:
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


def shape(item: Item, reader: Reader) -> ObjectInfo:
    """What the target is told of an object it is written from: the source's own description, with
    what its open reader adds (the claim's MD5 or multipart ETag, content type, metadata)."""
    claim, info = reader.claim, item.source
    return ObjectInfo(key=info.key, size=info.size, mtime=info.mtime,
                      md5=claim.value if claim.proof is Proof.MD5 else None,
                      content_type=info.content_type or reader.content_type or mimetypes.guess_type(info.key)[0],
                      metadata=dict(reader.metadata or info.metadata),
                      s3etag=claim.value if claim.proof is Proof.PARTS else None, mode=info.mode)


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

    Objects run `options.objects` at a time (fewer where both storages gain nothing from more:
    objects_at_once), taken from the items as places free up (an iterator
    of any length is never held whole); the parts of large objects are uploaded by a second pool,
    whose `parallel` places bound the parts held in memory across the transfer (executor.py).
    Setting `stop` (Ctrl-C) cancels the run: no new object or part starts, open uploads are aborted.
    """

    def __init__(self, source: Storage, target: Storage, records: Records, options: TransferConfig,
                 progress: Progress = Progress(), stop: threading.Event | None = None):
        self.source, self.target, self.records, self.options = source, target, records, options
        self.progress = progress
        self.stop = stop or threading.Event()
        self.reason: Halt | None = None  # why the run stops
        self.unsettled = False  # an object that was not settled as asked (failed, or stopped)
        self.error: BaseException | None = None  # what stopped the run from inside an object (the records failed)

    def halt(self, reason: str) -> None:
        self.reason = self.reason or Halt(reason)
        self.stop.set()

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set() and self.reason in (None, Halt.CANCEL)

    def run(self, transfer_id: str, items: Iterable[Item], move: bool, lease: Lease) -> str:
        """Transfer every item under the lease; returns how the run ended (the caller records it):
        completed only if every object is settled, cancelled, failed; or Halt.LOST when another run
        took the transfer over, Halt.INTERRUPT when told to stop as a crash would."""
        self.transfer_id = transfer_id
        self.batch = Batch(self.records, transfer_id)
        lease.listen(self.halt)
        try:
            at_once = objects_at_once(self.options, self.source, self.target)
            with BoundedExecutor(self.options.parallel, self.options.parallel, "part") as self.parts, \
                    BoundedExecutor(at_once, 2 * at_once, "object") as objects:
                try:
                    for item in items:
                        if self.stop.is_set():
                            self.unsettled = True
                            break
                        objects.submit(self.transfer, item, move).add_done_callback(self.tally)
                except BaseException:
                    self.halt(Halt.INTERRUPT)
                    raise
        finally:
            self.batch.close()  # every outcome is in the records before the run is said to have ended
        if self.error is not None:
            raise self.error
        if self.reason in (Halt.LOST, Halt.INTERRUPT):
            return self.reason
        if not self.unsettled:
            return State.COMPLETED
        return State.CANCELLED if self.cancelled else State.FAILED

    def tally(self, future: Future) -> None:
        """Count an object's outcome; an error out of it (the records failed) stops the run."""
        error = future.exception()
        if error is not None:
            self.error = self.error or error
            self.halt(Halt.INTERRUPT)
        elif future.result() is not True:
            self.unsettled = True

    def transfer(self, item: Item, move: bool) -> bool | None:
        """Copy (unless already in sync, or copied by an earlier run) and for a move then delete one
        object; record the outcome and never raise. True when the object is settled as asked (an
        unverified copy is; an unverified move is not, since its source is kept); None when the run
        stopped before it finished."""
        record = item.record
        try:
            if self.stop.is_set():
                raise Stopped
            if record and record.state == ObjectState.COPIED:
                copied = Copied(record.method, Proof(record.proof) if record.proof else None, record.md5)
            elif item.skip:
                copied = Copied("skip", None, item.source.md5)
            else:
                copied = self.copy(item)
        except Stopped:
            return None
        except RecordsError:
            raise  # the records failed, not this object: the run stops (and reads interrupted)
        except (TransferError, OSError) as e:
            ERRORS.add(e.__class__.__name__)
            self.batch.update(item.path, state=ObjectState.FAILED, message=one_line(e))
            self.progress.update(0, 1)  # settled, as a cluster's progress counts it too
            return False
        except Exception as e:
            ERRORS.add("internal")
            log.exception("copying %s", item.path)
            self.batch.update(item.path, state=ObjectState.FAILED,
                                       message=f"{e.__class__.__name__} while copying")
            self.progress.update(0, 1)
            return False
        size = 0 if item.skip else item.source.size
        unverified = copied.proof is Proof.NONE
        message = f"copied, but not verified: {copied.reason}" if unverified else None
        fields = {"md5": copied.md5, "method": copied.method, "proof": copied.proof and copied.proof.value,
                  "warning": "; ".join(copied.warnings) or None, "bytes_done": size, "upload": None}
        if move and unverified:
            message += "; so its source was kept"
        elif move:
            self.batch.update(item.path, sync=True, state=ObjectState.COPIED, **fields)  # before the source goes
            message = self.delete_source(item)
        state = ObjectState.UNVERIFIED if unverified else ObjectState.FAILED if message else \
            ObjectState.SKIPPED if item.skip else ObjectState.DONE
        self.batch.update(item.path, state=state, message=message, **fields)
        self.progress.update(0, 1)
        return not (message and (move or not unverified))

    def delete_source(self, item: Item) -> str | None:
        """Delete a moved object's source, but only the version that was read and whose copy is
        proven (conditionally, where the storage can); the reason it was kept otherwise."""
        try:
            if item.skip and item.unproven and not self.proven_in_sync(item):
                return ("skipped, since the target is no older, but its bytes are not proven to be the "
                        "source's, so the source was kept")
            if self.changed(item.source):
                return "copied and verified, but the source changed since it was read, so it was kept"
            self.source.delete(item.source.key, etag=item.source.etag)
        except NotFound:
            pass
        except Changed:
            return "copied and verified, but the source changed since it was read, so it was kept"
        except (TransferError, OSError) as e:
            return f"copied and verified, but the source was not deleted: {one_line(e)}"
        return None

    def proven_in_sync(self, item: Item) -> bool:
        """Whether the target of an object skipped on its time holds the source's bytes, by what
        both keep (or by reading local files)."""
        there = self.target.stat(item.target_key)
        return there is not None and compare(self.source, item.source, self.target, there, Reading.CHEAP).same is True

    def changed(self, read: ObjectInfo) -> bool:
        """Whether the source object is no longer the version that was read: another ETag, size
        or time (to the second, as listings and lookups both give it). A copy onto the source
        itself through an alias of its storage rewrites it, which changes its time, so that a
        move never deletes bytes it did not copy."""
        now = self.source.stat(read.key)
        if now is None:
            return False
        if now.etag and read.etag and now.etag.strip('"') != read.etag.strip('"'):  # quoted or not
            return True
        stamps = (now.mtime, read.mtime)
        return now.size != read.size or (None not in stamps and int(now.mtime) != int(read.mtime))

    def copy(self, item: Item) -> Copied:
        """Copy one object inside the clouds where the target can, else stream it through bounded
        memory, proven. When a claim that is not the service's own fails (an MD5 a writer stored,
        part sizes taken to be equal), the object is read once more by the strict claim: if that
        proves the bytes, the stored claim was wrong, which the copy's warnings say."""
        self.target.check_key(item.target_key)
        size = item.source.size
        if isinstance(self.target, ServerCopy):
            psize = (item.record and item.record.part_size) or part_size(size, self.options, self.target)
            method = self.target.server_copy(self.source, item.source, item.target_key, psize)
            if method:
                self.progress.update(size, 0)
                return Copied(method, Proof.SERVER, item.source.md5)
        try:
            return self.stream(item)
        except Doubted as doubt:
            log.info("%s: %s; reading it again by what the source itself computed", item.path, doubt)
            if item.record:
                item.record = replace(item.record, upload=None, part_size=None)
            copied = self.stream(item, doubted=doubt)
            if doubt.claim.proof is Proof.MD5 and copied.md5 != doubt.claim.value:
                copied.warnings.insert(0, f"the source's stored MD5 {doubt.claim.value} is not the MD5 of its "
                                          f"bytes ({copied.md5}, proven by {copied.proof.value})")
            return copied

    def stream(self, item: Item, doubted: Doubted | None = None) -> Copied:
        """Read one object once, proving it by its claim (by the strict one after a claim was
        `doubted`, computing its whole MD5 too), and write it in one request or in parts. When
        nothing but the doubted claim could prove the object, its failure stands."""
        size = item.source.size
        reader = self.source.open(item.source.key, strict=doubted is not None)
        try:
            claim = reader.claim
            if doubted and claim.proof is Proof.NONE:
                raise doubted
            shaped = shape(item, reader)
            whole = doubted is not None or (self.target.keeps_md5 and not claim.spends_md5)
            verifier = Verifier(claim, size, f"'{item.path}'", whole)
            psize = (item.record and item.record.part_size) or part_size(size, self.options, self.target, claim)
            if size <= psize:
                with self.parts.place() if size > SMALL else contextlib.nullcontext():
                    data = read_exact(reader, size + 1)
                    self.check_length(item, len(data))
                    verifier.update(data)
                    outcome = self.prove(verifier, doubted)
                    md5 = outcome.md5 or (verifier.part_md5(0, size) or hashlib.md5(data).digest()).hex()
                    self.target.put(item.target_key, data, shaped, bytes.fromhex(md5))
                    outcome.md5 = md5
                self.progress.update(size, 0)
            else:
                outcome = self.upload(item, reader, psize, shaped, verifier, doubted)
        finally:
            reader.close()
        lost = self.target.lost_metadata(shaped)
        warnings = [f"metadata the target cannot keep was left out: {', '.join(lost)}"] if lost else []
        return Copied("stream", outcome.proof, outcome.md5, outcome.reason, warnings)

    @staticmethod
    def prove(verifier: Verifier, doubted: Doubted | None) -> Outcome:
        """The verifier's outcome; a failed claim that is not strict is Doubted (read once more).
        After a doubted claim, bytes that nothing else proves fail as the doubted claim did."""
        try:
            outcome = verifier.finish()
        except IntegrityError as e:
            if verifier.claim.strict:
                raise
            raise Doubted(e, verifier.claim) from None
        if doubted and outcome.proof is Proof.NONE:
            raise doubted
        return outcome

    def open_upload(self, item: Item, shaped: ObjectInfo, psize: int) -> tuple[Upload, dict[int, str]]:
        """The upload an earlier run left for this object, when the target still has it, with the
        checksums recorded for its parts; else a new one, whose token is recorded before any part is sent."""
        token = item.record and item.record.upload
        if token and isinstance(self.target, Resumable):
            recorded = self.records.parts(self.transfer_id, item.path, token)
            upload = self.target.resume_upload(item.target_key, shaped, token, recorded)
            if upload is not None:
                return upload, recorded
            self.target.discard_upload(item.target_key, token)
        upload = self.target.begin(item.target_key, shaped)
        if upload.token:
            self.batch.update(item.path, sync=True, upload=upload.token, part_size=psize)  # before its first part
        return upload, {}

    def upload(self, item: Item, reader: Reader, psize: int, shaped: ObjectInfo, verifier: Verifier,
               doubted: Doubted | None) -> Outcome:
        """Read parts in order, proving the object as they stream; upload them in parallel, each
        with its MD5 where the proof computed it (or the target needs one), else the target's CRC;
        except parts the target already holds with the same size and checksum (as the target
        reports it, or as recorded when the part was sent: Azure lists blocks without one). A place
        is taken before a part is read and given back once it is uploaded. The object is proven
        before it is completed.

        A failed upload is aborted when its bytes are wrong, when the run is cancelled, or when the
        target keeps no parts; otherwise it stays open for `resume` (and `cleanup`)."""
        upload, recorded = self.open_upload(item, shaped, psize)
        pending, offset, sent = [], 0, Sent(item.path)
        try:
            while offset < item.source.size:
                if sent.failed:
                    raise sent.failed
                if self.stop.is_set():
                    raise Stopped
                with self.parts.place() as place:  # given back once its part is uploaded, or at once
                    data = read_exact(reader, min(psize, item.source.size - offset))
                    if not data:
                        break
                    verifier.update(data)
                    number = offset // psize + 1
                    md5 = verifier.part_md5(offset, len(data))
                    there = upload.uploaded.get(number)
                    if there and there.size in (None, len(data)) and \
                            (there.md5 == (md5 or hashlib.md5(data).digest()).hex() if there.md5
                             else part_matches(recorded.get(number), data)):
                        upload.keep(number, data)
                        self.settle_part(sent, len(data))
                    else:
                        compute = md5 is None and (self.target.part_checksum == "md5" or not verifier.md5_spent)
                        pending.append(place.submit(self.put_part, upload, number, offset, data, md5, compute, sent))
                offset += len(data)
            self.check_length(item, offset + len(reader.read(1)))
            for future in pending:
                future.result()
            outcome = self.prove(verifier, doubted)
            upload.complete(bytes.fromhex(outcome.md5) if outcome.md5 else None)
        except BaseException as e:
            for future in pending:
                future.cancel()
            wait(pending)
            if isinstance(e, IntegrityError) or self.cancelled or not upload.keeps_parts:
                try:
                    upload.abort()
                except (TransferError, OSError):
                    pass  # its token stays recorded, for `cleanup`
                else:
                    self.batch.update(item.path, upload=None)
            raise
        return outcome

    def put_part(self, upload: Upload, number: int, offset: int, data: bytes, md5: bytes | None, compute: bool,
                 sent: Sent) -> None:
        """Upload one part (in the part pool, so that parts are hashed in parallel), then record it."""
        try:
            if compute:
                md5 = hashlib.md5(data).digest()
            checksum = upload.put_part(number, offset, data, md5)
        except BaseException as e:
            sent.failed = sent.failed or e
            raise
        if upload.token:
            self.records.part_done(self.transfer_id, sent.path, upload.token, number, checksum or "",
                                   sent.add(len(data)))
            self.progress.update(len(data), 0)
        else:
            self.settle_part(sent, len(data))

    def settle_part(self, sent: Sent, nbytes: int) -> None:
        self.batch.update(sent.path, bytes_done=sent.add(nbytes))
        self.progress.update(nbytes, 0)

    def check_length(self, item: Item, length: int) -> None:
        if length != item.source.size:
            raise IntegrityError(f"read {length} bytes of '{item.path}' but the source has {item.source.size}")


def one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, TransferError) else (getattr(error, "strerror", None) or str(error))
    return " ".join(text.split()) or error.__class__.__name__
