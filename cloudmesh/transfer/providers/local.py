"""Local disk: keys are paths under the storage's `directory`, and nothing is read or written outside it.

Every name is opened one component at a time, each relative to the folder opened before it and
with O_NOFOLLOW, starting from the root opened as a folder; the kernel never follows a symlink
under the root. A symlink met on the way (also one swapped in while a transfer runs) is read and
followed by this provider, component by component in the same way, and only while what it names
stays under the root: a symlink inside the root to a file or folder inside the root works for reads
and writes, one that leads outside is refused ('leads outside'), as is a loop of more than
MAX_LINKS links. Listings never descend into symlinked folders; they list a symlinked file that
resolves inside the root under the link's name, and skip (with a logged warning) links that lead
outside, loop or lead nowhere, and entries that vanish while the folder is listed. The cloudmesh
config directory (cloudmesh.yaml, transfer-token, transfer.db), when it lies under the root, is
never listed, read or written.

Uploads go to a hidden partial file beside the target (created with O_EXCL, in the folder opened as
above) and are renamed into place on complete, so a reader never sees a half-written file. A file
copied from a local source gets the source's permission bits, masked by the umask as `cp` does; any
other new file gets 0o666 masked by the umask.
"""
import contextlib
import errno
import logging
import mimetypes
import os
import secrets
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cloudmesh.transfer import config as settings
from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import Changed, IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import Claim, Proof
from cloudmesh.transfer.providers.base import Folder, ObjectInfo, Reader, Resumable, Storage, Upload
from cloudmesh.transfer.retry import Retry

PARTIAL_SUFFIX = ".cmtransfer.partial"
MAX_LINKS = 40  # symlinks followed for one name, as Linux allows; more is a loop
MAX_NAME_BYTES = 255
FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_MODE = 0o666  # masked by the umask, as for any new file
A_LINK = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # what opening a symlink with O_NOFOLLOW fails with
log = logging.getLogger(__name__)


class Absent(Exception):
    """A folder on the way to a key does not exist; `parts` is the key's real path as far as it
    exists, then the rest of its components as they were named."""

    def __init__(self, parts: tuple[str, ...] = ()):
        super().__init__("/".join(parts))
        self.parts = parts


class Blocked(Exception):
    """A file stands where a folder on the way to a key should be; `parts` is its real path."""

    def __init__(self, parts: tuple[str, ...]):
        super().__init__("/".join(parts))
        self.parts = parts


class Changing(Exception):
    """The entry changed between being looked at and being opened (a race)."""


@dataclass
class Spot:
    """Where a key's last component lives: its folder, open as `fd` (the caller closes it), that
    folder's real path under the root as `folder`, and the entry's `name` and lstat (None when
    there is none). A `name` of '' stands for the root itself."""

    fd: int
    folder: tuple[str, ...]
    name: str
    st: os.stat_result | None

    @property
    def parts(self) -> tuple[str, ...]:
        return self.folder + (self.name,) if self.name else self.folder

    def is_a(self, kind) -> bool:
        return self.st is not None and kind(self.st.st_mode)

    def open_folder(self) -> int:
        """The entry, a folder, opened without following a symlink."""
        if not self.name:
            return os.dup(self.fd)
        try:
            return os.open(self.name, FOLDER, dir_fd=self.fd)
        except OSError as e:
            if e.errno in A_LINK + (errno.ENOENT,):
                raise Changing from None
            raise

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "Spot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalReader(Reader):
    """A file's bytes, read from the open file with plain reads (no buffered file object, whose
    set-up costs syscalls per file); what was read from disk is the source, so it proves itself."""

    claim = Claim(Proof.READ, strict=True)

    def __init__(self, fd: int, name: str, offset: int, length: int | None):
        self.fd, self.name, self.offset, self.left = fd, name, offset, length
        self.metadata = {}

    @property
    def content_type(self) -> str | None:
        """From the file's name, as its listing gives it (guessed only when asked)."""
        return mimetypes.guess_type(self.name)[0]

    def read(self, size: int) -> bytes:
        if self.left is not None:
            size = min(size, self.left)
        data = os.pread(self.fd, size, self.offset) if size else b""
        self.offset += len(data)
        if self.left is not None:
            self.left -= len(data)
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def check_lengths(key: str, parts: list[str]) -> None:
    """UsageError for a component longer than a file name may be, for reads as for writes (the
    kernel's ENAMETOOLONG would not say which name)."""
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise UsageError(f"object name '{key[:60]}...' has a path component longer than {MAX_NAME_BYTES} bytes")


