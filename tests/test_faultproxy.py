"""The fault-injecting proxy itself, in front of the real moto and Azurite: it passes SDK traffic
through untouched, and each fault reaches the client the way a real network or service fault would."""
import hashlib
import http.client
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

import emulators as emu
from faultproxy import FaultProxy


def s3(endpoint: str):
    """A boto3 client that tries each request once, so every injected fault reaches the test."""
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=emu.S3_KEY_ID,
                        aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=16))


def azure(endpoint: str, **options):
    """A container client that tries each request once."""
    return BlobServiceClient(endpoint, credential={"account_name": emu.AZURITE_ACCOUNT,
                                                   "account_key": emu.AZURITE_KEY},
                             retry_total=0, **options).get_container_client(emu.CONTAINER)


def get(url: str, path: str) -> tuple[int, bytes]:
    """One plain GET on a fresh connection: status and body."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def s3_proxy(emulators):
    with FaultProxy(emulators.s3_endpoint, seed=1) as proxy:
        yield proxy


@pytest.fixture
def azure_proxy(emulators):
    with FaultProxy(emulators.azure_endpoint, seed=1, flavor="azure") as proxy:
        yield proxy


def test_s3_requests_pass_through_unchanged_and_in_parallel(env, s3_proxy):
    """boto3 signs for the proxy's host; moto must still accept and answer every kind of request,
    including 32 downloads on 16 connections at once."""
    client, key, data = s3(s3_proxy.url), f"{env.prefix}/a", os.urandom(300_000)
    client.put_object(Bucket=emu.BUCKET, Key=key, Body=data)
    assert client.get_object(Bucket=emu.BUCKET, Key=key)["Body"].read() == data
    assert client.head_object(Bucket=emu.BUCKET, Key=key)["ContentLength"] == len(data)
    listed = client.list_objects_v2(Bucket=emu.BUCKET, Prefix=env.prefix)["Contents"]
    assert [o["Key"] for o in listed] == [key]
    with ThreadPoolExecutor(16) as pool:
        bodies = pool.map(lambda _: client.get_object(Bucket=emu.BUCKET, Key=key)["Body"].read(), range(32))
        assert all(body == data for body in bodies)
    assert env.get("awss3", key) == data
    assert s3_proxy.seen == s3_proxy.forwarded == 36
    assert set(s3_proxy.faults.values()) == {0}


def test_azure_shared_key_block_upload_and_ranged_download_pass_through(env, emulators):
    """Small block and chunk sizes make azure-storage-blob sign Put Block, Put Block List and ranged
    Get Blob requests; Azurite must accept their SharedKey signatures through the proxy."""
    data, key = os.urandom(300_000), f"{env.prefix}/blob"
    with FaultProxy(emulators.azure_endpoint, flavor="azure") as proxy:
        container = azure(f"{proxy.url}/{emu.AZURITE_ACCOUNT}", max_single_put_size=64 * 1024,
                          max_block_size=64 * 1024, max_single_get_size=64 * 1024, max_chunk_get_size=64 * 1024)
        container.upload_blob(key, data)
        assert container.download_blob(key).readall() == data
        assert [b.name for b in container.list_blobs(name_starts_with=env.prefix)] == [key]
        paths = [event.path for event in proxy.log]
        assert sum("comp=block&" in p for p in paths) == 5 and any("comp=blocklist" in p for p in paths)
        assert {event.status for event in proxy.log} <= {200, 201, 206}
    assert env.get("azure", key) == data


def test_error_rate_answers_503_slowdown_without_forwarding(env, s3_proxy):
    """boto3 must see the throttling error S3 itself sends, and moto must never see the request."""
    s3_proxy.error_rate = 1
    with pytest.raises(ClientError) as raised:
        s3(s3_proxy.url).put_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/x", Body=b"data")
    assert raised.value.response["Error"]["Code"] == "SlowDown"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert (s3_proxy.forwarded, s3_proxy.faults["error"], s3_proxy.bytes_up) == (0, 1, 0)
    assert env.tree("awss3", env.prefix) == {}


def test_azure_flavor_answers_server_busy(env, emulators):
    """azure-storage-blob must parse the injected 503 as Azure's own ServerBusy."""
    with FaultProxy(emulators.azure_endpoint, flavor="azure", error_rate=1) as proxy:
        with pytest.raises(HttpResponseError) as raised:
            azure(f"{proxy.url}/{emu.AZURITE_ACCOUNT}").upload_blob(f"{env.prefix}/x", b"data")
    assert (raised.value.status_code, raised.value.error_code) == (503, "ServerBusy")


