"""Fault injection on the real emulators (issue 4): `kill -9` at random points then resume, the
target emulator stopped and restarted mid-transfer, transient errors from a flaky proxy, moves
that crash, and two transfers at once while `status` is read. The real `cms transfer` runs in a
subprocess; what the targets hold is checked with the clouds' own SDKs."""
import json
import os
import random
import subprocess
import time

import pytest
from azure.storage.blob import BlobServiceClient

import emulators as emu
from conftest import CMS
from faultproxy import FaultProxy

from cloudmesh.transfer.records.sqlite import SQLiteRecords

MiB = 1024 * 1024
PART = 5 * MiB
PARALLEL = 2
SMALL = 40 * 1024


def seed_local(env, folder: str, big: int, smalls: int = 12) -> dict[str, bytes]:
    """A local folder with one large object and some small ones; returns {path: bytes}."""
    files = {f"small/{i:02d}.bin": os.urandom(SMALL) for i in range(smalls)}
    files["big.bin"] = os.urandom(big)
    for path, data in files.items():
        env.put("local", f"{folder}/{path}", data)
    return files


def start(env, *args) -> subprocess.Popen:
    return subprocess.Popen([CMS, "transfer", *args], env=env.environ(), cwd=env.config_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def status_of(env, transfer_id: str) -> dict | None:
    path = env.config_dir / "transfer.db"
    if not path.exists():
        return None
    store = SQLiteRecords(path)
    try:
        return store.status(transfer_id)
    finally:
        store.close()


def wait_for_progress(env, process: subprocess.Popen, transfer_id: str, fraction: float) -> bool:
    """Poll the records until `fraction` of the bytes are done; False if the process ended first."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        status = status_of(env, transfer_id)
        if status and status["bytes_done"] >= fraction * status["bytes_total"]:
            return True
        time.sleep(0.02)
    return False


def kill_at(env, process: subprocess.Popen, transfer_id: str, fraction: float) -> None:
    """`kill -9` the transfer once `fraction` of its bytes are done (or let it end)."""
    wait_for_progress(env, process, transfer_id, fraction)
    process.kill()
    process.communicate()
    time.sleep(0.5)  # a request sent just before the kill (a delete) may still be applied by the server


def stored_bytes(env, storage: str, prefix: str, service=None) -> int:
    """Bytes the target stores under `prefix`: whole objects plus parts of unfinished uploads
    (open S3 multipart uploads, uncommitted Azure blocks)."""
    start_at = prefix.rstrip("/") + "/"
    if storage == "awss3":
        pages = env.s3.get_paginator("list_objects_v2").paginate(Bucket=emu.BUCKET, Prefix=start_at)
        total = sum(o["Size"] for page in pages for o in page.get("Contents", []))
        return total + open_part_bytes(env, storage, prefix)
    container = service or env.azure
    total = sum(b.size for b in container.list_blobs(name_starts_with=start_at))
    return total + open_part_bytes(env, storage, prefix, container)


def open_part_bytes(env, storage: str, prefix: str, container=None) -> int:
    """Bytes held in parts that no object uses yet: what an abandoned transfer would cost."""
    start_at = prefix.rstrip("/") + "/"
    if storage == "awss3":
        uploads = env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=start_at).get("Uploads", [])
        return sum(p["Size"] for u in uploads for p in env.s3.list_parts(
            Bucket=emu.BUCKET, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
    container = container or env.azure
    return sum(block.size for blob in container.list_blobs(name_starts_with=start_at, include=["uncommittedblobs"])
               for block in container.get_blob_client(blob.name).get_block_list("uncommitted")[1])


def proxied(env, storage: str, name: str, **faults) -> FaultProxy:
    """A FaultProxy in front of the emulator of `storage`, configured as storage `name`."""
    if storage == "awss3":
        proxy = FaultProxy(env.emulators.s3_endpoint, seed=7, flavor="s3", **faults)
        env.add_storage(name, "awss3", endpoint_url=proxy.url)
    else:
        proxy = FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", seed=7, flavor="azure", **faults)
        env.add_storage(name, "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
    return proxy


@pytest.mark.parametrize("target", ["awss3", "azure"])
def test_kill_9_at_random_points_then_resume_sends_only_what_was_missing(env, target):
    """Five kill points per target: after each, resume ends with the target equal to the source,
    and the bytes it uploads are at most what the target lacked plus the parts in flight."""
    chance = random.Random(f"kill-{target}")
    with proxied(env, target, "counted") as proxy:
        for round in range(5):
            folder, transfer_id = f"{env.prefix}/r{round}", f"{env.prefix}-{target}-{round}"
            files = seed_local(env, f"{folder}/src", big=40 * MiB)
            copy = start(env, "copy", f"--source=local:{folder}/src", f"--target=counted:{folder}/dst", "-r",
                         f"--id={transfer_id}", f"--chunksize={PART // MiB}MiB", f"--parallel={PARALLEL}")
            kill_at(env, copy, transfer_id, chance.uniform(0.05, 0.9))
            missing = sum(map(len, files.values())) - stored_bytes(env, target, f"{folder}/dst")
            proxy.reset_counters()

            code, out, err = finish(start(env, "resume", f"--id={transfer_id}", "--output=json"))

            assert code == 0, err
            assert json.loads(out)["state"] == "completed"
            assert env.tree(target, f"{folder}/dst") == files
            assert proxy.bytes_up <= missing + PARALLEL * PART + 2 * PARALLEL * SMALL, (round, missing)
            assert open_part_bytes(env, target, f"{folder}/dst") == 0


def test_the_target_emulator_stopped_and_restarted_mid_transfer(env, tmp_path):
    """Azurite goes away for a second and comes back on its port with its data: the copy finishes
    through retries, or fails cleanly and then completes with resume."""
    port, location = emu.free_port(), tmp_path / "azurite"
    with open(tmp_path / "azurite.log", "ab") as log:
        azurite = emu.start_azurite(port, location, log)
    try:
        endpoint = f"http://127.0.0.1:{port}/{emu.AZURITE_ACCOUNT}"
        service = BlobServiceClient(endpoint, credential={"account_name": emu.AZURITE_ACCOUNT,
                                                          "account_key": emu.AZURITE_KEY})
        service.create_container("restarted")
        env.add_storage("restarting", "azure", endpoint=endpoint, container="restarted")
        files = seed_local(env, f"{env.prefix}/src", big=120 * MiB)
        copy = start(env, "copy", f"--source=local:{env.prefix}/src", f"--target=restarting:{env.prefix}", "-r",
                     "--id=restart", f"--parallel={PARALLEL}", "--retries=10")
        assert wait_for_progress(env, copy, "restart", 0.2)
        emu.stop([azurite.pid])
        time.sleep(1)
        with open(tmp_path / "azurite.log", "ab") as log:
            azurite = emu.start_azurite(port, location, log)
        code, _, err = finish(copy)
        if code != 0:
            assert err.startswith("ERROR: ") and err.count("\n") == 1, err
            code, _, err = finish(start(env, "resume", "--id=restart"))
        assert code == 0, err
        container = service.get_container_client("restarted")
        landed = {b.name[len(env.prefix) + 1:]: container.download_blob(b.name).readall()
                  for b in container.list_blobs(name_starts_with=f"{env.prefix}/")}
        assert landed == files
        assert open_part_bytes(env, "azure", env.prefix, container) == 0
    finally:
        emu.stop([azurite.pid])


@pytest.mark.parametrize("route", ["local->flaky-s3", "flaky-s3->flaky-azure"])
def test_transient_errors_dropped_connections_and_cut_downloads_are_retried(env, route):
    """One request in four or so meets a 503, a dropped connection (before or after the service
    applied it) or a download cut halfway: the transfer still completes, byte for byte."""
    faults = {"error_rate": 0.1, "drop_rate": 0.04, "drop_after_rate": 0.04, "cut_rate": 0.1, "cut_min_size": 4096}
    with proxied(env, "awss3", "flaky-s3", **faults) as s3, proxied(env, "azure", "flaky-azure", **faults) as azure:
        files = seed_local(env, f"{env.prefix}/src", big=30 * MiB)
        if route == "local->flaky-s3":
            source, target, check = f"local:{env.prefix}/src", f"flaky-s3:{env.prefix}/dst", "awss3"
        else:
            for path, data in files.items():
                env.put("awss3", f"{env.prefix}/s3src/{path}", data)
            source, target, check = f"flaky-s3:{env.prefix}/s3src", f"flaky-azure:{env.prefix}/dst", "azure"

        code, out, err = finish(start(env, "copy", f"--source={source}", f"--target={target}", "-r",
                                      f"--parallel={PARALLEL}", "--retries=8", "--output=json"))

        assert code == 0, err
        assert json.loads(out)["state"] == "completed"
        assert env.tree(check, f"{env.prefix}/dst") == files
        injected = {kind: s3.faults[kind] + azure.faults[kind] for kind in ("error", "drop", "drop_after")}
        assert all(count > 0 for count in injected.values()), injected
        if route != "local->flaky-s3":
            assert s3.faults["cut"] > 0


@pytest.mark.parametrize("route", ["local->awss3", "awss3->azure"])
def test_a_move_killed_at_any_point_never_loses_an_object(env, route):
    """After each kill every object is whole at its source or at its target (or both), never
    neither and never partial; resume then finishes the move."""
    source, target = route.split("->")
    chance = random.Random(route)
    for round in range(3):
        folder, transfer_id = f"{env.prefix}/m{round}", f"{env.prefix}-move-{round}"
        files = seed_local(env, f"{folder}/tmp", big=30 * MiB, smalls=20)
        for path, data in files.items():
            env.put(source, f"{folder}/src/{path}", data)
        move = start(env, "move", f"--source={source}:{folder}/src", f"--target={target}:{folder}/dst", "-r",
                     f"--id={transfer_id}", f"--parallel={PARALLEL}")
        kill_at(env, move, transfer_id, chance.uniform(0.1, 0.95))

        at_source, at_target = env.tree(source, f"{folder}/src"), env.tree(target, f"{folder}/dst")
        for path, data in files.items():
            assert path in at_source or path in at_target, (round, path)
            assert at_source.get(path, data) == data and at_target.get(path, data) == data, (round, path)

        code, _, err = finish(start(env, "resume", f"--id={transfer_id}"))
        assert code == 0, err
        assert env.tree(target, f"{folder}/dst") == files
        assert env.tree(source, f"{folder}/src") == {}


def test_two_transfers_at_once_keep_consistent_records_while_status_is_read(env):
    """Two `cms transfer` processes write the shared SQLite records while `cms transfer status`
    and a reader of the store of its own read them again and again: every reading is whole and
    never goes backwards; both complete."""
    files = seed_local(env, f"{env.prefix}/src", big=60 * MiB, smalls=60)
    copies = [start(env, "copy", f"--source=local:{env.prefix}/src", f"--target={target}:{env.prefix}/{target}",
                    "-r", f"--id={env.prefix}-{target}", "--parallel=1") for target in ("awss3", "azure")]
    readings, commands = [], 0
    try:
        while any(c.poll() is None for c in copies):
            result = env.transfer("status", "--output=json")
            assert result.returncode == 0, result.stderr
            readings.append({t["id"]: t for t in json.loads(result.stdout)})
            commands += 1
            for _ in range(20):
                store = SQLiteRecords(env.config_dir / "transfer.db")
                readings.append({t["id"]: t for t in store.transfers()})
                store.close()
    finally:
        outcomes = [finish(c) for c in copies]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert commands >= 2 and len(readings) >= 40
    for target in ("awss3", "azure"):
        seen = [r[f"{env.prefix}-{target}"] for r in readings if f"{env.prefix}-{target}" in r]
        for reading in seen:
            assert reading["state"] in ("running", "completed")
            # recorded at once, then listed a page at a time: fewer objects only while still listing
            assert reading["objects_total"] == len(files) or \
                (reading["listing"] and reading["objects_total"] < len(files)), reading
            assert 0 <= reading["objects_done"] <= reading["objects_total"]
            assert 0 <= reading["bytes_done"] <= reading["bytes_total"]
        assert [r["objects_done"] for r in seen] == sorted(r["objects_done"] for r in seen)
        assert [r["objects_total"] for r in seen] == sorted(r["objects_total"] for r in seen)
        assert seen[-1]["objects_total"] == len(files)
        assert env.tree(target, f"{env.prefix}/{target}") == files
    final = json.loads(env.transfer("status", "--output=json").stdout)
    assert {t["id"]: t["state"] for t in final} == {f"{env.prefix}-awss3": "completed",
                                                     f"{env.prefix}-azure": "completed"}
