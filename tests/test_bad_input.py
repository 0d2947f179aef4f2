"""The bad-input catalogue (README "Bad input"): for every kind of bad input, the real `cms transfer`
in a subprocess prints exactly one `ERROR: ...` line, exits 2 (invalid input or config) or 1 (a
failed transfer or operation), writes nothing outside the target, and loses nothing at the source.

Each test id here is a row of the README table. tests/test_command.py checks some of the same
inputs by message only; the rows here also pin the exit status and that nothing changed."""
import contextlib
import fnmatch
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from azure.storage.blob import BlobServiceClient
from botocore.exceptions import ClientError

import emulators as emu

CMS = str(Path(sys.executable).with_name("cms"))  # as conftest runs it
MiB = 1024 * 1024
PARTIAL = "*.cmtransfer.partial"
README = Path(__file__).resolve().parents[1] / "README.md"


# What every row checks: one clear line, the exit status, nothing written outside, nothing lost.


def one_error_line(result, code: int) -> str:
    """Exactly one 'ERROR: ...' line on stderr, short enough to read, no traceback, and `code`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("ERROR: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    line = result.stderr.strip()
    assert "internal error" not in line, line
    assert len(line) <= 400, f"an error line of {len(line)} characters: {line[:200]}..."
    return line


def files(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every file and symlink under `root` (not under `skip`) with its bytes (a symlink: its target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            found[path.relative_to(root).as_posix()] = os.readlink(path).encode()
        elif path.is_file():
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


@dataclass
class World:
    """What a test can see before and after a command: its files (its config directory aside,
    where the records live) and the objects under its prefix in S3 and Azure. `target`
    ('local:PATH', 'awss3:PATH' or 'azure:PATH') is left out, as the one place that may change."""

    local: dict
    clouds: dict

    @classmethod
    def of(cls, env, target: str = "") -> "World":
        kind, _, path = target.partition(":")
        skip = (env.config_dir, env.local / path) if kind == "local" else (env.config_dir,)
        clouds = {}
        for cloud in ("awss3", "azure"):
            tree = env.tree(cloud, env.prefix)
            if cloud == kind:
                inside = path[len(env.prefix) + 1:] + "/"
                tree = {key: data for key, data in tree.items() if not key.startswith(inside)}
            clouds[cloud] = tree
        return cls(files(env.local.parent, skip), clouds)


def no_partial_files(env) -> None:
    assert not list(env.local.parent.rglob(PARTIAL)), list(env.local.parent.rglob(PARTIAL))


def recorded(env) -> list[str]:
    result = env.transfer("status", "--output=json")
    assert result.returncode == 0, result.stderr
    return sorted(t["id"] for t in json.loads(result.stdout))


def status(env, transfer_id: str) -> dict:
    result = env.transfer("status", f"--id={transfer_id}", "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bucket_exists(env, name: str) -> bool:
    try:
        env.s3.head_bucket(Bucket=name)
        return True
    except ClientError:
        return False


def container_exists(env, name: str) -> bool:
    service = BlobServiceClient(env.emulators.azure_endpoint, credential={
        "account_name": emu.AZURITE_ACCOUNT, "account_key": emu.AZURITE_KEY})
    return service.get_container_client(name).exists()


@pytest.fixture(scope="module")
def strict_s3(tmp_path_factory):
    """A second moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0), which the
    session's moto does not; its IAM knows no access key, so every key is a wrong one. (moto's
    auth check fails with HTTP 500 on presigned URLs; the SDK's requests get 403 as from S3.)"""
    port = emu.free_port()
    log = open(tmp_path_factory.mktemp("strict-s3") / "moto.log", "ab")
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", emu.HOST, "-p", str(port)],
                               stdout=log, stderr=log, start_new_session=True,
                               env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0"))
    try:
        emu.wait_for(f"http://{emu.HOST}:{port}/moto-api/", process)
        yield f"http://{emu.HOST}:{port}"
    finally:
        emu.stop([process.pid])
        log.close()


# Rows refused before anything is copied: nothing changes anywhere, and (except where noted)
# nothing is recorded.


