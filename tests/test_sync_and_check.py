"""`--sync` and `check` end to end: the real `cms transfer` in a subprocess against moto and Azurite.

The sources hold objects written by other tools as well as by cms (S3 multipart objects with and
without rclone's md5chksum, an Azure blob committed from staged blocks without Content-MD5), so a
second `--sync` run must settle every direction without sending a byte. Also: `check` and its
findings, Azure folder markers and S3 folder keys, a key beside a folder of the same name at a
local target, metadata names Azure cannot keep as they are, content types, and a corrupted
listing. The SDK clients only seed sources and inspect targets."""
import base64
import hashlib
import io
import json
import os
import re

import boto3
import pytest
from azure.storage.blob import BlobBlock
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

import emulators as emu
from faultproxy import FaultProxy

MiB = 1024 * 1024
SMALL = {"small/a.txt": b"hello\n", "small/deeper/b.txt": b"b" * 3000, "empty.dat": b""}
SUMMARY = re.compile(r"(\d+) objects at the source: (\d+) same, (\d+) different, (\d+) missing, (\d+) unproven; "
                     r"(\d+) extra at the target")


# Seeding sources the way other tools write them.

def s3_multipart(env, key: str, data: bytes, metadata: dict | None = None) -> None:
    """An S3 object uploaded by boto3's transfer manager in 5 MiB parts (as the AWS CLI does)."""
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    env.s3.upload_fileobj(io.BytesIO(data), emu.BUCKET, key, Config=config,
                          ExtraArgs={"Metadata": metadata} if metadata else None)


def azure_blocks(env, key: str, data: bytes, blocks: int = 2) -> None:
    """An Azure blob committed from staged blocks, with no Content-MD5 (as AzCopy and most SDKs leave it)."""
    blob = env.azure.get_blob_client(key)
    size = -(-len(data) // blocks)
    ids = []
    for number, offset in enumerate(range(0, len(data), size)):
        ids.append(base64.b64encode(f"block-{number:04d}".encode()).decode())
        blob.stage_block(ids[-1], data[offset:offset + size])
    blob.commit_block_list([BlobBlock(i) for i in ids])


def rclone_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def seed_foreign(env, storage: str, folder: str) -> dict[str, bytes]:
    """A source folder holding what other tools write to `storage`; returns {path: bytes}."""
    files = dict(SMALL)
    if storage == "awss3":
        files["multipart.bin"] = os.urandom(12 * MiB + 4321)
        files["rclone.bin"] = os.urandom(11 * MiB + 17)
        s3_multipart(env, f"{folder}/multipart.bin", files["multipart.bin"])
        s3_multipart(env, f"{folder}/rclone.bin", files["rclone.bin"],
                     {"md5chksum": rclone_md5(files["rclone.bin"])})
        for name, count in (("multipart.bin", 3), ("rclone.bin", 3)):
            head = env.s3.head_object(Bucket=emu.BUCKET, Key=f"{folder}/{name}")
            assert head["ETag"].strip('"').endswith(f"-{count}")  # truly multipart, so no MD5 in the ETag
        assert "md5chksum" not in env.s3.head_object(Bucket=emu.BUCKET, Key=f"{folder}/multipart.bin")["Metadata"]
    elif storage == "azure":
        files["blocks.bin"] = os.urandom(6 * MiB + 999)
        azure_blocks(env, f"{folder}/blocks.bin", files["blocks.bin"])
        properties = env.azure.get_blob_client(f"{folder}/blocks.bin").get_blob_properties()
        assert not properties.content_settings.content_md5
    else:
        files["big.bin"] = os.urandom(12 * MiB + 5)
        env.put("local", f"{folder}/big.bin", files["big.bin"])
    for path in SMALL:
        env.put(storage, f"{folder}/{path}", SMALL[path])
    return files


def tree(env, storage: str, prefix: str) -> dict[str, bytes]:
    """env.tree, except that S3 objects are read without checking the CRC S3 answers with: moto's
    CopyObject gives the copy the source's composite multipart CRC32 as if it were a whole-object
    one, which boto3 then rejects (a quirk of moto, not of what cms wrote)."""
    if storage != "awss3":
        return env.tree(storage, prefix)
    s3 = boto3.client("s3", endpoint_url=env.emulators.s3_endpoint, aws_access_key_id=emu.S3_KEY_ID,
                      aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1",
                      config=Config(response_checksum_validation="when_required"))
    start = prefix.rstrip("/") + "/"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=emu.BUCKET, Prefix=start)
    return {o["Key"][len(start):]: s3.get_object(Bucket=emu.BUCKET, Key=o["Key"])["Body"].read()
            for page in pages for o in page.get("Contents", [])}


