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
from pathlib import Path

import boto3.s3.transfer
import pytest

import emulators as emu
from faultproxy import FaultProxy

DASK = str(Path(sys.executable).with_name("dask"))
MONGO = os.environ.get("CMS_TRANSFER_TEST_MONGO_URL")
PART = 5 * 1024 * 1024


def records_env() -> dict:
    return {"CMS_TRANSFER_RECORDS": "mongo", "CMS_TRANSFER_MONGO_URL": MONGO} if MONGO else {}


class DaskCluster:
    """A scheduler and workers started as separate processes, each worker with the test's own
    cloudmesh config (as each host has its own), stopped by PID."""

    def __init__(self, env, tmp_path: Path):
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
        for process in [*self.workers.values(), self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers.values(), self.scheduler]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
    dask_cluster.add_worker("w1")
    dask_cluster.add_worker("w2")
    addresses = dask_cluster.wait_for_workers(2)
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
