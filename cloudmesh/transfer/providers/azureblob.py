"""Azure Blob Storage (and Azurite) through azure-storage-blob.

Large objects are staged as blocks, each checked on arrival by its Content-MD5 (where the MD5 was
computed for the proof) or else its CRC64, and become visible only when the block list is
committed, with the whole object's MD5, where it is known, as its Content-MD5. A blob is proven
by its Content-MD5, or, where it has none (blobs committed from blocks by most tools), by the
MD5 Azure computes of each range of at most 4 MiB it sends.

Metadata names that are not C# identifiers (S3's `project-name`, `dotted.key`, `9lives`) are
kept as AzCopy's RenameIfInvalid keeps them: `rename_<name with _>` holds the value and
`rename_key_<name with _>` the original name, and both are turned back on the way out. Folder
markers (empty blobs with metadata hdi_isfolder=true, from the portal and ADLS Gen2) are folders,
not objects.
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
from xml.etree.ElementTree import ParseError

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, ClientAuthenticationError, DecodeError, HttpResponseError,
                                   ResourceExistsError, ResourceModifiedError)
from azure.storage.blob import (BlobBlock, BlobPrefix, BlobSasPermissions, BlobServiceClient, ContainerSasPermissions,
                                ContentSettings, ExponentialRetry, generate_blob_sas, generate_container_sas)

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import Changed, ConfigError, IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import RANGE_MD5_LIMIT, Claim, Proof, crc64, md5_hex, part_record
from cloudmesh.transfer.limits import LIST_PAGE
from cloudmesh.transfer.providers import http
from cloudmesh.transfer.providers.base import (Folder, Listed, MiB, ObjectInfo, Part, Reader, Resumable,
                                               ServerCopy, SignedURLs, Storage, Upload, endpoint_place, entry_order)
from cloudmesh.transfer.retry import Retry
from cloudmesh.transfer.tally import RETRIES

NOT_IMPLEMENTED = ("NotImplemented", "APINotImplemented")
VERSION = {"x-ms-version": "2021-08-06"}  # the REST API version of the data requests sent over plain HTTP
METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")  # what a header carries unchanged
RENAMED, RENAMED_KEY = "rename_", "rename_key_"  # AzCopy's RenameIfInvalid names
FOLDER_MARKER = "hdi_isfolder"
S3ETAG_METADATA = "cmtransfer_s3etag"  # the S3 multipart ETag of the bytes, stored with copies of them


def stored_metadata(metadata: dict) -> dict:
    """User metadata as Azure keeps it: names that are not C# identifiers are renamed as AzCopy
    does, values a header cannot carry are left out (see AzureStorage.lost_metadata)."""
    stored = {}
    for name, value in metadata.items():
        value = str(value)
        if not METADATA_VALUE.match(value):
            continue
        if METADATA_NAME.match(name):
            stored[name] = value
        else:
            valid = re.sub(r"[^A-Za-z0-9_]", "_", name)
            stored[f"{RENAMED}{valid}"], stored[f"{RENAMED_KEY}{valid}"] = value, name
    return stored


def user_metadata(stored: dict) -> dict:
    """The user's metadata from what Azure keeps: renamed names turned back, this tool's own left out."""
    metadata = {name: value for name, value in stored.items() if name.lower() != S3ETAG_METADATA}
    for name in [n for n in metadata if n.lower().startswith(RENAMED_KEY)]:
        valid = name[len(RENAMED_KEY):]
        value = metadata.pop(f"{RENAMED}{valid}", None)
        original = metadata.pop(name)
        if value is not None:
            metadata[original] = value
    return metadata


def folder_marker(blob) -> bool:
    """An empty blob that stands for a folder (hdi_isfolder=true, as ADLS Gen2 and the portal make)."""
    metadata = {k.lower(): v for k, v in (blob.metadata or {}).items()}
    return not blob.size and str(metadata.get(FOLDER_MARKER, "")).lower() == "true"


def listed(blob) -> bool:
    """Whether a listed blob is an object, not a folder marker or an empty name ending in '/'."""
    return not folder_marker(blob) and not (blob.name.endswith("/") and not blob.size)


def whole_size(headers) -> int:
    """The blob's size, from a ranged answer's Content-Range (bytes a-b/size) or a whole one's length."""
    content_range = headers.get("Content-Range")
    if content_range and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    return int(headers.get("Content-Length") or 0)


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