# Running cms.

def copy_json(env, *args) -> dict:
    """The final status of a `copy` that must succeed."""
    result = env.transfer("copy", *args, "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def summary(stderr: str) -> dict:
    """The counts of the one summary line `check` writes to stderr."""
    found = SUMMARY.search(stderr)
    assert found, stderr
    return dict(zip(("source", "same", "different", "missing", "unproven", "extra"), map(int, found.groups())))


# 1. --sync settles in every direction.

DIRECTIONS = [("local", "awss3"), ("local", "azure"), ("awss3", "azure"), ("azure", "awss3"),
              ("awss3", "local"), ("azure", "local"), ("awss3", "awss3"), ("azure", "azure"),
              ("awss3", "s3stream")]


@pytest.mark.parametrize("source,target", DIRECTIONS, ids=[f"{s}-to-{t}" for s, t in DIRECTIONS])
def test_a_second_sync_run_sends_nothing_whoever_wrote_the_objects(env, source, target):
    """After a first copy, `--sync` finds every object in place (by the MD5s and multipart ETags the
    storages keep, a HEAD, or reading one side), so it skips all of them and sends no byte.
    `s3stream` is the same bucket under another endpoint name, so S3->S3 streams instead of CopyObject."""
    p = env.prefix
    if target == "s3stream":
        env.add_storage("s3stream", "awss3", endpoint_url=env.emulators.s3_endpoint.replace("127.0.0.1", "localhost"))
    files = seed_foreign(env, source, f"{p}/src")
    check_as = "awss3" if target == "s3stream" else target
    args = (f"--source={source}:{p}/src", f"--target={target}:{p}/dst", "-r", "--chunksize=5MiB")

    first = copy_json(env, *args)
    assert first["state"] == "completed" and first["objects_done"] == len(files)
    if target == "s3stream":
        assert "server-copy" not in first["methods"]
    assert tree(env, check_as, f"{p}/dst") == files

    again = copy_json(env, *args, "--sync")
    assert again["state"] == "completed"
    assert again["objects_total"] == len(files)
    assert again["objects_skipped"] == again["objects_total"], again
    assert again["bytes_done"] == 0 and again["objects_done"] == 0
    assert tree(env, check_as, f"{p}/dst") == files


def test_a_sync_after_cms_own_multipart_upload_to_s3_sends_nothing(env):
    """cms uploads a local file to S3 in parts without knowing its MD5 first, so S3 keeps only the
    multipart ETag; a --sync run proves the local file by that ETag over S3's part sizes and skips
    it (it used to be sent again on every run), while a changed file of the same size is sent."""
    p = env.prefix
    data = os.urandom(13 * MiB + 3)
    env.put("local", f"{p}/src/big.bin", data)
    args = (f"--source=local:{p}/src", f"--target=awss3:{p}/dst", "-r", "--chunksize=5MiB")
    assert copy_json(env, *args)["objects_done"] == 1
    head = env.s3.head_object(Bucket=emu.BUCKET, Key=f"{p}/dst/big.bin")
    assert head["ETag"].strip('"').endswith("-3")
    for _ in range(2):
        again = copy_json(env, *args, "--sync")
        assert (again["objects_skipped"], again["objects_done"], again["bytes_done"]) == (1, 0, 0), again

    changed = bytearray(data)
    changed[7 * MiB] ^= 0xFF
    env.put("local", f"{p}/src/big.bin", bytes(changed))
    resent = copy_json(env, *args, "--sync")
    assert (resent["objects_skipped"], resent["objects_done"], resent["bytes_done"]) == (0, 1, len(data))
    assert env.get("awss3", f"{p}/dst/big.bin") == bytes(changed)


# 2. check.

def check(env, source: str, target: str, *args):
    return env.transfer("check", f"--source={source}", f"--target={target}", "-r", *args)


def differences(result) -> list[dict]:
    """The rows of `check --output=json`: the report's `differences` (or the rows alone, as printed now)."""
    data = json.loads(result.stdout)
    return data["differences"] if isinstance(data, dict) else data


def findings(result) -> set[tuple[str, str]]:
    return {(row["finding"], row["path"]) for row in differences(result)}


def one_error_line(stderr: str, start: str = "ERROR: ") -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), stderr
    return lines[0]


def copied_foreign(env):
    """A clean cms copy of foreign S3 objects (seed_foreign) to Azure; returns (source, target, files)."""
    p = env.prefix
    files = seed_foreign(env, "awss3", f"{p}/src")
    source, target = f"awss3:{p}/src", f"azure:{p}/dst"
    assert copy_json(env, f"--source={source}", f"--target={target}", "-r", "--chunksize=5MiB")["state"] == "completed"
    return source, target, files


