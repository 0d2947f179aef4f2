"""Planning: which source objects a transfer covers, where each lands, and which can be skipped.

A folder's contents land under the target path without an extra level of nesting (as rclone
copies); a single file lands at the target path, or inside it when that names a folder.
`--include`/`--exclude` globs match the path relative to the source folder. With `--sync`, an
object whose target already holds the same bytes (see compare.py), or with `--compare=mtime` the
same size and a time no older, is skipped.
"""
import fnmatch
from dataclasses import dataclass, field
from typing import Iterator

from cloudmesh.transfer import location
from cloudmesh.transfer.compare import Reading, compare
from cloudmesh.transfer.errors import NotFound, UsageError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.march import Lookup
from cloudmesh.transfer.providers import ObjectInfo, Storage
from cloudmesh.transfer.records.base import ObjectRow

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
    record: ObjectRow | None = None
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


@dataclass
class Page:
    """Objects planned together from one page of the source's listing, with the listing's cursor
    after them (None after the last page). `lone` is a single file's plan; `recorded` pages come
    from the records of a resumed transfer, not from a listing."""

    items: list[Item]
    cursor: str | None
    lone: bool = False
    recorded: bool = False


def stream(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool,
           selection: Selection = Selection(), cursor: str | None = None) -> Iterator[Page]:
    """The objects to transfer a page at a time, in key order, filtered by the selection and marked
    `skip` where in sync; with `cursor`, the listing goes on from there (for a resumed transfer)."""
    judge = Judge(source, target, dst, selection.sync) if selection.sync else None
    for page in candidates(source, src, target, dst, recursive, cursor):
        page.items = [item for item in page.items if selection.wants(item.path)]
        if judge:
            judge.mark(page.items, page.lone)
        yield page


def candidates(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool,
               cursor: str | None = None) -> Iterator[Page]:
    """Every source object a transfer covers, a page at a time: a folder's listing with -r (from
    `cursor` on), else (or when the folder holds nothing) a single file."""
    if recursive:
        found = cursor is not None
        for infos, after in source.pages(src.path, cursor):
            found = found or bool(infos)
            if found:
                yield Page([listed(info, src, dst) for info in infos], after)
        if found:
            return
    single = source.stat(src.path)
    if single is None:
        if source.is_folder(src.path):
            if recursive:
                yield Page([], None)
                return
            raise UsageError(f"'{src}' is a folder; add -r to copy it recursively")
        raise NotFound(f"'{src}' does not exist")
    name = location.basename(src.path)
    into_folder = recursive or dst.folder or target.is_folder(dst.path)
    yield Page([Item(name, single, location.join(dst.path, name) if into_folder else dst.path)], None, lone=True)


def listed(info: ObjectInfo, src: Location, dst: Location) -> Item:
    """A listed object of the source folder, landing at the same path under the target folder."""
    relative = info.key[len(src.path) + 1:] if src.path else info.key
    return Item(relative, info, f"{dst.path}/{relative}" if dst.path else relative)


class Judge:
    """Marks planned items `skip` whose target already matches: compared with the target's listing
    as both stream (a merge, see march.py), or for a single file with the object itself. `reading`
    says which objects a checksum comparison may read where the storages keep nothing that compares."""

    def __init__(self, source: Storage, target: Storage, dst: Location, mode: str, reading: Reading = Reading.ANY):
        self.source, self.target, self.dst, self.mode, self.reading = source, target, dst, mode, reading
        self.listed: Lookup | None = None

    def mark(self, items: list[Item], lone: bool = False) -> None:
        for item in items:
            there = self.target.stat(item.target_key) if lone else self.lookup().get(item.target_key)
            if there is None or there.size != item.source.size:
                continue
            if self.mode == "mtime":
                item.skip = item.unproven = there.mtime is not None and item.source.mtime is not None \
                    and there.mtime + 1 >= item.source.mtime
            else:
                item.skip = compare(self.source, item.source, self.target, there, self.reading).same is True

    def lookup(self) -> Lookup:
        if self.listed is None:
            self.listed = Lookup(self.target.list(self.dst.path))
        return self.listed