@dataclass
class Row:
    args: list[str]                      # after `cms transfer`; {p} is the test's prefix
    code: int                            # 2: invalid input or config; 1: a failed operation
    says: tuple[str, ...]                # each is in the ERROR line ({p} as above)
    setup: Callable | None = None        # setup(env, request) before the snapshot
    recorded: tuple[str, ...] | None = ()  # transfer ids in `status` afterwards; None: not checked
    check: Callable | None = None        # check(env) afterwards


def storage(name: str, like: str, **settings) -> Callable:
    def setup(env, request):
        env.add_storage(name, like, **{k: v.format(p=env.prefix) if isinstance(v, str) else v
                                       for k, v in settings.items()})
    return setup


def strict_storage(env, request):
    env.add_storage("wrongs3", "awss3", endpoint_url=request.getfixturevalue("strict_s3"))


def write_cloudmesh_yaml(content: bytes | Callable) -> Callable:
    def setup(env, request):
        data = content(env) if callable(content) else content
        (env.config_dir / "cloudmesh.yaml").write_bytes(data)
    return setup


def with_broken_entry(env) -> bytes:
    return yaml.safe_dump({"cloudmesh": {"storage": {**env.storages, "broken": "just text"}}}).encode()


def write_transfer_yaml(env, request):
    (env.config_dir / "transfer.yaml").write_text("source: [unclosed\n")


def first_transfer(fails: bool) -> Callable:
    def setup(env, request):
        if fails:
            env.put("awss3", f"{env.prefix}/bad/x/../../escape", b"no")
            args = [f"--source=awss3:{env.prefix}/bad", f"--target=local:{env.prefix}/first", "-r"]
        else:
            args = [f"--source=local:{env.prefix}/src/a.txt", f"--target=awss3:{env.prefix}/first.txt"]
        result = env.transfer("copy", *args, f"--id={env.prefix}-first")
        assert result.returncode == (1 if fails else 0), result.stderr
    return setup


def symlink_out_of_the_root(env, request):
    outside = env.local.parent / "outside"
    outside.mkdir()
    (env.local / env.prefix).mkdir(parents=True, exist_ok=True)
    (env.local / env.prefix / "link").symlink_to(outside)


def no_bucket_created(name: str) -> Callable:
    def check(env):
        assert not bucket_exists(env, name.format(p=env.prefix))
    return check


def no_container_created(name: str) -> Callable:
    def check(env):
        assert not container_exists(env, name.format(p=env.prefix))
    return check


WRONG_AZURE_KEY = "d3Jvbmcga2V5IGZvciB0ZXN0cw=="  # valid base64, not the account's key
NO_BUCKET, NO_CONTAINER = "no-such-bucket-{p}", "no-such-container-{p}"


def copy(source: str, target: str, *more: str) -> list[str]:
    return ["copy", f"--source={source}", f"--target={target}", *more]


def shapes(storage_name: str, code: int, says: tuple, setup: Callable, check: Callable | None = None) -> dict:
    """The same storage as source and as target, for one file and for a folder (-r)."""
    return {
        "source-file": Row(copy(f"{storage_name}:{{p}}/src/a.txt", "local:{p}/dst"), code, says, setup, check=check),
        "source-folder": Row(copy(f"{storage_name}:{{p}}/src", "local:{p}/dst", "-r"), code, says, setup, check=check),
        "target-file": Row(copy("local:{p}/src/a.txt", f"{storage_name}:{{p}}/dst/a.txt"), code, says, setup,
                           check=check),
        # A folder copy plans without touching the target, so each object may meet the problem:
        # whether a failed transfer is recorded is left open; the line and the status are not.
        "target-folder": Row(copy("local:{p}/src", f"{storage_name}:{{p}}/dst", "-r"), code, says, setup,
                             recorded=None, check=check),
    }