def spoil(env):
    """One target object deleted, one changed (same size, other bytes) and one added."""
    p = env.prefix
    env.azure.delete_blob(f"{p}/dst/small/a.txt")
    env.put("azure", f"{p}/dst/small/deeper/b.txt", b"B" * 3000)
    env.put("azure", f"{p}/dst/extra/new.txt", b"not at the source")


def test_check_passes_on_a_clean_copy_and_names_what_is_missing_different_and_extra(env):
    source, target, files = copied_foreign(env)
    clean = check(env, source, target, "--output=json")
    assert clean.returncode == 0, clean.stderr
    assert differences(clean) == []
    assert clean.stderr.startswith("check passed:") and clean.stderr.count("\n") == 1
    assert summary(clean.stderr) == {"source": len(files), "same": len(files), "different": 0, "missing": 0,
                                     "unproven": 0, "extra": 0}

    spoil(env)
    spoiled = check(env, source, target, "--output=json")
    assert spoiled.returncode == 1
    assert findings(spoiled) == {("missing", "small/a.txt"), ("different", "small/deeper/b.txt"),
                                 ("extra", "extra/new.txt")}
    rows = {row["path"]: row for row in differences(spoiled)}
    assert (rows["small/a.txt"]["source_size"], rows["small/a.txt"]["target_size"]) == (6, None)
    assert (rows["small/deeper/b.txt"]["source_size"], rows["small/deeper/b.txt"]["target_size"]) == (3000, 3000)
    assert (rows["extra/new.txt"]["source_size"], rows["extra/new.txt"]["target_size"]) == (None, 17)
    one_error_line(spoiled.stderr, "ERROR: check failed:")
    assert summary(spoiled.stderr) == {"source": len(files), "same": len(files) - 2, "different": 1, "missing": 1,
                                       "unproven": 0, "extra": 1}

    table = check(env, source, target)
    assert table.returncode == 1
    one_error_line(table.stderr, "ERROR: check failed:")
    for finding, path in findings(spoiled):
        assert re.search(rf"\|\s*{finding}\s*\|\s*{re.escape(path)}\s*\|", table.stdout), table.stdout


def test_check_json_is_the_whole_report(env):
    """`check --output=json` prints the report check.check builds: `ok`, the counts by finding and
    the `differences` rows (a script needs `ok` and the counts, not only the rows)."""
    source, target, files = copied_foreign(env)
    clean = check(env, source, target, "--output=json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert isinstance(report, dict), f"check --output=json printed {clean.stdout.strip()!r}, not the report"
    assert report["ok"] is True and report["same"] == report["objects_source"] == len(files)
    assert report["differences"] == []

    spoil(env)
    spoiled = check(env, source, target, "--output=json")
    assert spoiled.returncode == 1
    report = json.loads(spoiled.stdout)
    assert report["ok"] is False
    assert (report["missing"], report["different"], report["extra"], report["unproven"]) == (1, 1, 1, 0)
    assert {(row["finding"], row["path"]) for row in report["differences"]} == {
        ("missing", "small/a.txt"), ("different", "small/deeper/b.txt"), ("extra", "extra/new.txt")}


def test_check_download_reads_both_sides_where_a_stored_checksum_was_left_as_before(env):
    """A blob overwritten with other bytes of the same size, from blocks, keeping the S3 multipart
    ETag cms stored with it: the stored proofs still agree, so a plain check finds it the same;
    --download reads both sides and finds it different."""
    source, target, files = copied_foreign(env)
    key = f"{env.prefix}/dst/multipart.bin"
    blob = env.azure.get_blob_client(key)
    kept = blob.get_blob_properties().metadata
    assert kept["cmtransfer_s3etag"] == env.s3.head_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/src/multipart.bin")[
        "ETag"].strip('"')
    azure_blocks(env, key, os.urandom(len(files["multipart.bin"])))
    blob.set_blob_metadata(kept)

    trusting = check(env, source, target, "--output=json")
    assert trusting.returncode == 0, trusting.stderr
    assert differences(trusting) == []

    download = check(env, source, target, "--download", "--output=json")
    assert download.returncode == 1
    assert differences(download) == [{"path": "multipart.bin", "finding": "different", "detail": "compared by download",
                                      "source_size": len(files["multipart.bin"]),
                                      "target_size": len(files["multipart.bin"])}]
    assert summary(download.stderr)["same"] == len(files) - 1


