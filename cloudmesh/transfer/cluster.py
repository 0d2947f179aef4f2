"""One transfer spread over the worker processes of a Dask cluster (`--cluster`, `--workers`).

The client lists and records the objects as on one host (pipeline.py), then submits them as
tasks (worker.py), as Hadoop DistCp's dynamic strategy does: batches bounded by objects and
bytes, many more than there are workers, at most CLUSTER_TASKS_PER_THREAD per worker thread in
flight, so that fast workers take more. An object of more than CLUSTER_SPREAD_PARTS parts, whose
source claim can be proven from its parts' MD5s (integrity.divisible), is spread: the client
opens its upload, tasks of up to CLUSTER_TASK_PARTS parts (fewer, so that every worker thread gets
two) send ranges of parts from any worker, and the client proves the object
from the recorded MD5s and completes it (once, through the engine's own steps for a copy or a
move). Dask's "done" is never the proof: the records are, and a transfer completes only when
they show every object settled. This module is imported only for a transfer on a cluster.
"""
import logging
import math
import threading
import time
from dataclasses import replace

import distributed

from cloudmesh.transfer.engine import Copied, Engine, Halt, Lease, Stopped, mirror_size, one_line, part_size, shape
from cloudmesh.transfer.errors import IntegrityError, TransferError, UsageError
from cloudmesh.transfer.executor import BoundedExecutor
from cloudmesh.transfer.integrity import Claim, divisible, parts_outcome
from cloudmesh.transfer.limits import (CLUSTER_BATCH_BYTES, CLUSTER_BATCH_OBJECTS, CLUSTER_CONNECT, CLUSTER_GONE,
                                       CLUSTER_SPREAD, CLUSTER_SPREAD_PARTS, CLUSTER_TASK_PARTS,
                                       CLUSTER_TASKS_PER_THREAD, MAX_CHUNK)
from cloudmesh.transfer.planner import Item
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import ObjectInfo, Resumable, ServerCopy
from cloudmesh.transfer.records.base import HEARTBEAT, Beat, ObjectState, State, progress_of
from cloudmesh.transfer.records.batch import Batch
from cloudmesh.transfer.worker import Job, run_batch, run_parts

log = logging.getLogger(__name__)
SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def to_log_file(record: logging.LogRecord) -> bool:
    record.stderr = False  # see logs.shown_on_stderr
    return True


def quiet_dask() -> None:
    """Dask's own lines (it reconnects, a worker is lost) go to the log file, not straight to
    stderr, where the command writes one line per failure."""
    for name in [name for name in logging.root.manager.loggerDict if name.split(".")[0] == "distributed"]:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        if to_log_file not in logger.filters:
            logger.addFilter(to_log_file)


class Cluster:
    """A client of a Dask scheduler at `address`, or of a LocalCluster of `workers` processes on
    this host started for the transfer (and stopped with it)."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.local = None
        quiet_dask()
        if workers:
            self.local = distributed.LocalCluster(n_workers=workers, processes=True, host="127.0.0.1",
                                                  dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            address = self.local.scheduler_address
        elif not address or not address.startswith(SCHEMES) or not address.split("://", 1)[1]:
            raise UsageError(f"cluster '{address}' is not a Dask scheduler address such as tcp://10.0.0.5:8786")
        self.address = address
        try:
            self.client = distributed.Client(address, timeout=CLUSTER_CONNECT, set_as_default=False)
        except (OSError, TimeoutError) as e:
            self.close()
            raise TransferError(f"cannot reach the Dask scheduler at {address}: {e.__class__.__name__}") from None

    @property
    def dashboard(self) -> str | None:
        return self.client.dashboard_link if self.local else None

    def threads(self) -> int:
        """The worker threads of the cluster now (workers may come and go during a transfer)."""
        return sum(self.client.nthreads().values())

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.local is not None:
            self.local.close()


class Counter(threading.Thread):
    """Shows the whole cluster's progress in this run: every second, what the records' bytes and
    settled objects grew by since it started (what earlier runs did is not this run's progress)."""

    def __init__(self, records, transfer_id: str, progress: Progress):
        super().__init__(name=f"progress {transfer_id}", daemon=True)
        self.records, self.transfer_id, self.progress = records, transfer_id, progress
        self.done, self.shown = threading.Event(), progress_of(records.status(transfer_id))
        self.start()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT):
            self.count()

    def count(self) -> None:
        try:
            now = progress_of(self.records.status(self.transfer_id))
        except Exception as e:
            log.debug("the progress of transfer %s was not read: %s", self.transfer_id, e)  # the run says what matters
            return
        self.progress.update(now[0] - self.shown[0], now[1] - self.shown[1])
        self.shown = now

    def end(self) -> None:
        self.done.set()
        self.join()
        self.count()


