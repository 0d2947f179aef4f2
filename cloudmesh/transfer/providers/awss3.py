"""AWS S3 (and S3-compatible endpoints such as moto) through boto3.

Large objects go up as multipart uploads; an aborted upload leaves nothing visible. A
single-part ETag is the object's MD5 (unless the object is encrypted with KMS or a customer key);
a multipart ETag is the MD5 of its parts' MD5s, which proves the bytes when they are read along
the same part boundaries (HeadObject with PartNumber tells them).

Each part carries its Content-MD5, which S3 and every S3-compatible store check (and answer as the
part's ETag). On AWS itself (no endpoint_url), a part whose MD5 was not computed for the proof
carries a CRC64NVME instead, and the upload's full-object CRC64NVME is checked on completion;
`checksum: md5` or `checksum: crc64nvme` in the storage's credentials chooses explicitly.
"""
import base64
import contextlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import Changed, ConfigError, IntegrityError, NotFound, TransferError
from cloudmesh.transfer.integrity import Claim, Proof, combine_crc64, composite_etag, crc64, md5_hex, part_record
from cloudmesh.transfer.providers import http
from cloudmesh.transfer.providers.base import (Folder, MiB, ObjectInfo, Part, Reader, Resumable, ServerCopy,
                                               SignedURLs, Storage, Upload, endpoint_place, entry_order)
from cloudmesh.transfer.retry import Retry

log = logging.getLogger(__name__)

CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                     "InvalidToken", "ExpiredToken"}


MD5_METADATA = "md5"  # the whole-object MD5 (hex) this tool stores with a multipart object
RCLONE_MD5_METADATA = "md5chksum"  # the same, as rclone stores it (base64): read, and written beside ours
S3ETAG_METADATA = "cmtransfer_s3etag"  # the S3 multipart ETag of the bytes, stored with copies of them
OWN_METADATA = (MD5_METADATA, RCLONE_MD5_METADATA, S3ETAG_METADATA)
MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-([1-9][0-9]*)$")
CHECKSUMS = ("md5", "crc64nvme")
CHECKSUM_TYPES = {"ChecksumCRC64NVME": "crc64nvme", "ChecksumCRC32C": "crc32c", "ChecksumCRC32": "crc32"}
LAYOUT_LOOKUPS = 16  # HeadObject requests at once when every part's size is asked for