def test_check_proves_a_multipart_s3_source_and_its_azure_copy_without_reading_either(env):
    """cms stores the S3 multipart ETag with the blob (cmtransfer_s3etag); `check` then proves the
    pair by it, and the other objects by MD5s the listings (or a HEAD) show: no object body is read
    from either side (seen through proxies in front of both emulators)."""
    p = env.prefix
    source, target, files = copied_foreign(env)
    etag = env.s3.head_object(Bucket=emu.BUCKET, Key=f"{p}/src/multipart.bin")["ETag"].strip('"')
    assert env.azure.get_blob_client(f"{p}/dst/multipart.bin").get_blob_properties().metadata == {
        "cmtransfer_s3etag": etag}
    with FaultProxy(env.emulators.s3_endpoint, flavor="s3") as s3, \
            FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure") as azure:
        env.add_storage("s3seen", "awss3", endpoint_url=s3.url)
        env.add_storage("azseen", "azure", endpoint=f"{azure.url}/{emu.AZURITE_ACCOUNT}")
        result = check(env, f"s3seen:{p}/src", f"azseen:{p}/dst", "--output=json")
        assert result.returncode == 0, result.stderr
        assert differences(result) == []
        assert summary(result.stderr)["same"] == len(files)
        reads = [e for e in s3.log + azure.log if e.method == "GET" and not re.search(r"list-type=2|comp=list", e.path)]
        assert reads == []
        assert any("list-type=2" in e.path for e in s3.log) and any("comp=list" in e.path for e in azure.log)


# 3. Folder markers and folder keys are folders, not objects.

@pytest.mark.parametrize("target", ["local", "awss3"])
def test_an_azure_folder_marker_is_a_folder_not_an_object(env, target):
    p = env.prefix
    env.azure.upload_blob(f"{p}/src/dir", b"", metadata={"hdi_isfolder": "true"})
    env.put("azure", f"{p}/src/dir/file.txt", b"inside the folder")
    record = copy_json(env, f"--source=azure:{p}/src", f"--target={target}:{p}/dst", "-r")
    assert record["state"] == "completed" and record["objects_total"] == 1
    assert tree(env, target, f"{p}/dst") == {"dir/file.txt": b"inside the folder"}
    if target == "local":
        assert (env.local / p / "dst" / "dir").is_dir()
    else:
        assert env.s3.list_objects_v2(Bucket=emu.BUCKET, Prefix=f"{p}/dst/dir")["KeyCount"] == 1


@pytest.mark.parametrize("target", ["local", "azure"])
def test_an_empty_s3_key_ending_in_a_slash_is_not_copied_as_an_object(env, target):
    p = env.prefix
    env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/src/folder/", Body=b"")
    env.put("awss3", f"{p}/src/folder/x.txt", b"x")
    record = copy_json(env, f"--source=awss3:{p}/src", f"--target={target}:{p}/dst", "-r")
    assert record["state"] == "completed" and record["objects_total"] == 1
    assert env.tree(target, f"{p}/dst") == {"folder/x.txt": b"x"}


# 4. A key beside a folder of the same name cannot both land on local disk.

def test_a_key_beside_a_folder_of_that_name_fails_clearly_at_a_local_target(env):
    """`a` and `a/b` cannot both be written under a local root: one of them fails with a message that
    says why ("... cannot also be a file/folder"), the other is written."""
    p = env.prefix
    files = {"a": b"file a", "a/b": b"file b"}
    for path, data in files.items():
        env.put("awss3", f"{p}/src/{path}", data)
    result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", "--output=json")
    assert result.returncode == 1
    one_error_line(result.stderr)
    record = json.loads(result.stdout)
    assert (record["state"], record["objects_done"], record["objects_failed"]) == ("failed", 1, 1)
    [failed] = record["errors"]
    assert failed["path"] in files and "cannot also be" in failed["message"], failed
    written = "a/b" if failed["path"] == "a" else "a"
    assert env.tree("local", f"{p}/dst") == {written: files[written]}


def test_a_large_key_whose_folder_appears_while_it_is_written_fails_clearly_at_a_local_target(env):
    """As above, but `a` is large and still being written (to its hidden partial file) when `a/b`
    lands and so creates the folder `a`: the clash shows only when `a` is renamed into place, and
    must still be reported as the name clash it is. With --parallel=1 two objects run at once:
    `a` takes one worker, the other copies a.0 ... a.4 (which sort between `a` and `a/b`) and
    then `a/b`, while `a` is still streaming."""
    p = env.prefix
    files = {"a": os.urandom(40 * MiB), **{f"a.{i}": b"between" for i in range(5)}, "a/b": b"file b"}
    for path, data in files.items():
        env.put("awss3", f"{p}/src/{path}", data)
    result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", "--parallel=1",
                          "--chunksize=5MiB", "--output=json")
    assert result.returncode == 1
    one_error_line(result.stderr)
    record = json.loads(result.stdout)
    assert (record["objects_done"], record["objects_failed"]) == (len(files) - 1, 1)
    [failed] = record["errors"]
    assert env.tree("local", f"{p}/dst") == {k: v for k, v in files.items() if k != failed["path"]}
    assert not [f for f in (env.local / p / "dst").iterdir() if f.name.endswith(".partial")]
    assert "cannot also be" in failed["message"], failed