REFUSED = {
    # unknown storage name
    "unknown-storage-source": Row(copy("nosuch:{p}/src", "local:{p}/dst", "-r"), 2, ("unknown storage 'nosuch'",)),
    "unknown-storage-target": Row(copy("local:{p}/src", "nosuch:{p}/dst", "-r"), 2, ("unknown storage 'nosuch'",)),
    # missing or empty credentials
    "s3-secret-empty": Row(copy("local:{p}/src", "nokey:{p}/dst", "-r"), 2,
                           ("storage 'nokey' has no 'secret_access_key'", "AWS_SECRET_ACCESS_KEY"),
                           storage("nokey", "awss3", secret_access_key="")),
    "s3-access-key-id-missing": Row(copy("nokey:{p}/src", "local:{p}/dst", "-r"), 2,
                                    ("storage 'nokey' has no 'access_key_id'",),
                                    storage("nokey", "awss3", access_key_id=None)),
    "azure-account-key-empty": Row(copy("local:{p}/src", "nokey:{p}/dst", "-r"), 2,
                                   ("storage 'nokey' has no 'account_key'", "AZURE_STORAGE_KEY"),
                                   storage("nokey", "azure", account_key="")),
    "azure-connection-string-malformed": Row(copy("local:{p}/src", "badconn:{p}/dst", "-r"), 2,
                                             ("storage 'badconn' has a malformed connection_string",),
                                             storage("badconn", "azure", connection_string="not a connection")),
    "azure-account-key-not-base64": Row(copy("badkey:{p}/src/a.txt", "local:{p}/dst"), 2, ("storage 'badkey'",),
                                        storage("badkey", "azure", account_key="not base64 !!")),
    # wrong credentials
    **{f"wrong-azure-key-{shape}": row for shape, row in shapes(
        "wrongkey", 2, ("storage 'wrongkey' rejected its credentials",),
        storage("wrongkey", "azure", account_key=WRONG_AZURE_KEY)).items()},
    **{f"wrong-s3-key-{shape}": row for shape, row in shapes(
        "wrongs3", 2, ("storage 'wrongs3' rejected its credentials",), strict_storage).items()},
    # a bucket or container that does not exist: never created, neither as source nor as target
    **{f"missing-bucket-{shape}": row for shape, row in shapes(
        "nobucket", 1, (f"bucket '{NO_BUCKET}' of storage 'nobucket' does not exist",),
        storage("nobucket", "awss3", bucket=NO_BUCKET), no_bucket_created(NO_BUCKET)).items()},
    **{f"missing-container-{shape}": row for shape, row in shapes(
        "nocontainer", 1, (f"container '{NO_CONTAINER}' of storage 'nocontainer' does not exist",),
        storage("nocontainer", "azure", container=NO_CONTAINER), no_container_created(NO_CONTAINER)).items()},
    # a source path that does not exist
    "missing-source-local-file": Row(copy("local:{p}/nothing.txt", "awss3:{p}/dst"), 1,
                                     ("'local:{p}/nothing.txt' does not exist",)),
    "missing-source-local-folder": Row(copy("local:{p}/nothing", "awss3:{p}/dst", "-r"), 1,
                                       ("'local:{p}/nothing' does not exist",)),
    "missing-source-s3": Row(copy("awss3:{p}/nothing", "local:{p}/dst", "-r"), 1,
                             ("'awss3:{p}/nothing' does not exist",)),
    "missing-source-azure": Row(copy("azure:{p}/nothing.txt", "local:{p}/dst"), 1,
                                ("'azure:{p}/nothing.txt' does not exist",)),
    # --id reused
    "id-reused-after-completed": Row(copy("local:{p}/src", "azure:{p}/dst", "-r", "--id={p}-first"), 2,
                                     ("transfer id '{p}-first' is already used",), first_transfer(fails=False),
                                     recorded=("{p}-first",)),
    "id-reused-after-failed": Row(copy("local:{p}/src", "azure:{p}/dst", "-r", "--id={p}-first"), 2,
                                  ("transfer id '{p}-first' is already used",), first_transfer(fails=True),
                                  recorded=("{p}-first",)),
    # malformed configuration
    "cloudmesh-yaml-malformed": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r"), 2,
                                    ("cloudmesh.yaml", "is not valid YAML at line"),
                                    write_cloudmesh_yaml(b"cloudmesh: [storage\n")),
    "cloudmesh-yaml-not-utf8": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r"), 2, ("cloudmesh.yaml",),
                                   write_cloudmesh_yaml(b"\xff\xfe\x00 not text")),
    "storage-entry-not-a-mapping": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r"), 2,
                                       ("storage 'broken' in cloudmesh.yaml is not a mapping",),
                                       write_cloudmesh_yaml(with_broken_entry)),
    "s3-endpoint-url-not-a-url": Row(copy("local:{p}/src", "badurl:{p}/dst", "-r"), 2,
                                     ("storage 'badurl'", "endpoint_url"),
                                     storage("badurl", "awss3", endpoint_url="not a url")),
    "transfer-yaml-malformed": Row(["run", "--id={p}-run", "--data=a.txt"], 2,
                                   ("transfer.yaml is not valid YAML at line",), write_transfer_yaml),
    # --parallel
    "parallel-zero": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--parallel=0"), 2,
                         ("--parallel must be between 1 and 64, not 0",)),
    "parallel-negative": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--parallel=-3"), 2,
                             ("--parallel must be between 1 and 64, not -3",)),
    "parallel-huge": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--parallel=100000"), 2,
                         ("--parallel must be between 1 and 64, not 100000",)),
    "parallel-not-a-number": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--parallel=many"), 2,
                                 ("--parallel must be a whole number, not 'many'",)),
    # --chunksize
    "chunksize-below-1MiB": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--chunksize=512KiB"), 2,
                                ("--chunksize must be at least 1MiB",)),
    "chunksize-zero": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--chunksize=0"), 2,
                          ("--chunksize must be at least 1MiB",)),
    "chunksize-negative": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--chunksize=-5MiB"), 2,
                              ("'-5MiB' is not a size",)),
    "chunksize-above-azure-block-maximum": Row(copy("local:{p}/src", "azure:{p}/dst", "-r", "--chunksize=4001MiB"), 2,
                                               ("--chunksize",)),
    "chunksize-above-s3-part-maximum": Row(copy("local:{p}/src", "awss3:{p}/dst", "-r", "--chunksize=6GiB"), 2,
                                           ("--chunksize",)),
    "chunksize-absurd": Row(copy("local:{p}/src", "local:{p}/dst", "-r", "--chunksize=10TiB"), 2, ("--chunksize",)),
    # paths that would leave the local root
    "target-path-with-dot-dot": Row(copy("awss3:{p}/src/a.txt", "local:{p}/../../outside.txt"), 2,
                                    ("must not contain '..'",)),
    "target-file-through-symlink-out-of-the-root": Row(copy("awss3:{p}/src/a.txt", "local:{p}/link/a.txt"), 2,
                                                       ("'{p}/link/a.txt' leads outside local storage 'local'",),
                                                       symlink_out_of_the_root),
    "target-folder-through-symlink-out-of-the-root": Row(copy("awss3:{p}/src", "local:{p}/link/in", "-r"), 2,
                                                         ("leads outside local storage 'local'",),
                                                         symlink_out_of_the_root, recorded=None),
}


