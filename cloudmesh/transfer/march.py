"""A merge of sorted listings, as rclone's march: the objects of a listing looked up by key in
ascending order, read only as far as the keys asked, so that matching two trees of any size
holds one listed object at a time instead of a dict of the whole tree."""
from typing import Iterable

from cloudmesh.transfer.providers import ObjectInfo


class Lookup:
    """Finds objects of a listing sorted by key, for keys asked in ascending order."""

    def __init__(self, listing: Iterable[ObjectInfo]):
        self.listing = iter(listing)
        self.head: ObjectInfo | None = None
        self.asked: str | None = None
        self.ended = False

    def get(self, key: str) -> ObjectInfo | None:
        """The listed object at `key`, or None when the listing has none there. A key asked below
        the last one is not looked for (None): a caller that must know looks it up itself."""
        if self.asked is not None and key < self.asked:
            return None
        self.asked = key
        while not self.ended and (self.head is None or self.head.key < key):
            self.head = next(self.listing, None)
            self.ended = self.head is None
        return self.head if self.head is not None and self.head.key == key else None
