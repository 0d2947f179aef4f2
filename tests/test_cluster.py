"""One transfer spread over a Dask cluster: a real `dask scheduler` and `dask worker` processes
on loopback (each its own OS process, over TCP), moto and Azurite, driven by the real `cms
transfer` command. The records are SQLite on this host, shared by the workers; with
CMS_TRANSFER_TEST_MONGO_URL set (`make test-cluster`), every process keeps them in that MongoDB.
"""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3.s3.transfer
import pytest
import yaml

import emulators as emu
from faultproxy import FaultProxy

DASK = str(Path(sys.executable).with_name("dask"))
MONGO = os.environ.get("CMS_TRANSFER_TEST_MONGO_URL")
PART = 5 * 1024 * 1024


RECORDS: dict = {}  # the environment that puts every process's records in the test's MongoDB database


def records_env() -> dict:
    return dict(RECORDS)


@pytest.fixture(autouse=True)
def mongo_records():
    """With CMS_TRANSFER_TEST_MONGO_URL, a database of the test's own on that server (dropped
    after it), where the command, the service and every worker keep the records."""
    global RECORDS
    if not MONGO:
        yield
        return
    import pymongo
    name = f"cms_cluster_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(MONGO)
    RECORDS = {"CMS_TRANSFER_RECORDS": "mongo", "CMS_TRANSFER_MONGO_URL": urlunsplit(parts._replace(path=f"/{name}"))}
    try:
        yield
    finally:
        RECORDS = {}
        with pymongo.MongoClient(MONGO) as client:
            client.drop_database(name)


