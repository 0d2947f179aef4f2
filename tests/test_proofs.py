"""Every object proven against what its source keeps, whoever wrote it.

For each kind of source object (written by cms, boto3, rclone's way, the Azure SDK, staged blocks
without an MD5, with a wrong stored MD5, KMS-encrypted), a read corrupted in transit (the fault
proxy flips one byte of every GET body of the object) fails the object, keeps the source and
leaves what was at the target as it was; a clean read completes with its proof recorded and
stored at the target. Then the checks parts carry to the targets, proven against the emulator
that checks them or, where it does not (Azurite and CRC64, moto and CRC64NVME), against the
algorithm of the service's own SDK.
"""
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from typing import Callable

import boto3
import pytest
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.extensions.checksums import crc64 as azure_crc64
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

import emulators as emu
from faultproxy import FaultProxy

MiB = 1024 * 1024
PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def plain_s3(env):
    """A boto3 client that sends no checksums of its own (as older SDKs, the aws cli v1 and rclone do)."""
    return boto3.client("s3", endpoint_url=env.emulators.s3_endpoint, aws_access_key_id=emu.S3_KEY_ID,
                        aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1",
                        config=Config(request_checksum_calculation="when_required"))


def cms_single(env, key, data):
    env.put("local", f"seed/{key}", data)
    assert env.transfer("copy", f"--source=local:seed/{key}", f"--target=awss3:{key}").returncode == 0


def cms_multipart(env, key, data):
    env.put("local", f"seed/{key}", data)
    result = env.transfer("copy", f"--source=local:seed/{key}", f"--target=awss3:{key}", "--chunksize=5MiB")
    assert result.returncode == 0, result.stderr
    assert env.s3.head_object(Bucket=emu.BUCKET, Key=key)["ETag"].endswith('-3"')


def boto3_multipart(env, key, data):
    plain_s3(env).upload_fileobj(io.BytesIO(data), emu.BUCKET, key, Config=PARTS)


def rclone_md5chksum(env, key, data):
    """rclone keeps a multipart object's MD5 in metadata md5chksum, base64."""
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    plain_s3(env).upload_fileobj(io.BytesIO(data), emu.BUCKET, key, Config=PARTS,
                                 ExtraArgs={"Metadata": {"md5chksum": md5}})


def s3_wrong_md5(env, key, data):
    plain_s3(env).upload_fileobj(io.BytesIO(data), emu.BUCKET, key, Config=PARTS,
                                 ExtraArgs={"Metadata": {"md5": hashlib.md5(b"other").hexdigest()}})


def s3_kms_crc32(env, key, data):
    """With KMS encryption the ETag is no MD5; the CRC32 boto3 sends by default is S3's proof."""
    env.s3.put_object(Bucket=emu.BUCKET, Key=key, Body=data, ServerSideEncryption="aws:kms", ChecksumAlgorithm="CRC32")


def azure_sdk(env, key, data):
    env.azure.upload_blob(key, data)  # one Put Blob: Azure keeps its Content-MD5


def azure_blocks(env, key, data):
    blob = env.azure.get_blob_client(key)
    half = len(data) // 2
    blob.stage_block("YmxvY2stMQ==", data[:half])
    blob.stage_block("YmxvY2stMg==", data[half:])
    blob.commit_block_list([BlobBlock("YmxvY2stMQ=="), BlobBlock("YmxvY2stMg==")])
    assert blob.get_blob_properties().content_settings.content_md5 is None


def azure_wrong_md5(env, key, data):
    env.azure.upload_blob(key, data)
    env.azure.get_blob_client(key).set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(b"other").digest())))


@dataclass
class Kind:
    """A kind of source object: where it lives, who writes it, its size, what proves a clean read
    of it, and whether the clean read knows its whole MD5 (else its S3 multipart ETag is stored)."""

    storage: str
    write: Callable
    size: int
    proof: str
    whole_md5: bool
    wrong_claim: bool = False