@pytest.mark.parametrize("row", REFUSED.values(), ids=REFUSED.keys())
def test_refused_with_one_line_and_nothing_changed(env, request, row):
    p = env.prefix
    for kind in ("local", "awss3", "azure"):
        env.put(kind, f"{p}/src/a.txt", f"{kind} a".encode())
        env.put(kind, f"{p}/src/sub/b.txt", f"{kind} b".encode())
    if row.setup:
        row.setup(env, request)
    before = World.of(env)

    line = one_error_line(env.transfer(*(arg.format(p=p) for arg in row.args)), row.code)

    for text in row.says:
        assert text.format(p=p) in line
    assert World.of(env) == before
    no_partial_files(env)
    if row.recorded is not None:
        assert recorded(env) == sorted(i.format(p=p) for i in row.recorded)
    if row.check:
        row.check(env)


# Object names a target cannot store: the other objects are copied, each such object fails with
# its own message in `status --id`, the one line counts them, and nothing lands outside the target.

LONG = "long/" + "/".join(["d" * 220] * 5) + ".txt"  # 1,113 bytes, no component over 255
WIDE = "c" * 300 + ".txt"                             # one component over 255 bytes
ODD_KEYS = {  # key in the source bucket: (bytes, stored on local, stored on azure); None: not seeded
    "ok.txt": (b"ok", True, True),
    "sub/ok.txt": (b"sub ok", True, True),
    "x/../../../../escape.txt": (b"dot-dot", False, False),
    "../up.txt": (b"up", False, False),
    "/etc/lead.txt": (b"leading slash", False, None),
    "back\\slash.txt": (b"backslash", False, False),
    "nul\x00.txt": (b"nul", False, False),
    "trailing-dot.": (b"trailing dot", True, False),
    "folder-with-bytes/": (b"not a folder marker", False, False),
    "marker/": (b"", None, None),  # a zero-byte folder marker: skipped, neither copied nor failed
    LONG: (b"long name", True, False),
    WIDE: (b"wide name", False, True),
}


