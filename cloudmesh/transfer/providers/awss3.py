"""AWS S3 (and S3-compatible endpoints such as moto) through boto3.

Large objects go up as multipart uploads; an aborted upload leaves nothing visible. A
single-part ETag is the object's MD5; a multipart ETag is not, so it is not reported as one.
"""
import base64
import contextlib
import hashlib
from typing import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import ConfigError, NotFound, TransferError
from cloudmesh.transfer.providers.base import MiB, ObjectInfo, Reader, Storage, Upload

CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                     "InvalidToken", "ExpiredToken"}


def md5_of(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, or None for a multipart ETag."""
    etag = (etag or "").strip('"')
    return etag if len(etag) == 32 and "-" not in etag else None


class S3Reader(Reader):
    def __init__(self, response: dict, chunk_size: int):
        self.body = response["Body"]
        self.chunk_size = chunk_size
        self.content_type = response.get("ContentType")
        self.metadata = response.get("Metadata") or {}

    def chunks(self) -> Iterator[bytes]:
        return self.body.iter_chunks(self.chunk_size)

    def close(self) -> None:
        self.body.close()


class S3Upload(Upload):
    def __init__(self, storage: "S3Storage", key: str, upload_id: str):
        self.storage, self.key, self.upload_id = storage, key, upload_id
        self.etags: dict[int, str] = {}

    def put_part(self, number: int, offset: int, data: bytes) -> None:
        with self.storage.errors(self.key):
            response = self.storage.client.upload_part(
                Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id,
                PartNumber=number, Body=data, ContentMD5=b64md5(data))
        self.etags[number] = response["ETag"]

    def complete(self, md5: bytes) -> None:
        parts = [{"PartNumber": n, "ETag": self.etags[n]} for n in sorted(self.etags)]
        with self.storage.errors(self.key):
            self.storage.client.complete_multipart_upload(
                Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self.storage.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id)


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class S3Storage(Storage):
    kind = "awss3"
    min_part_size = 5 * MiB
    max_part_size = 5 * 1024 * MiB
    max_parts = 10_000
    max_object_size = 5 * 1024**4

    def __init__(self, name: str, client, bucket: str, chunk_size: int):
        super().__init__(name)
        self.client = client
        self.bucket = bucket
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, config: StorageConfig, chunk_size: int = 8 * MiB) -> "S3Storage":
        endpoint = config.settings.get("endpoint_url")
        client = boto3.session.Session().client(
            "s3",
            aws_access_key_id=config.require("access_key_id", "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=config.require("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            region_name=config.settings.get("region") or "us-east-1",
            endpoint_url=endpoint or None,
            config=Config(s3={"addressing_style": "path" if endpoint else "auto"},
                          max_pool_connections=64,
                          retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=10, read_timeout=60),
        )
        return cls(config.name, client, config.require("bucket"), chunk_size)

    @contextlib.contextmanager
    def errors(self, key: str = ""):
        """Turn boto3's errors into one-line TransferErrors that name the storage, not secrets."""
        where = f"'{self.name}:{key}'" if key else f"storage '{self.name}'"
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket" or (not key and code in ("404", "NotFound")):
                raise NotFound(f"bucket '{self.bucket}' of storage '{self.name}' does not exist") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{where} does not exist") from None
            if code in CREDENTIAL_ERRORS:
                raise ConfigError(f"storage '{self.name}' rejected its credentials ({code})") from None
            raise TransferError(f"S3 error on {where}: {code or e.__class__.__name__}") from None
        except BotoCoreError as e:
            raise TransferError(f"cannot reach S3 for storage '{self.name}': {e.__class__.__name__}") from None

    def info(self, key: str, entry: dict) -> ObjectInfo:
        etag = entry.get("ETag")
        return ObjectInfo(key=key, size=entry.get("Size", entry.get("ContentLength", 0)),
                          mtime=entry["LastModified"].timestamp(), etag=etag, md5=md5_of(etag),
                          content_type=entry.get("ContentType"), metadata=entry.get("Metadata") or {})

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = f"{prefix}/" if prefix else ""
        with self.errors(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for entry in page.get("Contents", []):
                    if not entry["Key"].endswith("/"):
                        yield self.info(entry["Key"], entry)

    def stat(self, key: str) -> ObjectInfo | None:
        if not key:
            return None
        try:
            with self.errors(key):
                return self.info(key, self.client.head_object(Bucket=self.bucket, Key=key))
        except NotFound:
            self.check_bucket()
            return None

    def check_bucket(self) -> None:
        with self.errors():
            self.client.head_bucket(Bucket=self.bucket)

    def open(self, key: str) -> Reader:
        with self.errors(key):
            return S3Reader(self.client.get_object(Bucket=self.bucket, Key=key), self.chunk_size)

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        with self.errors(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentMD5=base64.b64encode(md5).decode(), **self.headers(source))

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        with self.errors(key):
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self.headers(source))
        return S3Upload(self, key, response["UploadId"])

    @staticmethod
    def headers(source: ObjectInfo) -> dict:
        headers = {"Metadata": {k: str(v) for k, v in source.metadata.items()}}
        if source.content_type:
            headers["ContentType"] = source.content_type
        return headers

    def delete(self, key: str) -> None:
        with self.errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)
