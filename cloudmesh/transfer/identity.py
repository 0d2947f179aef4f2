"""Where objects really live: the checks that keep a transfer from writing onto its own source,
whatever the storages are called, however their endpoints are spelled, and through aliases
(symlinks, nested roots). Each storage says where an object lives (Storage.place)."""
import hashlib
import secrets
from typing import Iterator

from cloudmesh.transfer import location
from cloudmesh.transfer.errors import UsageError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.planner import Item, Page
from cloudmesh.transfer.providers import ObjectInfo, Storage


def inside(path: str, folder: str) -> bool:
    """Whether `path` lies under `folder` ('' is the root of a storage, '/' of a disk)."""
    return not folder or folder == "/" or path.startswith(folder.rstrip("/") + "/")


def probe(source: Storage, target: Storage, dst: Location, recursive: bool) -> bool:
    """Whether two storages that may be one service are: an empty object written at the target
    is looked for at the source, then deleted. It lies beside the target (inside it, for a folder)."""
    folder = dst.path if recursive or dst.folder else dst.path.rpartition("/")[0]
    key = location.join(folder, f".cmtransfer-probe-{secrets.token_hex(8)}")
    target.put(key, b"", ObjectInfo(key=key, size=0), hashlib.md5(b"").digest())
    try:
        return source.stat(key) is not None
    finally:
        target.delete(key)

def refuse_overlap(pages: Iterator[Page], source: Storage, target: Storage) -> Iterator[Page]:
    """Refuse a page in which an object would land on itself or on another object of the page,
    judged by where each really lives (an alias, nested roots, another spelling of an endpoint),
    before any of its objects is written."""
    for page in pages:
        refuse_page(page.items, source, target)
        yield page

def refuse_page(items: list[Item], source: Storage, target: Storage) -> None:
    """Each object's place is its folder's, looked up once per folder, and its name: a symlink
    as the last component cannot make two objects one (a write replaces the link, and a copy
    through a linked source file writes the bytes it read), folders on the way can."""
    folders: dict[tuple[Storage, str], str] = {}

    def place(storage: Storage, key: str) -> str:
        folder, _, name = key.rpartition("/")
        if (storage, folder) not in folders:
            folders[storage, folder] = storage.place(folder)[1]
        return location.join(folders[storage, folder], name)

    sources = {place(source, item.source.key): item for item in items}
    for item in items:
        hit = sources.get(place(target, item.target_key))
        if hit is item:
            raise UsageError(f"'{source.name}:{item.source.key}' would be copied onto itself "
                             f"('{target.name}:{item.target_key}' is the same object)")
        if hit is not None:
            raise UsageError(f"'{target.name}:{item.target_key}' is the source object "
                             f"'{source.name}:{hit.source.key}' of this transfer, which it would overwrite")