def crc64_header(crc: int) -> dict:
    """Azure's x-ms-content-crc64: the CRC-64/NVME of the body, little-endian, base64."""
    return {"x-ms-content-crc64": base64.b64encode(crc.to_bytes(8, "little")).decode()}


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

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> str | None:
        """Put Block with its Content-MD5, or else its CRC64 (Azure takes one of the two, not both)."""
        wire_id = base64.b64encode(block_id(self.token, number).encode()).decode()
        url = self.storage.url(self.key, f"comp=block&blockid={quote(wire_id, safe='')}")
        crc = None if md5 else crc64(data)
        check = md5_header(md5) if md5 else crc64_header(crc)
        response = http.send("PUT", url, body=data, headers={**VERSION, **check}, retry=self.storage.retry)
        if response.status != 201:
            self.storage.http_error(response, self.key)
        self.numbers.add(number)
        return part_record(md5, crc)

    def keep(self, number: int, data: bytes) -> None:
        self.numbers.add(number)

    def adopt(self, number: int) -> None:
        self.numbers.add(number)

    def complete(self, md5: bytes | None) -> None:
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
        RETRIES.add("azure sdk")
        return random.uniform(0, min(self.retry.cap, self.retry.base * 2 ** max(settings["count"] - 1, 0)))


class BlobReader(Reader):
    """A whole blob and what proves it. The first range (at most 4 MiB) is asked for with its MD5;
    its answer tells the blob's size and stored Content-MD5. A blob with a Content-MD5 is then read
    in one stream and proven by it (unless `strict`); any other, range by range, each proven by
    the MD5 Azure computed of it. Every request after the first is pinned to the first one's ETag
    (but for an empty blob, whose first answer is an error without one)."""

    def __init__(self, storage: "AzureStorage", key: str, strict: bool):
        self.storage, self.key = storage, key
        response = storage.get(key, 0, RANGE_MD5_LIMIT, range_md5=True)
        headers = response.headers
        self.etag, self.size = headers.get("ETag"), whole_size(headers)
        self.content_type = headers.get("Content-Type")
        self.metadata = user_metadata(http.metadata_from(headers, "x-ms-meta-"))
        stored = md5_hex(headers.get("x-ms-blob-content-md5") or
                         (headers.get("Content-MD5") if response.status == 200 else None))
        if response.status == 416:  # an empty blob has no first range, and the error answer no properties
            response.drain_conn()
            response.release_conn()
            response = storage.get(key, 0, None, self.etag)
            headers = response.headers
            self.etag, self.content_type = headers.get("ETag"), headers.get("Content-Type")
            self.metadata = user_metadata(http.metadata_from(headers, "x-ms-meta-"))
            stored = stored or md5_hex(headers.get("Content-MD5"))
        self.ranged, self.segment = strict or not stored, RANGE_MD5_LIMIT
        if strict and response.status == 206 and 2 <= self.size <= RANGE_MD5_LIMIT:
            # Azurite answers a range that covers the whole blob with the stored Content-MD5, not
            # the MD5 of the bytes, so a strict read asks for two halves instead
            response.drain_conn()
            response.release_conn()
            self.segment = (self.size + 1) // 2
            response = storage.get(key, 0, self.segment, self.etag, range_md5=True)
        if self.ranged:
            self.claim = Claim(Proof.RANGES, segment=self.segment, strict=True,
                               ranges=[self.range_md5(response)] if response.status == 206 else [])
        else:
            self.claim = Claim(Proof.MD5, stored)
        self.next = self.segment if response.status == 206 else self.size
        self.current = self.piece(response, 0, min(self.segment, self.size) if response.status == 206 else None)

    @staticmethod
    def range_md5(response) -> bytes | None:
        md5 = md5_hex(response.headers.get("Content-MD5"))
        return bytes.fromhex(md5) if md5 else None

    def piece(self, response, start: int, length: int | None) -> http.HTTPReader:
        def rest(done: int):
            return self.storage.get(self.key, start + done, None if length is None else length - done, self.etag)
        return http.HTTPReader(response, self.content_type, self.metadata, rest, self.storage.retry)

    def read(self, size: int) -> bytes:
        while True:
            data = self.current.read(size)
            if data or self.next >= self.size:
                return data
            self.current.close()
            start = self.next
            if self.ranged:
                length = min(self.segment, self.size - start)
                response = self.storage.get(self.key, start, length, self.etag, range_md5=True)
                self.claim.ranges.append(self.range_md5(response))
            else:
                length = None
                response = self.storage.get(self.key, start, None, self.etag)
            self.next = self.size if length is None else start + length
            self.current = self.piece(response, start, length)

    def close(self) -> None:
        self.current.close()


