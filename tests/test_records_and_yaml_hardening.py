"""Damaged, read-only and locked transfer records, and hostile YAML, with the real `cms transfer`.

Each case ends as one `ERROR:` line that names the file and what to do, never `internal error`:
a `transfer.db` that is random bytes, cut in half, a bad header, a folder, read-only (the file, its
folder, its disk), records another process holds locked (at the start and in the middle of a
transfer, while `status` still reads them), YAML alias bombs, self-referring aliases, deep nesting
and oversized files (cloudmesh.yaml and transfer config files), and an unreachable MongoDB. A
cloudmesh.yaml with ordinary anchors and aliases, as PyYAML writes them, still works."""
import contextlib
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from emulators import AZURITE_KEY, S3_SECRET, free_port
from test_bad_input import one_error_line

CMS = str(Path(sys.executable).with_name("cms"))
MiB = 1024 * 1024
MEMORY_LIMIT = 768 * MiB  # address space of a `cms` that reads hostile YAML, so that today's main fails, not the host


def records_path(env) -> Path:
    return env.config_dir / "transfer.db"


def make_records(env, transfers: int = 0) -> Path:
    """A real transfer.db (created by `cms transfer status`), with `transfers` rows added."""
    result = env.transfer("status")
    assert result.returncode == 0, result.stderr
    path = records_path(env)
    if transfers:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.executemany("INSERT INTO transfers (id, state, source, target, route, copy, recursive, started)"
                           " VALUES (?, 'completed', 'awss3:a', 'azure:b', 'awss3->azureblob', 1, 1, 1.0)",
                           [(f"old-{i:04d}",) for i in range(transfers)])
    assert not Path(f"{path}-wal").exists()  # the last connection checkpointed: the file holds everything
    return path


def run_limited(env, *args, timeout: float = 60, **extra) -> tuple[subprocess.CompletedProcess, float]:
    """`cms transfer ...` with its memory bounded (hostile YAML must not take the host down with
    it), and how long it took; a run past `timeout` fails the test."""
    def bounded():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    start = time.monotonic()
    try:
        result = subprocess.run([CMS, "transfer", *args], capture_output=True, text=True, timeout=timeout,
                                env=env.environ(**extra), cwd=env.config_dir, preexec_fn=bounded)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cms transfer {' '.join(args)} still ran after {timeout} s")
    return result, time.monotonic() - start


# Damaged or read-only records: every command that opens them says so in one line, and the file is
# left as it was (to inspect, or to move aside).


def random_bytes(env) -> None:
    records_path(env).write_bytes(os.urandom(64 * 1024))


def cut_in_half(env) -> None:
    path = make_records(env, transfers=300)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def bad_header(env) -> None:
    records_path(env).write_bytes(b"SQLite format 3\x00" + b"not a database at all" * 200)


def a_folder(env) -> None:
    records_path(env).mkdir()
    (records_path(env) / "something").write_text("x")