class ClusterEngine(Engine):
    """The engine, with the work done by the cluster's workers: `run` submits tasks instead of
    running objects here; spread objects are opened, proven and completed here."""

    def __init__(self, source, target, records, options, progress: Progress, stop: threading.Event,
                 cluster: Cluster):
        super().__init__(source, target, records, options, Progress(), stop)  # the Counter shows progress
        self.cluster, self.shown = cluster, progress
        self.room = threading.Condition()
        self.inflight: set = set()
        self.plans: dict[str, tuple[Claim, ObjectInfo, int]] = {}
        self.lost_since: float | None = None
        self.failure: str | None = None  # why the first task that failed did
        self.gone: str | None = None  # the scheduler was lost

    def run(self, transfer_id: str, items, move: bool, lease: Lease) -> str:
        self.transfer_id = transfer_id
        self.job = Job(transfer_id, lease.owner, self.source.name, self.target.name, move, self.options)
        counter = Counter(self.records, transfer_id, self.shown)  # first: it reads the records, which may fail
        self.batch = Batch(self.records, transfer_id)
        lease.listen(self.halt)
        try:
            with BoundedExecutor(self.options.parallel, self.options.parallel, "part") as self.parts, \
                    BoundedExecutor(CLUSTER_SPREAD, 2 * CLUSTER_SPREAD, "spread") as self.spread:
                try:
                    self.submit(items, move)
                    self.drain()
                except Stopped:
                    pass  # the scheduler is gone: self.gone says so once the objects here have stopped
                except BaseException:
                    self.halt(Halt.INTERRUPT)
                    raise
        finally:
            self.batch.close()
            counter.end()
        if self.error is not None:
            raise self.error
        if self.gone:
            raise TransferError(self.gone)
        if self.reason in (Halt.LOST, Halt.INTERRUPT):
            return self.reason
        status = self.records.status(transfer_id)
        settled = sum(status[f"objects_{s}"] for s in ("done", "skipped", "unverified"))
        if not self.unsettled and settled == status["objects_total"]:
            return State.COMPLETED
        if self.failure:
            log.info("transfer %s: %s", transfer_id, self.failure)
        return State.CANCELLED if self.cancelled else State.FAILED

    def halt(self, reason: str) -> None:
        """Stop as Engine.halt does; a cancel is also written to the records, where workers see it."""
        first = self.reason is None
        super().halt(reason)
        if first and self.reason is Halt.CANCEL:
            self.records.request_cancel(self.transfer_id)
        with self.room:
            self.room.notify_all()

    def submit(self, items, move: bool) -> None:
        """Batch the objects into tasks as they are listed; spread the large ones."""
        batch, size = [], 0
        for item in items:
            if self.stop.is_set():
                self.unsettled = True
                return
            if self.spreads(item):
                self.spread.submit(self.transfer, item, move).add_done_callback(self.tally)
                continue
            batch.append(item)
            size += item.source.size
            if len(batch) >= CLUSTER_BATCH_OBJECTS or size >= CLUSTER_BATCH_BYTES:
                self.send(run_batch, batch)
                batch, size = [], 0
        if batch:
            self.send(run_batch, batch)

    def spreads(self, item: Item) -> bool:
        """Whether an object is spread over the workers: one of more than CLUSTER_SPREAD_PARTS parts, to a
        target that takes parts from anywhere and cannot copy it inside the cloud, whose claim can
        be proven from its parts' MD5s (which takes opening it, to learn the claim)."""
        size = item.source.size
        if item.skip or (item.record and item.record.state == ObjectState.COPIED) or \
                not isinstance(self.target, Resumable) or \
                (isinstance(self.target, ServerCopy) and self.target.copies_from(self.source)) or \
                math.ceil(size / part_size(size, self.options, self.target)) <= CLUSTER_SPREAD_PARTS:
            return False
        try:
            reader = self.source.open(item.source.key)
        except (TransferError, OSError):
            return False  # sent whole: the worker records why it failed, as on one host
        try:
            claim, shaped = reader.claim, shape(item, reader)
        finally:
            reader.close()
        psize = (item.record and item.record.part_size) or self.spread_size(size, claim)
        if not divisible(claim, psize) or math.ceil(size / psize) <= CLUSTER_SPREAD_PARTS:
            return False
        self.plans[item.path] = (claim, shaped, psize)
        return True

    def spread_size(self, size: int, claim: Claim) -> int:
        """The part size of a spread object: an S3 multipart source's own part size where the
        target takes it (its parts' MD5s prove the object) even above chunksize, up to MAX_CHUNK,
        since each worker thread holds one part; else the engine's part size."""
        own = mirror_size(claim)
        if own and self.target.min_part_size <= own <= min(self.target.max_part_size, MAX_CHUNK) and \
                math.ceil(size / own) <= self.target.max_parts:
            return own
        return part_size(size, self.options, self.target, claim)

    def copy(self, item: Item) -> Copied:
        """A spread object: parts sent by the workers, proven and completed here. When its claim is
        not the service's own and fails, it is streamed here instead, which reads it once more by
        its strict claim (Engine.copy)."""
        claim, shaped, psize = self.plans.pop(item.path)
        upload, _ = self.open_upload(item, shaped, psize)
        count = math.ceil(item.source.size / psize)
        per_task = max(1, min(CLUSTER_TASK_PARTS, math.ceil(count / (CLUSTER_TASKS_PER_THREAD * self.threads()))))
        try:
            futures = []
            for first in range(1, count + 1, per_task):
                future = self.send(run_parts, item, upload.token, psize, range(first, min(first + per_task, count + 1)))
                if future is None:
                    break
                futures.append(future)
            self.wait_for(futures)
            self.await_scheduler()
            failed = next((f for f in futures if f.status != "finished"), None)
            if failed is not None:
                raise TransferError(self.reason_of(failed))
            if self.stop.is_set() or any(f.result().state != State.COMPLETED for f in futures):
                self.heed()
                raise Stopped
            recorded = self.records.parts(self.transfer_id, item.path, upload.token)
            missing = [n for n in range(1, count + 1) if n not in recorded]
            if missing:
                raise TransferError(f"{len(missing)} of {count} parts of '{item.path}' are not recorded as sent")
            outcome = parts_outcome(claim, [bytes.fromhex(recorded[n]) for n in range(1, count + 1)], f"'{item.path}'")
            upload = self.target.resume_upload(item.target_key, shaped, upload.token, recorded)
            for number in range(1, count + 1):
                if number not in upload.uploaded:
                    raise TransferError(f"part {number} of '{item.path}' is not at storage '{self.target.name}'")
                upload.adopt(number)
            upload.complete(None)
        except BaseException as e:
            if isinstance(e, IntegrityError) or self.cancelled:
                try:
                    upload.abort()
                except (TransferError, OSError):
                    pass  # its token stays recorded, for `cleanup`
                else:
                    self.batch.update(item.path, sync=True, upload=None)
            if isinstance(e, IntegrityError) and not claim.strict:
                log.info("%s: %s; streaming it here by what the source itself computed", item.path, e)
                item.record = item.record and replace(item.record, upload=None, part_size=None)
                return super().copy(item)
            raise
        lost = self.target.lost_metadata(shaped)
        warnings = [f"metadata the target cannot keep was left out: {', '.join(lost)}"] if lost else []
        return Copied("stream", outcome.proof, None, outcome.reason, warnings)

    def send(self, fn, *args):
        """Submit a task once fewer than CLUSTER_TASKS_PER_THREAD per worker thread are in flight;
        None once the run is stopping."""
        with self.room:
            while not self.stop.is_set() and len(self.inflight) >= CLUSTER_TASKS_PER_THREAD * self.threads():
                self.room.wait(HEARTBEAT)
                self.check_scheduler()
            if self.stop.is_set():
                self.unsettled = True
                return None
            try:
                future = self.cluster.client.submit(fn, self.job, *args, pure=False)
            except Exception:
                self.check_scheduler()
                raise
            self.inflight.add(future)
        future.add_done_callback(self.landed)
        return future

    def threads(self) -> int:
        try:
            return max(self.cluster.threads(), 1)
        except Exception:  # the scheduler is unreachable: check_scheduler tells how long for
            return 1

    def landed(self, future) -> None:
        """A task ended: count a failed one (its objects stay unsettled in the records)."""
        if future.status != "finished":
            self.unsettled = True
            self.failure = self.failure or self.reason_of(future)
        elif future.result().state != State.COMPLETED:
            self.unsettled = True
            self.heed()
        with self.room:
            self.inflight.discard(future)
            self.room.notify_all()

    def heed(self) -> None:
        """Take on a cancel (or a takeover) that the workers saw in the records before this run's lease did."""
        try:
            answer = self.records.watch(self.transfer_id, self.job.owner)
        except Exception:
            return  # the lease sees it at its next beat
        if answer != Beat.RUN:
            self.halt(answer)

    @staticmethod
    def reason_of(future) -> str:
        if future.status == "cancelled":
            return "a task was cancelled by the cluster"
        error = future.exception()
        return one_line(error) if isinstance(error, TransferError) else \
            f"a task failed on the cluster: {error.__class__.__name__}: {one_line(error)}"

    def wait_for(self, futures) -> None:
        """Until the futures end; a scheduler gone for CLUSTER_GONE seconds fails the transfer."""
        while not all(f.done() for f in futures):
            with self.room:
                self.room.wait(HEARTBEAT)
            self.check_scheduler()

    def drain(self) -> None:
        """Until every task in flight has ended (after a cancel too: the workers see it in the records
        and stop within seconds, so that nothing is sent once the uploads are aborted)."""
        self.check_scheduler()
        with self.room:
            pending = list(self.inflight)
        self.wait_for(pending)
        self.await_scheduler()

    def await_scheduler(self) -> None:
        """Once tasks ended while the scheduler was unreachable (Dask cancels them all when it gives
        up on it), wait until it is back or check_scheduler gives up too, so that a lost scheduler
        is the transfer's one error and not a failure of each object."""
        while self.cluster.client.status != "running":
            self.check_scheduler()
            with self.room:
                self.room.wait(HEARTBEAT)

    def check_scheduler(self) -> None:
        """Pass a Ctrl-C on to the workers (through the records). A scheduler that closed the
        connection, or was unreachable for CLUSTER_GONE seconds, stops the run as a crash would
        (the parts sent are kept for resume) and raises Stopped."""
        if self.stop.is_set() and self.reason is None:
            self.halt(Halt.CANCEL)
        status = self.cluster.client.status
        if status == "running":
            self.lost_since = None
            return
        self.lost_since = self.lost_since or time.monotonic()
        if status in ("closing", "closed") or time.monotonic() - self.lost_since > CLUSTER_GONE:
            self.gone = (f"lost the Dask scheduler at {self.cluster.address}; 'cms transfer resume "
                         f"--id={self.transfer_id}' goes on with it")
            self.halt(Halt.INTERRUPT)
            raise Stopped
