"""The engine on local disk: memory slots are never lost, whatever fails, and failures are recorded."""
import os
import time

from cloudmesh.transfer.engine import Engine, Lease
from cloudmesh.transfer.options import TransferConfig
from cloudmesh.transfer.errors import TransferError
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.planner import stream
from cloudmesh.transfer.providers import MiB
from cloudmesh.transfer.providers.local import LocalStorage
from cloudmesh.transfer.records.sqlite import SQLiteRecords


class FailingPart:
    """Wraps a real local upload; part 2 fails, the others are slow, so parts are still queued."""

    token, uploaded, keeps_parts = None, {}, False

    def __init__(self, upload):
        self.upload = upload

    def put_part(self, number, offset, data, md5):
        time.sleep(0.05)
        if number == 2:
            raise TransferError("part 2 refused")
        self.upload.put_part(number, offset, data, md5)

    def complete(self, md5):
        self.upload.complete(md5)

    def abort(self):
        self.upload.abort()


class FlakyTarget(LocalStorage):
    def begin(self, key, source):
        return FailingPart(super().begin(key, source))


def planned(tmp_path, source, target):
    """A recorded plan of a folder copy from `source` to `target`, as api.Transfer makes it."""
    records = SQLiteRecords(tmp_path / "records.db")
    items = [item for page in stream(source, Location("src", ""), target, Location("dst", ""), recursive=True)
             for item in page.items]
    records.create({"id": "t", "source": "src:", "target": "dst:", "copy": True, "recursive": True,
                    "route": "local->local", "owner": "o"},
                   [{"path": i.path, "source_key": i.source.key, "target_key": i.target_key, "size": i.source.size}
                    for i in items])
    return records, items


def test_a_failed_part_leaves_every_memory_slot_free_and_no_partial_file(tmp_path):
    source, target = LocalStorage("src", tmp_path / "src"), FlakyTarget("dst", tmp_path / "dst")
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    for name in ("a.bin", "b.bin"):
        (tmp_path / "src" / name).write_bytes(os.urandom(12 * MiB))
    records, items = planned(tmp_path, source, target)
    engine = Engine(source, target, records, TransferConfig(parallel=2, chunksize=1 * MiB))

    assert engine.run("t", items, move=False, lease=Lease(records, "t", "o")) == "failed"

    assert all(engine.parts.places.acquire(blocking=False) for _ in range(2))
    status = records.status("t")
    assert status["objects_failed"] == 2 and {e["message"] for e in status["errors"]} == {"part 2 refused"}
    assert list((tmp_path / "dst").iterdir()) == []


class CountingReader:
    """Wraps a real local reader and counts the bytes read from the source."""

    def __init__(self, reader, counter):
        self.reader, self.counter = reader, counter
        self.content_type, self.metadata, self.md5 = reader.content_type, reader.metadata, reader.md5

    def read(self, size):
        data = self.reader.read(size)
        self.counter.append(len(data))
        return data

    def close(self):
        self.reader.close()


def test_reading_stops_soon_after_a_part_fails(tmp_path):
    read = []

    class CountingSource(LocalStorage):
        def open(self, key, offset=0, length=None):
            return CountingReader(super().open(key, offset, length), read)

    source, target = CountingSource("src", tmp_path / "src"), FlakyTarget("dst", tmp_path / "dst")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(64 * MiB))
    records, items = planned(tmp_path, source, target)

    assert Engine(source, target, records, TransferConfig(parallel=2, chunksize=1 * MiB)).run("t", items, False, Lease(records, "t", "o")) == "failed"
    assert sum(read) <= 8 * MiB