@pytest.fixture
def odd_bucket(env):
    """A bucket of this test's own (so that keys can sit at its root) holding ODD_KEYS, which S3
    (moto) stores as they are, NUL included; storage 'odd' points at it."""
    name = f"{env.prefix}-odd"
    env.s3.create_bucket(Bucket=name)
    env.add_storage("odd", "awss3", bucket=name)

    def seed(keys):
        for key in keys:
            env.s3.put_object(Bucket=name, Key=key, Body=ODD_KEYS[key][0])

    def contents():
        listed = env.s3.list_objects_v2(Bucket=name).get("Contents", [])
        return {o["Key"]: env.s3.get_object(Bucket=name, Key=o["Key"])["Body"].read() for o in listed}

    yield seed, contents
    for key in contents():
        env.s3.delete_object(Bucket=name, Key=key)
    env.s3.delete_bucket(Bucket=name)


TARGETS = {"odd-keys-to-local": 1, "odd-keys-to-azure": 2}  # the column of ODD_KEYS
WHY = {"local": ("cannot be stored safely under local storage 'local'", "contains a NUL character",
                 "has a path component longer than 255 bytes"),
       "azure": ("cannot be stored as an Azure blob name", "contains a NUL character", "is longer than 1024 bytes"),
       "awss3": ("is longer than 1024 bytes",)}


@pytest.mark.parametrize("column", TARGETS.values(), ids=TARGETS.keys())
def test_object_names_the_target_cannot_store_fail_alone(env, odd_bucket, column):
    p, seed, contents = env.prefix, *odd_bucket
    target = "local" if column == 1 else "azure"
    keys = [key for key, row in ODD_KEYS.items() if row[column] is not None or key == "marker/"]
    seed(keys)
    source_before = contents()
    before = World.of(env, f"{target}:{p}/dst")

    result = env.transfer("copy", "--source=odd:", f"--target={target}:{p}/dst", "-r", f"--id={p}-odd")

    planned = [key for key in keys if key != "marker/"]
    failed = {key for key in planned if not ODD_KEYS[key][column]}
    line = one_error_line(result, 1)
    assert line.startswith(f"ERROR: transfer '{p}-odd' failed: {len(failed)} of {len(planned)} objects failed; first: ")
    record = status(env, f"{p}-odd")
    assert record["objects_total"] == len(planned) and record["objects_done"] == len(planned) - len(failed)
    assert {e["path"] for e in record["errors"]} == failed
    for error in record["errors"]:
        assert "\n" not in error["message"] and any(why in error["message"] for why in WHY[target]), error
    stored = {key: ODD_KEYS[key][0] for key in planned if ODD_KEYS[key][column]}
    assert env.tree(target, f"{p}/dst") == stored
    assert World.of(env, f"{target}:{p}/dst") == before
    assert contents() == source_before
    assert not (env.local.parent / "escape.txt").exists()
    no_partial_files(env)


def test_a_leading_slash_does_not_merge_two_objects_at_a_local_target(env, odd_bucket):
    """'/etc/lead.txt' and 'etc/lead.txt' are two S3 objects; on disk they would be one file."""
    p, seed, contents = env.prefix, *odd_bucket
    env.s3.put_object(Bucket=f"{p}-odd", Key="etc/lead.txt", Body=b"no slash")
    seed(["/etc/lead.txt"])
    source_before = contents()

    line = one_error_line(env.transfer("copy", "--source=odd:", f"--target=local:{p}/dst", "-r", f"--id={p}-lead"), 1)

    assert f"transfer '{p}-lead' failed: 1 of 2 objects failed" in line
    assert [e["path"] for e in status(env, f"{p}-lead")["errors"]] == ["/etc/lead.txt"]
    assert env.tree("local", f"{p}/dst") == {"etc/lead.txt": b"no slash"}
    assert contents() == source_before
    no_partial_files(env)


