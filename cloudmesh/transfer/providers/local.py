"""Local disk: keys are paths under the storage's `directory`, and nothing is written outside it.

Uploads go to a hidden `.partial` file beside the target and are renamed into place on complete,
so a reader never sees a half-written file.
"""
import errno
import mimetypes
import os
import secrets
from pathlib import Path
from typing import Iterator

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import Claim, Proof
from cloudmesh.transfer.providers.base import ObjectInfo, Reader, Resumable, Storage, Upload
from cloudmesh.transfer.retry import Retry

PARTIAL_SUFFIX = ".cmtransfer.partial"


class LocalReader(Reader):
    """A file's bytes; what was read from disk is the source, so it proves itself."""

    claim = Claim(Proof.READ, strict=True)

    def __init__(self, path: Path, offset: int, length: int | None):
        self.file = open(path, "rb")
        self.file.seek(offset)
        self.left = length
        self.content_type = mimetypes.guess_type(path.name)[0]
        self.metadata = {}

    def read(self, size: int) -> bytes:
        if self.left is not None:
            size = min(size, self.left)
            self.left -= size
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()


class LocalUpload(Upload):
    """A hidden partial file beside the target; its name is the token, so that a run that was
    killed can have its partial file removed later."""

    def __init__(self, path: Path, source: ObjectInfo, where: str = ""):
        self.path, self.source, self.where = path, source, where
        self.partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        self.token = self.partial.name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def complete(self, md5: bytes | None) -> None:
        size = os.fstat(self.fd).st_size
        os.close(self.fd)
        self.fd = None
        if size != self.source.size:
            raise IntegrityError(f"wrote {size} bytes to '{self.path.name}' instead of {self.source.size}")
        if self.source.mtime is not None:
            os.utime(self.partial, (self.source.mtime, self.source.mtime))
        try:
            os.replace(self.partial, self.path)
        except IsADirectoryError:  # an object under this name's folder was written meanwhile
            raise TransferError(folder_clash(self.where)) from None

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.partial.unlink(missing_ok=True)


def folder_clash(where: str) -> str:
    return f"cannot write '{where}': it is a folder, so it cannot also be a file (objects lie under '{where}/')"


class LocalStorage(Storage, Resumable):
    kind = "local"
    max_key_bytes = 4096
    keeps_md5 = True  # not stored, but recorded: the MD5 of what was written
    reads_cheaply = True

    def __init__(self, name: str, root: Path, retry: Retry = Retry()):
        super().__init__(name, retry)
        self.root = root

    @classmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "LocalStorage":
        root = Path(config.require("directory")).expanduser()
        return cls(config.name, root.resolve(), retry)

    def check_key(self, key: str) -> None:
        super().check_key(key)
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise UsageError(f"object name {key!r} cannot be stored safely under local storage '{self.name}'")
        if any(len(p.encode("utf-8")) > 255 for p in parts):
            raise UsageError(f"object name '{key[:60]}...' has a path component longer than 255 bytes")

    def path(self, key: str) -> Path:
        """The file for `key`, checked to lie inside the root even through symlinks. Reading is
        allowed where writing is not (a backslash, say); `check_key` guards every write."""
        if not key:
            return self.root
        Storage.check_key(self, key)
        if key.startswith("/") or any(p == ".." for p in key.split("/")):
            raise UsageError(f"object name {key!r} cannot be stored safely under local storage '{self.name}'")
        path = self.root / key
        if not self.inside(path):
            raise UsageError(f"object name {key!r} leads outside local storage '{self.name}'")
        return path

    def inside(self, path: Path) -> bool:
        """True when `path`, with every symlink followed, stays under the root."""
        real = path.resolve()
        return real == self.root or self.root in real.parents

    def place(self, key: str) -> tuple[tuple, str]:
        """The real path, every symlink followed, so that two roots that nest or a folder reached
        through a symlink are seen as the one place they are."""
        return ("local",), os.path.realpath(self.root / key) if key else str(self.root)

    def info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime,
                          content_type=mimetypes.guess_type(path.name)[0])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = self.path(prefix)
        if not top.is_dir():
            return
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(PARTIAL_SUFFIX):
                    continue
                path = Path(folder) / name
                if path.is_file() and self.inside(path):
                    yield self.info(path.relative_to(self.root).as_posix(), path)

    def lost_metadata(self, info: ObjectInfo) -> tuple[str, ...]:
        """A file keeps no metadata (its content type comes from its name)."""
        return tuple(sorted(info.metadata))

    def is_folder(self, prefix: str) -> bool:
        return self.path(prefix).is_dir()

    def stat(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        return self.info(key, path) if key and path.is_file() else None

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"'{self.name}:{key}' does not exist")
        return LocalReader(path, offset, length)

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        upload = self.begin(key, source)
        try:
            upload.put_part(1, 0, data, md5)
            upload.complete(md5)
        except BaseException:
            upload.abort()
            raise

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        self.check_key(key)
        path = self.path(key)
        if path.is_dir():
            raise TransferError(folder_clash(f"{self.name}:{key}"))
        try:
            return LocalUpload(path, source, f"{self.name}:{key}")
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTDIR):
                blocking = next((p for p in path.parents if p.is_file()), None)
                if blocking is not None:
                    name = blocking.relative_to(self.root).as_posix()
                    raise TransferError(f"cannot write '{self.name}:{key}': '{self.name}:{name}' is a file, so "
                                        f"it cannot also be a folder") from None
            raise TransferError(f"cannot write under '{self.name}:{key}': {e.strerror}") from None

    def resume_upload(self, key: str, source: ObjectInfo, token: str, recorded: dict[int, str]) -> Upload | None:
        """A partial file cannot tell which of its parts were written: always begin afresh."""
        return None

    def discard_upload(self, key: str, token: str) -> None:
        if "/" in token or not token.startswith(".") or not token.endswith(PARTIAL_SUFFIX):
            raise UsageError(f"'{token}' is not a partial file of this tool")
        self.path(key).with_name(token).unlink(missing_ok=True)

    def delete(self, key: str, etag: str | None = None) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            raise NotFound(f"'{self.name}:{key}' does not exist") from None
