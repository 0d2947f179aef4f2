"""Resume, cancel, Ctrl-C, kill -9, cleanup and retries through the real `cms transfer` in subprocesses,
and unit tests of the pieces they rest on (Retry, the lease of a run, SQLiteRecords.claim/heartbeat).

A transfer is stopped at a chosen point by a HoldingProxy in front of the target: it lets the first
parts of the large object through and holds the next ones until the test releases (or drops) them,
so "killed in the middle of a large object" is a fixed state, not a race.
"""
import base64
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict
import types
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

import emulators as emu
import faultproxy
from conftest import CMS
from faultproxy import FaultProxy
from cloudmesh.transfer import retry as retry_module
from cloudmesh.transfer.errors import NotFound, UsageError
from cloudmesh.transfer.records.base import LEASE, owner_alive, state_of
from cloudmesh.transfer.records.sqlite import SQLiteRecords
from cloudmesh.transfer.retry import Retry

MiB = 1024 * 1024
PART = 5 * MiB
CHUNKS = ("--chunksize=5MiB", "--parallel=2")
TARGETS = ["awss3", "azure"]


# Helpers ----------------------------------------------------------------------------------------------------------


class HoldingProxy(FaultProxy):
    """A FaultProxy that can hold requests: of those `hold` selects (by default the part uploads), the
    first `allow` pass and later ones wait, outside the proxy's lock, until release() forwards or drops them."""

    PARTS = {"s3": ("PUT", r"[?&]partNumber="), "azure": ("PUT", r"[?&]comp=block(&|$)")}

    def __init__(self, upstream: str, flavor: str, *, allow: int | None = None, hold=None, **settings):
        method, path = hold or self.PARTS[flavor]
        self.hold_method, self.hold_path = re.compile(method), re.compile(path)
        self.allow, self.passed, self.waiting, self.dropping = allow, 0, 0, False
        self.gate, self.held = threading.Condition(), threading.Event()
        super().__init__(upstream, seed=0, flavor=flavor, **settings)

    def _decide(self, method, path, headers):
        if self.hold_method.fullmatch(method) and self.hold_path.search(path):
            with self.gate:
                if self.allow is not None and self.passed >= self.allow:
                    self.waiting += 1
                    self.held.set()
                    self.gate.wait_for(lambda: self.allow is None)
                    self.waiting -= 1
                    if self.dropping:
                        with self._lock:
                            self._seen += 1
                            self._faults["drop"] += 1
                        return "drop"
                else:
                    self.passed += 1
        return super()._decide(method, path, headers)

    def release(self, drop: bool = False) -> None:
        """Let the held requests go on to the upstream, or with `drop` close them unanswered (never forwarded);
        later requests pass."""
        with self.gate:
            self.allow, self.dropping = None, drop
            self.gate.notify_all()

    def idle(self) -> bool:
        """No request held and every request received has been answered (or dropped)."""
        with self.gate:
            waiting = self.waiting
        return waiting == 0 and len(self.log) == self.seen

    def stop(self) -> None:
        self.release(drop=True)
        super().stop()


