"""Local storage under attack and under careless hands, with the real `cms transfer` in a subprocess:
a folder swapped for a symlink mid-copy, the mode of a copied file, a relative `directory:`, the
cloudmesh config directory inside a root, symlink loops, files that vanish while listed, and keys
that end in the partial-file suffix (README "Bad input" and "Security")."""
import ctypes
import json
import os
import random
import select
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cloudmesh.transfer.config import load_storages
from cloudmesh.transfer.providers import open_storage

PARTIAL = "*.cmtransfer.partial"
libc = ctypes.CDLL(None, use_errno=True)


# What every test checks, as tests/test_bad_input.py does.


def one_error_line(result, code: int) -> str:
    """Exactly one 'ERROR: ...' line on stderr (warnings aside), no traceback, and `code`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "internal error" not in result.stderr, result.stderr
    assert len(errors[0]) <= 400, errors[0]
    return errors[0]


def status(env, transfer_id: str) -> dict:
    result = env.transfer("status", f"--id={transfer_id}", "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def no_partial_files(env) -> None:
    assert not list(env.local.parent.rglob(PARTIAL)), list(env.local.parent.rglob(PARTIAL))


def umask() -> int:
    """The umask the `cms` subprocesses inherit (read while this process starts no file)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def storage(env, name: str = "local"):
    return open_storage(load_storages(env.config_dir / "cloudmesh.yaml")[name])


# 1. A folder under the target root swapped for a symlink to a folder outside, while a copy runs.

RENAME_EXCHANGE = 2  # renameat2(2): swap two names atomically, so that the folder never goes missing
AT_FDCWD = -100
RACE_RUNS, RACE_FILES, RACE_FOLDERS = 20, 200, 4


def exchange(a: Path, b: Path) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


class Swapper(threading.Thread):
    """Swaps each of `folders` with a symlink beside it that leads to `outside`, and back, over
    and over, until stopped; every folder is a folder again when it ends."""

    def __init__(self, folders: list[Path], outside: Path):
        super().__init__(daemon=True)
        self.pairs = []
        for folder in folders:
            link = folder.with_name(f".swap-{folder.name}")
            link.symlink_to(outside, target_is_directory=True)
            self.pairs.append((folder, link))
        self.stop, self.swaps = threading.Event(), 0

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            folder, link = rng.choice(self.pairs)
            exchange(folder, link)
            time.sleep(rng.choice((0, 0.0002, 0.001)))
            exchange(folder, link)
            self.swaps += 1
            time.sleep(rng.choice((0, 0.0005)))

    def end(self) -> None:
        self.stop.set()
        self.join()
        for folder, link in self.pairs:
            assert folder.is_dir() and not folder.is_symlink() and link.is_symlink()


@pytest.mark.skipif(not hasattr(libc, "renameat2"), reason="needs renameat2(2) (Linux)")
def test_a_folder_swapped_for_a_symlink_out_of_the_root_during_a_copy_lets_nothing_out(env):
    """Each run copies RACE_FILES files into RACE_FOLDERS folders while a thread swaps them for a
    symlink to a folder outside the root: nothing lands outside, and each object is at its target
    or failed with a message that says it would have left the root."""
    p = env.prefix
    outside = env.local.parent / "outside"
    outside.mkdir()
    files = {f"s{i % RACE_FOLDERS}/f{i:03}.txt": f"file {i}".encode() for i in range(RACE_FILES)}
    for key, data in files.items():
        env.put("local", f"{p}/src/{key}", data)
    swaps = 0
    for run in range(RACE_RUNS):
        dst = env.local / p / f"dst{run}"
        folders = [dst / f"s{i}" for i in range(RACE_FOLDERS)]
        for folder in folders:
            folder.mkdir(parents=True)
        swapper = Swapper(folders, outside)
        swapper.start()
        try:
            result = env.transfer("copy", f"--source=local:{p}/src", f"--target=local:{p}/dst{run}", "-r",
                                  "--parallel=16", f"--id={p}-{run}")
        finally:
            swapper.end()
        swaps += swapper.swaps
        assert sorted(outside.rglob("*")) == [], f"run {run}: written outside the root"
        if result.returncode:
            one_error_line(result, 1)
        record = status(env, f"{p}-{run}")
        failed = {e["path"]: e["message"] for e in record["errors"]}
        for message in failed.values():
            assert "leads outside local storage 'local'" in message, message
        assert record["objects_total"] == RACE_FILES and record["objects_done"] + len(failed) == RACE_FILES
        landed = {path.relative_to(dst).as_posix(): path.read_bytes()
                  for path in dst.rglob("*") if path.is_file() and not path.is_symlink()}
        assert landed == {key: data for key, data in files.items() if key not in failed}, f"run {run}"
    no_partial_files(env)
    assert swaps > RACE_RUNS * 10  # the race really ran


