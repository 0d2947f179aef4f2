"""A move never deletes its only copy: source and target are compared by where the objects really
live (real paths, resolved endpoints, a probe where two endpoints may be one service), a source
skipped on its time alone is kept unless its bytes are proven, a delete is conditional on the
version that was read, and one transfer's memory is bounded. Also: names cannot steer the
terminal, and a run that lost its lease says so. All through the real `cms transfer`."""
import json
import os
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import boto3
import pytest

import emulators as emu
from conftest import CMS
from faultproxy import FaultProxy
from test_bad_input import World, no_partial_files, one_error_line
from test_service import Service, problem

MiB = 1024 * 1024


def alias(env, request):
    """`mv1alias`, a symlink inside the root to the folder `mv1` beside it."""
    (env.local / env.prefix / "mv1").mkdir(parents=True)
    (env.local / env.prefix / "mv1" / "p1.txt").write_bytes(b"the only copy")
    (env.local / env.prefix / "mv1alias").symlink_to("mv1")


def nested_root(env, request):
    """A second local storage whose directory lies inside the first's."""
    (env.local / env.prefix / "sub").mkdir(parents=True)
    (env.local / env.prefix / "sub" / "a.txt").write_bytes(b"nested")
    env.add_storage("localsub", "local", directory=str(env.local / env.prefix / "sub"))


def localhost(kind: str) -> Callable:
    """A second storage on the same bucket or container, its endpoint spelled `localhost` and
    (for S3) with other credentials."""
    def setup(env, request):
        if kind == "awss3":
            env.add_storage("other", "awss3", endpoint_url=env.emulators.s3_endpoint.replace("127.0.0.1", "localhost"),
                            access_key_id="another-key", secret_access_key="another-secret")
        else:
            env.add_storage("other", "azure", endpoint=env.emulators.azure_endpoint.replace("127.0.0.1", "localhost"))
    return setup


def through_a_proxy(env, request):
    """A second storage on the same bucket through a proxy: another port, so nothing but a probe
    can tell that it is the same service."""
    proxy = FaultProxy(env.emulators.s3_endpoint, flavor="s3")
    proxy.__enter__()
    request.addfinalizer(proxy.stop)
    env.add_storage("other", "awss3", endpoint_url=proxy.url)


def source_below_the_target(env, request):
    """A source folder holding `src/x`, moved into its parent: `src/src/x` would land on `src/x`."""
    env.put("local", f"{env.prefix}/src/src/x", b"inner x")
    env.put("local", f"{env.prefix}/src/x", b"outer x")


@dataclass
class Alias:
    args: list[str]     # after `cms transfer`; {p} is the test's prefix
    says: str           # in the ERROR line
    setup: Callable


def move(source: str, target: str, *more: str) -> list[str]:
    return ["move", f"--source={source}", f"--target={target}", *more]


ALIASES = {
    "symlink-alias-file": Alias(move("local:{p}/mv1/p1.txt", "local:{p}/mv1alias/p1.txt"), "onto itself", alias),
    "symlink-alias-folder": Alias(move("local:{p}/mv1", "local:{p}/mv1alias", "-r"), "is the source folder", alias),
    "nested-roots-file": Alias(move("local:{p}/sub/a.txt", "localsub:a.txt"), "onto itself", nested_root),
    "nested-roots-folder": Alias(move("localsub:", "local:{p}/sub", "-r"), "is the source folder", nested_root),
    "nested-roots-target-inside-source": Alias(move("local:{p}", "localsub:copy", "-r"), "lies inside it",
                                               nested_root),
    "s3-localhost-spelling-file": Alias(move("awss3:{p}/src/a.txt", "other:{p}/src/a.txt"), "onto itself",
                                        localhost("awss3")),
    "s3-localhost-spelling-folder": Alias(move("awss3:{p}/src", "other:{p}/src/inner", "-r"), "lies inside it",
                                          localhost("awss3")),
    "azure-localhost-spelling-file": Alias(move("azure:{p}/src/a.txt", "other:{p}/src/a.txt"), "onto itself",
                                           localhost("azure")),
    "s3-through-a-proxy-probed": Alias(move("awss3:{p}/src", "other:{p}/src", "-r"), "is the source folder",
                                       through_a_proxy),
    "target-overwrites-another-source": Alias(move("local:{p}/src", "local:{p}", "-r"),
                                              "would overwrite", source_below_the_target),
}