class Background:
    """A `cms transfer ...` running in the background, its stdout and stderr collected line by line."""

    def __init__(self, env, *args):
        self.process = subprocess.Popen([CMS, "transfer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env.environ(), cwd=env.config_dir)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self.read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def read(stream, lines: list) -> None:
        for line in stream:
            lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        return code

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        self.process.stdout.close()
        self.process.stderr.close()


def until(condition, what: str, run: Background | None = None, timeout: float = 30):
    """Poll `condition` until it is true; fail if the background command ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if run is not None and run.process.poll() is not None:
            raise AssertionError(f"waiting for {what}, the command ended ({run.process.returncode}): {run.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for offset in range(0, size, MiB):
            f.write(os.urandom(min(MiB, size - offset)))


def seed_folder(env, big_mib: int) -> dict:
    """A local source folder: two small files and one large object of `big_mib` MiB; returns its tree."""
    src = env.local / env.prefix / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha " * 100)
    (src / "sub" / "b.txt").write_bytes(b"beta " * 300)
    write_random(src / "big.bin", big_mib * MiB)
    return env.tree("local", f"{env.prefix}/src")


def proxied(env, request, target: str, **options) -> tuple[HoldingProxy, str]:
    """A HoldingProxy in front of moto ('s3p') or Azurite ('azp'), stopped when the test ends."""
    if target == "awss3":
        proxy = HoldingProxy(env.emulators.s3_endpoint, "s3", **options)
        env.add_storage("s3p", "awss3", endpoint_url=proxy.url)
        name = "s3p"
    else:
        proxy = HoldingProxy(f"http://127.0.0.1:{env.emulators.azure_port}", "azure", **options)
        env.add_storage("azp", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
        name = "azp"
    request.addfinalizer(proxy.stop)
    return proxy, name


def plain_proxy(env, request, target: str, **settings) -> tuple[FaultProxy, str]:
    """A FaultProxy (faults as `settings` say) in front of moto ('s3f') or Azurite ('azf')."""
    if target == "awss3":
        proxy = FaultProxy(env.emulators.s3_endpoint, seed=1, flavor="s3", **settings)
        env.add_storage("s3f", "awss3", endpoint_url=proxy.url)
        name = "s3f"
    else:
        proxy = FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", seed=1, flavor="azure", **settings)
        env.add_storage("azf", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
        name = "azf"
    request.addfinalizer(proxy.stop)
    return proxy, name


def copy_args(env, target_name: str, *extra) -> list[str]:
    p = env.prefix
    return ["copy", f"--source=local:{p}/src", f"--target={target_name}:{p}/dst", "-r", f"--id={p}", *CHUNKS,
            *extra]


def objects(env) -> dict:
    records = SQLiteRecords(env.config_dir / "transfer.db")
    try:
        return {row.path: asdict(row) for row in records.objects(env.prefix)}
    finally:
        records.close()


def stopped_in_big_object(env, proxy: HoldingProxy, run: Background, parts: int) -> None:
    """Wait until the small files are done, `parts` parts of big.bin are stored and recorded, and the next
    parts are held at the proxy."""
    def there():
        rows = objects(env)
        return proxy.held.is_set() and rows.get("big.bin", {}).get("bytes_done") == parts * PART and \
            rows["a.txt"]["state"] == rows["sub/b.txt"]["state"] == "done"
    until(there, f"{parts} parts of big.bin", run)


def killed_in_big_object(env, proxy: HoldingProxy, name: str, parts: int) -> None:
    """Copy to storage `name`, kill -9 once `parts` parts of big.bin are stored, and drop the held parts."""
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, parts)
        run.process.kill()
        run.wait(10)
    proxy.release(drop=True)
    until(proxy.idle, "the proxy to settle")


def status(env, transfer_id: str) -> dict:
    result = env.transfer("status", f"--id={transfer_id}", "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(stderr: str) -> str:
    """Exactly one 'ERROR: ...' line and no traceback; returns it."""
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def only_error(result) -> str:
    """The command's stderr is a single 'ERROR: ...' line; returns it."""
    assert result.stderr.startswith("ERROR: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def open_uploads(env, target: str, prefix: str) -> dict:
    """What the target stores under `prefix` outside complete objects, by key: the part sizes of open S3
    multipart uploads (an upload with no part counts too), or the sizes of uncommitted Azure blocks."""
    found = {}
    if target == "awss3":
        for upload in env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=prefix).get("Uploads", []):
            parts = env.s3.list_parts(Bucket=emu.BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
            found.setdefault(upload["Key"], []).extend(p["Size"] for p in parts.get("Parts", []))
    else:
        for blob in env.azure.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"]):
            try:
                _, uncommitted = env.azure.get_blob_client(blob.name).get_block_list("uncommitted")
            except ResourceNotFoundError:
                continue
            if uncommitted:
                found[blob.name] = [block.size for block in uncommitted]
    return found


def visible(env, target: str, prefix: str) -> dict:
    """Every object the target lists under `prefix/` with its bytes; for Azure uncommitted blobs are listed too
    (as None when they have no committed content), so a partial blob cannot hide."""
    if target == "awss3":
        return env.tree("awss3", prefix)
    start, found = prefix + "/", {}
    for blob in env.azure.list_blobs(name_starts_with=start, include=["uncommittedblobs"]):
        try:
            found[blob.name[len(start):]] = env.azure.download_blob(blob.name).readall()
        except ResourceNotFoundError:
            found[blob.name[len(start):]] = None
    return found


def resume_completes(env, target: str, source_tree: dict) -> None:
    """`resume` exits 0, the target equals the source byte for byte, and no partial upload is left."""
    result = env.transfer("resume", f"--id={env.prefix}", "--output=json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "completed"
    assert visible(env, target, f"{env.prefix}/dst") == source_tree
    assert open_uploads(env, target, f"{env.prefix}/dst/") == {}
    record = status(env, env.prefix)
    assert record["state"] == "completed" and record["objects_done"] == 3 and record["uploads_open"] == 0


def dead_pid() -> int:
    """The pid of a process of this host that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# 1. cancel from another shell -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_cancel_from_another_shell_stops_the_run_aborts_its_uploads_and_resume_finishes(env, request, target):
    """`cms transfer cancel` returns within seconds; the running copy exits 1 with one line, nothing partial is
    left at the target (no open upload, no uncommitted blocks), and `resume` then completes the copy."""
    tree = seed_folder(env, 30)
    proxy, name = proxied(env, request, target, allow=2)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 2)
        db = sqlite3.connect(env.config_dir / "transfer.db")
        request.addfinalizer(db.close)
        started = time.monotonic()
        with Background(env, "cancel", f"--id={env.prefix}", "--output=json") as cancel:
            # Release the held parts only once the run's lease has seen the cancel, so that it cannot finish.
            asked = until(lambda: db.execute("SELECT cancel FROM transfers WHERE id = ?", (env.prefix,)).fetchone()[0]
                          and time.time(), "the cancel request", cancel)
            until(lambda: db.execute("SELECT heartbeat FROM transfers WHERE id = ?",
                                     (env.prefix,)).fetchone()[0] > asked, "a heartbeat after the cancel", run)
            proxy.release()
            assert cancel.wait(30) == 0, cancel.stderr
            elapsed = time.monotonic() - started
            assert json.loads(cancel.stdout)["state"] == "cancelled"
        assert elapsed < 10
        assert run.wait(30) == 1
        assert run.stderr.count("\n") == 1, run.stderr
        line = one_error_line(run.stderr)
        assert line.startswith(f"ERROR: transfer '{env.prefix}' cancelled: 2 of 3 objects done"), line

    record = status(env, env.prefix)
    assert record["state"] == "cancelled" and record["uploads_open"] == 0 and record["objects_done"] == 2
    assert open_uploads(env, target, f"{env.prefix}/") == {}
    if target == "awss3":
        assert env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=env.prefix).get("Uploads", []) == []
    landed = visible(env, target, f"{env.prefix}/dst")
    assert "big.bin" not in landed
    assert landed == {key: tree[key] for key in ("a.txt", "sub/b.txt")}
    resume_completes(env, target, tree)


# 2. Ctrl-C --------------------------------------------------------------------------------------------------------


def test_one_ctrl_c_cancels_the_copy_aborts_its_uploads_and_exits_130(env, request):
    """The first SIGINT cancels: a note on stderr, exit 130, the record says cancelled, no open upload stays;
    resume then completes byte for byte."""
    tree = seed_folder(env, 30)
    proxy, name = proxied(env, request, "awss3", allow=2)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 2)
        run.signal(signal.SIGINT)
        until(lambda: "cancelling" in run.stderr, "the cancelling note", run)
        proxy.release()
        assert run.wait(30) == 130
    assert "press Ctrl-C again to quit at once" in run.stderr
    line = one_error_line(run.stderr)
    assert line.startswith(f"ERROR: transfer '{env.prefix}' cancelled: 2 of 3 objects done"), line
    record = status(env, env.prefix)
    assert record["state"] == "cancelled" and record["uploads_open"] == 0
    assert open_uploads(env, "awss3", f"{env.prefix}/") == {}
    assert "big.bin" not in visible(env, "awss3", f"{env.prefix}/dst")
    resume_completes(env, "awss3", tree)


def test_two_ctrl_c_quit_at_once_leave_the_transfer_interrupted_and_resume_finishes_it(env, request):
    """A second SIGINT while the first still cancels ends the process at once (130); the record then reads
    interrupted, not running or cancelled, and resume completes byte for byte."""
    tree = seed_folder(env, 30)
    proxy, name = proxied(env, request, "azure", allow=2)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 2)
        run.signal(signal.SIGINT)
        until(lambda: "cancelling" in run.stderr, "the cancelling note", run)
        # The held parts keep the cancel from finishing, so this Ctrl-C surely comes while it is under way.
        pressed = time.monotonic()
        run.signal(signal.SIGINT)
        assert run.wait(10) == 130
        assert time.monotonic() - pressed < 3
    assert "quit at once" in run.stderr and "Traceback" not in run.stderr
    proxy.release(drop=True)
    until(proxy.idle, "the proxy to settle")
    record = status(env, env.prefix)
    assert record["state"] == "interrupted" and record["uploads_open"] == 1
    resume_completes(env, "azure", tree)


# 3. kill -9, status, cleanup --------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_kill_9_reads_interrupted_and_cleanup_discards_the_parts_then_resume_completes(env, request, target):
    """After kill -9 in the large object, status says interrupted with its upload open; `cleanup` names the key
    and leaves no part stored; resume afterwards still delivers every object intact."""
    tree = seed_folder(env, 30)
    proxy, name = proxied(env, request, target, allow=2)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 2)
        run.process.kill()
        assert run.wait(10) == -signal.SIGKILL
    proxy.release(drop=True)
    until(proxy.idle, "the proxy to settle")

    record = status(env, env.prefix)
    assert record["state"] == "interrupted" and record["uploads_open"] >= 1
    big = f"{env.prefix}/dst/big.bin"
    assert sum(open_uploads(env, target, f"{env.prefix}/").get(big, [])) == 2 * PART

    result = env.transfer("cleanup", f"--id={env.prefix}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"discarded the partial upload of {big}"]
    assert open_uploads(env, target, f"{env.prefix}/") == {}
    if target == "awss3":
        assert env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=env.prefix).get("Uploads", []) == []
    assert status(env, env.prefix)["uploads_open"] == 0
    again = env.transfer("cleanup", f"--id={env.prefix}")
    assert again.returncode == 0 and again.stdout.strip() == "no partial uploads", again
    resume_completes(env, target, tree)


# 4. resume reuses the uploaded parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_resume_after_kill_9_sends_only_what_the_target_does_not_hold(env, request, target):
    """kill -9 with 4 of 8 parts stored: resume uploads at most the missing bytes plus two parts (not the whole
    40 MiB again), and the object arrives intact."""
    tree = seed_folder(env, 40)
    proxy, name = proxied(env, request, target, allow=4)
    killed_in_big_object(env, proxy, name, 4)

    partial = open_uploads(env, target, f"{env.prefix}/")
    assert partial == {f"{env.prefix}/dst/big.bin": [PART] * 4}
    stored = sum(len(data) for data in env.tree(target, f"{env.prefix}/dst").values()) + 4 * PART
    missing = sum(map(len, tree.values())) - stored
    proxy.reset_counters()
    resume_completes(env, target, tree)
    assert missing <= proxy.bytes_up <= missing + 2 * PART, (proxy.bytes_up, missing)


# 5. a changed source is copied afresh -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_a_source_changed_since_the_kill_is_copied_afresh_not_stitched(env, request, target):
    """The large source file is rewritten (same size, new mtime) after kill -9; resume must deliver the new bytes,
    not the old parts stitched to new ones."""
    seed_folder(env, 30)
    proxy, name = proxied(env, request, target, allow=2)
    killed_in_big_object(env, proxy, name, 2)

    big = env.local / env.prefix / "src" / "big.bin"
    before = big.stat().st_mtime
    write_random(big, 30 * MiB)
    os.utime(big, (before + 100, before + 100))
    resume_completes(env, target, env.tree("local", f"{env.prefix}/src"))


# 6. resume retries only the failed objects ------------------------------------------------------------------------


def test_resume_transfers_only_the_objects_that_failed(env, request):
    """One object cannot be written (a folder sits at its target path); once that is fixed, resume reads and
    writes only that object, leaves the done files untouched, and the transfer completes."""
    p = env.prefix
    files = {"a.txt": b"a" * 1000, "b.txt": b"b" * 2000, "c.txt": b"c" * 3000}
    for key, data in files.items():
        env.put("awss3", f"{p}/src/{key}", data)
    proxy, _ = plain_proxy(env, request, "awss3")
    (env.local / p / "dst" / "b.txt").mkdir(parents=True)

    first = env.transfer("copy", f"--source=s3f:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}")
    assert first.returncode == 1
    assert "1 of 3 objects failed; first: b.txt:" in only_error(first)
    record = status(env, p)
    assert record["state"] == "failed" and record["objects_done"] == 2 and record["objects_failed"] == 1
    done = {key: (env.local / p / "dst" / key).stat() for key in ("a.txt", "c.txt")}

    (env.local / p / "dst" / "b.txt").rmdir()
    proxy.reset_counters()
    result = env.transfer("resume", f"--id={p}")
    assert result.returncode == 0, result.stderr
    fetched = [e.path.split("?")[0] for e in proxy.log if e.method == "GET" and f"/{p}/src/" in e.path]
    assert fetched == [f"/{emu.BUCKET}/{p}/src/b.txt"]
    for key, before in done.items():
        after = (env.local / p / "dst" / key).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert env.tree("local", f"{p}/dst") == files
    record = status(env, p)
    assert record["state"] == "completed" and record["objects_done"] == 3 and record["errors"] == []


# 7. permanent errors fail at once ---------------------------------------------------------------------------------


class RefusingHandler(faultproxy._Handler):
    """Answers what the proxy marks as an error with S3's 403 SignatureDoesNotMatch (moto, unlike S3, accepts
    any key), so that the client meets wrong credentials as from S3."""

    def send_error_reply(self, flavor: str) -> None:
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The '
                b'request signature we calculated does not match the signature you provided.</Message></Error>')
        self.record(403)
        self.send_response_only(403, "Forbidden")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.mark.parametrize("target", TARGETS)
def test_wrong_credentials_fail_at_once_even_with_many_retries(env, request, target):
    """A target that rejects the credentials (403) is not retried: with --retries=10 the copy is refused
    within seconds, before any object, after one request, with one line and exit status 2. (Azurite
    checks the key itself; for S3 the proxy answers as S3 does, since moto accepts any key.)"""
    p = env.prefix
    env.put("local", f"{p}/src/one.txt", b"1" * 100)
    env.put("local", f"{p}/src/two.txt", b"2" * 200)
    write_random(env.local / p / "src" / "big.bin", 6 * MiB)
    if target == "awss3":
        proxy, name = plain_proxy(env, request, target, error_rate=1)
        proxy._server.RequestHandlerClass = RefusingHandler
    else:
        proxy, name = plain_proxy(env, request, target)
        env.add_storage(name, "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}",
                        account_key=base64.b64encode(b"not the account key" * 4).decode())
    started = time.monotonic()
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target={name}:{p}/dst", "-r", f"--id={p}",
                          "--retries=10", *CHUNKS)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    line = only_error(result)
    assert f"storage '{name}' rejected its credentials" in line, line
    requests = [(e.method, e.path) for e in proxy.log]
    assert len(requests) == 1, requests
    assert all(e.status == 403 for e in proxy.log), proxy.log
    assert elapsed < 8
    assert "no transfer with id" in env.transfer("status", f"--id={p}").stderr  # nothing was recorded


def test_a_source_object_gone_before_its_download_is_not_retried(env, request):
    """An object listed at the start but deleted before its GET answers 404: that object fails at once with
    one GET (even with --retries=10) and the others are copied."""
    p = env.prefix
    env.put("awss3", f"{p}/src/keep.txt", b"kept")
    env.put("awss3", f"{p}/src/gone.txt", b"soon deleted")
    proxy, _ = proxied(env, request, "awss3", allow=0, hold=("GET", rf"/{p}/src/gone\.txt(\?|$)"))
    with Background(env, "copy", f"--source=s3p:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}",
                    "--retries=10") as run:
        until(proxy.held.is_set, "the GET of gone.txt", run)
        env.s3.delete_object(Bucket=emu.BUCKET, Key=f"{p}/src/gone.txt")
        started = time.monotonic()
        proxy.release()
        assert run.wait(30) == 1
        assert time.monotonic() - started < 5
    assert "1 of 2 objects failed; first: gone.txt:" in one_error_line(run.stderr)
    assert "does not exist" in run.stderr
    gets = [e for e in proxy.log if e.method == "GET" and "/gone.txt" in e.path]
    assert [e.status for e in gets] == [404]
    assert env.tree("local", f"{p}/dst") == {"keep.txt": b"kept"}


# 8. transient errors are retried ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_transient_503s_are_retried_and_the_copy_completes(env, request, target):
    """Three 503 answers (SlowDown / ServerBusy) to the uploads are retried; the copy completes intact."""
    p = env.prefix
    files = {f"f{i}.txt": os.urandom(1000 * (i + 1)) for i in range(3)}
    for key, data in files.items():
        env.put("local", f"{p}/src/{key}", data)
    proxy, name = plain_proxy(env, request, target, error_rate=1, faults_left=3, match=("PUT", r"/dst/"))
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target={name}:{p}/dst", "-r", f"--id={p}")
    assert result.returncode == 0, result.stderr
    assert proxy.faults["error"] == 3
    assert [e.status for e in proxy.log].count(503) == 3
    assert env.tree(target, f"{p}/dst") == files
    assert status(env, p)["state"] == "completed"


@pytest.mark.parametrize("target", TARGETS)
def test_with_retries_0_a_transient_error_fails_the_object_with_one_line(env, request, target):
    """--retries=0 tries once: a 503 fails the copy with one clear line naming the service's error code."""
    p = env.prefix
    env.put("local", f"{p}/src/f.txt", b"payload")
    proxy, name = plain_proxy(env, request, target, error_rate=1, match=("PUT", r"."))
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target={name}:{p}/dst", "-r", f"--id={p}",
                          "--retries=0")
    assert result.returncode == 1
    line = only_error(result)
    assert "1 of 1 objects failed" in line and ("SlowDown" if target == "awss3" else "ServerBusy") in line, line
    assert proxy.faults["error"] == 1
    assert status(env, p)["state"] == "failed"


# 9. what resume, cancel and cleanup refuse ------------------------------------------------------------------------


def test_a_running_transfer_cannot_be_resumed_or_cleaned_up_and_a_completed_one_not_cancelled(env, request):
    """While a live process runs a transfer, resume and cleanup are refused with one line (exit 2); once it has
    completed, resume is a no-op (exit 0, no request) and cancel is refused."""
    tree = seed_folder(env, 15)
    proxy, name = proxied(env, request, "awss3", allow=1)
    with Background(env, *copy_args(env, name)) as run:
        stopped_in_big_object(env, proxy, run, 1)
        resume = env.transfer("resume", f"--id={env.prefix}")
        assert resume.returncode == 2
        assert f"transfer '{env.prefix}' is still running" in only_error(resume)
        cleanup = env.transfer("cleanup", f"--id={env.prefix}")
        assert cleanup.returncode == 2
        assert f"transfer '{env.prefix}' is running; cancel it instead" in only_error(cleanup)
        assert status(env, env.prefix)["state"] == "running"
        proxy.release()
        assert run.wait(30) == 0, run.stderr
    assert env.tree("awss3", f"{env.prefix}/dst") == tree

    proxy.reset_counters()
    again = env.transfer("resume", f"--id={env.prefix}", "--output=json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "completed" and proxy.seen == 0
    cancel = env.transfer("cancel", f"--id={env.prefix}")
    assert cancel.returncode == 2
    assert f"transfer '{env.prefix}' is already completed" in only_error(cancel)
    assert status(env, env.prefix)["state"] == "completed"


@pytest.mark.parametrize("verb", ["resume", "cancel", "cleanup", "status"])
def test_an_unknown_id_is_refused_with_one_line(env, verb):
    """resume, cancel, cleanup and status of an id never used: exit 1, 'no transfer with id'."""
    result = env.transfer(verb, "--id=never-used")
    assert result.returncode == 1
    assert "no transfer with id 'never-used'" in only_error(result)


# 10. units --------------------------------------------------------------------------------------------------------


def test_retry_pauses_are_at_most_attempts_minus_1_each_within_the_cap():
    """attempts tries mean attempts-1 waits, each no longer than the cap nor the backoff step it stands for."""
    for _ in range(200):
        pauses = list(Retry(attempts=6, base=0.5, cap=3.0, seconds=1e6).pauses())
        assert len(pauses) == 5
        assert all(0 <= pause <= min(3.0, 0.5 * 2 ** n) for n, pause in enumerate(pauses))
    assert list(Retry(attempts=1).pauses()) == []


def test_retry_pauses_stop_once_the_time_budget_is_used(monkeypatch):
    """With a 5 s budget, waiting the pauses out stops the retries early: far fewer than 49 waits, total <= 5 s."""
    clock = [1000.0]
    monkeypatch.setattr(retry_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(retry_module, "random", __import__("random").Random(7))
    waited = []
    for pause in Retry(attempts=50, base=1.0, cap=2.0, seconds=5.0).pauses():
        waited.append(pause)
        clock[0] += pause
    assert 0 < len(waited) < 49 and sum(waited) <= 5.0


def running(**fields) -> dict:
    now = time.time()
    return {"state": "running", "started": now - 5, "heartbeat": now, "host": socket.gethostname(),
            "pid": os.getpid(), **fields}


def test_a_dead_or_silent_owner_reads_interrupted_and_a_live_one_running():
    """state_of: a dead pid on this host, a zombie, or a lease older than LEASE mean interrupted; a live process
    with a fresh lease (or one on another host) means running; settled states are shown as they are."""
    assert owner_alive(running()) and state_of(running()) == "running"
    assert state_of(running(pid=dead_pid())) == "interrupted"
    assert state_of(running(heartbeat=time.time() - LEASE - 1)) == "interrupted"
    assert state_of(running(host="elsewhere.example", pid=dead_pid())) == "running"
    assert state_of(running(host="elsewhere.example", heartbeat=time.time() - LEASE - 1)) == "interrupted"
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        until(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", "a zombie")
        assert state_of(running(pid=zombie.pid)) == "interrupted"
    finally:
        zombie.wait()
    for settled in ("completed", "failed", "cancelled"):
        assert state_of(running(state=settled, pid=dead_pid())) == settled


@pytest.fixture
def records(tmp_path):
    store = SQLiteRecords(tmp_path / "transfer.db")
    store.create({"id": "t1", "source": "local:a", "target": "awss3:b", "copy": True, "recursive": True,
                  "route": "local->awss3", "owner": "first"},
                 [{"path": name, "source_key": f"a/{name}", "target_key": f"b/{name}", "size": 10, "etag": None,
                   "mtime": 1.0} for name in ("done", "failed", "pending", "copied")])
    store.update_object("t1", "done", state="done", bytes_done=10)
    store.update_object("t1", "failed", state="failed", message="boom", bytes_done=4)
    store.update_object("t1", "copied", state="copied", bytes_done=10)
    yield store
    store.close()


def set_owner(store: SQLiteRecords, **fields) -> None:
    assignments = ", ".join(f"{name} = ?" for name in fields)
    store.write(f"UPDATE transfers SET {assignments} WHERE id = 't1'", tuple(fields.values()))


def test_claim_refuses_a_live_owner_and_takes_over_a_dead_one_resetting_failed_objects(records):
    """claim: UsageError while the owner lives; NotFound for an unknown id; after the owner died it runs under the
    new owner, failed objects are pending again and settled or copied objects keep their state."""
    with pytest.raises(UsageError, match="still running"):
        records.claim("t1", "second")
    with pytest.raises(NotFound, match="no transfer with id"):
        records.claim("nope", "second")
    set_owner(records, pid=dead_pid())
    assert records.status("t1")["state"] == "interrupted"
    records.claim("t1", "second")
    view = records.status("t1")
    assert view["state"] == "running" and view["pid"] == os.getpid()
    rows = {row.path: asdict(row) for row in records.objects("t1")}
    assert {path: row["state"] for path, row in rows.items()} == {
        "done": "done", "failed": "pending", "pending": "pending", "copied": "copied"}
    assert rows["failed"]["message"] is None and rows["failed"]["bytes_done"] == 0
    assert rows["done"]["bytes_done"] == 10
    with pytest.raises(UsageError):
        records.claim("t1", "third")  # the new owner is this live process


def test_heartbeat_says_cancel_after_a_cancel_request_and_lost_after_another_claim(records):
    """heartbeat: "run" for the owner, "cancel" once a cancel was requested, "lost" for the old owner once
    another claimed the transfer (and for anyone once it finished)."""
    assert records.heartbeat("t1", "first") == "run"
    assert records.heartbeat("t1", "someone-else") == "lost"
    records.request_cancel("t1")
    assert records.heartbeat("t1", "first") == "cancel"
    assert records.status("t1")["message"] == "cancel requested"
    set_owner(records, heartbeat=time.time() - LEASE - 1)
    records.claim("t1", "second")
    assert records.heartbeat("t1", "first") == "lost"
    assert records.heartbeat("t1", "second") == "run"  # the claim cleared the cancel request
    records.finish("t1", "completed", owner="second")
    assert records.heartbeat("t1", "second") == "lost"


# found in review: resume of single files, vanished sources, stop during planning, cancel keeping errors


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_resume_of_a_recursive_transfer_of_one_file_finds_the_file(env, verb):
    """`-r` on a single file plans it by a lookup, not a listing; resume must look it up the same way
    (a move recorded as copied must still delete its source)."""
    p = env.prefix
    env.put("local", f"{p}/one.bin", b"1" * 1000)
    assert env.transfer(verb, f"--source=local:{p}/one.bin", f"--target=awss3:{p}/dst/", "-r", f"--id={p}").returncode == 0
    store = SQLiteRecords(env.config_dir / "transfer.db")
    try:
        store.update_object(p, "one.bin", state="copied" if verb == "move" else "pending")
        store.finish(p, "failed", "made unsettled by the test")
    finally:
        store.close()
    if verb == "move":
        env.put("local", f"{p}/one.bin", b"1" * 1000)  # as if killed between the copy and the delete
    result = env.transfer("resume", f"--id={p}", "--output=json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "completed"
    assert env.get("awss3", f"{p}/dst/one.bin") == b"1" * 1000
    assert (env.local / p / "one.bin").exists() == (verb == "copy")


def test_a_resume_that_finds_a_source_gone_ends_failed(env):
    p = env.prefix
    for name in ("a.txt", "b.txt"):
        env.put("local", f"{p}/src/{name}", name.encode())
    assert env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", f"--id={p}").returncode == 0
    store = SQLiteRecords(env.config_dir / "transfer.db")
    try:
        store.update_object(p, "b.txt", state="pending")
        store.finish(p, "failed", "made unsettled by the test")
    finally:
        store.close()
    (env.local / p / "src" / "b.txt").unlink()
    result = env.transfer("resume", f"--id={p}")
    assert "the source no longer exists" in only_error(result) and result.returncode == 1
    assert status(env, p)["state"] == "failed"


def test_a_stop_set_while_a_transfer_is_planned_cancels_it(env, monkeypatch):
    """Ctrl-C sets Transfer.stop; pressed while the objects are still being planned, it must cancel
    the transfer before any object is sent, not be forgotten."""
    from cloudmesh.transfer import Transfer
    from cloudmesh.transfer.planner import Selection
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    env.put("local", f"{env.prefix}/src/a.txt", b"a")
    api = Transfer()
    api.stop.clear()
    run = api.create(f"local:{env.prefix}/src", f"awss3:{env.prefix}/dst", True, env.prefix, False, Selection())
    api.stop.set()
    assert api.execute(run)["state"] == "cancelled"
    assert env.tree("awss3", f"{env.prefix}/dst") == {}


def test_cancelling_a_failed_transfer_keeps_its_errors(env):
    p = env.prefix
    env.put("awss3", f"{p}/src/ok.txt", b"ok")
    env.put("awss3", f"{p}/src/x/../../escape", b"no")
    assert env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}").returncode == 1
    assert env.transfer("cancel", f"--id={p}").returncode == 0
    record = status(env, p)
    assert record["state"] == "cancelled" and record["objects_failed"] == 1
    assert record["errors"][0]["path"] == "x/../../escape"


def test_the_azure_sdk_waits_between_retries_are_capped_like_ours():
    from cloudmesh.transfer.providers.azureblob import CappedRetry
    policy = CappedRetry(Retry(attempts=21, base=0.5, cap=8.0))
    assert max(policy.get_backoff_time({"count": count}) for count in range(1, 21) for _ in range(20)) <= 8.0