LOCAL_NAMES = {"ok.txt": b"ok", "trailing-dot.": b"dot", "back\\slash.txt": b"backslash", LONG: b"long"}
CLOUD_TARGETS = {  # names a local folder may hold that a cloud target cannot store
    "local-names-to-azure": ("azure", {"trailing-dot.", "back\\slash.txt", LONG}),
    "local-names-to-s3": ("awss3", {LONG}),
}


@pytest.mark.parametrize("target,failed", CLOUD_TARGETS.values(), ids=CLOUD_TARGETS.keys())
def test_local_names_a_cloud_cannot_store_fail_alone(env, target, failed):
    p = env.prefix
    for name, data in LOCAL_NAMES.items():
        env.put("local", f"{p}/src/{name}", data)
    before = World.of(env, f"{target}:{p}/dst")

    line = one_error_line(env.transfer("copy", f"--source=local:{p}/src", f"--target={target}:{p}/dst", "-r",
                                       f"--id={p}-names"), 1)

    assert f"failed: {len(failed)} of {len(LOCAL_NAMES)} objects failed" in line
    record = status(env, f"{p}-names")
    assert {e["path"] for e in record["errors"]} == failed
    for error in record["errors"]:
        assert any(why in error["message"] for why in WHY[target]), error
    assert env.tree(target, f"{p}/dst") == {k: v for k, v in LOCAL_NAMES.items() if k not in failed}
    assert World.of(env, f"{target}:{p}/dst") == before


# A local target on a full or read-only disk: a tmpfs mounted on the local root (the tests run as
# root); where mounting is not allowed, RLIMIT_FSIZE stands in for a full disk and (not as root)
# mode 0555 for a read-only one.


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """Mount a 1 MiB tmpfs on `path` for the block; yields False (and mounts nothing) where not allowed."""
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(path)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(path)], check=True)


def transfer_with_file_size_limit(env, *args, limit: int) -> subprocess.CompletedProcess:
    """`cms transfer` unable to grow any file past `limit` bytes, as on a disk that is full."""
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([CMS, "transfer", *args], capture_output=True, text=True, timeout=120, env=env.environ(),
                          cwd=env.config_dir, preexec_fn=limited)


BIG = {"b3.bin": os.urandom(3 * MiB), "b12.bin": os.urandom(12 * MiB)}
FULL_DISK = {  # (copy or move, extra options): b3.bin goes in one request at the default chunk size
    "full-disk-copy-one-request": ("copy", []),
    "full-disk-copy-in-parts": ("copy", ["--chunksize=1MiB"]),
    "full-disk-move-keeps-sources": ("move", []),
}


@pytest.mark.parametrize("verb,options", FULL_DISK.values(), ids=FULL_DISK.keys())
def test_a_full_local_disk_fails_the_objects_that_do_not_fit_and_leaves_no_partial_file(env, verb, options):
    p = env.prefix
    sources = {"small.txt": b"fits", **BIG}
    for name, data in sources.items():
        env.put("awss3", f"{p}/src/{name}", data)
    args = (verb, f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}-full", *options)
    outside = files(env.local.parent, (env.config_dir, env.local))
    with tmpfs(env.local) as mounted:
        result = env.transfer(*args) if mounted else transfer_with_file_size_limit(env, *args, limit=MiB)
        line = one_error_line(result, 1)
        landed = env.tree("local", f"{p}/dst")
        assert all(name.startswith(f"{p}/dst/") for name in files(env.local))
        no_partial_files(env)
    assert files(env.local.parent, (env.config_dir, env.local)) == outside
    record = status(env, f"{p}-full")
    failed = {e["path"]: e["message"] for e in record["errors"]}
    assert set(BIG) <= set(failed) <= set(sources)  # small.txt may lose the race for the last free page
    assert all(("No space left on device" if mounted else "File too large") in m for m in failed.values()), failed
    assert ("No space left on device" if mounted else "File too large") in line
    assert landed == {name: data for name, data in sources.items() if name not in failed}
    kept = {name: data for name, data in sources.items() if verb == "copy" or name in failed}
    assert env.tree("awss3", f"{p}/src") == kept