# 2. The mode of a copied file.

MODES = {  # source file: its mode; a local target gives the copy these bits, masked by the umask
    "private.txt": 0o600,
    "group.txt": 0o640,
    "script.sh": 0o755,
    "read-only.txt": 0o444,
    "setuid.bin": 0o4755,  # special bits are never copied
}


def test_a_local_copy_keeps_the_source_mode_and_a_cloud_object_gets_the_umask_default(env):
    p, mask = env.prefix, umask()
    for name, mode in MODES.items():
        env.put("local", f"{p}/modes/{name}", name.encode())
        os.chmod(env.local / p / "modes" / name, mode)
    env.put("awss3", f"{p}/cloud/object.txt", b"from a cloud")

    assert env.transfer("copy", f"--source=local:{p}/modes", f"--target=local:{p}/out", "-r").returncode == 0
    assert env.transfer("copy", f"--source=awss3:{p}/cloud", f"--target=local:{p}/out", "-r").returncode == 0

    found = {name: stat.S_IMODE((env.local / p / "out" / name).stat().st_mode) for name in [*MODES, "object.txt"]}
    expected = {name: mode & 0o777 & ~mask for name, mode in MODES.items()}
    assert found == {**expected, "object.txt": 0o666 & ~mask}
    assert (env.local / p / "out" / "read-only.txt").read_bytes() == b"read-only.txt"


# 3. A relative `directory:` lies under the config directory, whatever the current directory.

DIRECTORIES = {  # `directory:` of a storage: where its root lies, under (config dir, $HOME)
    "relative": ("relroot", ("config", "relroot")),
    "relative-with-dot": ("./rel/inner", ("config", "rel", "inner")),
    "tilde": ("~/cmstorage", ("home", "cmstorage")),
}


@pytest.mark.parametrize("directory, under", DIRECTORIES.values(), ids=DIRECTORIES.keys())
def test_a_relative_directory_lies_under_the_config_directory_not_the_current_one(env, directory, under):
    p, home, elsewhere = env.prefix, env.config_dir.parent / "home", env.config_dir.parent / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    entry = {"cm": {"kind": "local"}, "default": {"directory": directory}}
    data = yaml.safe_load((env.config_dir / "cloudmesh.yaml").read_text())
    data["cloudmesh"]["storage"]["rel"] = entry
    (env.config_dir / "cloudmesh.yaml").write_text(yaml.safe_dump(data))
    env.put("awss3", f"{p}/a.txt", b"where am I")

    result = subprocess.run([str(Path(sys.executable).with_name("cms")), "transfer", "copy",
                             f"--source=awss3:{p}/a.txt", f"--target=rel:{p}/a.txt"],
                            capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env.environ(HOME=str(home)))

    assert result.returncode == 0, result.stderr
    root = {"config": env.config_dir, "home": home}[under[0]].joinpath(*under[1:])
    assert (root / p / "a.txt").read_bytes() == b"where am I"
    assert [path for path in elsewhere.rglob("*") if path.is_file()] == []


# 4. The cloudmesh config directory inside a local root is never copied, read or written.


def config_inside_the_root(env) -> None:
    """Storage 'home' has the folder that holds the config directory (and the 'local' root) as
    its root; a symlink inside it leads to the config directory."""
    env.add_storage("home", "local", directory=str(env.config_dir.parent))
    (env.config_dir / "transfer-token").write_text("not to be copied")
    os.chmod(env.config_dir / "transfer-token", 0o600)
    env.put("local", f"{env.prefix}/mine.txt", b"mine")
    (env.local / env.prefix / "cfg").symlink_to(Path("..") / ".." / env.config_dir.name, target_is_directory=True)
    env.put("awss3", f"{env.prefix}/x.txt", b"cloud")


GUARDED = "the cloudmesh config directory, which is never copied"
CONFIG_ROWS = {  # arguments ({p}: the prefix, {c}: the config directory's name): the exit status
    "source-file": (["copy", "--source=home:{c}/cloudmesh.yaml", "--target=awss3:{p}/stolen.yaml"], 2),
    "source-token": (["copy", "--source=home:{c}/transfer-token", "--target=awss3:{p}/stolen"], 2),
    "source-folder": (["copy", "--source=home:{c}", "--target=awss3:{p}/stolen", "-r"], 2),
    "source-through-a-symlink": (["copy", "--source=home:local/{p}/cfg/cloudmesh.yaml", "--target=awss3:{p}/stolen"],
                                 2),
    "target-file": (["copy", "--source=awss3:{p}/x.txt", "--target=home:{c}/cloudmesh.yaml"], 2),
    "target-through-a-symlink": (["copy", "--source=awss3:{p}/x.txt", "--target=home:local/{p}/cfg/evil.yaml"], 2),
    "delete": (["delete", "--target=home:{c}/cloudmesh.yaml"], 2),
    "list": (["list", "--target=home:{c}", "-r"], 2),
}


