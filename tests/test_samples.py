"""Progress samples (sampling.py): the Sampler on its own over real SQLite records, the cluster's
Counter that feeds it, and the real `cms transfer` recording samples of a copy and of its resume."""
import json
import logging
import threading
import time

from cloudmesh.transfer import limits
from cloudmesh.transfer.cluster import Counter
from cloudmesh.transfer.errors import RecordsError
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.records.base import Sample
from cloudmesh.transfer.records.sqlite import SQLiteRecords
from cloudmesh.transfer.sampling import Sampler
from test_resume_cancel import Background, copy_args, proxied, seed_folder, stopped_in_big_object, until


class Seen(Progress):
    """A progress that keeps every call it receives."""

    def __init__(self):
        self.calls, self.bytes, self.objects = [], 0, 0
        self.lock = threading.Lock()

    def start(self) -> None:
        self.calls.append("start")

    def grow(self, nbytes: int, nobjects: int) -> None:
        self.calls.append(("grow", nbytes, nobjects))

    def update(self, nbytes: int, nobjects: int) -> None:
        with self.lock:
            self.bytes, self.objects = self.bytes + nbytes, self.objects + nobjects

    def close(self) -> None:
        self.calls.append("close")


def store_with(tmp_path, *sizes: int) -> SQLiteRecords:
    """SQLite records holding transfer 't' of objects f0, f1, ... of these sizes."""
    records = SQLiteRecords(tmp_path / "transfer.db")
    records.create({"id": "t", "source": "local:a", "target": "awss3:b", "route": "local->awss3", "copy": True,
                    "recursive": True, "owner": "o"},
                   [{"path": f"f{i}", "source_key": f"a/f{i}", "target_key": f"b/f{i}", "size": size}
                    for i, size in enumerate(sizes)])
    return records


def rising(samples: list[Sample]) -> bool:
    return all(a.at <= b.at and a.bytes_done <= b.bytes_done and a.objects_done <= b.objects_done
               for a, b in zip(samples, samples[1:]))


def test_a_sampler_passes_every_call_on_and_samples_from_the_records_reading_at_its_start(tmp_path):
    """Four threads report progress at once; the samples start from what the records held (one
    object of 10 bytes done by an earlier run), never go back, and the last one is the total."""
    records = store_with(tmp_path, 10, 1000)
    records.update_object("t", "f0", state="done", bytes_done=10)
    seen = Seen()
    sampler = Sampler(seen, records, "t", every=0.02)
    sampler.start()
    sampler.grow(1000, 1)

    def report():
        for _ in range(50):
            sampler.update(5, 0)
            time.sleep(0.005)
        sampler.update(0, 1)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.close()
    samples = records.samples("t")
    assert len(samples) >= 3 and rising(samples)
    assert samples[0].bytes_done >= 10 and samples[0].objects_done >= 1
    assert (samples[-1].bytes_done, samples[-1].objects_done) == (10 + 4 * 250, 1 + 4)
    assert seen.calls == ["start", ("grow", 1000, 1), "close"] and (seen.bytes, seen.objects) == (1000, 4)
    assert not sampler.thread.is_alive()
    records.close()


def test_the_interval_doubles_each_time_the_records_thin_the_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "SAMPLES_MAX", 4)
    records = store_with(tmp_path, 10)
    answers = []
    add_sample = records.add_sample

    def kept(transfer_id: str, sample: Sample) -> bool:
        answers.append(add_sample(transfer_id, sample))
        return answers[-1]

    monkeypatch.setattr(records, "add_sample", kept)
    sampler = Sampler(Progress(), records, "t", every=0.01)
    sampler.start()
    first = until(lambda: records.samples("t"), "a first sample")[0]
    until(lambda: sampler.every >= 0.04, "two thinnings")
    sampler.close()
    thinnings = answers[:-1].count(True)  # the last sample, at close, changes no interval
    assert thinnings >= 2 and answers[:limits.SAMPLES_MAX] == [False] * limits.SAMPLES_MAX
    assert sampler.every == 0.01 * 2 ** thinnings
    samples = records.samples("t")
    assert samples[0] == first and len(samples) <= limits.SAMPLES_MAX and rising(samples)
    records.close()