def md5_of(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, or None for a multipart ETag."""
    etag = (etag or "").strip('"')
    return etag if len(etag) == 32 and "-" not in etag else None


def crc64nvme_header(crc: int) -> str:
    """The value of S3's x-amz-checksum-crc64nvme: the CRC, big-endian, base64."""
    return base64.b64encode(crc.to_bytes(8, "big")).decode()


def multipart_etag(etag: str | None) -> str | None:
    etag = (etag or "").strip('"')
    return etag if MULTIPART_ETAG.match(etag) else None


def encrypted(entry) -> bool:
    """Whether S3 encrypts the object with KMS or a customer key, so that its ETag is no MD5."""
    get = entry.get
    kms = str(get("ServerSideEncryption") or get("x-amz-server-side-encryption") or "").startswith("aws:kms")
    return kms or bool(get("SSECustomerAlgorithm") or get("x-amz-server-side-encryption-customer-algorithm"))


def user_metadata(metadata: dict) -> dict:
    """The user's metadata, without the checksums this provider keeps there."""
    return {k: v for k, v in metadata.items() if k.lower() not in OWN_METADATA}


def marker(entry: dict) -> bool:
    """A listed key that stands for a folder (an empty key ending in '/'), not an object."""
    return entry["Key"].endswith("/") and entry.get("Size", 0) == 0


class S3Upload(Upload):
    """A multipart upload. A part sent with its MD5 must come back with that MD5 as its ETag, and
    when every part had one the completed object's ETag must be the MD5 of those MD5s; with
    CRC64NVME (AWS), S3 checks each part's CRC and the whole object's on completion. S3 keeps the
    parts of an open upload (and bills them) until it is completed or aborted."""

    keeps_parts = True

    def __init__(self, storage: "S3Storage", key: str, upload_id: str, uploaded: dict[int, Part] | None = None,
                 completed: bool = False):
        self.storage, self.key, self.upload_id, self.token = storage, key, upload_id, upload_id
        self.uploaded = uploaded or {}
        self.completed = completed  # an earlier run completed it but was stopped before recording that
        self.crc = storage.part_checksum == "crc64nvme"
        self.parts: dict[int, tuple[str, bytes | None, int | None, int]] = {}  # ETag, MD5, CRC64, size

    def keep(self, number: int, data: bytes) -> None:
        md5 = bytes.fromhex(self.uploaded[number].md5)
        self.parts[number] = (f'"{md5.hex()}"', md5, crc64(data) if self.crc else None, len(data))

    def adopt(self, number: int) -> None:
        part = self.uploaded[number]
        if self.crc and part.crc64 is None:
            raise TransferError(f"S3 lists part {number} of '{self.storage.name}:{self.key}' without its CRC64")
        self.parts[number] = (f'"{part.md5}"', bytes.fromhex(part.md5), part.crc64, part.size)

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> str | None:
        checks = {"ContentMD5": base64.b64encode(md5).decode()} if md5 else {}
        crc = crc64(data) if self.crc else None
        if crc is not None:
            checks["ChecksumCRC64NVME"] = crc64nvme_header(crc)
        with self.storage.errors(self.key):
            response = self.storage.client.upload_part(
                Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id,
                PartNumber=number, Body=data, **checks)
        if md5 and md5_of(response["ETag"]) != md5.hex():
            raise IntegrityError(f"S3 stored other bytes for part {number} of '{self.storage.name}:{self.key}'")
        self.parts[number] = (response["ETag"], md5, crc, len(data))
        return part_record(md5, crc)

    def complete(self, md5: bytes | None) -> None:
        """Complete the upload. When the answer to a first try was lost and the retry finds the
        upload gone (NoSuchUpload), the object S3 holds now must carry the expected ETag."""
        numbers = sorted(self.parts)
        parts = [{"PartNumber": n, "ETag": self.parts[n][0]} for n in numbers]
        checks = {}
        if self.crc:
            whole = 0
            for entry, n in zip(parts, numbers):
                whole = combine_crc64(whole, self.parts[n][2], self.parts[n][3])
                entry["ChecksumCRC64NVME"] = crc64nvme_header(self.parts[n][2])
            checks = {"ChecksumCRC64NVME": crc64nvme_header(whole), "ChecksumType": "FULL_OBJECT"}
        md5s = [self.parts[n][1] for n in numbers]
        expected = composite_etag(md5s) if all(md5s) else None
        try:
            if self.completed:
                raise NotFound(f"upload of '{self.key}' completed already")
            with self.storage.errors(self.key):
                etag = self.storage.client.complete_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts}, **checks).get("ETag", "")
        except NotFound:
            landed = self.storage.stat(self.key)
            etag = landed.etag if landed else ""
        if expected and etag.strip('"') != expected:
            raise IntegrityError(f"S3 assembled '{self.storage.name}:{self.key}' from other parts than were sent")

    def abort(self) -> None:
        self.storage.discard_upload(self.key, self.upload_id)