@pytest.mark.parametrize("args, code", CONFIG_ROWS.values(), ids=CONFIG_ROWS.keys())
def test_a_key_in_the_config_directory_is_refused_with_one_line(env, args, code):
    config_inside_the_root(env)
    before = {path: path.read_bytes() for path in env.config_dir.iterdir() if path.name in
              ("cloudmesh.yaml", "transfer-token")}

    line = one_error_line(env.transfer(*(a.format(p=env.prefix, c=env.config_dir.name) for a in args)), code)

    assert GUARDED in line
    assert {path: path.read_bytes() for path in before} == before
    assert not (env.config_dir / "evil.yaml").exists()
    assert env.tree("awss3", env.prefix) == {"x.txt": b"cloud"}


def test_a_root_that_holds_the_config_directory_is_copied_without_it(env):
    config_inside_the_root(env)

    result = env.transfer("copy", "--source=home:", f"--target=awss3:{env.prefix}/home", "-r")

    assert result.returncode == 0, result.stderr
    copied = env.tree("awss3", f"{env.prefix}/home")
    assert copied == {f"local/{env.prefix}/mine.txt": b"mine"}
    assert f"skipped 'home:{env.config_dir.name}'" in result.stderr
    assert GUARDED in result.stderr


# 5. Symlink loops under the root.


def loops(env) -> None:
    src = env.local / env.prefix / "src"
    env.put("local", f"{env.prefix}/src/a.txt", b"a")
    (src / "loop").symlink_to("loop")
    (src / "ping").symlink_to("pong")
    (src / "pong").symlink_to("ping")
    (src / "deep").symlink_to("loop/x/y")


LOOP = "goes round a loop of symbolic links"
LOOP_ROWS = {  # arguments ({p}: the prefix), the exit status and what the one line says
    "source-file": (["copy", "--source=local:{p}/src/loop", "--target=awss3:{p}/dst"], 2, "'local:{p}/src/loop'"),
    "source-pair": (["copy", "--source=local:{p}/src/ping", "--target=awss3:{p}/dst", "-r"], 2, "'local:{p}/src/ping'"),
    "source-below": (["copy", "--source=local:{p}/src/deep/z.txt", "--target=awss3:{p}/dst"], 2, "src/deep/z.txt"),
    "target-below": (["copy", "--source=awss3:{p}/x.txt", "--target=local:{p}/src/loop/x.txt"], 2, "src/loop/x.txt"),
    "list": (["list", "--target=local:{p}/src/pong"], 2, "'local:{p}/src/pong'"),
}


@pytest.mark.parametrize("args, code, says", LOOP_ROWS.values(), ids=LOOP_ROWS.keys())
def test_a_symlink_loop_named_directly_is_one_clear_line(env, args, code, says):
    loops(env)
    env.put("awss3", f"{env.prefix}/x.txt", b"x")

    line = one_error_line(env.transfer(*(a.format(p=env.prefix) for a in args)), code)

    assert LOOP in line and says.format(p=env.prefix) in line
    assert env.tree("awss3", f"{env.prefix}/dst") == {}


def test_symlink_loops_in_a_listed_folder_are_skipped_with_a_warning(env):
    loops(env)

    result = env.transfer("copy", f"--source=local:{env.prefix}/src", f"--target=awss3:{env.prefix}/dst", "-r")

    assert result.returncode == 0, result.stderr
    assert env.tree("awss3", f"{env.prefix}/dst") == {"a.txt": b"a"}
    warned = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(warned) == 4 and all(LOOP in line for line in warned), result.stderr
    for name in ("loop", "ping", "pong", "deep"):
        assert any(f"'local:{env.prefix}/src/{name}'" in line for line in warned), (name, result.stderr)


# 6. Files that vanish while their folder is listed.

IN_ACCESS, IN_CLOSE_NOWRITE = 0x1, 0x10
EVENT = struct.Struct("iIII")
DEPTH, LEAVES, PER_LEAF = 120, 24, 6


