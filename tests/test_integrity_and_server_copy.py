"""Integrity checks and server-side copy: which path each object takes, and that a target's
confirmation of every byte is demanded. Real emulators wherever they can answer; two clearly
labelled test doubles where they cannot (moto does not check Content-MD5, Azurite 3.35 has no
Put Block From URL)."""
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from cloudmesh.transfer.config import load_storages
from cloudmesh.transfer.errors import IntegrityError
from cloudmesh.transfer.providers import MiB, ObjectInfo, open_storage
from cloudmesh.transfer.providers.awss3 import S3Storage, S3Upload


def build(env, name: str):
    return open_storage(load_storages(env.config_dir / "cloudmesh.yaml")[name])


def copy_json(env, *args) -> dict:
    result = env.transfer("copy", *args, "--output=json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_s3_to_s3_is_copied_inside_s3(env):
    p = env.prefix
    env.put("awss3", f"{p}/src/a.bin", b"a" * 1000)
    env.put("awss3", f"{p}/src/b/c.bin", b"c" * 10)
    record = copy_json(env, f"--source=awss3:{p}/src", f"--target=awss3:{p}/dst", "-r")
    assert record["methods"] == {"server-copy": 2}
    assert env.tree("awss3", f"{p}/dst") == {"a.bin": b"a" * 1000, "b/c.bin": b"c" * 10}


def test_a_large_s3_object_is_copied_inside_s3_part_by_part(env):
    storage = build(env, "awss3")
    storage.copy_object_limit = 5 * MiB  # as if the object were larger than CopyObject's 5 GiB
    data = os.urandom(12 * MiB + 7)
    env.put("awss3", f"{env.prefix}/big.bin", data)
    info = storage.stat(f"{env.prefix}/big.bin")
    assert storage.server_copy(storage, info, f"{env.prefix}/copy.bin", 5 * MiB) == "server-copy"
    assert env.get("awss3", f"{env.prefix}/copy.bin") == data


def test_azure_to_azure_is_copied_inside_azure(env):
    p = env.prefix
    env.put("azure", f"{p}/src/x.txt", b"inside azure")
    record = copy_json(env, f"--source=azure:{p}/src", f"--target=azure:{p}/dst", "-r")
    assert record["methods"] == {"server-copy": 1}
    assert env.tree("azure", f"{p}/dst") == {"x.txt": b"inside azure"}


def test_s3_to_azurite_falls_back_to_streaming_and_remembers_it(env):
    """Azurite answers Put Block From URL with 501, so every object streams through the client."""
    p = env.prefix
    for i in range(3):
        env.put("awss3", f"{p}/src/{i}.bin", bytes([i]) * 5000)
    record = copy_json(env, f"--source=awss3:{p}/src", f"--target=azure:{p}/dst", "-r")
    assert record["methods"] == {"stream": 3}
    assert env.tree("azure", f"{p}/dst") == {f"{i}.bin": bytes([i]) * 5000 for i in range(3)}

    target, source = build(env, "azure"), build(env, "awss3")
    info = source.stat(f"{p}/src/0.bin")
    assert target.server_copy(source, info, f"{p}/probe.bin", 8 * MiB) is None
    assert target.from_url is False


class RecordingBlob:
    """TEST DOUBLE (not Azure): records the Put Block From URL and Put Block List calls that a real
    Azure Blob service would receive, because Azurite 3.35 does not implement Put Block From URL."""

    def __init__(self, calls: list):
        self.calls = calls

    def stage_block_from_url(self, block_id, source_url, source_offset, source_length):
        self.calls.append(("stage_block_from_url", block_id, source_url, source_offset, source_length))

    def commit_block_list(self, blocks, content_settings, metadata):
        self.calls.append(("commit_block_list", [b.id for b in blocks], content_settings, metadata))


def test_s3_to_azure_uses_put_block_from_url_with_presigned_ranges_where_azure_has_it(env, monkeypatch):
    p = env.prefix
    data = os.urandom(20 * MiB + 3)
    env.s3.put_object(Bucket="cmtransfer", Key=f"{p}/big.bin", Body=data, ContentType="video/mp4",
                      Metadata={"owner": "bob"})
    source, target = build(env, "awss3"), build(env, "azure")
    calls = []
    monkeypatch.setattr(target.container, "get_blob_client", lambda key: RecordingBlob(calls))
    info = source.stat(f"{p}/big.bin")

    assert target.server_copy(source, info, f"{p}/dst.bin", 8 * MiB) == "from-url"

    staged = [c for c in calls if c[0] == "stage_block_from_url"]
    assert [(c[3], c[4]) for c in staged] == [(0, 8 * MiB), (8 * MiB, 8 * MiB), (16 * MiB, 4 * MiB + 3)]
    assert all(f"/cmtransfer/{p}/big.bin?" in c[2] and "X-Amz-Signature=" in c[2] for c in staged)
    commit = calls[-1]
    assert commit[0] == "commit_block_list" and commit[1] == [c[1] for c in staged]
    assert commit[2].content_type == "video/mp4" and bytes(commit[2].content_md5) == hashlib.md5(data).digest()
    assert commit[3] == {"owner": "bob"}


class LyingS3Client:
    """TEST DOUBLE (not S3): an S3 client whose answers claim other bytes than were sent, because
    moto does not check Content-MD5 or corrupt data, so a real mismatch cannot be provoked there."""

    def upload_part(self, **kwargs):
        return {"ETag": '"%s"' % hashlib.md5(b"another part").hexdigest()}

    def complete_multipart_upload(self, **kwargs):
        return {"ETag": '"0123456789abcdef0123456789abcdef-2"'}

    def abort_multipart_upload(self, **kwargs):
        return {}


@pytest.fixture
def lying_s3_endpoint():
    """TEST DOUBLE (not S3): a loopback HTTP server that answers every PUT with the ETag of other
    bytes, as a store that corrupted the upload would."""
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("ETag", '"%s"' % hashlib.md5(b"something else").hexdigest())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_s3_put_refuses_an_etag_that_is_not_the_md5_sent(lying_s3_endpoint):
    client = boto3.client("s3", endpoint_url=lying_s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
    storage = S3Storage("s3", client, "bucket")
    with pytest.raises(IntegrityError, match="S3 stored other bytes"):
        storage.put("k", b"data", ObjectInfo("k", 4), hashlib.md5(b"data").digest())


def test_s3_part_refuses_an_etag_that_is_not_the_md5_sent():
    upload = S3Upload(S3Storage("s3", LyingS3Client(), "bucket"), "k", "upload-1")
    with pytest.raises(IntegrityError, match="part 1"):
        upload.put_part(1, 0, b"part", hashlib.md5(b"part").digest())


def test_s3_complete_refuses_an_etag_that_is_not_the_md5_of_the_parts():
    upload = S3Upload(S3Storage("s3", LyingS3Client(), "bucket"), "k", "upload-1")
    upload.parts = {n: (f'"{hashlib.md5(d).hexdigest()}"', hashlib.md5(d).digest(), None, 1)
                    for n, d in ((1, b"a"), (2, b"b"))}
    with pytest.raises(IntegrityError, match="from other parts"):
        upload.complete(hashlib.md5(b"ab").digest())


def test_azurite_refuses_a_block_whose_content_md5_differs(env):
    storage = build(env, "azure")
    upload = storage.begin(f"{env.prefix}/x", ObjectInfo("x", 4))
    with pytest.raises(IntegrityError, match="other bytes"):
        upload.put_part(1, 0, b"data", hashlib.md5(b"not the data").digest())


def test_the_multipart_s3_etag_is_checked_against_real_moto(env):
    storage = build(env, "awss3")
    upload = storage.begin(f"{env.prefix}/mp.bin", ObjectInfo("mp.bin", 10 * MiB))
    first, second = os.urandom(5 * MiB), os.urandom(5 * MiB)
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.put_part(2, 5 * MiB, second, hashlib.md5(second).digest())
    upload.complete(hashlib.md5(first + second).digest())
    assert env.get("awss3", f"{env.prefix}/mp.bin") == first + second