# 5. Metadata names Azure cannot keep as they are.

METADATA = {"project-name": "x", "dotted.key": "y", "9lives": "z", "plain": "p"}


def test_metadata_names_are_renamed_on_azure_as_azcopy_does_and_restored_on_s3(env):
    p = env.prefix
    env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/obj.txt", Body=b"with metadata", Metadata=METADATA)
    assert copy_json(env, f"--source=awss3:{p}/obj.txt", f"--target=azure:{p}/obj.txt")["warnings"] == []
    assert env.azure.get_blob_client(f"{p}/obj.txt").get_blob_properties().metadata == {
        "rename_project_name": "x", "rename_key_project_name": "project-name",
        "rename_dotted_key": "y", "rename_key_dotted_key": "dotted.key",
        "rename_9lives": "z", "rename_key_9lives": "9lives", "plain": "p"}
    assert copy_json(env, f"--source=azure:{p}/obj.txt", f"--target=awss3:{p}/back.txt")["warnings"] == []
    assert env.s3.head_object(Bucket=emu.BUCKET, Key=f"{p}/back.txt")["Metadata"] == METADATA
    assert env.get("awss3", f"{p}/back.txt") == b"with metadata"


@pytest.mark.parametrize("source", ["awss3", "azure"])
def test_metadata_a_local_target_cannot_keep_is_named_in_a_warning(env, source):
    p = env.prefix
    env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/src/obj.txt", Body=b"with metadata", Metadata=METADATA)
    if source == "azure":
        assert copy_json(env, f"--source=awss3:{p}/src", f"--target=azure:{p}/src", "-r")["state"] == "completed"
    record = copy_json(env, f"--source={source}:{p}/src", f"--target=local:{p}/dst", "-r")
    assert record["state"] == "completed" and record["objects_done"] == 1
    assert record["warnings"] == [{"path": "obj.txt", "message": "metadata the target cannot keep was left out: "
                                                                 "9lives, dotted.key, plain, project-name"}]
    assert env.tree("local", f"{p}/dst") == {"obj.txt": b"with metadata"}


# 6. Content types from file names.

def test_a_json_file_gets_the_content_type_application_json(env):
    p = env.prefix
    env.put("local", f"{p}/x.json", b'{"a": 1}')
    for target in ("awss3", "azure"):
        assert copy_json(env, f"--source=local:{p}/x.json", f"--target={target}:{p}/{target}/x.json")["state"] == \
            "completed"
    assert env.s3.head_object(Bucket=emu.BUCKET, Key=f"{p}/awss3/x.json")["ContentType"] == "application/json"
    blob = env.azure.get_blob_client(f"{p}/azure/x.json").get_blob_properties()
    assert blob.content_settings.content_type == "application/json"


# 7. A corrupted listing is one clear error.

@pytest.mark.parametrize("storage", ["awss3", "azure"])
def test_a_corrupted_listing_is_one_clear_error_that_names_the_storage(env, storage):
    """Every listing answer arrives with one byte flipped (FaultProxy's corrupt, aimed at listings
    only): the copy stops with one error line that names the storage, not an internal error."""
    p = env.prefix
    for path, data in SMALL.items():
        env.put(storage, f"{p}/src/{path}", data)
    corrupt = {"corrupt_rate": 1, "match": ("GET", r"comp=list|list-type=2")}
    if storage == "awss3":
        proxy = FaultProxy(env.emulators.s3_endpoint, flavor="s3", **corrupt)
        env.add_storage("flaky", "awss3", endpoint_url=proxy.url)
    else:
        proxy = FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure", **corrupt)
        env.add_storage("flaky", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
    with proxy:
        result = env.transfer("copy", f"--source=flaky:{p}/src", f"--target=local:{p}/dst", "-r", "--retries=1")
        assert proxy.faults["corrupt"] >= 1
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert re.search(r"'flaky[:']", line) and "internal error" not in line, line
    assert env.tree("local", f"{p}/dst") == {}