class DaskCluster:
    """A scheduler and workers started as separate processes, each worker with the test's own
    cloudmesh config (as each host has its own), stopped by PID."""

    def __init__(self, env, tmp_path: Path):
        tmp_path.mkdir(exist_ok=True)
        self.env, self.file = env, tmp_path / "scheduler.json"
        self.logs = tmp_path
        self.scheduler = self.spawn("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                                  "--no-dashboard", "--scheduler-file", str(self.file)])
        deadline = time.monotonic() + 60
        while not self.file.exists() or not self.file.read_text().strip():
            assert time.monotonic() < deadline and self.scheduler.poll() is None, self.log("scheduler")
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.env.config_dir,
                                env=self.env.environ(**records_env()))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def add_worker(self, name: str, threads: int = 2) -> None:
        self.workers[name] = self.spawn(name, [DASK, "worker", "--scheduler-file", str(self.file), "--name", name,
                                               "--nthreads", str(threads), "--no-nanny", "--no-dashboard",
                                               "--host", "127.0.0.1"])

    def with_workers(self, *names: str) -> dict[str, str]:
        """Start a worker per name; their addresses by name once all are connected."""
        for name in names:
            self.add_worker(name)
        return self.wait_for_workers(len(names))

    def wait_for_workers(self, count: int) -> dict[str, str]:
        """The workers' addresses by name, once `count` of them are connected."""
        from distributed import Client
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(count, timeout=60)
            return {info["name"]: address for address, info in client.scheduler_info()["workers"].items()}

    def kill(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait()

    def stop(self) -> None:
        """Workers first (a worker whose scheduler is gone waits to reconnect), then the scheduler."""
        emu.stop([process.pid for process in self.workers.values()])
        emu.stop([self.scheduler.pid])


@pytest.fixture
def cluster_env(env):
    """The test's world with Azure told that it has no Put Block From URL (Azurite), so that
    S3->Azure streams through the workers instead of trying a server-side copy first."""
    env.add_storage("az", "azure", copy_from_url=False)
    return env


@pytest.fixture
def dask_cluster(cluster_env, tmp_path):
    running = DaskCluster(cluster_env, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def seed_tree(env, prefix: str, files: int, big: int) -> dict[str, bytes]:
    """Small files, and one object of `big` bytes written by boto3 as a multipart upload of 5 MiB parts."""
    tree = {}
    for i in range(files):
        data = os.urandom(1000 + (i * 7919) % 50_000)
        env.put("awss3", f"{prefix}/small/{i:04d}.bin", data)
        tree[f"small/{i:04d}.bin"] = data
    if big:
        data = os.urandom(big)
        config = boto3.s3.transfer.TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
        env.s3.upload_fileobj(io.BytesIO(data), emu.BUCKET, f"{prefix}/big.bin", Config=config)
        tree["big.bin"] = data
    return tree


def status_of(env, transfer_id: str) -> dict:
    result = env.transfer("status", f"--id={transfer_id}", "--output=json", **records_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def digests(tree: dict[str, bytes]) -> dict[str, str]:
    return {key: hashlib.md5(data).hexdigest() for key, data in tree.items()}


def test_s3_to_azure_spread_over_two_workers_with_one_object_split_across_them(dask_cluster, cluster_env):
    env = cluster_env
    addresses = dask_cluster.with_workers("w1", "w2")
    tree = seed_tree(env, env.prefix, files=250, big=9 * PART + 12345)
    result = env.transfer("copy", f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}", "-r",
                          f"--cluster={dask_cluster.address}", "--id=spread", "--output=json", timeout=300,
                          **records_env())
    assert result.returncode == 0, result.stderr + dask_cluster.log("w1") + dask_cluster.log("w2")
    status = json.loads(result.stdout)
    assert status["state"] == "completed" and status["objects_done"] == 251
    assert digests(env.tree("azure", env.prefix)) == digests(tree)
    workers = status["workers"]
    assert set(workers) == set(addresses.values())
    assert all(w["bytes"] > 0 for w in workers.values()), workers
    assert sum(w["objects"] for w in workers.values()) == 250  # the split object is completed by the client
    assert sum(w["bytes"] for w in workers.values()) == sum(len(d) for d in tree.values())
    assert status["proofs"] == {"etag-parts": 1, "md5": 250}


def records_of(env, monkeypatch):
    """The test's records, read here as the workers and the command write them."""
    from cloudmesh.transfer.records import open_records
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    for name, value in records_env().items():
        monkeypatch.setenv(name, value)
    return open_records()


def start(env, *args) -> subprocess.Popen:
    """The real command in the background, its output kept for the test to read."""
    return subprocess.Popen([str(Path(sys.executable).with_name("cms")), "transfer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.environ(**records_env()), cwd=env.config_dir)


def copy_on(env, address: str, records, transfer_id: str, until: int, *options) -> subprocess.Popen:
    """`cms transfer copy` of the test's tree to Azure on the cluster, in the background, once
    `until` bytes of it are recorded done."""
    client = start(env, "copy", f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}", "-r",
                   f"--cluster={address}", f"--id={transfer_id}", "--parallel=2", *options)
    wait_until(lambda: bytes_done(records, transfer_id) >= until, f"{until} bytes done")
    return client


def resumed_on(env, address: str, transfer_id: str) -> dict:
    """`cms transfer resume` on the cluster, which must complete; its status."""
    result = env.transfer("resume", f"--id={transfer_id}", f"--cluster={address}", "--output=json", timeout=300,
                          **records_env())
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "completed", status
    return status


def wait_until(condition, what: str, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def bytes_done(records, transfer_id: str) -> int:
    status = records.status(transfer_id)
    return status["bytes_done"] if status else 0


def uncommitted(env, prefix: str) -> int:
    """Bytes of blocks staged under `prefix` and never committed."""
    container = env.azure
    return sum(block.size for blob in container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
               for block in container.get_blob_client(blob.name).get_block_list("uncommitted")[1])


def test_kill_9_of_one_of_two_workers_costs_at_most_the_parts_in_flight(dask_cluster, cluster_env, monkeypatch):
    """The bytes the workers send to Azure, counted at a proxy in front of it, are the object
    bytes plus at most 2 parts per worker, and the transfer completes byte for byte."""
    env = cluster_env
    proxy = FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", seed=1, flavor="azure")
    try:
        env.add_storage("counted", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}", copy_from_url=False)
        addresses = dask_cluster.with_workers("w1", "w2")
        tree = seed_tree(env, env.prefix, files=40, big=24 * PART + 999)
        total = sum(len(data) for data in tree.values())
        records = records_of(env, monkeypatch)
        client = start(env, "copy", f"--source=awss3:{env.prefix}", f"--target=counted:{env.prefix}", "-r",
                       f"--cluster={dask_cluster.address}", "--id=killed", "--parallel=2", "--output=json")
        wait_until(lambda: bytes_done(records, "killed") >= 6 * PART, "a quarter of the bytes")
        dask_cluster.kill("w1")
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err + dask_cluster.log("w2")
        status = json.loads(out)
        assert status["state"] == "completed" and status["objects_done"] == 41
        assert digests(env.tree("azure", env.prefix)) == digests(tree)
        assert total <= proxy.bytes_up <= total + 2 * 2 * PART, (proxy.bytes_up - total) / PART
        assert status["workers"][addresses["w2"]]["bytes"] > 0  # the survivor took over
        assert uncommitted(env, env.prefix) == 0
    finally:
        proxy.stop()


def test_cancel_stops_every_workers_tasks_and_aborts_the_uploads_then_resume_finishes(dask_cluster, cluster_env,
                                                                                      monkeypatch):
    env = cluster_env
    dask_cluster.with_workers("w1", "w2")
    tree = seed_tree(env, env.prefix, files=20, big=40 * PART)
    records = records_of(env, monkeypatch)
    client = copy_on(env, dask_cluster.address, records, "cancelled", 2 * PART, "--output=json")
    began = time.monotonic()
    result = env.transfer("cancel", "--id=cancelled", "--output=json", **records_env())
    assert result.returncode == 0, result.stderr
    out, err = client.communicate(timeout=60)
    stopped = time.monotonic() - began
    assert client.returncode == 1 and "cancelled" in err, err
    status = status_of(env, "cancelled")
    assert status["state"] == "cancelled" and status["uploads_open"] == 0, err
    assert stopped < 15, stopped
    assert "big.bin" not in env.tree("azure", env.prefix)
    assert uncommitted(env, env.prefix) == 0

    resumed_on(env, dask_cluster.address, "cancelled")
    assert digests(env.tree("azure", env.prefix)) == digests(tree)


def test_a_client_killed_mid_transfer_reads_interrupted_and_resume_on_the_cluster_finishes(dask_cluster, cluster_env,
                                                                                          monkeypatch):
    env = cluster_env
    dask_cluster.with_workers("w1", "w2")
    tree = seed_tree(env, env.prefix, files=300, big=30 * PART)
    records = records_of(env, monkeypatch)
    client = copy_on(env, dask_cluster.address, records, "orphaned", 2 * PART)
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert status_of(env, "orphaned")["state"] == "interrupted"

    assert resumed_on(env, dask_cluster.address, "orphaned")["objects_done"] == 301
    assert digests(env.tree("azure", env.prefix)) == digests(tree)
    assert uncommitted(env, env.prefix) == 0


def test_a_scheduler_that_goes_away_fails_the_transfer_with_one_line_and_resume_goes_on(dask_cluster, cluster_env,
                                                                                       monkeypatch, tmp_path):
    env = cluster_env
    dask_cluster.with_workers("w1")
    tree = seed_tree(env, env.prefix, files=20, big=30 * PART)
    records = records_of(env, monkeypatch)
    client = copy_on(env, dask_cluster.address, records, "orphaned", PART)
    dask_cluster.scheduler.send_signal(signal.SIGKILL)
    out, err = client.communicate(timeout=120)
    assert client.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and "Dask scheduler" in lines[0] and "resume" in lines[0], err
    assert status_of(env, "orphaned")["state"] == "failed"
    dask_cluster.stop()

    again = DaskCluster(env, tmp_path / "again")
    try:
        again.with_workers("w2")
        resumed_on(env, again.address, "orphaned")
        assert digests(env.tree("azure", env.prefix)) == digests(tree)
    finally:
        again.stop()


def test_a_move_on_workers_2_starts_a_local_cluster_prints_its_dashboard_and_deletes_each_source(cluster_env):
    env = cluster_env
    tree = seed_tree(env, env.prefix, files=250, big=6 * PART)
    result = env.transfer("move", f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}", "-r", "--workers=2",
                          "--output=json", timeout=300, **records_env())
    assert result.returncode == 0, result.stderr
    assert "Dask dashboard of the 2 local workers: http://127.0.0.1:" in result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "completed" and len(status["workers"]) == 2
    assert digests(env.tree("azure", env.prefix)) == digests(tree)
    assert env.tree("awss3", env.prefix) == {}


def test_bad_cluster_options_are_one_line_each_and_record_nothing(cluster_env):
    env = cluster_env
    env.put("awss3", f"{env.prefix}/a.txt", b"a")
    source, target = f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}"
    cases = [(["--cluster=10.0.0.5:8786"], 2, "is not a Dask scheduler address"),
             (["--workers=0"], 2, "--workers must be between 1 and 64, not 0"),
             (["--workers=many"], 2, "--workers must be a whole number"),
             (["--cluster=tcp://127.0.0.1:9", "--workers=2"], 2, "invalid arguments"),
             (["--cluster=tcp://127.0.0.1:9"], 1, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")]
    for extra, code, message in cases:
        result = env.transfer("copy", source, target, "-r", *extra, timeout=60)
        assert result.returncode == code and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert json.loads(env.transfer("status", "--output=json").stdout) == []


def test_without_a_cluster_nothing_of_dask_is_imported(cluster_env):
    env = cluster_env
    env.put("local", "src/a.txt", b"a")
    code = ("import sys; from cloudmesh.transfer import Transfer; "
            "s = Transfer().copy('local:src', 'local:dst', recursive=True); "
            "print(s['state'], sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env.environ(),
                            cwd=env.config_dir, timeout=60)
    assert result.stdout.split() == ["completed", "[]"], result.stderr


def configure_cluster(env, address: str) -> None:
    """Set cloudmesh.transfer.cluster in the test's cloudmesh.yaml."""
    path = env.config_dir / "cloudmesh.yaml"
    data = yaml.safe_load(path.read_text())
    data["cloudmesh"]["transfer"] = {"cluster": address}
    path.write_text(yaml.safe_dump(data))


def test_rest_runs_on_the_cluster_configured_for_the_service_unless_a_request_says_false(dask_cluster, cluster_env):
    from test_service import Service, problem
    env = cluster_env
    addresses = dask_cluster.with_workers("w1")
    tree = seed_tree(env, env.prefix, files=30, big=6 * PART)
    body = {"source": f"awss3:{env.prefix}", "target": f"az:{env.prefix}", "recursive": True}
    service = Service(env.environ(**records_env()), env.config_dir)
    try:
        assert "configured" in problem(service.call("POST", "/transfers", {**body, "cluster": True}), 400)["detail"]
        assert problem(service.call("POST", "/transfers", {**body, "cluster": "tcp://127.0.0.1:9"}), 400)
        assert problem(service.call("POST", "/transfers", {**body, "workers": 2}), 400)
        configure_cluster(env, dask_cluster.address)
        service.json("POST", "/transfers", {**body, "id": "on-cluster"}, expect=202)
        final = service.wait("on-cluster", 300)
        assert final["state"] == "completed" and list(final["workers"]) == [addresses["w1"]]
        assert digests(env.tree("azure", env.prefix)) == digests(tree)
        service.json("POST", "/transfers", {**body, "target": f"az:{env.prefix}-here", "id": "here",
                                            "cluster": False}, expect=202)
        final = service.wait("here", 300)
        assert final["state"] == "completed" and final["workers"] == {}
        assert digests(env.tree("azure", f"{env.prefix}-here")) == digests(tree)
    finally:
        service.stop()


def test_the_configured_cluster_is_the_default_of_the_command_and_an_unreachable_one_is_one_line(dask_cluster,
                                                                                                cluster_env):
    env = cluster_env
    addresses = dask_cluster.with_workers("w1")
    tree = seed_tree(env, env.prefix, files=5, big=0)
    configure_cluster(env, dask_cluster.address)
    result = env.transfer("copy", f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}", "-r", "--output=json",
                          timeout=300, **records_env())
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)["workers"]) == [addresses["w1"]]
    assert digests(env.tree("azure", env.prefix)) == digests(tree)
    configure_cluster(env, "tcp://127.0.0.1:9")
    result = env.transfer("copy", f"--source=awss3:{env.prefix}", f"--target=az:{env.prefix}-2", "-r", timeout=60,
                          **records_env())
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr


def test_divisible_claims_are_those_proven_from_their_parts_md5s():
    from cloudmesh.transfer.integrity import Claim, Proof, composite_etag, divisible, parts_outcome
    from cloudmesh.transfer.errors import IntegrityError
    parts = [os.urandom(100), os.urandom(100), os.urandom(40)]
    md5s = [hashlib.md5(p).digest() for p in parts]
    claim = Claim(Proof.PARTS, composite_etag(md5s), parts=(100, 100, 40), strict=True)
    assert divisible(claim, 100) and not divisible(claim, 50)
    assert not divisible(Claim(Proof.PARTS, "x-3", parts=(100, 90, 40)), 100)
    assert not divisible(Claim(Proof.MD5, "0" * 32), 100) and not divisible(Claim(Proof.RANGES, segment=4), 100)
    assert divisible(Claim(Proof.READ), 7) and divisible(Claim(Proof.NONE, reason="r"), 7)
    assert parts_outcome(claim, md5s, "'o'").proof is Proof.PARTS
    with pytest.raises(IntegrityError, match="multipart ETag"):
        parts_outcome(claim, [md5s[0], md5s[0], md5s[2]], "'o'")
    assert parts_outcome(Claim(Proof.NONE, reason="nothing"), md5s, "'o'").reason == "nothing"


def test_the_progress_of_a_cluster_counts_what_the_records_show_settled_by_any_process(tmp_path, monkeypatch):
    from cloudmesh.transfer.cluster import Counter
    from cloudmesh.transfer.progress import Progress
    from cloudmesh.transfer.records import open_records
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(tmp_path))
    records = open_records("sqlite")
    records.create({"id": "t", "source": "a:x", "target": "b:y", "copy": True, "recursive": True, "route": "r",
                    "owner": "o"}, [{"path": f"p{i}", "source_key": f"p{i}", "target_key": f"p{i}", "size": 10}
                                    for i in range(4)])

    class Seen(Progress):
        def __init__(self):
            self.bytes, self.objects = 0, 0

        def update(self, nbytes: int, nobjects: int) -> None:
            self.bytes, self.objects = self.bytes + nbytes, self.objects + nobjects

    seen = Seen()
    counter = Counter(records, "t", seen)
    records.update_objects("t", [("p0", {"state": "done", "bytes_done": 10}), ("p1", {"state": "failed"})])
    records.part_done("t", "p2", "u", 1, "aa", None, 5)  # a part sent by another worker
    counter.end()
    assert (seen.bytes, seen.objects) == (15, 2)
    counter.count()
    assert (seen.bytes, seen.objects) == (15, 2)  # counted once
