"""Operations on configured storages that are not transfers: listing, deleting, checking a copy,
and the configuration itself. `Transfer` (api.py) runs transfers on top of these."""
from __future__ import annotations

import itertools
from pathlib import Path

from cloudmesh.transfer import check, location
from cloudmesh.transfer import config as settings
from cloudmesh.transfer.errors import NotFound, UsageError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.providers import Folder, ObjectInfo, Storage, open_storage
from cloudmesh.transfer.records.base import iso
from cloudmesh.transfer.retry import Retry


def row(name: str, entry: ObjectInfo | Folder) -> dict:
    """A listed object, or a sub-folder (named with a trailing '/', without details), as `list` shows it."""
    if isinstance(entry, Folder):
        return {"name": f"{name}/", "size": None, "modified": None, "md5": None}
    return {"name": name, "size": entry.size, "modified": iso(entry.mtime), "md5": entry.md5}


class Storages:
    """The configured storages, each opened once (with `retry` for its requests) when first named."""

    def __init__(self, retry: Retry = Retry()):
        self.retry = retry
        self._config = None
        self._opened: dict[str, Storage] = {}

    def storage(self, name: str) -> Storage:
        """The provider for a configured storage name, opened once per Transfer."""
        if self._config is None:
            self._config = settings.load_storages()
        if name not in self._opened:
            self._opened[name] = open_storage(settings.storage_config(name, self._config), self.retry)
        return self._opened[name]

    def configure(self, file: str | None = None) -> dict:
        """Record `file` as the default source and target when given; return the current
        configuration (defaults and storages) with every secret masked."""
        if file:
            settings.save_defaults(settings.read_defaults(Path(file).expanduser()))
        self._config = settings.load_storages()
        return {
            "defaults": settings.load_defaults(),
            "storages": {name: {"kind": s.kind, **settings.masked(s.settings)} for name, s in self._config.items()},
        }

    def list(self, target: str, recursive: bool = False, limit: int | None = None) -> list[dict]:
        """The objects under a path; without `recursive`, its direct files and sub-folders, read one
        level deep (Storage.entries), not the whole subtree. At most `limit` rows: a caller that
        asks for one more than it shows learns whether there are more."""
        where = Location.parse(target)
        storage = self.storage(where.storage)
        single = None if where.folder else storage.stat(where.path)  # 'x/' is the folder, not an object x
        if single:
            found = [single]
        else:
            found = storage.list(where.path) if recursive else storage.entries(where.path)
        rows = []
        for entry in itertools.islice(found, limit):
            name = location.basename(entry.key) if single else entry.key[len(where.path):].lstrip("/")
            rows.append(row(name, entry))
        if not rows and not single and not storage.is_folder(where.path):
            raise NotFound(f"'{where}' does not exist")
        return rows

    def delete(self, target: str, recursive: bool = False) -> list[str]:
        """Delete a file, or with `recursive` every object under a folder; returns the keys."""
        where = Location.parse(target)
        storage = self.storage(where.storage)
        if storage.stat(where.path):
            keys = [where.path]
        elif recursive:
            keys = [info.key for info in storage.list(where.path)]
            if not keys and not storage.is_folder(where.path):
                raise NotFound(f"'{where}' does not exist")
        elif storage.is_folder(where.path):
            raise UsageError(f"'{where}' is a folder; add -r to delete everything under it")
        else:
            raise NotFound(f"'{where}' does not exist")
        for key in keys:
            storage.delete(key)
        return keys

    def check(self, source: str, target: str, recursive: bool = False, download: bool = False) -> dict:
        """Compare a source and a target object by object, as a user's proof that a copy is complete:
        by size and the checksums both storages keep (local files are read), or with `download` by
        reading both. The report (check.check) names what is missing, extra, different or unproven;
        `ok` is True only when there is nothing of these."""
        src, dst = Location.parse(source), Location.parse(target)
        source_storage, target_storage = self.storage(src.storage), self.storage(dst.storage)
        target_storage.is_folder(dst.path)  # wrong credentials, a missing bucket: one error, before any object
        return check.check(source_storage, src, target_storage, dst, recursive, download)