class Failing:
    """Records that cannot be read or written."""

    def __init__(self, reads: bool):
        self.reads = reads

    def status(self, transfer_id: str) -> dict:
        if not self.reads:
            raise RecordsError("the transfer records are locked")
        return {"bytes_done": 0, "objects_done": 0, "objects_skipped": 0, "objects_unverified": 0,
                "objects_failed": 0}

    def add_sample(self, transfer_id: str, sample: Sample) -> bool:
        raise RecordsError("the transfer records are locked")


def test_records_that_fail_are_logged_at_debug_and_never_stop_the_progress(caplog):
    for reads in (True, False):
        caplog.clear()
        seen = Seen()
        sampler = Sampler(seen, Failing(reads), "t", every=0.01)
        with caplog.at_level(logging.DEBUG, logger="cloudmesh.transfer.sampling"):
            sampler.start()
            sampler.update(7, 1)
            time.sleep(0.05)
            sampler.close()
        assert (seen.bytes, seen.objects) == (7, 1) and seen.calls == ["start", "close"]
        logged = [r.getMessage() for r in caplog.records if r.name == "cloudmesh.transfer.sampling"]
        assert logged and all("the transfer records are locked" in m for m in logged), logged
        assert all(r.levelno == logging.DEBUG for r in caplog.records), "a lost sample is no news for the terminal"


def test_the_cluster_counter_shows_this_runs_progress_only(tmp_path):
    """A resumed transfer's Counter starts from the records' reading, so that the Sampler it feeds
    does not count what earlier runs did twice."""
    records = store_with(tmp_path, 10, 20, 30)
    records.update_object("t", "f0", state="done", bytes_done=10)
    seen = Seen()
    counter = Counter(records, "t", seen)
    records.update_objects("t", [("f1", {"state": "done", "bytes_done": 20}), ("f2", {"state": "failed"})])
    counter.end()
    assert (seen.bytes, seen.objects) == (20, 2)
    records.close()


# Through the real command


def samples_of(env, transfer_id: str) -> list[Sample]:
    records = SQLiteRecords(env.config_dir / "transfer.db")
    try:
        return records.samples(transfer_id)
    finally:
        records.close()


def test_a_copy_records_samples_that_end_at_its_bytes_and_objects(env):
    p = env.prefix
    tree = seed_folder(env, 12)
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", f"--id={p}",
                          "--chunksize=5MiB", "--output=json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "completed" and status["bytes_done"] == sum(map(len, tree.values()))
    samples = samples_of(env, p)
    assert samples and rising(samples)
    assert (samples[-1].bytes_done, samples[-1].objects_done) == (status["bytes_done"], len(tree))


def test_a_resumed_transfer_samples_on_from_what_its_earlier_run_did(env, request):
    """kill -9 once the two small files are done and sampled, while the large object's first part
    is held: the resumed run's samples start from those files (not from 0) and end at the total."""
    p = env.prefix
    tree = seed_folder(env, 10)
    small = sum(len(data) for key, data in tree.items() if key != "big.bin")
    proxy, name = proxied(env, request, "awss3", allow=0)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 0)
        until(lambda: any(s.objects_done == 2 for s in samples_of(env, p)), "a sample of the small files", run)
        run.process.kill()
        run.wait(10)
    killed = time.time()
    proxy.release(drop=True)
    until(proxy.idle, "the proxy to settle")
    earlier = samples_of(env, p)
    assert earlier[-1].bytes_done == small and rising(earlier)

    result = env.transfer("resume", f"--id={p}", "--output=json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "completed"
    resumed = [s for s in samples_of(env, p) if s.at > killed]
    assert resumed and rising(resumed)
    assert resumed[0].bytes_done >= small and resumed[0].objects_done >= 2
    assert (resumed[-1].bytes_done, resumed[-1].objects_done) == (status["bytes_done"], 3)
    assert status["bytes_done"] == sum(map(len, tree.values()))