class Vanisher(threading.Thread):
    """Deletes a leaf folder's files the moment the folder has been read (inotify), one after
    another at a gap of its own, so that some vanish between being listed and being looked at."""

    def __init__(self, leaves: list[Path]):
        super().__init__(daemon=True)
        self.folders = {}
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0
        rng = random.Random(6)
        for leaf in leaves:  # opened and read before it is watched, so that only the walk's reading counts
            folder_fd, names = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY), sorted(os.listdir(leaf))
            wd = libc.inotify_add_watch(self.fd, os.fsencode(leaf), IN_ACCESS | IN_CLOSE_NOWRITE)
            assert wd >= 0
            self.folders[wd] = (folder_fd, names, rng.choice((0, 0.0001, 0.0003, 0.001)))
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.folders:
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            data = os.read(self.fd, 65536)
            while data:
                wd, _, _, length = EVENT.unpack_from(data)
                data = data[EVENT.size + length:]
                if wd in self.folders:
                    folder_fd, names, gap = self.folders.pop(wd)
                    for name in names:
                        os.unlink(name, dir_fd=folder_fd)
                        time.sleep(gap)
                    os.close(folder_fd)

    def end(self) -> None:
        self.stop.set()
        self.join()
        os.close(self.fd)
        for folder_fd, _, _ in self.folders.values():
            os.close(folder_fd)


@pytest.mark.skipif(not hasattr(libc, "inotify_init1"), reason="needs inotify (Linux)")
def test_files_that_vanish_while_a_folder_is_listed_never_abort_the_transfer(env):
    """Deep folders (so that each file takes long to look at), whose files a thread deletes as soon
    as each folder has been read: the transfer is recorded and runs; each object is copied or failed
    as missing, and the rest is warned about, never an internal error."""
    p = env.prefix
    deep = "/".join(["d"] * DEPTH)
    leaves = []
    for leaf in range(LEAVES):
        for i in range(PER_LEAF):
            env.put("local", f"{p}/src/{deep}/leaf{leaf:02}/f{i}.txt", f"{leaf} {i}".encode())
        leaves.append(env.local / p / "src" / deep / f"leaf{leaf:02}")
    vanisher = Vanisher(leaves)
    vanisher.start()
    try:
        result = env.transfer("copy", f"--source=local:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}-v")
    finally:
        vanisher.end()

    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stderr
    record = status(env, f"{p}-v")
    failed = {e["path"]: e["message"] for e in record["errors"]}
    for path, message in failed.items():
        assert message == f"'local:{p}/src/{path}' does not exist", message
    assert record["objects_done"] + len(failed) == record["objects_total"]
    landed = [path for path in (env.local / p / "dst").rglob("*") if path.is_file()]
    assert len(landed) == record["objects_done"]
    for line in result.stderr.splitlines():
        assert line.startswith("ERROR: ") or "vanished while its folder was listed" in line, line
    no_partial_files(env)


def test_a_file_that_vanishes_while_its_folder_is_listed_is_skipped_with_a_warning(env, caplog):
    """Deterministic: the listing has read the folder when the files go."""
    p = env.prefix
    for key in ("a.txt", "b.txt", "c.txt", "sub/d.txt"):
        env.put("local", f"{p}/v/{key}", key.encode())
    listing = storage(env).list(f"{p}/v")

    first = next(listing)
    (env.local / p / "v" / "b.txt").unlink()
    shutil.rmtree(env.local / p / "v" / "sub")
    rest = list(listing)

    assert [info.key for info in [first, *rest]] == [f"{p}/v/a.txt", f"{p}/v/c.txt"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"skipped 'local:{p}/v/b.txt': it vanished while its folder was listed",
                      f"skipped 'local:{p}/v/sub': it vanished while its folder was listed"]


# 7. Keys that end in the partial-file suffix.


def test_a_key_ending_in_the_partial_suffix_fails_alone_and_is_never_written(env):
    p = env.prefix
    env.put("awss3", f"{p}/src/ok.txt", b"ok")
    env.put("awss3", f"{p}/src/.x.1234abcd.cmtransfer.partial", b"looks like ours")
    env.put("awss3", f"{p}/src/sub/y.cmtransfer.partial", b"also")

    line = one_error_line(env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r",
                                       f"--id={p}-partial"), 1)

    assert line.startswith(f"ERROR: transfer '{p}-partial' failed: 2 of 3 objects failed; first: ")
    errors = {e["path"]: e["message"] for e in status(env, f"{p}-partial")["errors"]}
    assert set(errors) == {".x.1234abcd.cmtransfer.partial", "sub/y.cmtransfer.partial"}
    for message in errors.values():
        assert "ends in '.cmtransfer.partial', which this tool keeps for its partial files" in message
    assert [path.relative_to(env.local / p / "dst").as_posix()
            for path in (env.local / p / "dst").rglob("*") if path.is_file()] == ["ok.txt"]
    no_partial_files(env)