class S3Storage(Storage, SignedURLs, ServerCopy, Resumable):
    kind = "awss3"
    min_part_size = 5 * MiB
    max_part_size = 5 * 1024 * MiB
    max_parts = 10_000
    max_object_size = 5 * 1024**4
    copy_object_limit = 5 * 1024 * MiB  # larger objects are copied part by part (UploadPartCopy)

    def __init__(self, name: str, client, bucket: str, account: tuple = (), retry: Retry = Retry(),
                 checksum: str = "md5"):
        super().__init__(name, retry)
        self.client = client
        self.bucket = bucket
        self.account = account  # (endpoint, access key id): storages that can read each other's buckets
        self.part_checksum = checksum
        self.conditional_delete = True  # until the endpoint answers NotImplemented

    @classmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "S3Storage":
        endpoint = config.settings.get("endpoint_url")
        if endpoint and not str(endpoint).startswith(("http://", "https://")):
            raise ConfigError(f"storage '{config.name}' has an endpoint_url that is not an http(s) URL")
        client = boto3.session.Session().client(
            "s3",
            aws_access_key_id=config.require("access_key_id", "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=config.require("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            region_name=config.settings.get("region") or "us-east-1",
            endpoint_url=endpoint or None,
            config=Config(s3={"addressing_style": "path" if endpoint else "auto"}, signature_version="s3v4",
                          max_pool_connections=64,
                          retries={"total_max_attempts": retry.attempts, "mode": "standard"},
                          connect_timeout=10, read_timeout=60,
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )
        checksum = config.settings.get("checksum") or ("md5" if endpoint else "crc64nvme")
        if checksum not in CHECKSUMS:
            raise ConfigError(f"storage '{config.name}' has checksum '{checksum}'; it is one of {', '.join(CHECKSUMS)}")
        return cls(config.name, client, config.require("bucket"), (endpoint, config.require("access_key_id")), retry,
                   checksum)

    @contextlib.contextmanager
    def errors(self, key: str = ""):
        """Turn boto3's errors into one-line TransferErrors that name the storage, not secrets."""
        try:
            yield
        except ClientError as e:
            raise self.error_for(str(e.response.get("Error", {}).get("Code", "")) or e.__class__.__name__, key) from None
        except ResponseParserError:
            raise TransferError(f"S3 answered storage '{self.name}' with a response that cannot be read "
                                f"(malformed or corrupted in transit)") from None
        except BotoCoreError as e:
            raise TransferError(f"cannot reach S3 for storage '{self.name}': {e.__class__.__name__}") from None

    def info(self, key: str, entry: dict) -> ObjectInfo:
        """An object from a listing entry or a HeadObject answer (only the latter has metadata)."""
        etag, metadata = entry.get("ETag"), {k.lower(): v for k, v in (entry.get("Metadata") or {}).items()}
        stored = md5_hex(metadata.get(MD5_METADATA)) or md5_hex(metadata.get(RCLONE_MD5_METADATA))
        return ObjectInfo(key=key, size=entry.get("Size", entry.get("ContentLength", 0)),
                          mtime=entry["LastModified"].timestamp(), etag=etag,
                          md5=(None if encrypted(entry) else md5_of(etag)) or stored,
                          s3etag=metadata.get(S3ETAG_METADATA) or (None if encrypted(entry) else multipart_etag(etag)),
                          content_type=entry.get("ContentType"), metadata=user_metadata(metadata))

    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        start = f"{prefix}/" if prefix else ""
        seek = {"StartAfter": after} if after else {}
        with self.errors(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start,
                                                                               **seek):
                for entry in page.get("Contents", []):
                    if not marker(entry):
                        yield self.info(entry["Key"], entry)

    def entries(self, prefix: str) -> Iterator[ObjectInfo | Folder]:
        """One level by a listing delimited by '/' (its CommonPrefixes are the sub-folders), without
        folder markers. S3 names a sub-folder that holds only a marker too, so each one is
        confirmed by `is_folder` (one request for two keys), never by listing what lies under it."""
        start = f"{prefix}/" if prefix else ""
        with self.errors(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start,
                                                                               Delimiter="/"):
                found = [self.info(item["Key"], item) for item in page.get("Contents", []) if not marker(item)]
                found += [Folder(common["Prefix"][:-1]) for common in page.get("CommonPrefixes", [])]
                for entry in sorted(found, key=entry_order):
                    if isinstance(entry, ObjectInfo) or self.is_folder(entry.key):
                        yield entry

    def is_folder(self, prefix: str) -> bool:
        """By one request for two keys, where that settles it (a folder marker alone does not make a
        folder: its objects do), instead of a page of a thousand."""
        if not prefix:
            return True
        with self.errors(prefix):
            found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{prefix}/", MaxKeys=2).get("Contents", [])
        if any(not marker(entry) for entry in found):
            return True
        return len(found) == 2 and super().is_folder(prefix)

    def stat(self, key: str) -> ObjectInfo | None:
        if not key:
            return None
        try:
            with self.errors(key):
                return self.info(key, self.client.head_object(Bucket=self.bucket, Key=key))
        except NotFound:
            self.check_bucket()
            return None

    def signed_url(self, key: str, seconds: int = 3600) -> str | None:
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=seconds)

    def copies_from(self, source: Storage) -> bool:
        return isinstance(source, S3Storage) and source.account == self.account

    def server_copy(self, source: Storage, info: ObjectInfo, key: str, part_size: int) -> str | None:
        """CopyObject, or UploadPartCopy part by part, when the source is a bucket these credentials
        reach at the same endpoint."""
        if not self.copies_from(source):
            return None
        copy_source = {"Bucket": source.bucket, "Key": info.key}
        pinned = {"CopySourceIfMatch": info.etag} if info.etag else {}  # only the version that was listed
        if info.size <= self.copy_object_limit:
            with self.errors(key):
                response = self.client.copy_object(Bucket=self.bucket, Key=key, CopySource=copy_source, **pinned)
            landed = md5_of(response["CopyObjectResult"]["ETag"])
            if info.md5 and landed and landed != info.md5:
                raise IntegrityError(f"S3 copied other bytes to '{self.name}:{key}' than the source holds")
            return "server-copy"
        shaped = source.stat(info.key) or info
        upload = self.begin(key, shaped)
        try:
            etags = []
            for number, offset in enumerate(range(0, info.size, part_size), start=1):
                end = min(offset + part_size, info.size) - 1
                with self.errors(key):
                    response = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=key, UploadId=upload.upload_id, PartNumber=number,
                        CopySource=copy_source, CopySourceRange=f"bytes={offset}-{end}", **pinned)
                etags.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            with self.errors(key):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload.upload_id,
                                                      MultipartUpload={"Parts": etags})
        except BaseException:
            with contextlib.suppress(TransferError):
                upload.abort()
            raise
        return "server-copy"

    def describe(self, info: ObjectInfo) -> ObjectInfo:
        """A listing shows no metadata and no encryption (with KMS a single-part ETag is no MD5),
        so a lookup tells the stored MD5s and whether the ETag is one."""
        return self.stat(info.key) or info

    def part_sizes(self, info: ObjectInfo) -> tuple[int, ...] | None:
        if not multipart_etag(info.etag):
            return None
        sizes, _ = self.layout(info.key, info.size, exact=True)  # asked before the object is read whole
        return sizes

    def layout(self, key: str, size: int, exact: bool) -> tuple[tuple[int, ...] | None, bool]:
        """The sizes of a multipart object's parts, and whether all but the last were assumed to
        have the first one's size (what every common client writes). With `exact`, or when the first
        part's size does not fit the object's size and part count, each part is looked up."""
        with self.errors(key):
            first = self.client.head_object(Bucket=self.bucket, Key=key, PartNumber=1)
        count, part = first.get("PartsCount"), first["ContentLength"]
        if not count:
            return None, False
        if count == 1:
            return (size,), False
        uniform = (count - 1) * part < size <= count * part
        if uniform and (count == 2 or not exact):
            return (part,) * (count - 1) + (size - (count - 1) * part,), count > 2

        def part_size(number: int) -> int:
            with self.errors(key):
                return self.client.head_object(Bucket=self.bucket, Key=key, PartNumber=number)["ContentLength"]

        with ThreadPoolExecutor(LAYOUT_LOOKUPS, thread_name_prefix="layout") as pool:
            sizes = (part, *pool.map(part_size, range(2, count + 1)))
        return (sizes, False) if sum(sizes) == size else (None, False)

    def claim(self, key: str, headers, size: int, strict: bool) -> Claim:
        """What proves the bytes of a whole object, from its GET answer: S3's own MD5 (a
        single-part ETag), else an MD5 a writer stored (ours, or rclone's md5chksum; not with
        `strict`), else the multipart ETag over the parts, else an additional checksum S3 keeps."""
        etag = (headers.get("ETag") or "").strip('"')
        hidden = encrypted(headers)
        if md5_of(etag) and not hidden:
            return Claim(Proof.MD5, etag, strict=True)
        stored = md5_hex(headers.get(f"x-amz-meta-{MD5_METADATA}")) or \
            md5_hex(headers.get(f"x-amz-meta-{RCLONE_MD5_METADATA}"))
        if stored and not strict:
            return Claim(Proof.MD5, stored)
        if multipart_etag(etag) and not hidden:
            sizes, assumed = self.layout(key, size, exact=strict)
            if sizes:
                return Claim(Proof.PARTS, etag, parts=sizes, assumed=assumed, strict=not assumed)
        return self.checksum_claim(key, strict) or \
            Claim(Proof.NONE, reason="S3 keeps no checksum of it that proves its bytes", strict=True)

    def checksum_claim(self, key: str, strict: bool) -> Claim | None:
        """An additional checksum S3 keeps of the object (CRC64NVME, CRC32C, CRC32), whole or composite."""
        with self.errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        for field, algorithm in CHECKSUM_TYPES.items():
            value = head.get(field)
            if not value:
                continue
            value, _, count = value.partition("-")
            if not count:
                return Claim(Proof.CRC, value, algorithm=algorithm, strict=True)
            sizes, assumed = self.layout(key, head["ContentLength"], exact=strict)
            if sizes and len(sizes) == int(count):
                return Claim(Proof.CRC, f"{value}-{count}", parts=sizes, assumed=assumed, algorithm=algorithm,
                             strict=not assumed)
        return None

    def check_bucket(self) -> None:
        with self.errors():
            self.client.head_bucket(Bucket=self.bucket)

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        response = self.get(key, offset, length)
        metadata = http.metadata_from(response.headers, "x-amz-meta-")
        etag = response.headers.get("ETag")

        def rest(done: int):
            return self.get(key, offset + done, None if length is None else length - done, etag)

        reader = http.HTTPReader(response, response.headers.get("Content-Type"), user_metadata(metadata), rest,
                                 self.retry)
        if response.status == 200:
            try:
                reader.claim = self.claim(key, response.headers, int(response.headers.get("Content-Length", 0)),
                                          strict)
            except BaseException:
                reader.close()
                raise
        return reader

    def get(self, key: str, offset: int, length: int | None, etag: str | None = None):
        """A GET of the object or a range of it; with `etag`, only of that version of it."""
        url = self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key})
        headers = {**http.byte_range(offset, length), **({"If-Match": etag} if etag else {})}
        response = http.send("GET", url, headers=headers, stream=True, retry=self.retry)
        if response.status not in (200, 206):
            response.data  # read the error body, which names the error, before it is parsed
            self.http_error(response, key)
        return response

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        params = {"Bucket": self.bucket, "Key": key, "ContentMD5": base64.b64encode(md5).decode(),
                  **self.headers(source)}
        url = self.client.generate_presigned_url("put_object", Params=params)
        headers = {"Content-MD5": params["ContentMD5"],
                   **{f"x-amz-meta-{k}": v for k, v in params["Metadata"].items()}}
        if "ContentType" in params:
            headers["Content-Type"] = params["ContentType"]
        response = http.send("PUT", url, body=data, headers=headers, retry=self.retry)
        if response.status != 200:
            self.http_error(response, key)
        if md5_of(response.headers.get("ETag")) != md5.hex():
            raise IntegrityError(f"S3 stored other bytes for '{self.name}:{key}' than were sent")

    def http_error(self, response, key: str):
        """Raise the TransferError for a failed data request, as `errors` does for the SDK's."""
        raise self.error_for(http.error_code(response), key)

    def error_for(self, code: str, key: str) -> TransferError:
        """The one-line error for an S3 error code, naming the storage, not secrets."""
        where = f"'{self.name}:{key}'" if key else f"storage '{self.name}'"
        if code == "NoSuchBucket" or (not key and code in ("404", "NotFound")):
            return NotFound(f"bucket '{self.bucket}' of storage '{self.name}' does not exist")
        if code in ("NoSuchKey", "NoSuchUpload", "404", "NotFound"):
            return NotFound(f"{where} does not exist")
        if code == "PreconditionFailed":
            return Changed(f"{where} changed while it was being read")
        if code in CREDENTIAL_ERRORS:
            return ConfigError(f"storage '{self.name}' rejected its credentials ({code})")
        if code.isdigit() and int(code) >= 500:  # botocore reads an answer it cannot parse as a 500
            return TransferError(f"S3 error on {where}: {code} after {self.retry.attempts} tries (a server "
                                 f"error, or answers corrupted in transit)")
        return TransferError(f"S3 error on {where}: {code}")

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        headers = self.headers(source)
        if source.md5:
            headers["Metadata"][MD5_METADATA] = source.md5
            headers["Metadata"][RCLONE_MD5_METADATA] = base64.b64encode(bytes.fromhex(source.md5)).decode()
        if self.part_checksum == "crc64nvme":
            headers.update(ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT")
        with self.errors(key):
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **headers)
        return S3Upload(self, key, response["UploadId"])

    def resume_upload(self, key: str, source: ObjectInfo, token: str, recorded: dict[int, str]) -> Upload | None:
        """The open multipart upload `token`, with the parts S3 lists for it; or, when S3 no longer
        knows it but holds an object whose ETag is that of the recorded parts, that completed upload
        (its parts are then checked against the source again, and nothing is sent)."""
        uploaded = {}
        try:
            with self.errors(key):
                pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key, UploadId=token)
                for page in pages:
                    for part in page.get("Parts", []):
                        md5 = md5_of(part["ETag"])
                        crc = part.get("ChecksumCRC64NVME")
                        if md5:
                            uploaded[part["PartNumber"]] = Part(part["Size"], md5, crc and
                                                                int.from_bytes(base64.b64decode(crc), "big"))
        except NotFound:
            numbers = sorted(recorded)
            if not all(md5_hex(recorded[n]) == recorded[n] for n in numbers):
                return None  # parts recorded by their CRC64 cannot tell the completed object's ETag
            landed = self.stat(key)
            if not landed or numbers != list(range(1, len(numbers) + 1)) or \
                    (landed.etag or "").strip('"') != composite_etag([bytes.fromhex(recorded[n]) for n in numbers]):
                return None
            return S3Upload(self, key, token, {n: Part(md5=recorded[n]) for n in numbers}, completed=True)
        return S3Upload(self, key, token, uploaded)

    def discard_upload(self, key: str, token: str) -> None:
        try:
            with self.errors(key):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=token)
        except NotFound:
            pass

    @staticmethod
    def headers(source: ObjectInfo) -> dict:
        """The content type and user metadata of an object written from `source`, with the S3
        multipart ETag of its bytes where the source has one (so that copies compare by it)."""
        headers = {"Metadata": {k: str(v) for k, v in source.metadata.items()}}
        if source.s3etag:
            headers["Metadata"][S3ETAG_METADATA] = source.s3etag
        if source.content_type:
            headers["ContentType"] = source.content_type
        return headers

    def place(self, key: str) -> tuple[tuple, str]:
        """Bucket names are global on AWS; elsewhere a bucket is one of its endpoint's."""
        endpoint = self.account[0] if self.account else None
        return ("awss3", endpoint_place(endpoint) if endpoint else "aws", self.bucket), key

    def may_share(self, other: Storage) -> bool:
        return isinstance(other, S3Storage) and other.bucket == self.bucket

    def delete(self, key: str, etag: str | None = None) -> None:
        """With `etag`, DeleteObject If-Match; an endpoint that does not implement a conditional
        delete gets a plain one (the move has looked the object up just before)."""
        condition = {"IfMatch": etag} if etag and self.conditional_delete else {}
        with self.errors(key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, **condition)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    raise Changed(f"'{self.name}:{key}' changed after it was read, so it was not deleted") from None
                if not (condition and code in ("NotImplemented", "501")):
                    raise
                log.info("storage '%s' has no conditional delete; deleting '%s' without one", self.name, key)
                self.conditional_delete = False
                self.client.delete_object(Bucket=self.bucket, Key=key)