class AzureStorage(Storage, SignedURLs, ServerCopy, Resumable):
    kind = "azureblob"
    min_part_size = 1
    max_part_size = 4000 * MiB
    max_parts = 50_000
    max_object_size = 50_000 * 4000 * MiB
    part_checksum = "crc64"
    keeps_md5 = True

    def __init__(self, name: str, service: BlobServiceClient, container: str, retry: Retry = Retry(),
                 from_url: bool = True):
        super().__init__(name, retry)
        self.container = service.get_container_client(container)
        self.container_name = container
        self.from_url = from_url  # Put Block From URL works here until the service says otherwise
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
        from_url = config.settings.get("copy_from_url", True)  # false where Put Block From URL is missing (Azurite)
        if not isinstance(from_url, bool):
            raise ConfigError(f"storage '{config.name}' has copy_from_url {from_url!r}; it is true or false")
        return cls(config.name, service, config.require("container"), retry, from_url)

    @contextlib.contextmanager
    def errors(self, key: str = ""):
        """Turn the SDK's errors into one-line TransferErrors that name the storage, not secrets."""
        try:
            yield
        except (DecodeError, UnicodeDecodeError, ParseError) as e:
            raise TransferError(f"Azure answered storage '{self.name}' with a response that cannot be read "
                                f"({e.__class__.__name__}: malformed or corrupted in transit)") from None
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

    def copies_from(self, source: Storage) -> bool:
        return isinstance(source, AzureStorage) or (isinstance(source, SignedURLs) and self.from_url)

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
        settings, metadata = blob.content_settings, blob.metadata or {}
        md5 = bytes(settings.content_md5).hex() if settings.content_md5 else None
        s3etag = next((v for k, v in metadata.items() if k.lower() == S3ETAG_METADATA), None)
        return ObjectInfo(key=blob.name, size=blob.size, mtime=blob.last_modified.timestamp(), md5=md5,
                          etag=blob.etag, content_type=settings.content_type, metadata=user_metadata(metadata),
                          s3etag=s3etag)

    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """Every blob under the folder, without folder markers. Blob listings cannot seek to a
        name, so those up to `after` are passed over (`pages` goes on from a marker instead)."""
        for page, _ in self.pages(prefix):
            yield from (info for info in page if after is None or info.key > after)

    def pages(self, prefix: str, cursor: str | None = None) -> Iterator[Listed]:
        """The service's own pages of LIST_PAGE blobs; a cursor is the marker of the next page."""
        start = f"{prefix}/" if prefix else None
        with self.errors(prefix):
            listing = self.container.list_blobs(name_starts_with=start, include=["metadata"],
                                                results_per_page=LIST_PAGE).by_page(continuation_token=cursor)
            for blobs in listing:
                page = [self.info(blob) for blob in blobs if listed(blob)]
                yield page, listing.continuation_token or None

    def properties_of(self, key: str):
        """The blob's properties, or None when there is none (NotFound for a missing container)."""
        try:
            with self.errors(key):
                return self.container.get_blob_client(key).get_blob_properties()
        except NotFound:
            with self.errors():
                self.container.get_container_properties()
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        if not key:
            return None
        blob = self.properties_of(key)
        return self.info(blob) if blob is not None and not folder_marker(blob) else None

    def entries(self, prefix: str) -> Iterator[ObjectInfo | Folder]:
        """One level by walk_blobs delimited by '/' (a BlobPrefix is a sub-folder), without what
        `listed` leaves out. The SDK gives a page's prefixes before its blobs, so each page is
        sorted; a sub-folder is confirmed by `occupied`, since Azure names one that holds only
        folder markers too."""
        start = f"{prefix}/" if prefix else None
        with self.errors(prefix):
            for page in self.container.walk_blobs(name_starts_with=start, include=["metadata"],
                                                  delimiter="/").by_page():
                found = [Folder(item.name[:-1]) if isinstance(item, BlobPrefix) else self.info(item)
                         for item in page if isinstance(item, BlobPrefix) or listed(item)]
                for entry in sorted(found, key=entry_order):
                    if isinstance(entry, ObjectInfo) or self.occupied(entry.key):
                        yield entry

    def occupied(self, prefix: str) -> bool:
        """Whether an object lies under the folder `prefix`: by one request for two blobs where that
        settles it, instead of a page of a thousand."""
        with self.errors(prefix):
            found = list(next(self.container.list_blobs(name_starts_with=f"{prefix}/", include=["metadata"],
                                                        results_per_page=2).by_page(), []))
        return any(listed(blob) for blob in found) or (len(found) == 2 and super().is_folder(prefix))

    def is_folder(self, prefix: str) -> bool:
        """The root, a folder an object lies under (`occupied`), or one a folder marker blob
        (hdi_isfolder) stands for."""
        if not prefix or self.occupied(prefix):
            return True
        marker = self.properties_of(prefix)
        return marker is not None and folder_marker(marker)

    def lost_metadata(self, info: ObjectInfo) -> tuple[str, ...]:
        return tuple(name for name, value in info.metadata.items() if not METADATA_VALUE.match(str(value)))

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
            return Changed(f"{where} changed while it was being read")
        if code == "ContainerNotFound":
            return NotFound(f"container '{self.container_name}' of storage '{self.name}' does not exist")
        if status == 404:
            return NotFound(f"{where} does not exist")
        if code == "Md5Mismatch" or "MD5" in message:
            return IntegrityError(f"Azure received other bytes for {where} than were sent ({code})")
        if status == 403:
            return ConfigError(f"storage '{self.name}' rejected its credentials ({code})")
        return TransferError(f"Azure error on {where}: {code}")

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        if not offset and length is None:
            return BlobReader(self, key, strict)
        response = self.get(key, offset, length)
        etag = response.headers.get("ETag")

        def rest(done: int):
            return self.get(key, offset + done, None if length is None else length - done, etag)

        return http.HTTPReader(response, response.headers.get("Content-Type"),
                               user_metadata(http.metadata_from(response.headers, "x-ms-meta-")), rest, self.retry)

    def get(self, key: str, offset: int, length: int | None, etag: str | None = None, range_md5: bool = False):
        """A GET of the blob or a range of it; with `etag`, only of that version of it; with
        `range_md5`, asking Azure for the MD5 of the range (and taking 416, the answer for an empty blob)."""
        headers = {**VERSION, **http.byte_range(offset, length), **({"If-Match": etag} if etag else {})}
        if range_md5:
            headers["x-ms-range-get-content-md5"] = "true"
        response = http.send("GET", self.url(key), headers=headers, stream=True, retry=self.retry)
        if response.status not in (200, 206) and not (range_md5 and response.status == 416):
            response.data  # read the error body, which names the error, before it is parsed
            self.http_error(response, key)
        return response

    @staticmethod
    def properties(source: ObjectInfo, md5: bytes | None) -> dict:
        """Content type, Content-MD5 and metadata of a blob written from `source`, with the S3
        multipart ETag of its bytes where the source has one (so that copies compare by it)."""
        metadata = stored_metadata(source.metadata)
        if source.s3etag:
            metadata[S3ETAG_METADATA] = source.s3etag
        return {"content_settings": ContentSettings(content_type=source.content_type or "application/octet-stream",
                                                    content_md5=bytearray(md5) if md5 else None),
                "metadata": metadata}

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

    def place(self, key: str) -> tuple[tuple, str]:
        """A container of an account at an endpoint, however the endpoint is spelled."""
        return ("azureblob", endpoint_place(self.container.url), self.container.account_name,
                self.container_name), key

    def may_share(self, other: Storage) -> bool:
        return isinstance(other, AzureStorage) and other.container_name == self.container_name and \
            other.container.account_name == self.container.account_name

    def delete(self, key: str, etag: str | None = None) -> None:
        condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            with self.errors(key):
                self.container.get_blob_client(key).delete_blob(**condition)
        except Changed:
            raise Changed(f"'{self.name}:{key}' changed after it was read, so it was not deleted") from None