def test_match_limits_faults_and_faults_left_limits_their_number(env, s3_proxy):
    """Only PUTs are faulted, and only the first two of them."""
    client, key = s3(s3_proxy.url), f"{env.prefix}/m"
    env.put("awss3", key, b"old")
    s3_proxy.configure(error_rate=1, match=("PUT", ""), faults_left=2)
    assert client.get_object(Bucket=emu.BUCKET, Key=key)["Body"].read() == b"old"
    for _ in range(2):
        with pytest.raises(ClientError):
            client.put_object(Bucket=emu.BUCKET, Key=key, Body=b"new")
    client.put_object(Bucket=emu.BUCKET, Key=key, Body=b"new")
    assert env.get("awss3", key) == b"new"
    assert [(e.method, e.fault) for e in s3_proxy.log] == [("GET", None), ("PUT", "error"), ("PUT", "error"),
                                                           ("PUT", None)]
    assert s3_proxy.faults_left == 0


def test_drop_before_forwarding_loses_the_request_and_after_loses_only_the_answer(env, s3_proxy):
    """Both look the same to the client; only after a drop_after does the object exist."""
    client = s3(s3_proxy.url)
    s3_proxy.drop_rate = 1
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/before", Body=b"data")
    s3_proxy.configure(drop_rate=0, drop_after_rate=1)
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/after", Body=b"data")
    assert env.tree("awss3", env.prefix) == {"after": b"data"}
    assert [(e.fault, e.status) for e in s3_proxy.log] == [("drop", None), ("drop_after", None)]
    assert (s3_proxy.forwarded, s3_proxy.bytes_up) == (1, 4)


def test_cut_sends_half_of_a_long_body_then_closes(env, s3_proxy):
    """A presigned GET shows the exact bytes: headers promise the whole object, half of it arrives.
    Bodies no longer than cut_min_size are passed whole and not counted as cut."""
    big, small = os.urandom(200_000), b"s" * 1024
    env.put("awss3", f"{env.prefix}/big", big)
    env.put("awss3", f"{env.prefix}/small", small)
    presign = s3(s3_proxy.url).generate_presigned_url
    s3_proxy.cut_rate = 1
    urls = [presign("get_object", Params={"Bucket": emu.BUCKET, "Key": f"{env.prefix}/{k}"}) for k in ("big", "small")]
    connection = http.client.HTTPConnection(s3_proxy.url.removeprefix("http://"), timeout=10)
    connection.request("GET", urls[0].removeprefix(s3_proxy.url))
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == str(len(big))
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    assert raised.value.partial == big[:100_000]
    connection.close()
    assert get(s3_proxy.url, urls[1].removeprefix(s3_proxy.url)) == (200, small)
    assert s3_proxy.faults["cut"] == 1 and [e.fault for e in s3_proxy.log] == ["cut", None]