@pytest.mark.parametrize("row", ALIASES.values(), ids=ALIASES.keys())
def test_a_move_onto_its_own_source_is_refused_before_anything_is_written(env, request, row):
    p = env.prefix
    for kind in ("local", "awss3", "azure"):
        env.put(kind, f"{p}/src/a.txt", f"{kind} a".encode())
        env.put(kind, f"{p}/src/sub/b.txt", f"{kind} b".encode())
    row.setup(env, request)
    before = World.of(env)

    line = one_error_line(env.transfer(*(arg.format(p=p) for arg in row.args)), 2)

    assert row.says in line
    assert World.of(env) == before
    no_partial_files(env)
    assert not [key for key in env.tree("awss3", p) if ".cmtransfer-probe-" in key]


def test_a_folder_move_onto_itself_through_a_symlink_is_refused_over_rest(env):
    p = env.prefix
    alias(env, None)
    before = World.of(env)
    service = Service(env.environ(), env.config_dir)
    try:
        response = service.call("POST", "/transfers", {"source": f"local:{p}/mv1", "target": f"local:{p}/mv1alias",
                                                       "recursive": True, "move": True})
        assert "is the source folder" in problem(response, 400)["detail"]
    finally:
        service.stop()
    assert World.of(env) == before


def test_a_probe_finds_two_endpoints_distinct_when_they_are(env, tmp_path):
    """The other side of the probe: a second moto server with a bucket of the same name is another
    service, so the move goes ahead, and leaves no probe object on either side."""
    port = emu.free_port()
    with open(tmp_path / "moto.log", "ab") as log:
        process = subprocess.Popen([str(Path(CMS).with_name("moto_server")), "-H", emu.HOST, "-p", str(port)],
                                   stdout=log, stderr=log, start_new_session=True)
    try:
        second = f"http://{emu.HOST}:{port}"
        emu.wait_for(f"{second}/moto-api/", process)
        other = boto3.client("s3", endpoint_url=second, aws_access_key_id=emu.S3_KEY_ID,
                             aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1")
        other.create_bucket(Bucket=emu.BUCKET)
        env.add_storage("other", "awss3", endpoint_url=second)
        p = env.prefix
        env.put("awss3", f"{p}/src/a.txt", b"moved across")

        result = env.transfer("move", f"--source=awss3:{p}/src/a.txt", f"--target=other:{p}/src/a.txt")

        assert result.returncode == 0, result.stderr
        assert env.tree("awss3", p) == {}
        listed = [o["Key"] for o in other.list_objects_v2(Bucket=emu.BUCKET).get("Contents", [])]
        assert listed == [f"{p}/src/a.txt"]
    finally:
        emu.stop([process.pid])


def test_a_move_skipped_on_its_time_keeps_a_source_whose_bytes_are_not_proven(env):
    """--compare=mtime skips an object whose target is as large and no older; a move then deletes
    its source only where the bytes are proven the same (local files are read, S3 keeps an MD5)."""
    p = env.prefix
    for kind in ("local", "awss3"):
        env.put(kind, f"{p}/{kind}/same.txt", b"same bytes")
        env.put(kind, f"{p}/{kind}/other.txt", b"source one")
        env.put("local", f"{p}/dst-{kind}/same.txt", b"same bytes")
        env.put("local", f"{p}/dst-{kind}/other.txt", b"target two")  # same size, other bytes
        later = time.time() + 3600
        for name in ("same.txt", "other.txt"):
            os.utime(env.local / p / f"dst-{kind}" / name, (later, later))

        result = env.transfer("move", f"--source={kind}:{p}/{kind}", f"--target=local:{p}/dst-{kind}", "-r", "--sync",
                              "--compare=mtime", f"--id={p}-{kind}", "--output=json")

        assert result.returncode == 1, result.stderr
        assert "not proven" in result.stderr
        status = json.loads(result.stdout)
        assert status["objects_failed"] == 1 and [e["path"] for e in status["errors"]] == ["other.txt"]
        assert env.tree(kind, f"{p}/{kind}") == {"other.txt": b"source one"}
        assert env.tree("local", f"{p}/dst-{kind}") == {"same.txt": b"same bytes", "other.txt": b"target two"}


@pytest.mark.parametrize("kind", ["awss3", "azure"])
def test_a_delete_is_conditional_on_the_version_that_was_read(env, kind):
    """A source rewritten after it was read is not deleted by a move's delete of the old version."""
    from cloudmesh.transfer.api import Transfer
    from cloudmesh.transfer.errors import Changed
    key = f"{env.prefix}/moved.txt"
    env.put(kind, key, b"first version")
    os.environ["CLOUDMESH_CONFIG_DIR"] = str(env.config_dir)
    try:
        storage = Transfer().storage(kind)
        read = storage.stat(key)
        time.sleep(1.1)  # a rewrite in another second, as Azure and S3 both date it
        env.put(kind, key, b"second version")
        with pytest.raises(Changed, match="changed after it was read"):
            storage.delete(key, etag=read.etag)
        assert env.get(kind, key) == b"second version"
        storage.delete(key, etag=storage.stat(key).etag)
        assert storage.stat(key) is None
    finally:
        del os.environ["CLOUDMESH_CONFIG_DIR"]


def test_one_transfer_is_held_to_the_memory_budget(env):
    p = env.prefix
    env.put("local", f"{p}/a.txt", b"a")
    args = ("copy", f"--source=local:{p}/a.txt", f"--target=awss3:{p}/a.txt", "--parallel=2", "--chunksize=1100MiB")

    line = one_error_line(env.transfer(*args), 2)

    assert "parallel x chunksize is 2200MiB, over the memory budget of 2048MiB" in line
    assert env.tree("awss3", p) == {}
    result = env.transfer(*args, CMS_TRANSFER_MEMORY="4GiB")
    assert result.returncode == 0, result.stderr
    assert env.get("awss3", f"{p}/a.txt") == b"a"
    assert "CMS_TRANSFER_MEMORY must be a size" in one_error_line(env.transfer(*args, CMS_TRANSFER_MEMORY="lots"), 2)


def test_one_request_is_held_to_the_memory_budget_over_rest(env):
    p = env.prefix
    env.put("local", f"{p}/a.txt", b"a")
    service = Service(env.environ(), env.config_dir)
    try:
        response = service.call("POST", "/transfers", {"source": f"local:{p}/a.txt", "target": f"awss3:{p}/a.txt",
                                                       "parallel": 64, "chunksize": "4000MiB"})
        assert "over the memory budget of 2048MiB" in problem(response, 400)["detail"]
    finally:
        service.stop()
    assert env.tree("awss3", p) == {}


def test_control_characters_in_names_are_escaped_in_tables(env):
    p = env.prefix
    env.put("awss3", f"{p}/esc\x1b]0;owned\x07\u202e.txt", b"x")

    table = env.transfer("list", f"--target=awss3:{p}", "-r")
    listed = env.transfer("list", f"--target=awss3:{p}", "-r", "--output=json")

    assert table.returncode == 0, table.stderr
    assert not {"\x1b", "\x07", "\u202e"} & set(table.stdout), repr(table.stdout)
    assert "esc\\x1b]0;owned\\x07\\u202e.txt" in table.stdout
    assert json.loads(listed.stdout)[0]["name"] == "esc\x1b]0;owned\x07\u202e.txt"
    assert "\\u001b" in listed.stdout  # JSON escapes them anyway


def test_a_run_that_lost_its_lease_says_so(env):
    """Another process takes the transfer over while it runs: this run stops and says why."""
    p = env.prefix
    for i in range(1500):
        env.put("local", f"{p}/many/{i:04}.txt", b"x")
    run = subprocess.Popen([CMS, "transfer", "copy", f"--source=local:{p}/many", f"--target=awss3:{p}/many", "-r",
                            "--parallel=1", f"--id={p}-lease"], env=env.environ(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    db = sqlite3.connect(env.config_dir / "transfer.db", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if db.execute("SELECT count(*) FROM objects WHERE transfer_id = ? AND state = 'done'",
                              (f"{p}-lease",)).fetchone()[0]:
                    break
            except sqlite3.OperationalError:  # the command has not made its tables yet
                pass
            time.sleep(0.05)
        with db:
            db.execute("UPDATE transfers SET owner = 'another-run' WHERE id = ?", (f"{p}-lease",))
        out, err = run.communicate(timeout=60)
    finally:
        db.close()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    assert err.startswith("ERROR: ") and err.count("\n") == 1, err
    assert f"transfer '{p}-lease' was taken over by another run" in err



def test_a_move_onto_itself_through_a_bind_mount_keeps_the_source(env):
    """A folder mounted a second time inside the root has another real path, so nothing tells the
    two apart before the copy; the copy then replaces the source file, which the move sees (the
    file's identity changed since it was read) and keeps."""
    p = env.prefix
    env.put("local", f"{p}/a/x.txt", b"the only copy")
    (env.local / p / "b").mkdir()
    try:
        subprocess.run(["mount", "--bind", str(env.local / p / "a"), str(env.local / p / "b")], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot bind-mount here")
    try:
        result = env.transfer("move", f"--source=local:{p}/a/x.txt", f"--target=local:{p}/b/x.txt", "--output=json")
        assert (env.local / p / "a" / "x.txt").read_bytes() == b"the only copy"
    finally:
        subprocess.run(["umount", str(env.local / p / "b")], check=True)
    assert result.returncode == 1, result.stderr
    assert "the source changed since it was read, so it was kept" in result.stderr
