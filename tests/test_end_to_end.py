"""The real `cms transfer` command, in a subprocess, against moto and Azurite in every direction."""
import hashlib
import json
import os

import pytest

BIG = os.urandom(6 * 1024 * 1024 + 12345)  # more than one part at --chunksize=1MiB, and than S3's 5 MiB minimum
TREE = {
    "a.txt": b"hello\n",
    "empty.dat": b"",
    "sub/deeper/nested.txt": b"nested " * 1000,
    "sub/big.bin": BIG,
    "with space/file name.txt": b"spaces are fine",
    "ünïcödé/データ.txt": "unicode ✓".encode(),
}
DIRECTIONS = [("local", "awss3"), ("local", "azure"), ("awss3", "azure"), ("azure", "awss3"),
              ("awss3", "local"), ("azure", "local"), ("awss3", "awss3"), ("azure", "azure")]


def seed(env, storage: str, folder: str, tree: dict = TREE) -> None:
    for key, data in tree.items():
        env.put(storage, f"{folder}/{key}", data)


def status(env, transfer_id: str) -> dict:
    result = env.transfer("status", f"--id={transfer_id}", "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("source,target", DIRECTIONS, ids=[f"{s}-to-{t}" for s, t in DIRECTIONS])
def test_folder_and_single_files_arrive_byte_for_byte(env, source, target):
    p = env.prefix
    seed(env, source, f"{p}/src")

    result = env.transfer("copy", f"--source={source}:{p}/src", f"--target={target}:{p}/dst", "-r",
                          f"--id={p}-tree", "--chunksize=1MiB")
    assert result.returncode == 0, result.stderr
    assert env.tree(target, f"{p}/dst") == TREE
    record = status(env, f"{p}-tree")
    assert record["state"] == "completed"
    assert record["objects_total"] == record["objects_done"] == len(TREE)
    assert record["bytes_total"] == record["bytes_done"] == sum(map(len, TREE.values()))
    assert record["route"] == f"{env.kind(source)}->{env.kind(target)}"

    result = env.transfer("copy", f"--source={source}:{p}/src/sub/big.bin", f"--target={target}:{p}/one/copy.bin")
    assert result.returncode == 0, result.stderr
    assert env.get(target, f"{p}/one/copy.bin") == BIG

    result = env.transfer("copy", f"--source={source}:{p}/src/with space/file name.txt", f"--target={target}:{p}/into/")
    assert result.returncode == 0, result.stderr
    assert env.get(target, f"{p}/into/file name.txt") == TREE["with space/file name.txt"]


def test_copying_a_folder_again_does_not_nest_it(env):
    p = env.prefix
    seed(env, "awss3", f"{p}/src")
    for run in range(2):
        result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=azure:{p}/dst", "-r")
        assert result.returncode == 0, result.stderr
    assert env.tree("azure", f"{p}/dst") == TREE


def test_move_deletes_each_source_after_its_verified_copy(env):
    p = env.prefix
    seed(env, "local", f"{p}/src")
    result = env.transfer("move", f"--source=local:{p}/src", f"--target=awss3:{p}/moved", "-r", "--output=json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["copy"] is False
    assert env.tree("awss3", f"{p}/moved") == TREE
    assert env.tree("local", f"{p}/src") == {}


def test_move_keeps_every_source_whose_copy_failed(env):
    """A key that cannot be stored under a local root fails; its source stays and nothing escapes."""
    p = env.prefix
    seed(env, "awss3", f"{p}/src", {"good.txt": b"good", "bad/../../../escape.txt": b"evil"})
    result = env.transfer("move", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", "--output=json")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ERROR:")
    record = json.loads(result.stdout)
    assert record["state"] == "failed" and record["objects_done"] == 1 and record["objects_failed"] == 1
    assert env.tree("local", f"{p}/dst") == {"good.txt": b"good"}
    assert env.tree("awss3", f"{p}/src") == {"bad/../../../escape.txt": b"evil"}
    assert not any(env.local.parent.rglob("escape.txt"))


def test_move_into_a_missing_bucket_keeps_the_source(env):
    p = env.prefix
    env.add_storage("nobucket", "awss3", bucket="no-such-bucket")
    seed(env, "local", f"{p}/src", {"keep.txt": b"keep me"})
    result = env.transfer("move", f"--source=local:{p}/src", "--target=nobucket:dst", "-r")
    assert result.returncode == 1
    assert "bucket 'no-such-bucket' of storage 'nobucket' does not exist" in result.stderr
    assert env.tree("local", f"{p}/src") == {"keep.txt": b"keep me"}


def test_content_type_and_user_metadata_survive_s3_to_azure_and_back(env):
    p = env.prefix
    env.s3.put_object(Bucket="cmtransfer", Key=f"{p}/pic.png", Body=b"\x89PNG", ContentType="image/png",
                      Metadata={"owner": "alice"})
    assert env.transfer("copy", f"--source=awss3:{p}/pic.png", f"--target=azure:{p}/pic.png").returncode == 0
    blob = env.azure.get_blob_client(f"{p}/pic.png").get_blob_properties()
    assert blob.content_settings.content_type == "image/png" and blob.metadata == {"owner": "alice"}
    assert env.transfer("copy", f"--source=azure:{p}/pic.png", f"--target=awss3:{p}/back.png").returncode == 0
    head = env.s3.head_object(Bucket="cmtransfer", Key=f"{p}/back.png")
    assert head["ContentType"] == "image/png" and head["Metadata"] == {"owner": "alice"}


def test_two_cms_processes_at_once_keep_their_records_apart(env):
    import subprocess
    p = env.prefix
    seed(env, "local", f"{p}/one")
    seed(env, "awss3", f"{p}/two")
    runs = [subprocess.Popen([*cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env.environ())
            for cmd in (["cms", "transfer", "copy", f"--source=local:{p}/one", f"--target=azure:{p}/one", "-r",
                         "--id=first", "--chunksize=1MiB"],
                        ["cms", "transfer", "copy", f"--source=awss3:{p}/two", f"--target=local:{p}/two", "-r",
                         "--id=second", "--chunksize=1MiB"])]
    codes = [r.wait(timeout=120) for r in runs]
    assert codes == [0, 0], [r.stderr.read() for r in runs]
    assert env.tree("azure", f"{p}/one") == TREE and env.tree("local", f"{p}/two") == TREE
    for transfer_id in ("first", "second"):
        record = status(env, transfer_id)
        assert record["state"] == "completed" and record["objects_done"] == len(TREE)
    assert json.loads(env.transfer("statistic", "--output=json").stdout)["transfers"]["completed"] == 2


def test_sync_rerun_of_a_finished_folder_copy_moves_nothing(env):
    p = env.prefix
    seed(env, "awss3", f"{p}/src")
    assert env.transfer("copy", f"--source=awss3:{p}/src", f"--target=azure:{p}/dst", "-r").returncode == 0
    env.put("awss3", f"{p}/src/a.txt", b"changed\n")
    env.put("awss3", f"{p}/src/new.txt", b"new")
    result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=azure:{p}/dst", "-r", "--sync",
                          "--output=json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["objects_skipped"] == len(TREE) - 1 and record["objects_done"] == 2
    assert record["bytes_done"] == len(b"changed\n") + len(b"new")
    assert env.tree("azure", f"{p}/dst") == {**TREE, "a.txt": b"changed\n", "new.txt": b"new"}


@pytest.mark.parametrize("compare", ["checksum", "mtime"])
def test_sync_from_local_skips_what_is_in_place_by_checksum_or_by_time(env, compare):
    p = env.prefix
    seed(env, "local", f"{p}/src")
    assert env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r").returncode == 0
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", "--sync",
                          f"--compare={compare}", "--output=json")
    record = json.loads(result.stdout)
    assert record["objects_skipped"] == len(TREE) and record["bytes_done"] == 0


def test_include_and_exclude_select_by_path_inside_the_source_folder(env):
    p = env.prefix
    seed(env, "local", f"{p}/src")
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target=azure:{p}/dst", "-r",
                          "--include=sub/*", "--include=*.txt", "--exclude=*nested*")
    assert result.returncode == 0, result.stderr
    assert sorted(env.tree("azure", f"{p}/dst")) == ["a.txt", "sub/big.bin", "with space/file name.txt",
                                                      "ünïcödé/データ.txt"]


def test_dryrun_lists_what_would_happen_and_changes_nothing(env):
    p = env.prefix
    seed(env, "local", f"{p}/src", {"same.txt": b"same", "new.txt": b"new"})
    env.put("awss3", f"{p}/dst/same.txt", b"same")
    result = env.transfer("move", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", "--sync",
                          "--dryrun", "--output=json")
    assert result.returncode == 0, result.stderr
    assert sorted((row["action"], row["path"]) for row in json.loads(result.stdout)) == [
        ("copy, delete source", "new.txt"), ("skip, delete source", "same.txt")]
    assert env.tree("local", f"{p}/src") == {"same.txt": b"same", "new.txt": b"new"}
    assert env.tree("awss3", f"{p}/dst") == {"same.txt": b"same"}
    assert json.loads(env.transfer("status", "--output=json").stdout) == []
    table = env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", "--dryrun").stdout
    assert "new.txt" in table and "copy" in table


def test_a_blob_whose_stored_md5_is_wrong_is_proven_by_azures_own_md5s_and_says_so(env):
    """A Content-MD5 that is not the blob's MD5 (set wrong by some writer) fails the first read; the
    blob is read again range by range, proven by the MD5s Azure computes of what it sends, and
    copied with its true MD5 and a warning that names the wrong one."""
    from azure.storage.blob import ContentSettings
    p = env.prefix
    env.put("azure", f"{p}/src/bad.bin", b"the bytes")
    env.put("azure", f"{p}/src/good.bin", b"good bytes")
    wrong = hashlib.md5(b"other bytes").hexdigest()
    env.azure.get_blob_client(f"{p}/src/bad.bin").set_http_headers(
        ContentSettings(content_md5=bytearray(bytes.fromhex(wrong))))
    result = env.transfer("move", f"--source=azure:{p}/src", f"--target=awss3:{p}/dst", "-r", "--output=json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["proofs"] == {"md5": 1, "range-md5": 1} and record["errors"] == []
    assert record["warnings"] == [{"path": "bad.bin", "message": f"the source's stored MD5 {wrong} is not the MD5 "
                                   f"of its bytes ({hashlib.md5(b'the bytes').hexdigest()}, proven by range-md5)"}]
    assert env.tree("awss3", f"{p}/dst") == {"good.bin": b"good bytes", "bad.bin": b"the bytes"}
    assert env.tree("azure", f"{p}/src") == {}


def test_progress_shows_on_a_terminal_and_not_when_piped(env):
    import pty
    import subprocess
    p = env.prefix
    env.put("local", f"{p}/src/f.bin", BIG)
    piped = env.transfer("copy", f"--source=local:{p}/src", f"--target=azure:{p}/piped", "-r")
    assert piped.returncode == 0 and piped.stderr == ""
    primary, secondary = pty.openpty()
    run = subprocess.run(["cms", "transfer", "copy", f"--source=local:{p}/src", f"--target=azure:{p}/tty", "-r"],
                         stdout=secondary, stderr=subprocess.PIPE, env=env.environ(), timeout=120)
    os.close(secondary)
    os.close(primary)
    assert run.returncode == 0
    assert "1/1 objects: 100%" in run.stderr.decode() and "B/s" in run.stderr.decode()


def test_a_move_keeps_a_source_that_changed_after_it_was_read(env, monkeypatch):
    """The source is overwritten between its copy and its delete: the new version is not deleted
    (it was never copied); the object fails with the reason, and nothing is lost."""
    from cloudmesh.transfer import Transfer
    from cloudmesh.transfer.engine import Engine
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    p = env.prefix
    env.put("awss3", f"{p}/src/doc.txt", b"version one")
    copy = Engine.copy

    def copy_then_overwrite(engine, item):
        result = copy(engine, item)
        env.put("awss3", f"{p}/src/doc.txt", b"version two")
        return result

    monkeypatch.setattr(Engine, "copy", copy_then_overwrite)
    status = Transfer().move(f"awss3:{p}/src", f"azure:{p}/dst", recursive=True, id=p)
    assert status["state"] == "failed" and "source changed since it was read" in status["errors"][0]["message"]
    assert env.get("awss3", f"{p}/src/doc.txt") == b"version two"
    assert env.get("azure", f"{p}/dst/doc.txt") == b"version one"