def test_corrupt_flips_the_middle_byte_of_a_body_and_keeps_its_headers(env, s3_proxy):
    """A corrupted read: status, length and ETag as the service sent them, one byte inverted; an
    answer without a body (HEAD) is passed untouched and not counted."""
    data = os.urandom(10_001)
    env.put("awss3", f"{env.prefix}/obj", data)
    client = boto3.client("s3", endpoint_url=s3_proxy.url, aws_access_key_id=emu.S3_KEY_ID,
                          aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1},
                                        response_checksum_validation="when_required"))
    s3_proxy.corrupt_rate = 1
    assert client.head_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/obj")["ContentLength"] == len(data)
    got = client.get_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/obj")
    body = got["Body"].read()
    expected = bytearray(data)
    expected[5000] ^= 0xFF
    assert body == bytes(expected) and got["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert s3_proxy.faults["corrupt"] == 1 and [e.fault for e in s3_proxy.log] == [None, "corrupt"]


def test_corrupt_up_flips_a_byte_of_what_the_service_stores(env, azure_proxy):
    """A corrupted write reaches Azurite with one byte inverted (no checksum was sent to catch it)."""
    data = os.urandom(4096)
    azure_proxy.corrupt_up_rate = 1
    azure(f"{azure_proxy.url}/{emu.AZURITE_ACCOUNT}").upload_blob(f"{env.prefix}/up", data)
    stored = bytearray(data)
    stored[2048] ^= 0xFF
    assert env.get("azure", f"{env.prefix}/up") == bytes(stored)
    assert azure_proxy.faults["corrupt_up"] == 1


def test_bytes_up_counts_exactly_the_put_bodies(env, s3_proxy):
    """Plain and chunked PUT bodies count; GETs and the framing of chunks do not."""
    client, data = s3(s3_proxy.url), os.urandom(123_457)
    client.put_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/plain", Body=data)
    client.get_object(Bucket=emu.BUCKET, Key=f"{env.prefix}/plain")["Body"].read()
    assert s3_proxy.bytes_up == len(data)
    s3_proxy.reset_counters()
    url = client.generate_presigned_url("put_object", Params={"Bucket": emu.BUCKET, "Key": f"{env.prefix}/chunked"})
    connection = http.client.HTTPConnection(s3_proxy.url.removeprefix("http://"), timeout=10)
    connection.request("PUT", url.removeprefix(s3_proxy.url), body=iter([data[:1000], data[1000:]]),
                       encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert (s3_proxy.seen, s3_proxy.bytes_up) == (1, len(data))
    assert env.get("awss3", f"{env.prefix}/chunked") == data


def test_down_fails_every_request_until_cleared(env, s3_proxy):
    """An outage also breaks connections the client already holds, and ends when the flag is cleared."""
    client = s3(s3_proxy.url)
    client.list_objects_v2(Bucket=emu.BUCKET, Prefix=env.prefix)  # leaves a kept-alive connection to reuse
    s3_proxy.down = True
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client.list_objects_v2(Bucket=emu.BUCKET, Prefix=env.prefix)
    s3_proxy.down = False
    client.list_objects_v2(Bucket=emu.BUCKET, Prefix=env.prefix)
    assert s3_proxy.faults["down"] == 1 and s3_proxy.forwarded == 2


def test_a_seed_fixes_which_requests_fail(emulators):
    """The same seed gives the same faults for the same requests; another seed gives others."""
    def faults(seed: int) -> list:
        with FaultProxy(emulators.s3_endpoint, seed=seed, error_rate=0.3, drop_rate=0.3) as proxy:
            for _ in range(30):
                try:
                    get(proxy.url, "/moto-api/")
                except http.client.RemoteDisconnected:
                    pass
            return [event.fault for event in proxy.log]

    first = faults(7)
    assert first == faults(7) != faults(8)
    assert {"error", "drop", None} == set(first)


def test_stop_closes_the_port_and_every_connection_and_thread(env, emulators):
    """A kept-alive client connection must not keep a handler thread alive past stop()."""
    before = set(threading.enumerate())
    proxy = FaultProxy(emulators.s3_endpoint)
    s3(proxy.url).list_objects_v2(Bucket=emu.BUCKET, Prefix=env.prefix)
    proxy.stop()
    assert set(threading.enumerate()) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