def partial_name(name: str) -> str:
    """A hidden name beside `name` for its partial file, within the 255-byte limit of a file name;
    the random part keeps two uploads of one name apart."""
    tail = f".{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    stem = name.encode("utf-8")[:MAX_NAME_BYTES - 1 - len(tail)].decode("utf-8", "ignore")
    return f".{stem}{tail}"


class LocalUpload(Upload):
    """A hidden partial file beside the target, in the target's folder held open as `folder_fd`
    (which the upload owns); its name is the token, so that a run that was killed can have its
    partial file removed later. It is created with the source's mode where the source is a local
    file (see ObjectInfo.mode), else 0o666, the kernel masking either by the umask."""

    def __init__(self, folder_fd: int, name: str, source: ObjectInfo, where: str = ""):
        self.folder_fd, self.name, self.source, self.where = folder_fd, name, source, where
        self.partial = self.token = partial_name(name)
        mode = NEW_FILE_MODE if source.mode is None else source.mode
        self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          mode, dir_fd=folder_fd)

    def put_part(self, number: int, offset: int, data: bytes, md5: bytes | None) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def complete(self, md5: bytes | None) -> None:
        size = os.fstat(self.fd).st_size
        if size != self.source.size:
            raise IntegrityError(f"wrote {size} bytes to '{self.name}' instead of {self.source.size}")
        if self.source.mtime is not None:
            os.utime(self.fd, (self.source.mtime, self.source.mtime))
        os.close(self.fd)
        self.fd = None
        try:
            os.replace(self.partial, self.name, src_dir_fd=self.folder_fd, dst_dir_fd=self.folder_fd)
        except IsADirectoryError:  # an object under this name's folder was written meanwhile
            raise TransferError(folder_clash(self.where)) from None
        self.release()

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.folder_fd is not None:
            try:
                os.unlink(self.partial, dir_fd=self.folder_fd)
            except FileNotFoundError:
                pass
            self.release()

    def release(self) -> None:
        os.close(self.folder_fd)
        self.folder_fd = None


def folder_clash(where: str) -> str:
    return f"cannot write '{where}': it is a folder, so it cannot also be a file (objects lie under '{where}/')"