@contextlib.contextmanager
def read_only(path: Path):
    """`path` (a file or a folder) made read-only for the block: chmod, or `chattr +i` as root, whom
    modes do not stop; skipped only as root where the immutable flag is not allowed."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"running as root, which writes through file modes, and chattr +i is not allowed here ({e})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def read_only_disk(path: Path):
    """The file `path` moved onto a tmpfs mounted read-only, `path` a symlink to it, for the block
    (the config folder itself stays writable: the cms shell writes its own files there); skipped
    where mounting is not allowed (as tests/test_bad_input.py's full and read-only disks are)."""
    disk = path.parent.parent / "read-only-disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    data = path.read_bytes()
    try:
        (disk / path.name).write_bytes(data)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
        path.unlink()
        path.symlink_to(disk / path.name)
        yield
    finally:
        if path.is_symlink():
            path.unlink()
            path.write_bytes(data)
        subprocess.run(["umount", str(disk)], check=True)


DAMAGED = {  # how the records are damaged, and what the line says
    "records-random-bytes": (random_bytes, "are not a SQLite database (corrupt or not ours): move it aside"),
    "records-cut-in-half": (cut_in_half, "are not a SQLite database (corrupt or not ours): move it aside"),
    "records-bad-header": (bad_header, "are not a SQLite database (corrupt or not ours): move it aside"),
    "records-a-folder": (a_folder, "cannot be opened: it is a folder, not a file; move it aside"),
}
READ_ONLY = {  # what is read-only, and what the line says
    "records-read-only-file": ("file", "cannot be written"),
    "records-read-only-folder": ("folder", "must be writable"),
    "records-read-only-disk": ("disk", "cannot be written (Read-only file system)"),
}
COMMANDS = {  # every kind of command that opens the records: reading them, and recording a transfer
    "status": ["status"],
    "statistic": ["statistic"],
    "copy": ["copy", "--source=awss3:{p}/a.txt", "--target=azure:{p}/a.txt"],
}


def snapshot(path: Path):
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


def check_commands(env, says: str) -> None:
    """Each command: one line naming the records and saying `says`, exit 1, nothing copied."""
    path = records_path(env)
    before = snapshot(path)
    for name, args in COMMANDS.items():
        result = env.transfer(*[a.format(p=env.prefix) for a in args])
        line = one_error_line(result, 1)
        assert f"the transfer records {path} " in line and says in line, (name, line)
        assert snapshot(path) == before, name
    assert env.tree("azure", env.prefix) == {}


@pytest.mark.parametrize("damage,says", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_records_are_one_line_naming_the_file_for_every_command(env, damage, says):
    env.put("awss3", f"{env.prefix}/a.txt", b"a")
    damage(env)
    check_commands(env, says)


@pytest.mark.parametrize("what,says", READ_ONLY.values(), ids=READ_ONLY.keys())
def test_read_only_records_are_one_line_naming_the_file_for_every_command(env, what, says):
    env.put("awss3", f"{env.prefix}/a.txt", b"a")
    path = make_records(env)
    context = {"file": lambda: read_only(path), "folder": lambda: read_only(env.config_dir),
               "disk": lambda: read_only_disk(path)}[what]
    with context():
        check_commands(env, says)
    result = env.transfer("copy", f"--source=awss3:{env.prefix}/a.txt", f"--target=azure:{env.prefix}/a.txt")
    assert result.returncode == 0, result.stderr  # writable again, the same records work


# Records locked by another process: a write waits, then fails in one line; reads do not wait.


@contextlib.contextmanager
def locked(path: Path):
    """The records held by this process in an exclusive write transaction, with a write pending."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        db.execute("UPDATE transfers SET message = 'held by a test' WHERE 0")
        yield db
        db.execute("ROLLBACK")
    finally:
        db.close()


def test_a_write_to_locked_records_waits_then_fails_in_one_line_and_works_once_they_are_free(env):
    p = env.prefix
    env.put("awss3", f"{p}/a.txt", b"a")
    path = make_records(env)
    args = ("copy", f"--source=awss3:{p}/a.txt", f"--target=azure:{p}/a.txt", f"--id={p}")
    with locked(path):
        start = time.monotonic()
        result = env.transfer(*args, CMS_TRANSFER_RECORDS_WAIT="1")
        took = time.monotonic() - start
    line = one_error_line(result, 1)
    assert line == f"ERROR: the transfer records {path} are locked by another process (waited 1 s); try again"
    assert 1 <= took < 15, took
    assert env.tree("azure", p) == {}
    result = env.transfer(*args)
    assert result.returncode == 0, result.stderr
    assert env.get("azure", f"{p}/a.txt") == b"a"


def test_status_and_statistic_read_records_that_another_process_holds_locked(env):
    """WAL readers never wait for a writer, and opening records whose schema is current takes no
    lock: `status` answers at once (here without a shorter wait) while another process writes."""
    p = env.prefix
    env.put("awss3", f"{p}/a.txt", b"abc")
    result = env.transfer("copy", f"--source=awss3:{p}/a.txt", f"--target=azure:{p}/a.txt", f"--id={p}")
    assert result.returncode == 0, result.stderr
    with locked(records_path(env)):
        start = time.monotonic()
        listed = env.transfer("status", "--output=json", timeout=60)
        one = env.transfer("status", f"--id={p}", "--output=json", timeout=60)
        totals = env.transfer("statistic", "--output=json", timeout=60)
        took = time.monotonic() - start
    for result in (listed, one, totals):
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert [t["id"] for t in json.loads(listed.stdout)] == [p]
    assert json.loads(one.stdout)["state"] == "completed"
    assert json.loads(totals.stdout)["bytes_total"] == 3
    assert took < 10, took


def test_records_locked_in_the_middle_of_a_transfer_stop_it_in_one_line_and_resume_finishes_it(env):
    """The lock is taken once ten objects are recorded done and held until the command ends: the
    next write of an object's outcome waits its second and fails the command in one line; the
    record reads interrupted or failed, and `resume` copies what is left."""
    p, count = env.prefix, 300
    sources = {f"f{i:03d}.txt": f"object {i}".encode() for i in range(count)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: env.put("awss3", f"{p}/src/{item[0]}", item[1]), sources.items()))
    path = make_records(env)
    process = subprocess.Popen([CMS, "transfer", "copy", f"--source=awss3:{p}/src", f"--target=azure:{p}/dst",
                                "-r", f"--id={p}", "--parallel=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env.environ(CMS_TRANSFER_RECORDS_WAIT="1"), cwd=env.config_dir)
    try:
        reader = sqlite3.connect(path, timeout=30)
        deadline = time.monotonic() + 60
        while reader.execute("SELECT count(*) FROM objects WHERE transfer_id = ? AND state = 'done'",
                             (p,)).fetchone()[0] < 10:
            assert time.monotonic() < deadline and process.poll() is None, process.poll()
            time.sleep(0.005)
        reader.close()
        with locked(path):
            try:
                out, err = process.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                pytest.fail("the copy still ran 90 s after its records were locked")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    line = one_error_line(result, 1)
    assert line == f"ERROR: the transfer records {path} are locked by another process (waited 1 s); try again"
    status = json.loads(env.transfer("status", f"--id={p}", "--output=json").stdout)
    assert status["state"] in ("interrupted", "failed") and 10 <= status["objects_done"] < count, status
    resumed = env.transfer("resume", f"--id={p}")
    assert resumed.returncode == 0, resumed.stderr
    assert env.tree("azure", f"{p}/dst") == sources
    assert json.loads(env.transfer("status", f"--id={p}", "--output=json").stdout)["state"] == "completed"


def test_the_records_wait_is_a_number_of_seconds_or_one_line(env):
    for value in ("soon", "-1", "nan", "1e9"):
        line = one_error_line(env.transfer("status", CMS_TRANSFER_RECORDS_WAIT=value), 2)
        assert line.startswith("ERROR: CMS_TRANSFER_RECORDS_WAIT must be a number of seconds from 0 to 3600"), line
    from cloudmesh.transfer.limits import RECORDS_WAIT, SERVICE_RECORDS_WAIT
    from cloudmesh.transfer.records import records_wait
    assert (RECORDS_WAIT, SERVICE_RECORDS_WAIT) == (30, 5)
    assert records_wait() == 30 and records_wait(SERVICE_RECORDS_WAIT) == 5


# YAML: aliases may not multiply a file, nor refer to themselves; nesting and size are bounded.


def laughs(indent: str, key: str = "lol") -> str:
    """A billion laughs: nine levels of nine aliases of the level below, 10**9 strings in ~500 bytes."""
    lines = [f'{indent}l0: &l0 ["{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}"]']
    for level in range(1, 10):
        lines.append(f"{indent}l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def cloudmesh_yaml_with(env, credentials: str) -> Path:
    """This test's cloudmesh.yaml with one more storage, whose credentials are the YAML text given."""
    text = yaml.safe_dump({"cloudmesh": {"storage": env.storages}}, sort_keys=False)
    text += f"    odd:\n      cm: {{kind: local}}\n      default: {{directory: {env.local}}}\n      credentials:\n"
    text += credentials
    path = env.config_dir / "cloudmesh.yaml"
    path.write_text(text)
    return path


def start_up(env) -> float:
    """How long `cms transfer config` takes on this test's ordinary cloudmesh.yaml (the start-up cost)."""
    result, took = run_limited(env, "config")
    assert result.returncode == 0, result.stderr
    return took


def test_an_alias_bomb_in_a_transfer_config_file_is_refused_at_once(env):
    base = start_up(env)
    bomb = env.config_dir / "bomb.yaml"
    bomb.write_text(laughs("") + "source: *l9\ntarget: azure:x\n")
    assert len(bomb.read_bytes()) < 600
    result, took = run_limited(env, "config", str(bomb))
    line = one_error_line(result, 2)
    assert f"transfer config file {bomb} is refused at line" in line and "aliases repeat more than" in line, line
    assert took < base + 1, (took, base)
    assert not (env.config_dir / "transfer.yaml").exists()


def test_an_alias_bomb_in_cloudmesh_yaml_is_refused_at_once_by_every_command(env):
    base = start_up(env)
    path = cloudmesh_yaml_with(env, laughs("        "))
    for args in (["config"], ["list", "--target=awss3:x"], ["copy", "--source=awss3:x", "--target=azure:x"]):
        result, took = run_limited(env, *args)
        line = one_error_line(result, 2)
        assert f"cloudmesh.yaml {path} is refused at line" in line and "aliases repeat more than" in line, line
        assert took < base + 1, (args, took, base)


SELF_AND_DEEP = {
    "yaml-alias-inside-itself": ("        loop: &loop {again: *loop}\n",
                                 "the alias *loop lies inside the value it names"),
    "yaml-nested-too-deeply": ("        deep: " + "[" * 2000 + "]" * 2000 + "\n", "nests more than 100 levels deep"),
}


@pytest.mark.parametrize("credentials,says", SELF_AND_DEEP.values(), ids=SELF_AND_DEEP.keys())
def test_an_alias_inside_itself_or_deep_nesting_in_cloudmesh_yaml_is_refused(env, credentials, says):
    path = cloudmesh_yaml_with(env, credentials)
    result, _ = run_limited(env, "config")
    line = one_error_line(result, 2)
    assert f"cloudmesh.yaml {path} is refused at line" in line and says in line, line


def test_configuration_files_over_1_MiB_are_refused(env):
    """Valid YAML, padded with comments past the 1 MiB limit: refused by size, before it is parsed."""
    padding = ("# " + "x" * 98 + "\n") * (MiB // 100 + 1)
    path = env.config_dir / "cloudmesh.yaml"
    path.write_text(yaml.safe_dump({"cloudmesh": {"storage": env.storages}}) + padding)
    line = one_error_line(run_limited(env, "config")[0], 2)
    assert line == f"ERROR: cloudmesh.yaml {path} is larger than 1 MiB, more than any configuration needs: " \
                   "check that it is the right file"
    path.write_text(yaml.safe_dump({"cloudmesh": {"storage": env.storages}}))
    big = env.config_dir / "big.yaml"
    big.write_text(f"source: awss3:{env.prefix}/a\ntarget: azure:{env.prefix}/a\n" + padding)
    line = one_error_line(run_limited(env, "config", str(big))[0], 2)
    assert line.startswith(f"ERROR: transfer config file {big} is larger than 1 MiB"), line
    assert not (env.config_dir / "transfer.yaml").exists()


def test_a_cloudmesh_yaml_with_anchors_and_aliases_as_pyyaml_writes_them_still_works(env):
    """cloudmesh writes cloudmesh.yaml with PyYAML, which writes an anchor and aliases for a value
    it meets twice: two storages sharing one credentials mapping. Read, masked and used as before."""
    p = env.prefix
    shared = dict(env.storages["azure"]["credentials"])
    storages = {**env.storages, "azure": {**env.storages["azure"], "credentials": shared},
                "azure2": {"cm": {"kind": "azureblob"}, "credentials": shared}}
    text = yaml.safe_dump({"cloudmesh": {"storage": storages}}, sort_keys=False)
    assert "&id001" in text and "*id001" in text
    (env.config_dir / "cloudmesh.yaml").write_text(text)
    result, _ = run_limited(env, "config")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)["storages"]
    assert shown["azure2"]["account_key"] == shown["azure"]["account_key"] == "********"
    assert AZURITE_KEY not in result.stdout + result.stderr and S3_SECRET not in result.stdout + result.stderr
    env.put("awss3", f"{p}/a.txt", b"shared")
    result = env.transfer("copy", f"--source=awss3:{p}/a.txt", f"--target=azure2:{p}/a.txt")
    assert result.returncode == 0, result.stderr
    assert env.get("azure", f"{p}/a.txt") == b"shared"


# MongoDB records that cannot be reached (no MongoDB server runs here: a closed port and a port
# that accepts connections but never answers stand in for a server that is down or hung).


@contextlib.contextmanager
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_unreachable_mongodb_records_are_one_line_naming_the_server(env):
    with silent_server() as silent:
        for port, says in ((free_port(), "Connection refused"), (silent, "timed out")):
            url = f"mongodb://user:pw-not-shown@127.0.0.1:{port}/?serverSelectionTimeoutMS=1000&connectTimeoutMS=500"
            result = env.transfer("status", CMS_TRANSFER_RECORDS="mongo", CMS_TRANSFER_MONGO_URL=url, timeout=60)
            line = one_error_line(result, 1)
            assert line.startswith(f"ERROR: cannot reach the MongoDB transfer records at 127.0.0.1:{port}: "), line
            assert says in line and "pw-not-shown" not in line, line


def test_mongodb_failures_are_records_errors_so_that_the_service_answers_503():
    from pymongo.errors import NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

    from cloudmesh.transfer.errors import ConfigError, RecordsError
    from cloudmesh.transfer.records.mongo import translate
    for error in (ServerSelectionTimeoutError("h:1: timed out, Timeout: 5s"), NetworkTimeout("h:1: timed out"),
                  OperationFailure("disk full", code=14031)):
        assert isinstance(translate(error, "h:1", []), RecordsError), error
    assert isinstance(translate(OperationFailure("Authentication failed.", code=18), "h:1", []), ConfigError)
