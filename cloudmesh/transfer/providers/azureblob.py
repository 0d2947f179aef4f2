"""Azure Blob Storage (and Azurite) through azure-storage-blob.

Large objects are staged as blocks (each checked by Content-MD5 on arrival) and become visible
only when the block list is committed, with the whole object's MD5 set as its Content-MD5.
"""
import base64
import contextlib
import os
import random
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator
from urllib.parse import quote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceModifiedError)
from azure.storage.blob import (BlobBlock, BlobSasPermissions, BlobServiceClient, ContainerSasPermissions,
                                ContentSettings, ExponentialRetry, generate_blob_sas, generate_container_sas)

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import ConfigError, IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.providers import http
from cloudmesh.transfer.providers.base import (MiB, ObjectInfo, Part, Reader, Resumable, ServerCopy, SignedURLs,
                                               Storage, Upload)
from cloudmesh.transfer.retry import Retry

NOT_IMPLEMENTED = ("NotImplemented", "APINotImplemented")
VERSION = {"x-ms-version": "2021-08-06"}  # the REST API version of the data requests sent over plain HTTP
METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def block_id(tag: str, number: int) -> str:
    """The id of block `number` of the upload `tag`, as the SDK takes it (it base64-encodes ids on
    the wire). All ids of a blob must have one length: tags are 10 characters."""
    return f"{tag}-{number:08d}"


def code_of(error: Exception) -> str | None:
    """The service's error code of an SDK error (an enum or a string), where it has one."""
    code = getattr(error, "error_code", None)
    return getattr(code, "value", code)


def new_tag() -> str:
    return secrets.token_hex(5)


def md5_header(md5: bytes) -> dict:
    return {"Content-MD5": base64.b64encode(md5).decode()}


class AzureUpload(Upload):
    """Staged blocks, each checked by the service against its Content-MD5; committed in order.
    Azure keeps uncommitted blocks (and bills them) for a week unless they are discarded."""

    keeps_parts = True

    def __init__(self, storage: "AzureStorage", key: str, source: ObjectInfo, tag: str,
                 uploaded: dict[int, Part] | None = None):
        self.storage, self.key, self.source, self.token = storage, key, source, tag
        self.blob = storage.container.get_blob_client(key)
        self.uploaded = uploaded or {}
        self.numbers: set[int] = set()

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes) -> None:
        wire_id = base64.b64encode(block_id(self.token, number).encode()).decode()
        url = self.storage.url(self.key, f"comp=block&blockid={quote(wire_id, safe='')}")
        response = http.send("PUT", url, body=data, headers={**VERSION, **md5_header(md5)}, retry=self.storage.retry)
        if response.status != 201:
            self.storage.http_error(response, self.key)
        self.numbers.add(number)

    def keep(self, number: int) -> None:
        self.numbers.add(number)

    def complete(self, md5: bytes) -> None:
        blocks = [BlobBlock(block_id(self.token, n)) for n in sorted(self.numbers)]
        with self.storage.errors(self.key):
            self.blob.commit_block_list(blocks, **self.storage.properties(self.source, md5))

    def abort(self) -> None:
        self.storage.discard_upload(self.key, self.token)


class CappedRetry(ExponentialRetry):
    """The SDK's retry policy with this package's waits: exponential with full jitter, capped,
    instead of initial + 2**n seconds without a bound."""

    def __init__(self, retry: Retry):
        tries = retry.attempts - 1
        super().__init__(retry_total=tries, retry_connect=tries, retry_read=tries, retry_status=tries)
        self.retry = retry

    def get_backoff_time(self, settings) -> float:
        return random.uniform(0, min(self.retry.cap, self.retry.base * 2 ** max(settings["count"] - 1, 0)))