def lstat(name: str, fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def beneath(parts: tuple[str, ...], folder: tuple[str, ...] | None) -> bool:
    """True when the real path `parts` (under the root) is `folder` or lies inside it."""
    return folder is not None and parts[:len(folder)] == folder


class LocalStorage(Storage, Resumable):
    kind = "local"
    max_key_bytes = 4096
    keeps_md5 = True  # not stored, but recorded: the MD5 of what was written
    reads_cheaply = True
    # A small file costs syscalls, not waiting: more threads only contend for the interpreter's lock
    # and the folder's (2 at once were 20% slower than 1 at 10,000 files of 1 KiB).
    objects_at_once = 1

    def __init__(self, name: str, root: Path, retry: Retry = Retry(), config_dir: Path | None = None):
        """`config_dir` (by default the cloudmesh config directory) is never listed, read or written
        where it lies under `root`."""
        super().__init__(name, retry)
        self.root = Path(os.path.realpath(root))
        guarded = os.path.realpath(config_dir or settings.config_dir())
        inside = os.path.relpath(guarded, self.root)
        self.guarded = None if inside == ".." or inside.startswith("../") else \
            tuple(p for p in inside.split("/") if p != ".")

    @classmethod
    def from_config(cls, config: StorageConfig, retry: Retry = Retry()) -> "LocalStorage":
        """The root is `directory`, with `~` expanded; a relative one lies under the cloudmesh
        config directory (where cloudmesh.yaml is), never under the current directory."""
        root = Path(config.require("directory")).expanduser()
        return cls(config.name, root if root.is_absolute() else settings.config_dir() / root, retry)

    def check_key(self, key: str) -> None:
        super().check_key(key)
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise UsageError(f"object name {key!r} cannot be stored safely under local storage '{self.name}'")
        check_lengths(key, parts)
        if key.endswith(PARTIAL_SUFFIX):
            raise UsageError(f"object name {key!r} ends in '{PARTIAL_SUFFIX}', which this tool keeps for its "
                             f"partial files")

    # Finding a key under the root, one component at a time (see the module docstring).

    def components(self, key: str) -> list[str]:
        """The components of a key to read, delete or write (writes pass `check_key` first)."""
        Storage.check_key(self, key)
        parts = key.split("/")
        if key.startswith("/") or ".." in parts:
            raise UsageError(f"object name {key!r} cannot be stored safely under local storage '{self.name}'")
        check_lengths(key, parts)
        return [p for p in parts if p not in ("", ".")]

    def open_root(self, create: bool = False) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise Absent from None
        os.makedirs(self.root, exist_ok=True)
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def locate(self, key: str, create: bool = False, follow: bool = True) -> Spot:
        """Open the folder that holds `key`'s last component, following symlinks only while they
        stay under the root; with `follow`, a symlink as the last component is followed too, and
        with `create`, missing folders are made (mode 0o777 masked by the umask, as mkdir does).
        UsageError for a name that leads outside the root or round a loop, Absent for a missing
        folder, Blocked for a file where a folder should be."""
        pending = deque(self.components(key))
        try:
            root = self.open_root(create)
        except Absent:
            raise Absent(tuple(pending)) from None
        fd, folder, links, looks = root, [], 0, 0  # looks: at one component that keeps changing
        try:
            while True:
                if not pending:  # a symlink named a folder: open it again from its own parent
                    if not folder:
                        return Spot(root, (), "", os.fstat(root))
                    fd = self.restart(fd, root, folder, pending, list(folder))
                name = pending.popleft()
                if name == "..":
                    if not folder:
                        raise self.outside(key)
                    fd = self.restart(fd, root, folder, pending, folder[:-1])
                    continue
                if not pending:
                    st = lstat(name, fd)
                    if not (follow and st is not None and stat.S_ISLNK(st.st_mode)):
                        if fd != root:
                            os.close(root)
                        return Spot(fd, tuple(folder), name, st)
                else:
                    try:
                        child = os.open(name, FOLDER, dir_fd=fd)
                    except OSError as e:
                        st = None if e.errno == errno.ENOENT else lstat(name, fd)
                        if e.errno == errno.ENOENT and create:
                            with contextlib.suppress(FileExistsError):
                                os.mkdir(name, 0o777, dir_fd=fd)
                        elif e.errno == errno.ENOENT:
                            raise Absent((*folder, name, *pending)) from None
                        elif e.errno not in A_LINK:
                            raise
                        elif st is not None and not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                            raise Blocked((*folder, name)) from None
                        if st is None or not stat.S_ISLNK(st.st_mode):  # made, or it changed since: look again
                            looks += 1
                            if looks > MAX_LINKS:
                                raise self.changing(key) from None
                            pending.appendleft(name)
                            continue
                    else:
                        if fd != root:
                            os.close(fd)
                        fd, looks = child, 0
                        folder.append(name)
                        continue
                links += 1
                if links > MAX_LINKS:
                    raise UsageError(f"'{self.name}:{key}' cannot be opened: it goes round a loop of symbolic links")
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
                    pending.appendleft(name)  # no longer a symlink: look again (counted as a link)
                    continue
                parts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    under = [p for p in str(self.root).split("/") if p]
                    if parts[:len(under)] != under:
                        raise self.outside(key)
                    fd = self.restart(fd, root, folder, pending, parts[len(under):])
                else:
                    pending.extendleft(reversed(parts))
        except BaseException:
            if fd != root:
                os.close(fd)
            os.close(root)
            raise

    @staticmethod
    def restart(fd: int, root: int, folder: list[str], pending: deque, parts: list[str]) -> int:
        """Walk `parts`, then what is pending, again from the root; returns the root's fd."""
        pending.extendleft(reversed(parts))
        folder.clear()
        if fd != root:
            os.close(fd)
        return root

    def changing(self, key: str) -> TransferError:
        return TransferError(f"'{self.name}:{key}' kept changing while it was opened")

    def outside(self, key: str) -> UsageError:
        return UsageError(f"object name {key!r} leads outside local storage '{self.name}'")

    def refuse_guarded(self, key: str, spot: Spot) -> None:
        if beneath(spot.parts, self.guarded):
            raise UsageError(f"'{self.name}:{key}' lies in the cloudmesh config directory, which is never copied "
                             f"or changed")

    def find(self, key: str) -> Spot | None:
        """The key's entry, every symlink followed (inside the root); None when a folder on the
        way is missing or is a file."""
        try:
            spot = self.locate(key)
        except (Absent, Blocked):
            return None
        try:
            self.refuse_guarded(key, spot)
        except BaseException:
            spot.close()
            raise
        return spot

    def path(self, key: str) -> Path:
        """The file for `key` as a path under the root, checked as every read is (refused when it
        leads outside the root, round a loop or into the config directory). For showing and for
        tests only: a path can change after it was checked, so this storage never opens one."""
        if not key:
            return self.root
        spot = self.find(key)
        if spot is not None:
            spot.close()
        return self.root / key

    def place(self, key: str) -> tuple[tuple, str]:
        """The real path, every symlink followed, so that two roots that nest or a folder reached
        through a symlink are seen as the one place they are. A name that leads outside the root
        or round a loop stays as it is named: every read and write refuses it anyway."""
        if not key:
            return ("local",), str(self.root)
        try:
            with self.locate(key) as spot:
                parts = spot.parts
        except Absent as e:
            parts = e.parts
        except (Blocked, TransferError):
            parts = tuple(self.components(key))
        return ("local",), str(self.root.joinpath(*parts))

    def info(self, key: str, st: os.stat_result) -> ObjectInfo:
        """A file as an object; its ETag is the file's identity (device and inode), so that a file
        replaced since it was read (also by a copy onto itself through a bind mount) is seen."""
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime, content_type=mimetypes.guess_type(key)[0],
                          mode=stat.S_IMODE(st.st_mode) & 0o777, etag=identity(st))

    # Reading

    def list(self, prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """The files under `prefix` in key order (a folder sorts as its name and '/', so that the
        walk is in the order S3 lists keys), from the first key after `after` on."""
        with self.listed(prefix) as opened:
            if opened is not None:
                yield from self.walk(*opened, after)

    def entries(self, prefix: str) -> Iterator[ObjectInfo | Folder]:
        """One read of the folder: its files as `list` gives them, and its subfolders that hold a
        file (each walked only as far as its first one), in the same key order. An empty folder,
        or one holding only empty folders, is left out, as `list` shows nothing under it."""
        with self.listed(prefix) as opened:
            if opened is None:
                return
            fd, parts, top = opened
            for name, key, st, _ in self.level(fd, parts, top, None):
                if not stat.S_ISDIR(st.st_mode):
                    info = self.listed_file(key, name, st)
                    if info is not None:
                        yield info
                elif self.holds_file(fd, parts, name, key):
                    yield Folder(key)

    @contextlib.contextmanager
    def listed(self, prefix: str):
        """The folder `prefix` open for a listing as (fd, its real path under the root, its key),
        closed after the block; None when no folder is there."""
        top = "/".join(self.components(prefix)) if prefix else ""
        opened = self.open_listed(top)
        if opened is None:
            yield None
            return
        try:
            yield (*opened, top)
        finally:
            os.close(opened[0])

    def open_listed(self, top: str) -> tuple[int, tuple[str, ...]] | None:
        """The folder `top` opened for a listing, with its real path under the root (the caller
        closes it); None when no folder is there."""
        try:
            if not top:
                return self.open_root(), ()
            spot = self.find(top)
            if spot is None:
                return None
            with spot:
                return (spot.open_folder(), spot.parts) if spot.is_a(stat.S_ISDIR) else None
        except (Absent, Changing):
            return None

    def walk(self, fd: int, parts: tuple[str, ...], prefix: str, after: str | None) -> Iterator[ObjectInfo]:
        """The files of the open folder `fd` (real path `parts`, key `prefix`) and of its subfolders,
        in key order, passing over those up to `after` (and whole folders that lie before it)."""
        for name, key, st, within in self.level(fd, parts, prefix, after):
            if stat.S_ISDIR(st.st_mode):
                yield from self.descend(fd, parts, name, key, within)
            else:
                info = self.listed_file(key, name, st)
                if info is not None:
                    yield info

    def level(self, fd: int, parts: tuple[str, ...], prefix: str,
              after: str | None) -> Iterator[tuple[str, str, os.stat_result, str | None]]:
        """The entries of the open folder `fd` (real path `parts`, key `prefix`) in key order, as
        (name, key, lstat, the `after` to walk a subfolder from), passing over those up to `after`.
        A folder holds only its names while it is listed, not their details. What cannot be read
        is skipped with a warning, as is what vanishes meanwhile and the cloudmesh config directory."""
        try:
            names, folders = [], set()
            with os.scandir(fd) as entries:
                for entry in entries:
                    names.append(entry.name)
                    if entry.is_dir(follow_symlinks=False):
                        folders.add(entry.name)
        except OSError as e:
            self.skipped(prefix, f"its folder cannot be listed ({e.strerror})")
            return
        names.sort(key=lambda name: f"{name}/" if name in folders else name)
        for name in names:
            key = f"{prefix}/{name}" if prefix else name
            order = f"{key}/" if name in folders else key
            if after is not None:
                if order <= after and not (name in folders and after.startswith(order)):
                    continue  # a file up to `after`, or a folder that lies wholly before it
                within, after = (after if after.startswith(order) else None), None
            else:
                within = None
            if beneath((*parts, name), self.guarded):
                self.skipped(key, "it is the cloudmesh config directory, which is never copied")
                continue
            try:
                st = lstat(name, fd)
            except OSError as e:
                self.skipped(key, f"it cannot be read ({e.strerror})")
                continue
            if st is None:
                self.skipped(key, "it vanished while its folder was listed")
            else:
                yield name, key, st, within

    def listed_file(self, key: str, name: str, st: os.stat_result) -> ObjectInfo | None:
        """A listed entry that is not a folder, as an object: a file (but a partial one), or a
        symlinked file (see `linked`); None for anything else."""
        if stat.S_ISREG(st.st_mode):
            return None if name.endswith(PARTIAL_SUFFIX) else self.info(key, st)
        if stat.S_ISLNK(st.st_mode):
            return self.linked(key)
        log.info("not listed: %r is neither a file nor a folder", f"{self.name}:{key}")
        return None

    def holds_file(self, fd: int, parts: tuple[str, ...], name: str, key: str) -> bool:
        """Whether `list` finds a file under the subfolder `name` of the open folder `fd`."""
        files = self.descend(fd, parts, name, key, None)
        try:
            return next(files, None) is not None
        finally:
            files.close()

    def descend(self, fd: int, parts: tuple[str, ...], name: str, key: str, after: str | None) -> Iterator[ObjectInfo]:
        """The files of the subfolder `name` of the open folder `fd`, as `walk` lists them."""
        try:
            child = os.open(name, FOLDER, dir_fd=fd)
        except FileNotFoundError:
            self.skipped(key, "it vanished while its folder was listed")
            return
        except OSError as e:
            self.skipped(key, "it was replaced while its folder was listed" if e.errno in A_LINK
                         else f"it cannot be read ({e.strerror})")
            return
        try:
            yield from self.walk(child, (*parts, name), key, after)
        finally:
            os.close(child)

    def linked(self, key: str) -> ObjectInfo | None:
        """A symlinked file met in a listing, under the link's name; None (and why, logged) when
        the link leads outside the root, loops or leads nowhere. Symlinked folders are not listed."""
        try:
            spot = self.find(key)
        except TransferError as e:
            log.warning("skipped: %s", e)
            return None
        except OSError as e:
            self.skipped(key, f"it cannot be read ({e.strerror})")
            return None
        if spot is None or spot.st is None:
            self.skipped(key, "it is a symbolic link to nothing")
            return None
        with spot:
            if stat.S_ISDIR(spot.st.st_mode):
                log.info("not listed: %r is a symlinked folder, which listings do not descend into",
                         f"{self.name}:{key}")
                return None
            return self.info(key, spot.st) if stat.S_ISREG(spot.st.st_mode) else None

    def skipped(self, key: str, why: str) -> None:
        log.warning("skipped %r: %s", f"{self.name}:{key}", why)

    def lost_metadata(self, info: ObjectInfo) -> tuple[str, ...]:
        """A file keeps no metadata (its content type comes from its name)."""
        return tuple(sorted(info.metadata))

    def is_folder(self, prefix: str) -> bool:
        if not prefix:
            return self.root.is_dir()
        spot = self.find(prefix)
        if spot is None:
            return False
        with spot:
            return spot.is_a(stat.S_ISDIR)

    def stat(self, key: str) -> ObjectInfo | None:
        spot = self.find(key) if key else None
        if spot is None:
            return None
        with spot:
            return self.info(key, spot.st) if spot.is_a(stat.S_ISREG) else None

    def open(self, key: str, offset: int = 0, length: int | None = None, strict: bool = False) -> Reader:
        for _ in range(MAX_LINKS):
            spot = self.find(key)
            if spot is None or not spot.is_a(stat.S_ISREG):
                if spot is not None:
                    spot.close()
                raise NotFound(f"'{self.name}:{key}' does not exist")
            with spot:
                try:
                    fd = os.open(spot.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=spot.fd)
                except FileNotFoundError:
                    raise NotFound(f"'{self.name}:{key}' does not exist") from None
                except OSError as e:
                    if e.errno not in A_LINK:
                        raise
                    continue  # replaced by a symlink since: look again
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return LocalReader(fd, key, offset, length)
            os.close(fd)
        raise self.changing(key)

    # Writing

    def put(self, key: str, data: bytes, source: ObjectInfo, md5: bytes) -> None:
        upload = self.begin(key, source)
        try:
            upload.put_part(1, 0, data, md5)
            upload.complete(md5)
        except BaseException:
            upload.abort()
            raise

    def begin(self, key: str, source: ObjectInfo) -> Upload:
        """A partial file in the key's folder, opened as `locate` does (making missing folders).
        A symlink at the key itself is replaced, never written through, and refused when it leads
        outside the root."""
        self.check_key(key)
        where = f"{self.name}:{key}"
        try:
            spot = self.locate(key, create=True, follow=False)
        except Blocked as e:
            raise TransferError(f"cannot write '{where}': '{self.name}:{'/'.join(e.parts)}' is a file, so "
                                f"it cannot also be a folder") from None
        except OSError as e:
            raise TransferError(f"cannot write under '{where}': {e.strerror}") from None
        try:
            self.refuse_guarded(key, spot)
            if spot.is_a(stat.S_ISDIR):
                raise TransferError(folder_clash(where))
            if spot.is_a(stat.S_ISLNK):
                linked = self.find(key)  # refuses a link that leads outside, loops or leads into the config directory
                if linked is not None:
                    linked.close()
            return LocalUpload(spot.fd, spot.name, source, where)
        except OSError as e:
            spot.close()
            raise TransferError(f"cannot write under '{where}': {e.strerror}") from None
        except BaseException:
            spot.close()
            raise

    def resume_upload(self, key: str, source: ObjectInfo, token: str, recorded: dict[int, str]) -> Upload | None:
        """A partial file cannot tell which of its parts were written: always begin afresh."""
        return None

    def discard_upload(self, key: str, token: str) -> None:
        if "/" in token or not token.startswith(".") or not token.endswith(PARTIAL_SUFFIX):
            raise UsageError(f"'{token}' is not a partial file of this tool")
        try:
            spot = self.locate(key, follow=False)
        except (Absent, Blocked):
            return
        with spot:
            try:
                os.unlink(token, dir_fd=spot.fd)
            except FileNotFoundError:
                pass

    def delete(self, key: str, etag: str | None = None) -> None:
        """Remove the file at `key`; a symlink there is removed itself, never what it names. With
        `etag`, a file that is no longer that one (another inode) is kept (Changed)."""
        try:
            spot = self.locate(key, follow=False)
        except (Absent, Blocked):
            raise NotFound(f"'{self.name}:{key}' does not exist") from None
        with spot:
            self.refuse_guarded(key, spot)
            if spot.is_a(stat.S_ISLNK):
                linked = self.find(key)  # refuses a link that leads outside, loops or leads into the config directory
                if linked is not None:
                    linked.close()
            elif etag and spot.st is not None and identity(spot.st) != etag:
                raise Changed(f"'{self.name}:{key}' changed after it was read, so it was not deleted")
            try:
                os.unlink(spot.name, dir_fd=spot.fd)
            except FileNotFoundError:
                raise NotFound(f"'{self.name}:{key}' does not exist") from None
