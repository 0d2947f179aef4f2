"""Planning: which source objects a transfer covers, where each lands, and which can be skipped.

A folder's contents land under the target path without an extra level of nesting (as rclone
copies); a single file lands at the target path, or inside it when that names a folder.
`--include`/`--exclude` globs match the path relative to the source folder. With `--sync`, an
object whose target already holds the same bytes (see compare.py), or with `--compare=mtime` the
same size and a time no older, is skipped.
"""
import fnmatch
from dataclasses import dataclass, field

from cloudmesh.transfer import location
from cloudmesh.transfer.compare import Reading, compare
from cloudmesh.transfer.errors import NotFound, UsageError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.providers import ObjectInfo, Storage

SYNC_MODES = ("checksum", "mtime")


@dataclass
class Item:
    """One planned object: its path relative to the transfer's source, and where it goes.
    `skip` is True when the target already holds the same object, and `unproven` when that was
    judged by time alone; `record` is the object's row when a transfer is resumed (its state,
    upload token and part size)."""

    path: str
    source: ObjectInfo
    target_key: str
    skip: bool = False
    record: dict | None = None
    unproven: bool = False


@dataclass
class Selection:
    """Which objects to transfer: glob filters, and whether to skip objects already in place."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    sync: str | None = None

    def __post_init__(self):
        if self.sync not in (None, *SYNC_MODES):
            raise UsageError(f"--sync compares by {' or '.join(SYNC_MODES)}, not '{self.sync}'")

    def wants(self, path: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(path, glob) for glob in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, glob) for glob in self.exclude)


def plan(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool,
         selection: Selection = Selection()) -> list[Item]:
    """The objects to transfer, filtered by the selection and marked `skip` where in sync."""
    items = [item for item in candidates(source, src, target, dst, recursive) if selection.wants(item.path)]
    if selection.sync and items:
        mark_in_sync(items, source, target, dst, selection.sync)
    return items


def candidates(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool) -> list[Item]:
    if recursive:
        items = []
        for info in source.list(src.path):
            relative = info.key[len(src.path) + 1:] if src.path else info.key
            items.append(Item(relative, info, f"{dst.path}/{relative}" if dst.path else relative))
        if items:
            return items
    single = source.stat(src.path)
    if single is None:
        if source.is_folder(src.path):
            if recursive:
                return []
            raise UsageError(f"'{src}' is a folder; add -r to copy it recursively")
        raise NotFound(f"'{src}' does not exist")
    name = location.basename(src.path)
    into_folder = recursive or dst.folder or target.is_folder(dst.path)
    return [Item(name, single, location.join(dst.path, name) if into_folder else dst.path)]


def mark_in_sync(items: list[Item], source: Storage, target: Storage, dst: Location, mode: str,
                 reading: Reading = Reading.ANY) -> None:
    """Set `skip` on every item whose target object already matches it; `reading` says which
    objects a checksum comparison may read where the storages keep nothing that compares."""
    if len(items) == 1:
        landed = target.stat(items[0].target_key)
        existing = {landed.key: landed} if landed else {}
    else:
        existing = {info.key: info for info in target.list(dst.path)}
    for item in items:
        there = existing.get(item.target_key)
        if there is None or there.size != item.source.size:
            continue
        if mode == "mtime":
            item.skip = item.unproven = there.mtime is not None and item.source.mtime is not None \
                and there.mtime + 1 >= item.source.mtime
        else:
            item.skip = compare(source, item.source, target, there, reading).same is True