class AzureStorage(Storage, SignedURLs, ServerCopy, Resumable):
    kind = "azureblob"
    min_part_size = 1
    max_part_size = 4000 * MiB
    max_parts = 50_000
    max_object_size = 50_000 * 4000 * MiB

    def __init__(self, name: str, service: BlobServiceClient, container: str, retry: Retry = Retry()):
        super().__init__(name, retry)
        self.container = service.get_container_client(container)
        self.container_name = container
        self.from_url = True  # Put Block From URL works here until the service says otherwise
        self._sas: tuple[str, float] | None = None

    @classmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "AzureStorage":
        connection_string = config.settings.get("connection_string")
        if not connection_string and not config.settings.get("account_key"):
            connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        policy = CappedRetry(retry)
        if connection_string:
            try:
                service = BlobServiceClient.from_connection_string(connection_string, retry_policy=policy)
            except ValueError:
                raise ConfigError(f"storage '{config.name}' has a malformed connection_string") from None
        else:
            account = config.require("account_name")
            key = config.require("account_key", "AZURE_STORAGE_KEY")
            try:
                base64.b64decode(key, validate=True)
            except ValueError:
                raise ConfigError(f"storage '{config.name}' has an account_key that is not base64") from None
            endpoint = config.settings.get("endpoint") or f"https://{account}.blob.core.windows.net"
            service = BlobServiceClient(endpoint, credential={"account_name": account, "account_key": key},
                                        retry_policy=policy)
        return cls(config.name, service, config.require("container"), retry)

    @contextlib.contextmanager
    def errors(self, key: str = ""):
        """Turn the SDK's errors into one-line TransferErrors that name the storage, not secrets."""
        try:
            yield
        except (ClientAuthenticationError, HttpResponseError) as e:
            code = code_of(e) or str(getattr(e, "status_code", "") or e.__class__.__name__)
            status = 403 if isinstance(e, ClientAuthenticationError) else e.status_code
            raise self.error_for(code, status, key, str(e.message or "")) from None
        except AzureError as e:
            raise TransferError(f"cannot reach Azure for storage '{self.name}': {e.__class__.__name__}") from None

    def signed_url(self, key: str, seconds: int = 3600) -> str | None:
        """The blob's URL with a read-only SAS, when this storage is configured with the account key."""
        credential = self.container.credential
        if not getattr(credential, "account_key", None):
            return None
        sas = generate_blob_sas(credential.account_name, self.container_name, key, account_key=credential.account_key,
                                permission=BlobSasPermissions(read=True),
                                expiry=datetime.now(timezone.utc) + timedelta(seconds=seconds))
        return f"{self.container.get_blob_client(key).url}?{sas}"

    def server_copy(self, source: Storage, info: ObjectInfo, key: str, part_size: int) -> str | None:
        """Copy Blob from another Azure blob; Put Block From URL from any source that signs URLs
        (S3 presigned GETs, as AzCopy does). A service without Put Block From URL (Azurite) is
        remembered, and the engine streams instead."""
        from_azure = isinstance(source, AzureStorage)
        if info.size == 0 or not isinstance(source, SignedURLs) or not (from_azure or self.from_url):
            return None
        url = source.signed_url(info.key)
        if url is None:
            return None
        blob = self.container.get_blob_client(key)
        if from_azure:
            with self.errors(key):
                blob.start_copy_from_url(url)
                copied = self.wait_for_copy(blob)
            if copied.size != info.size or (info.md5 and copied.md5 and copied.md5 != info.md5):
                raise IntegrityError(f"Azure copied other bytes to '{self.name}:{key}' than the source holds")
            return "server-copy"
        try:
            ids = self.stage_from_url(blob, url, info.size, part_size)
        except AzureError as e:
            if getattr(e, "status_code", None) == 501 or code_of(e) in NOT_IMPLEMENTED:
                self.from_url = False
                return None
            with self.errors(key):
                raise
        shaped = source.stat(info.key) or info
        with self.errors(key):
            blob.commit_block_list([BlobBlock(i) for i in ids],
                                   **self.properties(shaped, bytes.fromhex(shaped.md5) if shaped.md5 else None))
        return "from-url"

    def stage_from_url(self, blob, url: str, size: int, part_size: int) -> list[str]:
        tag, ids = new_tag(), []
        for number, offset in enumerate(range(0, size, part_size), start=1):
            ids.append(block_id(tag, number))
            blob.stage_block_from_url(ids[-1], url, source_offset=offset, source_length=min(part_size, size - offset))
        return ids

    def wait_for_copy(self, blob, seconds: float = 3600) -> ObjectInfo:
        """Poll an asynchronous Copy Blob until it ends; Azure copies within an account at once."""
        deadline, pause = time.monotonic() + seconds, 0.05
        while True:
            properties = blob.get_blob_properties()
            status = properties.copy.status
            if status == "success" or status is None:
                return self.info(properties)
            if status != "pending" or time.monotonic() > deadline:
                raise TransferError(f"Azure copy of '{self.name}:{blob.blob_name}' ended as {status}")
            time.sleep(pause)
            pause = min(pause * 2, 2)

    def check_key(self, key: str) -> None:
        super().check_key(key)
        if key.endswith(("/", ".")) or "\\" in key or any(p in (".", "..") for p in key.split("/")):
            raise UsageError(f"object name {key!r} cannot be stored as an Azure blob name")

    def info(self, blob) -> ObjectInfo:
        settings = blob.content_settings
        md5 = bytes(settings.content_md5).hex() if settings.content_md5 else None
        return ObjectInfo(key=blob.name, size=blob.size, mtime=blob.last_modified.timestamp(), md5=md5,
                          etag=blob.etag, content_type=settings.content_type, metadata=blob.metadata or {})

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = f"{prefix}/" if prefix else None
        with self.errors(prefix):
            for blob in self.container.list_blobs(name_starts_with=start, include=["metadata"]):
                yield self.info(blob)

    def stat(self, key: str) -> ObjectInfo | None:
        if not key:
            return None
        try:
            with self.errors(key):
                return self.info(self.container.get_blob_client(key).get_blob_properties())
        except NotFound:
            with self.errors():
                self.container.get_container_properties()
            return None

    def sas(self) -> str:
        """A container SAS for the data requests, signed with the account key and renewed hourly
        (or the SAS the storage was configured with)."""
        now = time.time()
        if self._sas and self._sas[1] > now:
            return self._sas[0]
        credential = self.container.credential
        if getattr(credential, "account_key", None):
            token = generate_container_sas(
                credential.account_name, self.container_name, account_key=credential.account_key,
                permission=ContainerSasPermissions(read=True, add=True, create=True, write=True),
                expiry=datetime.now(timezone.utc) + timedelta(hours=2))
        else:
            token = urlsplit(self.container.url).query
            if not token:
                raise ConfigError(f"storage '{self.name}' needs an account_key or a SAS in its connection_string")
        self._sas = (token, now + 3600)
        return token

    def url(self, key: str, query: str = "") -> str:
        base = self.container.url.split("?", 1)[0]
        return f"{base}/{quote(key, safe='/~')}?{query + '&' if query else ''}{self.sas()}"

    def http_error(self, response, key: str):
        """Raise the TransferError for a failed data request, as `errors` does for the SDK's."""
        raise self.error_for(http.error_code(response), response.status, key, (response.data or b"").decode(errors="replace"))

    def error_for(self, code: str, status: int, key: str, message: str) -> TransferError:
        """The one-line error for an Azure error code and HTTP status, naming the storage, not secrets."""
        where = f"'{self.name}:{key}'" if key else f"storage '{self.name}'"
        if code == "ConditionNotMet" and key:
            return TransferError(f"{where} changed while it was being read")
        if code == "ContainerNotFound":
            return NotFound(f"container '{self.container_name}' of storage '{self.name}' does not exist")
        if status == 404:
            return NotFound(f"{where} does not exist")
        if code == "Md5Mismatch" or "MD5" in message:
            return IntegrityError(f"Azure received other bytes for {where} than were sent ({code})")
        if status == 403:
            return ConfigError(f"storage '{self.name}' rejected its credentials ({code})")
        return TransferError(f"Azure error on {where}: {code}")

    def open(self, key: str, offset: int = 0, length: int | None = None) -> Reader:
        response = self.get(key, offset, length)
        stored = response.headers.get("Content-MD5") if response.status == 200 else None
        etag = response.headers.get("ETag")

        def rest(done: int):
            return self.get(key, offset + done, None if length is None else length - done, etag)

        return http.HTTPReader(response, response.headers.get("Content-Type"),
                               http.metadata_from(response.headers, "x-ms-meta-"),
                               base64.b64decode(stored).hex() if stored else None, rest, self.retry)

    def get(self, key: str, offset: int, length: int | None, etag: str | None = None):
        """A GET of the blob or a range of it; with `etag`, only of that version of it."""
        headers = {**VERSION, **http.byte_range(offset, length), **({"If-Match": etag} if etag else {})}
        response = http.send("GET", self.url(key), headers=headers, stream=True, retry=self.retry)
        if response.status not in (200, 206):
            response.data  # read the error body, which names the error, before it is parsed
            self.http_error(response, key)
        return response

    @staticmethod
    def properties(source: ObjectInfo, md5: bytes | None) -> dict:
        metadata = {k.replace("-", "_"): str(v) for k, v in source.metadata.items()}
        return {"content_settings": ContentSettings(content_type=source.content_type or "application/octet-stream",
                                                    content_md5=bytearray(md5) if md5 else None),
                "metadata": {k: v for k, v in metadata.items() if METADATA_NAME.match(k)}}

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        properties = self.properties(source, md5)
        settings = properties["content_settings"]
        headers = {**VERSION, **md5_header(md5), "x-ms-blob-type": "BlockBlob",
                   "x-ms-blob-content-type": settings.content_type,
                   "x-ms-blob-content-md5": base64.b64encode(md5).decode(),
                   **{f"x-ms-meta-{k}": v for k, v in properties["metadata"].items()}}
        response = http.send("PUT", self.url(key), body=data, headers=headers, retry=self.retry)
        if response.status != 201:
            self.http_error(response, key)
        landed = response.headers.get("Content-MD5")
        if landed and base64.b64decode(landed) != md5:
            raise IntegrityError(f"Azure stored other bytes for '{self.name}:{key}' than were sent")

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        return AzureUpload(self, key, source, new_tag())

    def resume_upload(self, key: str, source: ObjectInfo, token: str, recorded: dict[int, str]) -> Upload | None:
        """The upload `token` again, with the uncommitted blocks Azure holds for it."""
        blob = self.container.get_blob_client(key)
        try:
            with self.errors(key):
                _, uncommitted = blob.get_block_list("uncommitted")
        except NotFound:
            uncommitted = []
        uploaded = {int(b.id.rsplit("-", 1)[1]): Part(b.size) for b in uncommitted if b.id.startswith(f"{token}-")}
        return AzureUpload(self, key, source, token, uploaded)

    def discard_upload(self, key: str, token: str) -> None:
        """Azure has no call that drops uncommitted blocks; committing an empty block list does, so
        where no blob exists yet an empty one is committed (only if none exists) and deleted (only
        that one). Beside an existing blob the blocks stay until Azure drops them after a week."""
        blob = self.container.get_blob_client(key)
        with self.errors(key):
            try:
                empty = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
                blob.delete_blob(etag=empty["etag"], match_condition=MatchConditions.IfNotModified)
            except (ResourceExistsError, ResourceModifiedError):
                pass

    def delete(self, key: str) -> None:
        with self.errors(key):
            self.container.get_blob_client(key).delete_blob()
