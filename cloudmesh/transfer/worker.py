"""The tasks a Dask worker runs for a transfer spread over a cluster (cluster.py submits them).

A task names its storages and carries no credentials: each worker opens them from its own
cloudmesh.yaml, and its own record store (the same one for every worker: MongoDB across hosts,
SQLite on one host). The records, not Dask, say what is done: a task that runs again (its worker
died) skips the objects recorded as settled and reuses the parts recorded for an open upload,
as `resume` does. A task stops at a cancel, or once its transfer's owner lost it or stopped
renewing its lease (the client died), both seen in the records.
"""
import hashlib
import threading
from dataclasses import dataclass

from cloudmesh.transfer.engine import Engine, Lease, read_exact
from cloudmesh.transfer.errors import IntegrityError, TransferError
from cloudmesh.transfer.options import TransferConfig
from cloudmesh.transfer.planner import Item
from cloudmesh.transfer.providers import Resumable, Storage
from cloudmesh.transfer.records import Records, open_records
from cloudmesh.transfer.records.base import SETTLED, Beat, State
from cloudmesh.transfer.retry import Retry
from cloudmesh.transfer.storages import Storages


@dataclass(frozen=True)
class Job:
    """What every task of one transfer needs: its id and owner, its storages by name, and its options."""

    transfer_id: str
    owner: str
    source: str
    target: str
    move: bool
    options: TransferConfig


@dataclass(frozen=True)
class Done:
    """How a task ended (a run's state), and what it settled and sent, as the records count it."""

    state: str
    objects: int = 0
    bytes: int = 0


class Watch(Lease):
    """A task's look at its transfer's lease, as the owner's Lease beats but without renewing it
    (Records.watch), passed on to a listener the same way; it looks once before the task starts."""

    def __init__(self, records: Records, job: Job):
        super().__init__(records, job.transfer_id, job.owner)
        self.check()
        self.start()

    def beat(self) -> Beat:
        return self.records.watch(self.transfer_id, self.owner)


_opened: dict[int, tuple[Storages, Records]] = {}
_lock = threading.Lock()


def opened(job: Job) -> tuple[Storage, Storage, Records]:
    """The job's storages and the records, opened once per worker process from its own configuration."""
    with _lock:
        if job.options.retries not in _opened:
            _opened[job.options.retries] = (Storages(Retry(attempts=job.options.retries + 1)), open_records())
        storages, records = _opened[job.options.retries]
        return storages.storage(job.source), storages.storage(job.target), records


def address() -> str:
    """This worker's address, by which status counts its work."""
    from distributed import get_worker
    return get_worker().address


def run_batch(job: Job, items: list[Item]) -> Done:
    """Copy (or move) a batch of objects with the engine, as one host would; objects the records
    already show settled are left alone."""
    source, target, records = opened(job)
    paths = [item.path for item in items]
    before = records.found(job.transfer_id, paths)
    todo = []
    for item in items:
        row = before.get(item.path)
        if row is not None and row.state not in SETTLED:
            item.record = row
            todo.append(item)
    state = State.COMPLETED
    if todo:
        watch = Watch(records, job)
        try:
            state = Engine(source, target, records, job.options).run(job.transfer_id, todo, job.move, watch)
        finally:
            watch.end()
    after = records.found(job.transfer_id, [item.path for item in todo])
    settled = [row for row in after.values() if row.state in SETTLED]
    done = Done(state, len(settled), sum(row.bytes_done for row in settled))
    records.worker_done(job.transfer_id, address(), done.objects, done.bytes)
    return done


def run_parts(job: Job, item: Item, token: str, psize: int, numbers: range) -> Done:
    """Send parts `numbers` of one object to its open upload `token`, each read from its range of
    the source, with its MD5 (which the target checks it by, and the client proves the object by),
    and record each; a part recorded and held by the target with the same MD5 is not sent again."""
    source, target, records = opened(job)
    if not isinstance(target, Resumable):
        raise TransferError(f"storage '{target.name}' cannot take parts sent from several hosts")
    watch, stop = Watch(records, job), threading.Event()
    watch.listen(lambda answer: stop.set())
    size, sent = item.source.size, 0
    try:
        recorded = records.parts(job.transfer_id, item.path, token)
        upload = target.resume_upload(item.target_key, item.source, token, recorded)
        if upload is None:
            raise TransferError(f"the upload of '{item.path}' is gone from storage '{target.name}'")
        start = (numbers.start - 1) * psize
        reader = source.open(item.source.key, start, min(size, (numbers.stop - 1) * psize) - start)
        try:
            for number in numbers:
                if stop.is_set():
                    return Done(State.CANCELLED, 0, sent)
                offset = (number - 1) * psize
                length = min(psize, size - offset)
                data = read_exact(reader, length)
                if len(data) != length:
                    raise IntegrityError(f"read {offset + len(data)} bytes of '{item.path}' but the source has {size}")
                md5 = hashlib.md5(data).hexdigest()
                there = upload.uploaded.get(number)
                if there and there.size in (None, length) and (there.md5 or recorded.get(number)) == md5:
                    continue
                upload.put_part(number, offset, data, bytes.fromhex(md5))
                records.part_done(job.transfer_id, item.path, token, number, md5, None, length)
                sent += length
        finally:
            reader.close()
    finally:
        watch.end()
        records.worker_done(job.transfer_id, address(), 0, sent)
    return Done(State.COMPLETED, 0, sent)