KINDS = {
    "cms-single": Kind("awss3", cms_single, 3000, "md5", True),
    "cms-multipart": Kind("awss3", cms_multipart, 12 * MiB, "etag-parts", False),
    "boto3-multipart": Kind("awss3", boto3_multipart, 12 * MiB, "etag-parts", False),
    "rclone-md5chksum": Kind("awss3", rclone_md5chksum, 12 * MiB, "md5", True),
    "s3-wrong-md5": Kind("awss3", s3_wrong_md5, 12 * MiB, "etag-parts", True, wrong_claim=True),
    "s3-kms-crc32": Kind("awss3", s3_kms_crc32, 70_000, "crc", True),
    "azure-sdk": Kind("azure", azure_sdk, 3000, "md5", True),
    "azure-blocks": Kind("azure", azure_blocks, 9 * MiB, "range-md5", False),
    "azure-wrong-md5": Kind("azure", azure_wrong_md5, 6 * MiB, "range-md5", True, wrong_claim=True),
}
OTHER = {"awss3": "azure", "azure": "awss3"}
CASES = [(kind, mode, target) for kind in KINDS for mode, target in (("copy", "cloud"), ("move", "cloud"),
                                                                      ("copy", "local"))]


@contextlib.contextmanager
def corrupting(env, storage: str, key: str):
    """A proxy in front of the emulator of `storage`, as storage 'flaky', flipping a byte of every GET body of `key`."""
    if storage == "awss3":
        proxy = FaultProxy(env.emulators.s3_endpoint, flavor="s3", corrupt_rate=1, match=("GET", re.escape(key)))
        env.add_storage("flaky", "awss3", endpoint_url=proxy.url)
    else:
        proxy = FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure", corrupt_rate=1,
                           match=("GET", re.escape(key)))
        env.add_storage("flaky", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
    with proxy:
        yield proxy


def recorded(env, transfer_id: str) -> tuple:
    """The object's (state, md5, proof) as the transfer records keep it."""
    with contextlib.closing(sqlite3.connect(env.config_dir / "transfer.db")) as db:
        return db.execute("SELECT state, md5, proof FROM objects WHERE transfer_id = ?", (transfer_id,)).fetchone()


def stored_proof(env, target: str, key: str) -> tuple:
    """What the target keeps of an object that proves it: (whole-object MD5, S3 multipart ETag)."""
    if target == "azure":
        blob = env.azure.get_blob_client(key).get_blob_properties()
        md5 = blob.content_settings.content_md5
        return (bytes(md5).hex() if md5 else None), blob.metadata.get("cmtransfer_s3etag")
    head = env.s3.head_object(Bucket=emu.BUCKET, Key=key)
    etag = head["ETag"].strip('"')
    return head["Metadata"].get("md5") or (etag if "-" not in etag else None), head["Metadata"].get("cmtransfer_s3etag")


@pytest.mark.parametrize("kind_name,mode,where", CASES, ids=[f"{k}-{m}-{w}" for k, m, w in CASES])
def test_a_corrupted_read_fails_and_changes_nothing_and_a_clean_one_is_proven(env, kind_name, mode, where):
    kind, p = KINDS[kind_name], env.prefix
    target = OTHER[kind.storage] if where == "cloud" else "local"
    key, dst = f"{p}/src/obj.bin", f"{p}/dst/obj.bin"
    data = os.urandom(kind.size)
    kind.write(env, key, data)
    source_etag = env.s3.head_object(Bucket=emu.BUCKET, Key=key)["ETag"].strip('"') if kind.storage == "awss3" else None
    env.put(target, dst, b"what the target held before")
    with corrupting(env, kind.storage, key) as proxy:
        bad = env.transfer(mode, f"--source=flaky:{key}", f"--target={target}:{dst}", "--chunksize=5MiB",
                           f"--id={p}-bad", "--output=json")
        assert bad.returncode == 1, bad.stderr
        status = json.loads(bad.stdout)
        assert (status["objects_done"], status["objects_failed"], status["uploads_open"]) == (0, 1, 0)
        assert "do not match" in status["errors"][0]["message"]
        assert proxy.faults["corrupt"] >= 1
        assert recorded(env, f"{p}-bad")[0] == "failed"
        assert env.get(target, dst) == b"what the target held before"
        assert env.get(kind.storage, key) == data

        proxy.corrupt_rate = 0
        good = env.transfer(mode, f"--source=flaky:{key}", f"--target={target}:{dst}", "--chunksize=5MiB",
                            f"--id={p}-good", "--output=json")
    assert good.returncode == 0, good.stderr
    status = json.loads(good.stdout)
    assert status["proofs"] == {kind.proof: 1} and status["objects_done"] == 1
    true_md5 = hashlib.md5(data).hexdigest()
    assert recorded(env, f"{p}-good") == ("done", true_md5 if kind.whole_md5 else None, kind.proof)
    assert [w["path"] for w in status["warnings"]] == (["obj.bin"] if kind.wrong_claim else [])
    assert env.get(target, dst) == data
    assert (env.tree(kind.storage, f"{p}/src") == {}) == (mode == "move")
    if target != "local":
        md5, s3etag = stored_proof(env, target, dst)
        known_before = kind.proof in ("md5", "crc") or kind.size <= 5 * MiB  # an S3 multipart upload's metadata
        if kind.whole_md5 and (target == "azure" or known_before):
            assert md5 == true_md5
        if kind.proof == "etag-parts":
            assert s3etag == source_etag


def test_an_object_nothing_proves_is_copied_unverified_and_a_move_keeps_it(env):
    """A KMS-encrypted object without an additional checksum: its ETag is no MD5 and S3 keeps
    nothing else, so the copy is recorded unverified (exit 0, with a warning line) and a move keeps
    its source (exit 1)."""
    p = env.prefix
    data = os.urandom(5000)
    plain_s3(env).put_object(Bucket=emu.BUCKET, Key=f"{p}/src/k.bin", Body=data, ServerSideEncryption="aws:kms")
    copied = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=azure:{p}/copy", "-r", "--output=json")
    assert copied.returncode == 0, copied.stderr
    status = json.loads(copied.stdout)
    assert (status["state"], status["objects_unverified"], status["objects_done"]) == ("completed", 1, 0)
    assert status["unverified"] == [{"path": "k.bin", "message": "copied, but not verified: S3 keeps no checksum of "
                                                                 "it that proves its bytes"}]
    assert copied.stderr.startswith("WARNING: ") and copied.stderr.count("\n") == 1
    assert env.get("azure", f"{p}/copy/k.bin") == data

    moved = env.transfer("move", f"--source=awss3:{p}/src", f"--target=azure:{p}/moved", "-r", "--output=json")
    assert moved.returncode == 1
    status = json.loads(moved.stdout)
    assert status["state"] == "failed" and "so their sources were kept" in status["message"]
    assert "so its source was kept" in status["unverified"][0]["message"]
    assert env.get("awss3", f"{p}/src/k.bin") == data


def test_a_multipart_source_with_parts_of_other_sizes_is_read_by_its_exact_layout(env):
    """Parts of 6, 5 and 7 MiB: the first part's size does not fit the object, so every part's
    size is looked up, and the ETag over those parts proves the bytes."""
    p, client = env.prefix, plain_s3(env)
    parts = [os.urandom(6 * MiB), os.urandom(5 * MiB), os.urandom(7 * MiB)]
    key = f"{p}/odd.bin"
    upload = client.create_multipart_upload(Bucket=emu.BUCKET, Key=key)["UploadId"]
    etags = [client.upload_part(Bucket=emu.BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=d)["ETag"]
             for n, d in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=emu.BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    result = env.transfer("copy", f"--source=awss3:{key}", f"--target=local:{p}/odd.bin", "--output=json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["proofs"] == {"etag-parts": 1}
    assert env.get("local", f"{p}/odd.bin") == b"".join(parts)


def test_mirrored_parts_carry_the_md5_of_the_proof_and_azurite_refuses_a_corrupted_one(env):
    """An S3 multipart source's parts go to Azure as blocks of the same size with the part MD5s
    computed for the proof (no second MD5 pass); a block corrupted on its way up is refused by
    Azurite's Content-MD5 check, the object fails and the target keeps nothing of it."""
    p = env.prefix
    data = os.urandom(12 * MiB)
    boto3_multipart(env, f"{p}/src.bin", data)
    with FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure", corrupt_up_rate=1,
                    faults_left=1, match=("PUT", r"comp=block&")) as proxy:
        env.add_storage("upaz", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
        bad = env.transfer("copy", f"--source=awss3:{p}/src.bin", f"--target=upaz:{p}/dst.bin", "--chunksize=5MiB",
                           "--output=json")
        assert bad.returncode == 1 and proxy.faults["corrupt_up"] == 1
        assert "Azure received other bytes" in json.loads(bad.stdout)["errors"][0]["message"]
        assert env.azure.get_blob_client(f"{p}/dst.bin").exists() is False
        proxy.reset_counters()
        good = env.transfer("copy", f"--source=awss3:{p}/src.bin", f"--target=upaz:{p}/dst.bin", "--chunksize=5MiB")
        assert good.returncode == 0, good.stderr
        blocks = [e for e in proxy.log if e.method == "PUT" and "comp=block&" in e.path
                  and "x-ms-copy-source" not in e.headers]  # Put Block From URL, which Azurite lacks, comes first
    assert sorted(int(e.headers["content-length"]) for e in blocks) == [2 * MiB, 5 * MiB, 5 * MiB]
    expected = {base64.b64encode(hashlib.md5(data[i:i + 5 * MiB]).digest()).decode() for i in range(0, 12 * MiB, 5 * MiB)}
    assert {e.headers["content-md5"] for e in blocks} == expected
    assert not any("x-ms-content-crc64" in e.headers for e in blocks)
    assert env.get("azure", f"{p}/dst.bin") == data


def test_blocks_from_a_whole_md5_source_carry_azures_crc64_of_their_bytes(env):
    """When the MD5 pass is spent on the whole object (a local file, whose MD5 becomes the blob's
    Content-MD5), blocks carry x-ms-content-crc64. Azurite 3.35 does not check it, so the proof is
    against Microsoft's own CRC64 (azure-storage-extensions): the header is the CRC of the bytes
    sent, and differs from the CRC of the bytes a corrupting proxy delivered, which Azure refuses."""
    p = env.prefix
    data = os.urandom(11 * MiB)
    env.put("local", f"{p}/f.bin", data)
    with FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure", corrupt_up_rate=1,
                    faults_left=1, match=("PUT", r"comp=block&")) as proxy:
        env.add_storage("upaz", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
        result = env.transfer("copy", f"--source=local:{p}/f.bin", f"--target=upaz:{p}/f.bin", "--chunksize=5MiB")
        blocks = [e for e in proxy.log if e.method == "PUT" and "comp=block&" in e.path]
    assert result.returncode == 0, result.stderr  # Azurite took the corrupted block: a real Azure would not
    assert len(blocks) == 3 and all("content-md5" not in e.headers for e in blocks)
    sent = sorted(base64.b64decode(e.headers["x-ms-content-crc64"]) for e in blocks)
    pieces = [data[start:start + 5 * MiB] for start in range(0, len(data), 5 * MiB)]
    assert sent == sorted(azure_crc64.compute(piece, 0).to_bytes(8, "little") for piece in pieces)
    stored = env.get("azure", f"{p}/f.bin")
    assert sum(a != b for a, b in zip(stored, data)) == 1
    arrived = [stored[start:start + 5 * MiB] for start in range(0, len(stored), 5 * MiB)]
    (corrupted,) = [piece for piece, original in zip(arrived, pieces) if piece != original]
    assert azure_crc64.compute(corrupted, 0).to_bytes(8, "little") not in sent
    blob = env.azure.get_blob_client(f"{p}/f.bin").get_blob_properties()
    assert bytes(blob.content_settings.content_md5) == hashlib.md5(data).digest()


def test_s3_parts_without_an_md5_carry_crc64nvme_and_the_whole_object_crc(env):
    """`checksum: crc64nvme` (the default on AWS): a part whose MD5 the proof did not compute
    carries x-amz-checksum-crc64nvme, and the completion the full-object CRC64NVME. moto stores
    but does not check them, so the proof is the CRC itself: botocore's CRC64NVME (awscrt) of the
    bytes sent, which S3 compares with what arrived."""
    from awscrt import checksums
    p = env.prefix
    data = os.urandom(11 * MiB)
    azure_blocks(env, f"{p}/blocks.bin", data)
    with FaultProxy(env.emulators.s3_endpoint, flavor="s3") as proxy:
        env.add_storage("crcs3", "awss3", endpoint_url=proxy.url, checksum="crc64nvme")
        result = env.transfer("copy", f"--source=azure:{p}/blocks.bin", f"--target=crcs3:{p}/blocks.bin",
                              "--chunksize=5MiB", "--output=json")
        uploads = [e for e in proxy.log if e.method == "PUT" and "partNumber=" in e.path]
        completes = [e for e in proxy.log if e.method == "POST" and "uploadId=" in e.path]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["proofs"] == {"range-md5": 1}
    assert len(uploads) == 3 and all("content-md5" not in e.headers for e in uploads)
    crcs = sorted(base64.b64decode(e.headers["x-amz-checksum-crc64nvme"]) for e in uploads)
    pieces = (data[:5 * MiB], data[5 * MiB:10 * MiB], data[10 * MiB:])
    assert crcs == sorted(checksums.crc64nvme(piece).to_bytes(8, "big") for piece in pieces)
    assert base64.b64decode(completes[0].headers["x-amz-checksum-crc64nvme"]) == \
        checksums.crc64nvme(data).to_bytes(8, "big")
    assert env.get("awss3", f"{p}/blocks.bin") == data


def test_an_s3_part_corrupted_on_its_way_up_is_caught_by_its_etag(env):
    """With Content-MD5 parts (S3-compatible endpoints), S3 answers each part with the MD5 of what
    arrived: a part corrupted in transit fails the object and the upload is aborted."""
    p = env.prefix
    env.put("local", f"{p}/f.bin", os.urandom(11 * MiB))
    with FaultProxy(env.emulators.s3_endpoint, flavor="s3", corrupt_up_rate=1, faults_left=1,
                    match=("PUT", r"partNumber=")) as proxy:
        env.add_storage("ups3", "awss3", endpoint_url=proxy.url)
        result = env.transfer("copy", f"--source=local:{p}/f.bin", f"--target=ups3:{p}/f.bin", "--chunksize=5MiB",
                              "--output=json")
    assert result.returncode == 1 and proxy.faults["corrupt_up"] == 1
    status = json.loads(result.stdout)
    assert "S3 stored other bytes for part" in status["errors"][0]["message"] and status["uploads_open"] == 0
    assert env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=f"{p}/").get("Uploads", []) == []
    assert env.tree("awss3", p) == {}


def test_a_stored_md5_that_fails_with_nothing_stronger_behind_it_fails_the_object(env):
    """A KMS-encrypted object whose ETag is no MD5 and which S3 keeps no checksum of: an MD5 a
    writer stored is its only proof. When it matches, the object is proven by it; when it does not,
    nothing can tell a wrong stored MD5 from a corrupted read, so the object fails (not unverified)."""
    p, client = env.prefix, plain_s3(env)
    data = os.urandom(4000)
    for name, md5 in (("right", hashlib.md5(data).hexdigest()), ("wrong", hashlib.md5(b"other").hexdigest())):
        client.put_object(Bucket=emu.BUCKET, Key=f"{p}/src/{name}.bin", Body=data, ServerSideEncryption="aws:kms",
                          Metadata={"md5": md5})
    result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", "--output=json")
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["proofs"] == {"md5": 1} and status["objects_unverified"] == 0
    assert status["errors"] == [{"path": "wrong.bin", "message": "the bytes read of 'wrong.bin' do not match the "
                                                                 "source's MD5"}]
    assert env.tree("local", f"{p}/dst") == {"right.bin": data}


def test_a_range_that_fails_its_md5_gives_its_memory_slot_back(env):
    """A blob proven range by range whose second range arrives corrupted fails; with one slot
    (--parallel=1) the objects after it still get the slot and are copied."""
    p = env.prefix
    azure_blocks(env, f"{p}/src/a-bad.bin", os.urandom(9 * MiB))
    good = {f"b{i}.bin": os.urandom(2 * MiB) for i in range(3)}
    for name, data in good.items():
        env.put("azure", f"{p}/src/{name}", data)
    with corrupting(env, "azure", f"{p}/src/a-bad.bin"):
        result = env.transfer("copy", f"--source=flaky:{p}/src", f"--target=local:{p}/dst", "-r", "--parallel=1",
                              "--chunksize=5MiB", "--output=json", timeout=90)
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert [e["path"] for e in status["errors"]] == ["a-bad.bin"] and status["objects_done"] == 3
    assert env.tree("local", f"{p}/dst") == good


def test_a_gzip_encoded_object_is_copied_as_the_bytes_it_stores(env):
    """Content-Encoding: gzip is a property of the stored bytes: they are copied (and proven) as
    they are, not decompressed on the way."""
    import gzip
    p = env.prefix
    stored = gzip.compress(b"compressible " * 5000)
    env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/z.txt", Body=stored, ContentEncoding="gzip")
    result = env.transfer("copy", f"--source=awss3:{p}/z.txt", f"--target=local:{p}/z.txt", "--output=json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["proofs"] == {"md5": 1}
    assert env.get("local", f"{p}/z.txt") == stored
