"""The stream of a transfer's objects into the engine.

A transfer is recorded as soon as its first page is planned; then each page of the source's
listing is planned and recorded, with the listing's cursor after it, before its objects go on to
the engine, whose bounded executor pulls them as places free up. So a transfer holds about a page
of objects whatever the size of its source, the first object starts once the first page is
listed, the records never hold an update for an object they do not know, and a crash at any
moment leaves a record that `resume` finishes: it settles the recorded objects, then lists on
from the cursor.
"""
from dataclasses import replace
from typing import Iterable, Iterator

from cloudmesh.transfer.compare import Reading
from cloudmesh.transfer.limits import LIST_PAGE
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.march import Lookup
from cloudmesh.transfer.planner import Item, Judge, Page, Selection, stream
from cloudmesh.transfer.progress import Progress
from cloudmesh.transfer.providers import Resumable, Storage
from cloudmesh.transfer.records import Records
from cloudmesh.transfer.records.base import ObjectRow, ObjectState


def row_of(item: Item) -> dict:
    """A planned object as the records keep it."""
    return {"path": item.path, "source_key": item.source.key, "target_key": item.target_key,
            "size": item.source.size, "etag": item.source.etag, "mtime": item.source.mtime}


def recorded(records: Records, transfer_id: str, pages: Iterable[Page], progress: Progress) -> Iterator[Item]:
    """The objects of `pages`, each listed page recorded (with its cursor) before its objects are
    yielded, and each page counted into the progress totals."""
    for page in pages:
        if not page.recorded:
            records.add_objects(transfer_id, [row_of(item) for item in page.items], page.cursor,
                                last=page.cursor is None)
        progress.grow(sum(item.source.size for item in page.items if not item.skip), len(page.items))
        yield from page.items


def resumed(records: Records, status: dict, source: Storage, target: Storage) -> Iterator[Page]:
    """The pages of a resumed transfer: its recorded objects that are not settled, then, when its
    listing had not ended, the rest of its source from the recorded cursor on."""
    src, dst = Location.parse(status["source"]), Location.parse(status["target"])
    yield from unsettled(records, status["id"], source, target, src, dst, status["recursive"])
    if status["listing"]:
        yield from stream(source, src, target, dst, status["recursive"], Selection(**status["selection"]),
                          records.cursor(status["id"]))


def unsettled(records: Records, transfer_id: str, source: Storage, target: Storage, src: Location,
              dst: Location, recursive: bool) -> Iterator[Page]:
    """The recorded objects still to settle, a page at a time, checked against the source as it is
    now: its listing is merged with the records (both in key order; an object the merge misses is
    looked up). One gone is failed (or done, when a move had copied it); one changed since is
    copied afresh; one that a killed run finished without recording it is found at the target."""
    now = Lookup(source.list(src.path)) if recursive else None
    judge = Judge(source, target, dst, "checksum", Reading.CHEAP)
    for rows in records.unsettled(transfer_id, LIST_PAGE):
        items = []
        for row in rows:
            info = (now and now.get(row.source_key)) or source.stat(row.source_key)
            if info is None:
                state, message = (ObjectState.DONE, None) if row.state == ObjectState.COPIED else \
                    (ObjectState.FAILED, "the source no longer exists")
                records.update_object(transfer_id, row.path, state=state, message=message)
                continue
            if (info.size, info.etag, info.mtime) != (row.size, row.etag, row.mtime):
                discard_upload(target, row)
                records.update_object(transfer_id, row.path, size=info.size, etag=info.etag, mtime=info.mtime,
                                      upload=None, part_size=None, state=ObjectState.PENDING)
                row = replace(row, upload=None, part_size=None, state=ObjectState.PENDING)
            items.append(Item(row.path, info, row.target_key, record=row))
        pending = [item for item in items if item.record.state == ObjectState.PENDING]
        judge.mark(pending, lone=not recursive)
        for item in pending:
            if item.skip:
                discard_upload(target, item.record)
        yield Page(items, None, recorded=True)


def discard_upload(target: Storage, row: ObjectRow) -> None:
    """Discard the partial upload an object's record names, where the target keeps one."""
    if row.upload and isinstance(target, Resumable):
        target.discard_upload(row.target_key, row.upload)