READ_ONLY = {
    "read-only-disk-folder": ("copy", "-r"),
    "read-only-disk-file": ("copy", None),
    "read-only-disk-move-keeps-sources": ("move", "-r"),
}


@pytest.mark.parametrize("verb,recursive", READ_ONLY.values(), ids=READ_ONLY.keys())
def test_a_read_only_local_disk_fails_every_object_and_keeps_the_sources(env, verb, recursive):
    p = env.prefix
    sources = {"a.txt": b"a", "big.bin": os.urandom(9 * MiB)}
    for name, data in sources.items():
        env.put("awss3", f"{p}/src/{name}", data)
    source = f"awss3:{p}/src" if recursive else f"awss3:{p}/src/a.txt"
    args = (verb, f"--source={source}", f"--target=local:{p}/dst", *filter(None, [recursive]), f"--id={p}-ro")
    with tmpfs(env.local, "ro") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("cannot mount a tmpfs here, and root writes through mode 0555")
            env.local.chmod(0o555)
        try:
            line = one_error_line(env.transfer(*args), 1)
            assert files(env.local) == {}
        finally:
            if not mounted:
                env.local.chmod(0o755)
    why = "Read-only file system" if mounted else "Permission denied"
    assert why in line and f"cannot write under 'local:{p}/dst" in line
    record = status(env, f"{p}-ro")
    assert record["objects_failed"] == record["objects_total"] == (2 if recursive else 1)
    assert all(why in e["message"] for e in record["errors"])
    assert env.tree("awss3", f"{p}/src") == sources
    no_partial_files(env)


# Inputs that are not errors, with what they do instead.


def test_a_chunksize_below_the_s3_minimum_is_raised_to_5MiB_for_an_s3_target(env):
    p, data = env.prefix, os.urandom(12 * MiB)
    env.put("local", f"{p}/big.bin", data)
    result = env.transfer("copy", f"--source=local:{p}/big.bin", f"--target=awss3:{p}/big.bin", "--chunksize=1MiB")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert env.get("awss3", f"{p}/big.bin") == data
    head = env.s3.head_object(Bucket=emu.BUCKET, Key=f"{p}/big.bin", PartNumber=1)
    assert head["PartsCount"] == 3 and head["ContentLength"] == 5 * MiB


def test_a_target_path_with_a_leading_slash_stays_under_the_local_root(env):
    p = env.prefix
    env.put("awss3", f"{p}/a.txt", b"a")
    before = World.of(env, f"local:{p}/abs")
    result = env.transfer("copy", f"--source=awss3:{p}/a.txt", f"--target=local:/{p}/abs/a.txt")
    assert result.returncode == 0, result.stderr
    assert (env.local / p / "abs" / "a.txt").read_bytes() == b"a"
    assert World.of(env, f"local:{p}/abs") == before


# The README's "Bad input" table names a test for every row, and every row here has its line there.


def readme_rows() -> list[str]:
    """The names in the last column of the README's "Bad input" table."""
    section = README.read_text().split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    cells = [line.rstrip(" |").rsplit("|", 1)[1] for line in section.splitlines()
             if line.startswith("| ") and not line.startswith(("| input ", "| ---"))]
    return [name.strip(" `") for cell in cells for name in cell.split(",") if name.strip(" `")]


def test_the_readme_table_names_every_row_here_and_only_tests_that_exist():
    """Each name is a row id or a test function of this file ('*' matches the id's variants), or
    FILE::FUNCTION[ID] of another test file; every row and test function here is named."""
    named = readme_rows()
    here = {*REFUSED, *TARGETS, *CLOUD_TARGETS, *FULL_DISK, *READ_ONLY}
    for name, function in globals().items():
        if name.startswith("test_") and callable(function) and "readme" not in name and \
                not any(mark.name == "parametrize" for mark in getattr(function, "pytestmark", [])):
            here.add(name)
    for name in named:
        if "::" in name:
            module, function = name.split("::")
            assert f"def {function.split('[')[0]}(" in (Path(__file__).parent / module).read_text(), name
        else:
            assert fnmatch.filter(here, name), f"the README names '{name}', which is no row of {Path(__file__).name}"
    missing = {row for row in here if not any(fnmatch.fnmatchcase(row, name) for name in named)}
    assert not missing, f"rows missing from the README table: {sorted(missing)}"
