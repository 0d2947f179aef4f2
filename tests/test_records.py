"""One contract for every transfer-record store (the Records interface of records/base.py), run on
each: SQLite always, and MongoDB on mongomock, or on a real server when CMS_TRANSFER_TEST_MONGO_URL
is set (`CMS_TRANSFER_TEST_MONGO_URL=mongodb://host:27017 make test-records`; each test then uses
a database of its own and drops it). After the contract: what only one store has (SQLite's file,
MongoDB's indexes, compare-and-swap and errors), and open_records' choice of store."""
import contextlib
import functools
import os
import random
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mongomock
import pymongo
import pytest
from mongomock.collection import Collection as MockCollection
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from cloudmesh.transfer import limits
from cloudmesh.transfer.errors import Conflict, ConfigError, IdInUse, NotFound, RecordsError, TransferError
from cloudmesh.transfer.records import open_records
from cloudmesh.transfer.records import mongo as mongo_module
from cloudmesh.transfer.records.base import LEASE, STATES, Sample
from cloudmesh.transfer.records.mongo import MongoRecords, connect, translate
from cloudmesh.transfer.records.sqlite import SQLiteRecords

REAL_MONGO = os.environ.get("CMS_TRANSFER_TEST_MONGO_URL")
OBJECT_COLUMNS = {"transfer_id", "seq", "path", "source_key", "target_key", "size", "state", "bytes_done", "md5",
                  "method", "proof", "message", "warning", "etag", "mtime", "upload", "part_size"}


def transfer(tid: str, route: str = "local->awss3", owner: str | None = None, copy: bool = True) -> dict:
    return {"id": tid, "source": "local:src", "target": "awss3:dst", "route": route, "copy": copy,
            "recursive": True, "owner": owner or f"owner-of-{tid}"}


def objects(*sizes: int) -> list[dict]:
    return [{"path": f"f{i}", "source_key": f"src/f{i}", "target_key": f"dst/f{i}", "size": size, "etag": f"e{i}",
             "mtime": 1.5 + i} for i, size in enumerate(sizes)]


def dead_pid() -> int:
    """The id of a process of this host that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# The stores. A Backend opens handles on one store (as several `cms` processes would) and can set
# a transfer's stored fields directly, to stage a dead owner or a known start time.


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: Path):
        self.path, self.handles = path, []

    def open(self) -> SQLiteRecords:
        handle = SQLiteRecords(self.path)
        self.handles.append(handle)
        return handle

    def poke(self, tid: str, **fields) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            db.execute(f"UPDATE transfers SET {assignments} WHERE id = ?", (*fields.values(), tid))

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


class MongoBackend:
    """A fresh database: on mongomock, or on the server at CMS_TRANSFER_TEST_MONGO_URL."""

    name = "mongo"

    def __init__(self, url: str | None):
        self.url, self.handles = url, []
        self.dbname = f"cms_transfer_test_{uuid.uuid4().hex[:12]}"
        self.client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) if url else mongomock.MongoClient()
        self.db = self.client[self.dbname]

    def open(self) -> MongoRecords:
        if self.url:  # a client of its own, as another process would have
            client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)
            handle = MongoRecords(client[self.dbname], where="test server", client=client)
        else:
            handle = MongoRecords(self.db)
        self.handles.append(handle)
        return handle

    def poke(self, tid: str, **fields) -> None:
        self.db["transfers"].update_one({"_id": tid}, {"$set": fields})

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        if self.url:
            self.client.drop_database(self.dbname)
        self.client.close()


@pytest.fixture
def atomic_mongomock(monkeypatch):
    """A MongoDB server applies each operation on a document atomically; mongomock, under threads, can
    interleave two updates of one document (it matches, then modifies in place) or read a document while
    it is being modified. Serialise its operations so that the fake keeps the guarantee the store relies
    on, and no more: a read and a later update are still two operations, as on a server."""
    lock = threading.RLock()

    def locked(method, materialise=False):
        @functools.wraps(method)
        def call(*args, **kwargs):
            with lock:
                result = method(*args, **kwargs)
                return iter(list(result)) if materialise else result
        return call

    for name in ("insert_one", "insert_many", "update_one", "update_many", "find_one_and_update", "delete_one",
                 "delete_many", "count_documents", "create_index"):
        monkeypatch.setattr(MockCollection, name, locked(getattr(MockCollection, name)))
    monkeypatch.setattr(MockCollection, "_get_dataset", locked(MockCollection._get_dataset, materialise=True))

    def bulk_write(self, requests, ordered=True):
        """mongomock's bulk_write rejects current pymongo's request objects: apply each as the
        server would, in order (the UpdateOne and DeleteMany the store sends)."""
        with lock:
            for request in requests:
                if isinstance(request, pymongo.UpdateOne):
                    self.update_one(request._filter, request._doc)
                elif isinstance(request, pymongo.DeleteMany):
                    self.delete_many(request._filter)
                else:
                    raise NotImplementedError(type(request).__name__)

    monkeypatch.setattr(MockCollection, "bulk_write", bulk_write)


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        store = SQLiteBackend(tmp_path / "records" / "transfer.db")
    else:
        if not REAL_MONGO:
            request.getfixturevalue("atomic_mongomock")
        store = MongoBackend(REAL_MONGO)
    yield store
    store.close()


@pytest.fixture
def records(backend):
    return backend.open()


# The contract: creating, reading and updating transfers and their objects.


def test_a_new_transfer_is_running_with_nothing_done(records):
    records.create(transfer("t1"), objects(10, 20))
    status = records.status("t1")
    assert (status["state"], status["objects_total"], status["objects_done"], status["bytes_total"],
            status["bytes_done"], status["finished"], status["errors"]) == ("running", 2, 0, 30, 0, None, [])
    assert (status["host"], status["pid"], status["uploads_open"], status["methods"]) == \
        (socket.gethostname(), os.getpid(), 0, {})
    assert (status["source"], status["target"], status["route"]) == ("local:src", "awss3:dst", "local->awss3")


def test_status_counts_and_errors_are_derived_from_the_objects(records):
    records.create(transfer("t1"), objects(10, 20, 30))
    records.update_object("t1", "f0", state="done", bytes_done=10, md5="aa", method="stream")
    records.update_object("t1", "f1", state="failed", bytes_done=5, message="boom")
    records.update_object("t1", "f2", state="running", bytes_done=7)
    records.finish("t1", "failed", "1 object failed")
    status = records.status("t1")
    assert status["state"] == "failed" and status["message"] == "1 object failed"
    assert (status["objects_total"], status["objects_done"], status["objects_failed"]) == (3, 1, 1)
    assert (status["bytes_total"], status["bytes_done"]) == (60, 22)
    assert status["errors"] == [{"path": "f1", "message": "boom"}]
    assert status["finished"] is not None and status["seconds"] >= 0
    assert status["copy"] is True and status["recursive"] is True


def test_status_counts_skipped_objects_methods_and_open_uploads(records):
    records.create(transfer("t1", copy=False), objects(1, 2, 3, 4, 5))
    records.update_object("t1", "f0", state="done", method="stream", bytes_done=1)
    records.update_object("t1", "f1", state="done", method="server-copy", bytes_done=2)
    records.update_object("t1", "f2", state="skipped", method="stream")
    records.update_object("t1", "f3", upload="token-3", part_size=8)  # a large object under way
    records.update_object("t1", "f4", state="done", upload="token-4")  # settled: its upload is complete
    records.update_object("t1", "f2", state="failed", message="second")
    records.update_object("t1", "f0", state="failed", message="first")
    status = records.status("t1")
    assert status["copy"] is False
    assert (status["objects_done"], status["objects_skipped"], status["objects_failed"]) == (2, 0, 2)
    assert status["methods"] == {"server-copy": 1, "stream": 2}
    assert list(status["methods"]) == ["server-copy", "stream"]
    assert status["uploads_open"] == 1
    assert status["errors"] == [{"path": "f0", "message": "first"}, {"path": "f2", "message": "second"}]
    records.update_object("t1", "f2", state="skipped", message=None)
    assert records.status("t1")["objects_skipped"] == 1


def test_objects_are_kept_in_plan_order_with_their_fields(records):
    records.create(transfer("t1"), objects(3, 1, 2))
    records.update_object("t1", "f1", state="done", md5="m")
    rows = [asdict(row) for row in records.objects("t1")]
    assert [r["path"] for r in rows] == ["f0", "f1", "f2"]
    assert (rows[1]["state"], rows[1]["md5"], rows[0]["state"]) == ("done", "m", "pending")
    assert all(set(row) == OBJECT_COLUMNS for row in rows)
    assert rows[2] == {"transfer_id": "t1", "seq": 2, "path": "f2", "source_key": "src/f2", "target_key": "dst/f2",
                       "size": 2, "state": "pending", "bytes_done": 0, "md5": None, "method": None, "proof": None,
                       "message": None, "warning": None, "etag": "e2", "mtime": 3.5, "upload": None, "part_size": None}


def test_update_object_sets_every_field_it_names_and_only_those(records):
    records.create(transfer("t1"), objects(3, 4))
    records.update_object("t1", "f0", size=30, etag="new", mtime=9.25, upload="u", part_size=5, method="stream",
                          bytes_done=6, md5="m", message="note", state="copied")
    first, second = (asdict(row) for row in records.objects("t1"))
    assert {k: first[k] for k in ("size", "etag", "mtime", "upload", "part_size", "method", "bytes_done", "md5",
                                  "message", "state")} == {
        "size": 30, "etag": "new", "mtime": 9.25, "upload": "u", "part_size": 5, "method": "stream",
        "bytes_done": 6, "md5": "m", "message": "note", "state": "copied"}
    assert second["size"] == 4 and second["state"] == "pending"
    records.update_object("t1", "f0", upload=None, part_size=None, bytes_done=0)
    first = records.objects("t1")[0]
    assert (first.upload, first.part_size, first.bytes_done, first.etag) == (None, None, 0, "new")


def test_update_objects_applies_many_changes_in_order_and_drops_parts_of_settled_objects(records):
    records.create(transfer("t1"), objects(1, 2, 3))
    records.part_done("t1", "f2", "u", 1, "m1", 1)
    records.update_objects("t1", [("f0", {"state": "failed", "message": "x"}), ("f1", {"bytes_done": 1}),
                                  ("f0", {"state": "done", "message": None}), ("f2", {"state": "done"})])
    rows = {r.path: asdict(r) for r in records.objects("t1")}
    assert (rows["f0"]["state"], rows["f0"]["message"], rows["f1"]["bytes_done"]) == ("done", None, 1)
    assert records.parts("t1", "f2", "u") == {}
    with pytest.raises(ValueError, match="unknown object fields"):
        records.update_objects("t1", [("f1", {"colour": "red"})])


def test_a_batch_writes_in_order_on_time_at_its_size_and_at_once_when_asked(records):
    """Group commit: updates wait for the batch's size or time, `sync` writes everything before
    it at once, later fields win, and close writes the rest."""
    from cloudmesh.transfer.records.batch import Batch
    records.create(transfer("t1"), objects(*range(1, 8)))
    batch = Batch(records, "t1", size=3, seconds=60)
    try:
        state = lambda: [r.state for r in records.objects("t1")]  # noqa: E731
        batch.update("f0", state="failed")
        batch.update("f0", state="done")
        assert state()[0] == "pending"
        batch.update("f1", state="done")
        batch.update("f2", state="done")  # the third object: the batch is full
        assert state()[:3] == ["done"] * 3
        batch.update("f3", state="done")
        batch.update("f4", sync=True, state="copied")
        assert state()[3:5] == ["done", "copied"]
        batch.update("f5", state="done")
    finally:
        batch.close()
    assert state()[5:] == ["done", "pending"]
    timed = Batch(records, "t1", seconds=0.05)
    try:
        timed.update("f6", state="done")
        deadline = time.monotonic() + 5
        while state()[6] != "done" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state()[6] == "done"
    finally:
        timed.close()


def test_objects_of_another_transfer_are_kept_apart(records):
    records.create(transfer("a"), objects(1, 2))
    records.create(transfer("b"), objects(5))
    records.update_object("b", "f0", state="done")
    assert [r.state for r in records.objects("a")] == ["pending", "pending"]
    assert records.status("a")["objects_done"] == 0 and records.status("b")["objects_done"] == 1
    assert records.objects("never") == []


def test_a_transfer_without_objects_is_recorded(records):
    records.create(transfer("empty"), [])
    status = records.status("empty")
    assert (status["objects_total"], status["bytes_total"], status["errors"]) == (0, 0, [])
    assert records.statistic()["by_route"] == {"local->awss3": {"transfers": 1, "bytes": 0, "objects": 0}}


def test_status_of_an_unknown_id_is_none(records):
    assert records.status("never") is None


def test_creating_an_existing_id_raises_id_in_use_and_keeps_the_first(records):
    records.create(transfer("t1"), objects(10))
    with pytest.raises(IdInUse, match=r"'t1' is already used \(running\)"):
        records.create(transfer("t1"), objects(1, 2, 3))
    assert records.status("t1")["objects_total"] == 1
    assert [r.size for r in records.objects("t1")] == [10]


def test_update_object_rejects_unknown_fields(records):
    records.create(transfer("t1"), objects(10))
    with pytest.raises(ValueError):
        records.update_object("t1", "f0", colour="red")


def test_records_are_shared_by_two_handles_on_one_store(backend):
    first, second = backend.open(), backend.open()
    first.create(transfer("t1"), objects(4))
    second.update_object("t1", "f0", state="done", bytes_done=4)
    assert first.status("t1")["objects_done"] == 1
    with pytest.raises(IdInUse):
        second.create(transfer("t1"), objects(4))


# A listed transfer: recorded at once, its objects added a page at a time with the listing's cursor.


def named(*names: str) -> list[dict]:
    return [{"path": n, "source_key": f"src/{n}", "target_key": f"dst/{n}", "size": 1} for n in names]


def test_a_transfer_recorded_before_its_listing_says_it_is_listing_until_the_last_page(records):
    records.create({**transfer("t1"), "listing": True,
                    "selection": {"include": ["*.txt"], "exclude": [], "sync": "checksum"}})
    status = records.status("t1")
    assert (status["listing"], status["objects_total"], records.cursor("t1")) == (True, 0, None)
    assert status["selection"] == {"include": ["*.txt"], "exclude": [], "sync": "checksum"}
    records.add_objects("t1", named("a", "b"), "src/b", last=False)
    records.add_objects("t1", [], "src/c", last=False)  # a page that the selection emptied still moves the cursor
    assert (records.status("t1")["listing"], records.status("t1")["objects_total"], records.cursor("t1")) == (
        True, 2, "src/c")
    records.add_objects("t1", named("d"), None, last=True)
    status = records.status("t1")
    assert (status["listing"], status["objects_total"], records.cursor("t1")) == (False, 3, None)
    assert [(r.seq, r.path) for r in records.objects("t1")] == [(0, "a"), (1, "b"), (2, "d")]


def test_a_transfer_created_with_its_objects_is_not_listing(records):
    records.create(transfer("t1"), objects(1, 2))
    assert records.status("t1")["listing"] is False
    assert records.status("t1")["selection"] == {"include": [], "exclude": [], "sync": None}


def test_a_page_listed_again_after_a_crash_keeps_the_objects_already_recorded(records):
    records.create({**transfer("t1"), "listing": True})
    records.add_objects("t1", named("a", "b"), "src/b", last=False)
    records.update_object("t1", "a", state="done", bytes_done=1)
    records.add_objects("t1", named("a", "b", "c"), None, last=True)
    rows = records.objects("t1")
    assert [(r.path, r.state) for r in rows] == [("a", "done"), ("b", "pending"), ("c", "pending")]
    assert records.status("t1")["objects_total"] == 3


def test_adding_objects_to_an_unknown_transfer_is_not_found(records):
    with pytest.raises(NotFound):
        records.add_objects("never", named("a"), None, last=True)


def test_objects_are_read_a_page_at_a_time_and_unsettled_ones_alone(records):
    records.create({**transfer("t1"), "listing": True})
    records.add_objects("t1", named(*"abcdefg"), None, last=True)
    for path, state in (("b", "done"), ("c", "skipped"), ("d", "unverified"), ("e", "failed"), ("f", "copied")):
        records.update_object("t1", path, state=state)
    assert [r.path for r in records.objects("t1", after=1, limit=3)] == ["c", "d", "e"]
    assert [r.path for r in records.objects("t1", unsettled=True)] == ["a", "e", "f", "g"]
    assert [[r.path for r in rows] for rows in records.unsettled("t1", 2)] == [["a", "e"], ["f", "g"]]
    assert records.objects("t1", limit=0) == []


def recount(rows: list[dict]) -> dict:
    """A status's totals counted afresh from the object rows."""
    settled = ("done", "skipped", "unverified")
    tally = {"objects_total": len(rows), "bytes_total": sum(r["size"] for r in rows),
             "bytes_done": sum(r["bytes_done"] for r in rows),
             "uploads_open": sum(1 for r in rows if r["upload"] and r["state"] not in settled)}
    for state in ("done", "failed", "skipped", "unverified"):
        tally[f"objects_{state}"] = sum(1 for r in rows if r["state"] == state)
    for column, name in (("method", "methods"), ("proof", "proofs")):
        values = [r[column] for r in rows if r[column] is not None]
        tally[name] = {value: values.count(value) for value in sorted(set(values))}
    return tally


def test_the_totals_of_a_status_agree_with_its_objects_after_any_changes(records):
    """Status reads counters kept as rows change (SQLite keeps them with triggers); after a random
    run of pages, outcomes, resets, size changes and uploads, they equal a recount of the rows."""
    chance = random.Random(11)
    records.create({**transfer("t1"), "listing": True})
    records.create(transfer("other"), objects(5, 6))  # another transfer's rows count only for it
    names = [f"o{n:03d}" for n in range(120)]
    for first in range(0, len(names), 40):
        records.add_objects("t1", [{**row, "size": chance.randint(0, 99)} for row in named(*names[first:first + 40])],
                            names[first + 39], last=first + 40 >= len(names))
    choices = [{"state": "done", "method": "stream", "proof": "md5", "bytes_done": 7},
               {"state": "failed", "message": "no"}, {"state": "skipped", "method": "skip", "proof": None},
               {"state": "unverified", "proof": "none", "method": "server-copy"}, {"state": "copied"},
               {"upload": "u1", "part_size": 5}, {"upload": None}, {"bytes_done": 3}, {"size": 50, "etag": "x"},
               {"method": None, "proof": None}]
    for _ in range(6):
        batch = [(chance.choice(names), dict(chance.choice(choices))) for _ in range(60)]
        records.update_objects("t1", batch)
        if chance.random() < 0.5:
            records.finish("t1", "failed")
            records.claim("t1", f"owner-{chance.random()}")  # failed and pending objects start afresh
    status = records.status("t1")
    assert {name: status[name] for name in recount([])} == recount([asdict(row) for row in records.objects("t1")])
    assert records.status("other")["objects_total"] == 2 and records.status("other")["bytes_total"] == 11
    assert records.statistic()["by_route"]["local->awss3"]["objects"] == status["objects_done"]


# finish, heartbeat, cancel and claim: the lease of a run.


def test_finish_with_an_owner_applies_only_while_that_owner_holds_the_transfer(records):
    records.create(transfer("t1", owner="first"), objects(1))
    records.finish("t1", "completed", owner="someone-else")
    assert records.status("t1")["state"] == "running"
    records.request_cancel("t1")
    records.finish("t1", "cancelled", "stopped", owner="first")
    status = records.status("t1")
    assert (status["state"], status["message"]) == ("cancelled", "stopped") and status["finished"]
    records.finish("t1", "failed", "by hand")  # without an owner: always
    assert records.status("t1")["state"] == "failed"


def test_heartbeat_says_run_then_cancel_after_a_request_then_lost_once_finished(records):
    records.create(transfer("t1", owner="first"), objects(1))
    assert records.heartbeat("t1", "first") == "run"
    assert records.heartbeat("t1", "someone-else") == "lost"
    assert records.heartbeat("never", "first") == "lost"
    records.request_cancel("t1")
    assert records.heartbeat("t1", "first") == "cancel"
    assert records.status("t1")["message"] == "cancel requested"
    records.finish("t1", "cancelled", owner="first")
    assert records.heartbeat("t1", "first") == "lost"
    assert records.status("t1")["message"] is None


def test_heartbeat_renews_the_lease_of_a_silent_owner(backend, records):
    records.create(transfer("t1", owner="first"), objects(1))
    backend.poke("t1", heartbeat=time.time() - LEASE - 1, host="elsewhere.example")
    assert records.status("t1")["state"] == "interrupted"
    assert records.heartbeat("t1", "first") == "run"
    assert records.status("t1")["state"] == "running"


def test_a_cancel_request_for_a_transfer_that_is_not_running_is_ignored(records):
    records.create(transfer("t1", owner="first"), objects(1))
    records.finish("t1", "failed", "x")
    records.request_cancel("t1")
    records.request_cancel("never")
    status = records.status("t1")
    assert (status["state"], status["message"]) == ("failed", "x")
    assert records.status("never") is None


def test_claim_refuses_a_live_owner_and_takes_over_a_dead_one_resetting_failed_objects(backend, records):
    records.create(transfer("t1", owner="first"), objects(10, 10, 10, 10))
    records.update_object("t1", "f0", state="done", bytes_done=10)
    records.update_object("t1", "f1", state="failed", message="boom", bytes_done=4)
    records.update_object("t1", "f2", bytes_done=3, message="half")
    records.update_object("t1", "f3", state="copied", bytes_done=10)
    with pytest.raises(Conflict, match="still running"):
        records.claim("t1", "second")
    with pytest.raises(NotFound, match="no transfer with id 'nope'"):
        records.claim("nope", "second")
    backend.poke("t1", pid=dead_pid())
    assert records.status("t1")["state"] == "interrupted"
    records.claim("t1", "second")
    view = records.status("t1")
    assert (view["state"], view["pid"], view["host"]) == ("running", os.getpid(), socket.gethostname())
    rows = {row.path: asdict(row) for row in records.objects("t1")}
    assert {path: row["state"] for path, row in rows.items()} == {
        "f0": "done", "f1": "pending", "f2": "pending", "f3": "copied"}
    assert (rows["f1"]["message"], rows["f1"]["bytes_done"], rows["f2"]["bytes_done"]) == (None, 0, 0)
    assert rows["f0"]["bytes_done"] == 10 and rows["f3"]["bytes_done"] == 10
    assert records.heartbeat("t1", "first") == "lost" and records.heartbeat("t1", "second") == "run"
    with pytest.raises(Conflict):
        records.claim("t1", "third")  # the new owner is this live process


def test_claim_of_a_finished_transfer_runs_it_again_and_clears_its_end(records):
    records.create(transfer("t1", owner="first"), objects(1))
    records.request_cancel("t1")
    records.finish("t1", "failed", "it broke", owner="first")
    records.claim("t1", "second")
    status = records.status("t1")
    assert (status["state"], status["finished"], status["message"]) == ("running", None, None)
    assert records.heartbeat("t1", "second") == "run"  # no cancel request is left over


def test_claim_takes_over_a_lease_gone_silent_on_another_host(backend, records):
    records.create(transfer("t1", owner="first"), objects(1))
    backend.poke("t1", host="elsewhere.example", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(Conflict, match="elsewhere.example"):
        records.claim("t1", "second")  # a fresh lease from another host: running
    backend.poke("t1", heartbeat=time.time() - LEASE - 1)
    records.claim("t1", "second")
    assert records.status("t1")["host"] == socket.gethostname()


@pytest.mark.parametrize("round_", range(3))
def test_two_claimers_racing_never_both_win(backend, round_):
    """Eight workers, each with a handle of its own, claim one interrupted transfer at once: one wins,
    the others are told it runs, and only the winner's heartbeat goes on."""
    backend.open().create(transfer("t1", owner="first"), objects(1, 2))
    backend.poke("t1", pid=dead_pid())
    handles = [backend.open() for _ in range(8)]
    start = threading.Barrier(len(handles))
    outcomes = {}

    def claim(number: int) -> None:
        start.wait(10)
        try:
            handles[number].claim("t1", f"worker-{number}")
            outcomes[number] = "won"
        except Conflict:
            outcomes[number] = "refused"
        except Exception as e:  # noqa: BLE001 - reported below
            outcomes[number] = repr(e)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [n for n, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and sorted(outcomes.values()).count("refused") == len(handles) - 1, outcomes
    assert [handles[0].heartbeat("t1", f"worker-{n}") for n in range(len(handles))].count("run") == 1
    assert handles[0].heartbeat("t1", f"worker-{winners[0]}") == "run"


# parts of a multipart upload


def test_part_done_records_each_part_and_the_bytes_done_of_the_object(records):
    records.create(transfer("t1"), objects(30, 30))
    records.part_done("t1", "f0", "upload-1", 1, "aa", 10)
    records.part_done("t1", "f0", "upload-1", 2, "bb", 20)
    assert records.parts("t1", "f0", "upload-1") == {1: "aa", 2: "bb"}
    assert records.objects("t1")[0].bytes_done == 20
    records.part_done("t1", "f0", "upload-1", 2, "cc", 20)  # a part sent again replaces its record
    assert records.parts("t1", "f0", "upload-1") == {1: "aa", 2: "cc"}
    assert records.parts("t1", "f0", "upload-2") == {}
    assert records.parts("t1", "f1", "upload-1") == {}
    assert records.parts("never", "f0", "upload-1") == {}
    records.part_done("t1", "f1", "upload-9", 1, "dd", 7)
    assert records.parts("t1", "f1", "upload-9") == {1: "dd"} and records.status("t1")["bytes_done"] == 27


# transfers, count and the derived state


def test_transfers_filters_by_state(records):
    records.create(transfer("a"), objects(1))
    records.create(transfer("b"), objects(1))
    records.finish("a", "completed")
    assert [t["id"] for t in records.transfers("completed")] == ["a"]
    assert [t["id"] for t in records.transfers("running")] == ["b"]
    assert {t["id"] for t in records.transfers()} == {"a", "b"}
    assert records.transfers("cancelled") == [] and records.transfers("no-such-state") == []


def test_transfers_are_newest_first_and_paged(backend, records):
    for tid, started in [("a", 100.0), ("b", 300.0), ("c", 200.0), ("d", 300.0), ("e", 50.0)]:
        records.create(transfer(tid), objects(1))
        records.finish(tid, "completed")
        backend.poke(tid, started=started, finished=started + 1)
    assert [t["id"] for t in records.transfers()] == ["b", "d", "c", "a", "e"]  # the same start: by id
    assert [t["id"] for t in records.transfers(limit=2)] == ["b", "d"]
    assert [t["id"] for t in records.transfers(limit=2, offset=2)] == ["c", "a"]
    assert [t["id"] for t in records.transfers(limit=2, offset=4)] == ["e"]
    assert [t["id"] for t in records.transfers(offset=3)] == ["a", "e"]
    assert records.transfers(limit=2, offset=5) == [] and records.transfers(limit=0) == []
    assert [t["id"] for t in records.transfers("completed", limit=1, offset=1)] == ["d"]
    page = records.transfers(limit=1)[0]
    assert page == records.status("b") and page["objects_total"] == 1


def test_paging_a_derived_state_counts_only_the_transfers_in_it(backend, records):
    for n, tid in enumerate(["r1", "i1", "r2", "i2", "i3"]):
        records.create(transfer(tid), objects(1))
        backend.poke(tid, started=1000.0 + n, heartbeat=time.time() if tid[0] == "r" else time.time() - LEASE - 1)
    assert [t["id"] for t in records.transfers("interrupted")] == ["i3", "i2", "i1"]
    assert [t["id"] for t in records.transfers("interrupted", limit=2, offset=1)] == ["i2", "i1"]
    assert [t["id"] for t in records.transfers("running", limit=1)] == ["r2"]
    assert [t["state"] for t in records.transfers(limit=2)] == ["interrupted", "interrupted"]
    assert (records.count("interrupted"), records.count("running"), records.count()) == (3, 2, 5)


def test_count_by_state(records):
    assert records.count() == 0 and records.count("running") == 0
    for tid, state in [("a", "completed"), ("b", "completed"), ("c", "failed"), ("d", None)]:
        records.create(transfer(tid), objects(1))
        if state:
            records.finish(tid, state)
    assert [records.count(state) for state in STATES] == [1, 0, 2, 1, 0]
    assert records.count() == 4 and records.count("no-such-state") == 0


def test_a_running_transfer_whose_owner_is_gone_reads_interrupted_everywhere(backend, records):
    records.create(transfer("dead"), objects(1))
    records.create(transfer("silent"), objects(1))
    records.create(transfer("live"), objects(1))
    backend.poke("dead", pid=dead_pid())
    backend.poke("silent", host="elsewhere.example", heartbeat=time.time() - LEASE - 1)
    assert records.status("dead")["state"] == "interrupted" and records.status("silent")["state"] == "interrupted"
    assert {t["id"] for t in records.transfers("interrupted")} == {"dead", "silent"}
    assert [t["id"] for t in records.transfers("running")] == ["live"]
    assert records.count("interrupted") == 2 and records.count("running") == 1
    assert records.statistic()["transfers"]["interrupted"] == 2


# statistic


def test_statistic_totals_by_state_and_by_route(records):
    records.create(transfer("a", "local->awss3"), objects(10, 20))
    records.update_object("a", "f0", state="done", bytes_done=10)
    records.update_object("a", "f1", state="done", bytes_done=20)
    records.finish("a", "completed")
    records.create(transfer("b", "awss3->azureblob"), objects(5, 7))
    records.update_object("b", "f0", state="done", bytes_done=5)
    records.update_object("b", "f1", state="failed", bytes_done=3, message="x")
    records.finish("b", "failed")
    records.create(transfer("c", "local->awss3"), objects(100))
    stats = records.statistic()
    assert stats["transfers"] == {"running": 1, "interrupted": 0, "completed": 1, "failed": 1, "cancelled": 0}
    assert stats["by_route"] == {"awss3->azureblob": {"transfers": 1, "bytes": 5, "objects": 1},
                                 "local->awss3": {"transfers": 2, "bytes": 30, "objects": 2}}
    assert list(stats["by_route"]) == ["awss3->azureblob", "local->awss3"]
    assert (stats["bytes_total"], stats["objects_total"]) == (35, 3)
    assert stats["seconds_total"] >= 0


def test_statistic_counts_every_state_and_the_time_of_finished_transfers(backend, records):
    for tid, state in [("r", None), ("i", None), ("c", "completed"), ("f", "failed"), ("x", "cancelled"),
                       ("c2", "completed")]:
        records.create(transfer(tid), objects(8))
        records.update_object(tid, "f0", state="done", bytes_done=8)
        if state:
            records.finish(tid, state)
            backend.poke(tid, started=1000.0, finished=1002.5)
    backend.poke("i", heartbeat=time.time() - LEASE - 1)
    stats = records.statistic()
    assert stats["transfers"] == {"running": 1, "interrupted": 1, "completed": 2, "failed": 1, "cancelled": 1}
    assert list(stats["transfers"]) == list(STATES)
    assert (stats["seconds_total"], stats["bytes_total"], stats["objects_total"]) == (10.0, 48, 6)
    assert stats["throughput_bytes_per_second"] == 5  # 48 bytes / 10 s, rounded
    assert set(stats) == {"transfers", "bytes_total", "objects_total", "seconds_total",
                          "throughput_bytes_per_second", "by_route", "by_day"}


def test_statistic_of_an_empty_store_is_all_zero(records):
    stats = records.statistic()
    assert stats["transfers"] == {"running": 0, "interrupted": 0, "completed": 0, "failed": 0, "cancelled": 0}
    assert (stats["bytes_total"], stats["objects_total"], stats["by_route"]) == (0, 0, {})
    assert stats["throughput_bytes_per_second"] == 0 and stats["seconds_total"] == 0
    assert len(stats["by_day"]) == limits.STATISTIC_DAYS and set(stats["by_day"].values()) == {0}


def day(days_ago: int) -> str:
    return (datetime.now(timezone.utc).date() - timedelta(days=days_ago)).isoformat()


def test_statistic_by_day_sums_the_bytes_done_by_the_day_transfers_started_every_day_shown(backend, records):
    """The last STATISTIC_DAYS days up to today (UTC), oldest first, each present; a transfer's bytes
    done count on the day it started; older transfers count nowhere."""
    for tid, sizes, days_ago in [("today", (10, 20), 0), ("also-today", (5,), 0), ("earlier", (7, 9), 3),
                                 ("too-old", (1000,), limits.STATISTIC_DAYS)]:
        records.create(transfer(tid), objects(*sizes))
        records.update_object(tid, "f0", state="done", bytes_done=sizes[0])
        if days_ago:
            backend.poke(tid, started=time.time() - days_ago * 86400)
    records.update_object("today", "f1", state="failed", bytes_done=3, message="x")  # not done: not counted
    stats = records.statistic()
    assert list(stats["by_day"]) == [day(n) for n in range(limits.STATISTIC_DAYS - 1, -1, -1)]
    assert stats["by_day"][day(0)] == 15 and stats["by_day"][day(3)] == 7
    assert sum(stats["by_day"].values()) == 22
    assert stats["bytes_total"] == 22 + 1000  # by_route counts every transfer, as before


# progress samples


def test_samples_are_read_in_time_order_and_each_transfer_keeps_its_own(records):
    records.create(transfer("t1"), objects(10))
    records.create(transfer("t2"), objects(10))
    assert records.samples("t1") == [] and records.samples("never") == []
    for sample in [Sample(3.0, 30, 1), Sample(1.0, 10, 0), Sample(2.0, 20, 0)]:
        assert records.add_sample("t1", sample) is False
    records.add_sample("t2", Sample(1.5, 99, 1))
    assert records.samples("t1") == [Sample(1.0, 10, 0), Sample(2.0, 20, 0), Sample(3.0, 30, 1)]
    assert records.samples("t2") == [Sample(1.5, 99, 1)]


@pytest.mark.parametrize("held", [5, 6])
def test_samples_past_the_maximum_are_thinned_keeping_the_first_and_the_newest(records, monkeypatch, held):
    monkeypatch.setattr(limits, "SAMPLES_MAX", held)
    records.create(transfer("t1"), objects(10))
    records.create(transfer("t2"), objects(10))
    records.add_sample("t2", Sample(0.5, 1, 0))
    thinned = [records.add_sample("t1", Sample(float(n), n, 0)) for n in range(held + 1)]
    assert thinned == [False] * held + [True]
    kept = records.samples("t1")
    assert kept[0] == Sample(0.0, 0, 0) and kept[-1] == Sample(float(held), held, 0) and len(kept) <= held
    assert [s.at for s in kept] == sorted({*range(0, held + 1, 2), held})  # every other one, and the newest
    assert records.samples("t2") == [Sample(0.5, 1, 0)]  # another transfer's samples are not thinned
    assert records.add_sample("t1", Sample(held + 1.0, held + 1, 0)) is False


# SQLite only: its file


def test_sqlite_records_are_shared_by_two_handles_on_one_file(tmp_path):
    first, second = SQLiteRecords(tmp_path / "t.db"), SQLiteRecords(tmp_path / "t.db")
    try:
        first.create(transfer("t1"), objects(4))
        second.update_object("t1", "f0", state="done", bytes_done=4)
        assert first.status("t1")["objects_done"] == 1
        with pytest.raises(IdInUse):
            second.create(transfer("t1"), objects(4))
    finally:
        first.close()
        second.close()


def test_sqlite_file_is_private_in_wal_mode_and_its_folder_is_created(tmp_path):
    path = tmp_path / "new" / "folder" / "transfer.db"
    store = SQLiteRecords(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_sqlite_database_of_the_first_release_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript("""
            CREATE TABLE transfers (id TEXT PRIMARY KEY, state TEXT NOT NULL, source TEXT NOT NULL,
                target TEXT NOT NULL, route TEXT NOT NULL, copy INTEGER NOT NULL, recursive INTEGER NOT NULL,
                started REAL NOT NULL, finished REAL, host TEXT, pid INTEGER, message TEXT);
            CREATE TABLE objects (transfer_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,
                source_key TEXT NOT NULL, target_key TEXT NOT NULL, size INTEGER NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending', bytes_done INTEGER NOT NULL DEFAULT 0, md5 TEXT,
                method TEXT, message TEXT, PRIMARY KEY (transfer_id, path));
            INSERT INTO transfers VALUES ('old', 'completed', 'local:a', 'awss3:b', 'local->awss3', 1, 1,
                100.0, 104.0, 'h', 1, NULL);
            INSERT INTO objects (transfer_id, seq, path, source_key, target_key, size, state, bytes_done)
                VALUES ('old', 0, 'f', 'a/f', 'b/f', 9, 'done', 9);
        """)
    store = SQLiteRecords(path)
    try:
        status = store.status("old")
        assert (status["state"], status["objects_done"], status["bytes_done"], status["seconds"]) == \
            ("completed", 1, 9, 4.0)
        assert set(asdict(store.objects("old")[0])) == OBJECT_COLUMNS
        store.claim("old", "new-owner")  # the lease columns work on the old file
        assert store.heartbeat("old", "new-owner") == "run"
    finally:
        store.close()


def test_sqlite_database_without_the_samples_table_gains_it_and_keeps_its_rows(tmp_path):
    path = tmp_path / "previous.db"
    store = SQLiteRecords(path)
    store.create(transfer("old"), objects(4))
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE samples")  # as the release before samples left it
    store = SQLiteRecords(path)
    try:
        assert store.status("old")["objects_total"] == 1 and store.samples("old") == []
        store.add_sample("old", Sample(1.0, 4, 1))
        assert store.samples("old") == [Sample(1.0, 4, 1)]
        plan = " ".join(row[-1] for row in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT at FROM samples WHERE transfer_id = 'old' ORDER BY at"))
        assert "samples_at" in plan
    finally:
        store.close()


# MongoDB only: indexes, compare-and-swap, errors


@pytest.fixture
def mongo(request):
    if not REAL_MONGO:
        request.getfixturevalue("atomic_mongomock")
    store = MongoBackend(REAL_MONGO)
    yield store
    store.close()


def test_mongo_indexes_serve_the_queries_and_keep_objects_and_parts_unique(mongo):
    mongo.open()
    keys = {name: {tuple(tuple(k) for k in spec["key"]): bool(spec.get("unique"))
                   for spec in mongo.db[name].index_information().values()}
            for name in ("transfers", "objects", "parts")}
    assert keys["objects"][(("transfer_id", 1), ("path", 1))] is True
    assert keys["objects"][(("transfer_id", 1), ("seq", 1))] is False
    assert keys["objects"][(("transfer_id", 1), ("state", 1))] is False
    assert keys["parts"][(("transfer_id", 1), ("path", 1), ("upload", 1), ("number", 1))] is True
    assert (("state", 1), ("started", -1), ("_id", 1)) in keys["transfers"]
    assert (("transfer_id", 1), ("at", 1)) in {tuple(tuple(k) for k in spec["key"])
                                               for spec in mongo.db["samples"].index_information().values()}
    mongo.open()  # opening again finds the indexes in place


def test_mongo_views_of_many_transfers_are_built_in_batches(mongo, monkeypatch):
    store = mongo.open()
    for n in range(5):
        store.create(transfer(f"t{n}"), objects(n + 1, 2))
        store.update_object(f"t{n}", "f0", state="failed", message=f"m{n}")
        store.finish(f"t{n}", "failed")  # a settled view does not change with the clock
    whole = store.transfers()
    monkeypatch.setattr(mongo_module, "VIEW_BATCH", 2)
    assert store.transfers() == whole and len(whole) == 5
    assert {t["id"]: (t["bytes_total"], t["errors"]) for t in whole} == {
        f"t{n}": (n + 3, [{"path": "f0", "message": f"m{n}"}]) for n in range(5)}


def test_mongo_claim_is_a_compare_and_swap_when_both_read_before_either_writes(mongo, monkeypatch):
    """Both claimers judge the same dead owner before either writes; the update of the second no longer
    matches what it read, so it reads again, finds the winner alive and is refused."""
    first, second = mongo.open(), mongo.open()
    first.create(transfer("t1", owner="first"), objects(1))
    mongo.poke("t1", heartbeat=time.time() - LEASE - 1)
    both_read = threading.Barrier(2)
    waited = threading.local()
    real = mongo_module.owner_alive

    def owner_alive(row):
        alive = real(row)
        if not getattr(waited, "done", False):
            waited.done = True
            both_read.wait(10)
        return alive

    monkeypatch.setattr(mongo_module, "owner_alive", owner_alive)
    outcomes = []

    def claim(store, owner):
        try:
            store.claim("t1", owner)
            outcomes.append(("won", owner))
        except Conflict:
            outcomes.append(("refused", owner))

    threads = [threading.Thread(target=claim, args=(store, owner)) for store, owner in
               [(first, "A"), (second, "B")]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcome for outcome, _ in outcomes) == ["refused", "won"]
    winner = next(owner for outcome, owner in outcomes if outcome == "won")
    assert first.heartbeat("t1", winner) == "run" and first.heartbeat("t1", "AB".replace(winner, "")) == "lost"


def test_mongo_claim_gives_up_only_when_the_record_keeps_changing(mongo, monkeypatch):
    store = mongo.open()
    store.create(transfer("t1", owner="first"), objects(1))
    mongo.poke("t1", heartbeat=time.time() - LEASE - 1)
    real = mongo_module.owner_alive

    def owner_alive(row):  # another process renews a stale-looking lease after every read
        mongo.poke("t1", heartbeat=row["heartbeat"] - 1)
        return real(row)

    monkeypatch.setattr(mongo_module, "owner_alive", owner_alive)
    with pytest.raises(TransferError, match="kept changing"):
        store.claim("t1", "second")


def test_mongo_create_that_fails_midway_leaves_no_transfer_behind(mongo, monkeypatch):
    store = mongo.open()
    real = store.objects_.insert_many

    def half(documents, **options):  # the server fails after the first object is stored
        real(documents[:1], **options)
        raise pymongo.errors.AutoReconnect("connection lost")

    monkeypatch.setattr(store.objects_, "insert_many", half)
    with pytest.raises(TransferError):
        store.create(transfer("t1"), objects(1, 2))
    monkeypatch.undo()
    assert store.status("t1") is None and store.objects("t1") == []
    store.create(transfer("t1"), objects(1))
    assert store.status("t1")["objects_total"] == 1


def test_mongo_unreachable_server_is_one_line_naming_host_and_port_not_the_password(monkeypatch):
    with pytest.raises(TransferError) as error:
        connect({"kind": "mongo", "url": "mongodb://cms:s3cr%40t@127.0.0.1:1/db?serverSelectionTimeoutMS=300",
                 "dbname": "cloudmesh"})
    message = str(error.value)
    assert message.startswith("cannot reach the MongoDB transfer records at 127.0.0.1:1")
    assert "s3cr" not in message and "\n" not in message and not isinstance(error.value, ConfigError)
    monkeypatch.setattr(mongo_module, "TIMEOUT_MS", 300)
    with pytest.raises(TransferError) as error:
        connect({"kind": "mongo", "host": "127.0.0.1", "port": 1, "dbname": "cloudmesh", "username": "cms",
                 "password": "s3cret"})
    assert "127.0.0.1:1" in str(error.value) and "s3cret" not in str(error.value)


def test_mongo_invalid_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError, match="invalid MongoDB settings") as error:
        connect({"kind": "mongo", "url": "mongodb://cms:s3cret@127.0.0.1:notaport/db", "dbname": "cloudmesh"})
    assert "s3cret" not in str(error.value)


def test_mongo_errors_are_translated_into_one_line_without_secrets():
    auth = translate(OperationFailure("Authentication failed.", code=18), "db.example:27017", ["pw"])
    assert isinstance(auth, ConfigError) and "db.example:27017 rejected the username or password" in str(auth)
    denied = translate(OperationFailure("not authorized on cloudmesh to execute command", code=13), "h:1", [])
    assert isinstance(denied, ConfigError) and "may not use" in str(denied)
    other = translate(OperationFailure("something with pw\ninside", code=2), "h:1", ["pw"])
    assert type(other) is RecordsError and "pw" not in str(other) and "\n" not in str(other)
    gone = translate(ServerSelectionTimeoutError("h:1: [Errno 111] Connection refused, Timeout: 5s, Topology"),
                     "h:1", [])
    assert str(gone) == "cannot reach the MongoDB transfer records at h:1: [Errno 111] Connection refused"


def test_mongo_errors_in_use_become_transfer_errors(mongo, monkeypatch):
    store = mongo.open()

    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("db:27017: [Errno 111] Connection refused, Timeout: 5s")

    monkeypatch.setattr(store.transfers_, "find_one", down)
    with pytest.raises(TransferError, match="cannot reach the MongoDB transfer records"):
        store.status("t1")


# open_records: which store


class Config:
    """A config directory, and how MongoClient was called there."""

    def __init__(self, folder: Path, server):
        self.folder, self.server, self.calls, self.stores = folder, server, [], []

    def open(self, **options):
        store = open_records(**options)
        self.stores.append(store)
        return store

    def write(self, text: str) -> None:
        (self.folder / "cloudmesh.yaml").write_text(text)


@pytest.fixture
def config(tmp_path, monkeypatch):
    """An empty config directory, no selection in the environment, and MongoClient replaced by mongomock
    clients on one in-memory server that record how they were made."""
    folder = tmp_path / "config"
    folder.mkdir()
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(folder))
    for name in ("CMS_TRANSFER_RECORDS", "CMS_TRANSFER_MONGO_URL"):
        monkeypatch.delenv(name, raising=False)
    conf = Config(folder, mongomock.MongoClient())

    def client(*args, **kwargs):
        conf.calls.append((args, kwargs))
        return mongomock.MongoClient(*args, _store=conf.server._store, **kwargs)

    monkeypatch.setattr(pymongo, "MongoClient", client)
    yield conf
    for store in conf.stores:
        store.close()


STORAGE = "cloudmesh:\n  storage:\n    local:\n      cm: {kind: local}\n      default: {directory: /tmp}\n"
MONGO = ("  data:\n    mongo:\n      MONGO_HOST: 127.0.0.1\n      MONGO_PORT: '27017'\n      MONGO_DBNAME: cmsdb\n"
         "      MONGO_USERNAME: admin\n      MONGO_PASSWORD: pw\n")


@pytest.mark.parametrize("text", [None, STORAGE, "", "- a list\n", STORAGE + MONGO,
                                  STORAGE + "  transfer:\n    records: sqlite\n", "cloudmesh: [storage\n"])
def test_sqlite_is_the_default_store(config, text):
    """Also when cloudmesh.yaml cannot be read: it holds no setting then, and `status` works as before."""
    if text is not None:
        config.write(text)
    store = config.open()
    assert isinstance(store, SQLiteRecords) and store.path == config.folder / "transfer.db"
    assert config.calls == []


def test_mongo_is_chosen_in_cloudmesh_yaml_with_cloudmeshs_own_settings(config):
    config.write(STORAGE + MONGO + "  transfer:\n    records: mongo\n")
    store = config.open()
    assert isinstance(store, MongoRecords) and store.db.name == "cmsdb"
    (args, kwargs), = config.calls
    assert (kwargs["host"], kwargs["port"], kwargs["username"], kwargs["password"]) == \
        ("127.0.0.1", 27017, "admin", "pw")
    assert store.where == "127.0.0.1:27017" and "pw" in store.secrets
    store.create(transfer("t1"), objects(1))
    assert config.server["cmsdb"]["transfers"].find_one({"_id": "t1"})["state"] == "running"
    assert not (config.folder / "transfer.db").exists()


def test_mongo_url_in_cloudmesh_yaml_names_the_server_and_database(config):
    config.write(STORAGE + "  data:\n    mongo:\n      MONGO_URL: mongodb://u:p@db.example:27018/records\n"
                                 "      MONGO_DBNAME: cloudmesh\n      MONGO_PASSWORD: TBD\n"
                                 "  transfer: {records: Mongo}\n")
    store = config.open()
    assert isinstance(store, MongoRecords) and store.db.name == "records"  # the URL's database wins
    (args, kwargs), = config.calls
    assert args == ("mongodb://u:p@db.example:27018/records",) and kwargs["serverSelectionTimeoutMS"] == 5000
    assert store.where == "db.example:27018"


def test_the_environment_chooses_mongo_without_cloudmesh_yaml(config, monkeypatch):
    monkeypatch.setenv("CMS_TRANSFER_RECORDS", "mongo")
    monkeypatch.setenv("CMS_TRANSFER_MONGO_URL", "mongodb://127.0.0.1:27019/?serverSelectionTimeoutMS=100")
    store = config.open()
    assert isinstance(store, MongoRecords) and store.db.name == "cloudmesh"
    (args, kwargs), = config.calls
    assert args == ("mongodb://127.0.0.1:27019/?serverSelectionTimeoutMS=100",) and kwargs == {}


def test_the_environment_url_replaces_the_host_of_cloudmesh_yaml(config, monkeypatch):
    config.write(STORAGE + MONGO + "  transfer:\n    records: mongo\n")
    monkeypatch.setenv("CMS_TRANSFER_MONGO_URL", "mongodb://other:27017")
    store = config.open()
    (args, kwargs), = config.calls
    assert args == ("mongodb://other:27017",) and store.db.name == "cmsdb"


def test_a_mongo_url_in_the_environment_needs_no_readable_cloudmesh_yaml(config, monkeypatch):
    config.write("cloudmesh: [storage\n")
    monkeypatch.setenv("CMS_TRANSFER_RECORDS", "mongo")
    monkeypatch.setenv("CMS_TRANSFER_MONGO_URL", "mongodb://db.example:27017")
    assert isinstance(config.open(), MongoRecords)


def test_the_environment_forces_sqlite_without_reading_cloudmesh_yaml(config, monkeypatch):
    config.write("cloudmesh: [not yaml\n")
    monkeypatch.setenv("CMS_TRANSFER_RECORDS", "SQLite")
    assert isinstance(config.open(), SQLiteRecords)


def test_the_option_overrides_the_environment(config, monkeypatch):
    monkeypatch.setenv("CMS_TRANSFER_RECORDS", "mongo")
    assert isinstance(config.open(kind="sqlite"), SQLiteRecords)
    monkeypatch.setenv("CMS_TRANSFER_RECORDS", "sqlite")
    store = config.open(kind="mongo", mongo_url="mongodb://opt:1")
    assert isinstance(store, MongoRecords) and config.calls[0][0] == ("mongodb://opt:1",)


@pytest.mark.parametrize("text,env,message", [
    (STORAGE + "  transfer:\n    records: postgres\n", {},
     "'cloudmesh.transfer.records' in .*cloudmesh.yaml must be 'sqlite' or 'mongo', not 'postgres'"),
    (STORAGE + "  transfer: mongo\n", {}, "'cloudmesh.transfer' in .* is not a mapping"),
    (None, {"CMS_TRANSFER_RECORDS": "redis"}, "CMS_TRANSFER_RECORDS must be 'sqlite' or 'mongo', not 'redis'"),
    (None, {"CMS_TRANSFER_RECORDS": "mongo"}, "set to MongoDB but .* has no 'cloudmesh.data.mongo' section"),
    (STORAGE + "  transfer: {records: mongo}\n", {}, "has no 'cloudmesh.data.mongo' section"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: [a]\n", {},
     "'cloudmesh.data.mongo' in .* is not a mapping"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_PORT: 27017}\n", {}, "has no MONGO_HOST"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_PORT: abc}\n", {},
     "MONGO_PORT in 'cloudmesh.data.mongo' is not a port number: 'abc'"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_PORT: 70000}\n", {},
     "not a port number: 70000"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_USERNAME: admin}\n", {},
     "has no MONGO_PASSWORD; give both or neither"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_PASSWORD: s3cret}\n", {},
     "has no MONGO_USERNAME; give both or neither"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_USERNAME: admin, "
     "MONGO_PASSWORD: TBD}\n", {}, "MONGO_PASSWORD in 'cloudmesh.data.mongo' is still TBD"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_HOST: h, MONGO_DBNAME: a/b}\n", {},
     "MONGO_DBNAME in 'cloudmesh.data.mongo' is not a MongoDB database name: 'a/b'"),
    (STORAGE + "  transfer: {records: mongo}\n  data:\n    mongo: {MONGO_URL: 'http://u:s3cret@h/'}\n", {},
     "must start with mongodb:// or mongodb\\+srv://$"),
    (None, {"CMS_TRANSFER_RECORDS": "mongo", "CMS_TRANSFER_MONGO_URL": "u:s3cret@h"}, "must start with mongodb://"),
    ("cloudmesh: [storage\n", {"CMS_TRANSFER_RECORDS": "mongo"}, "cloudmesh.yaml .* is not valid YAML at line"),
])
def test_bad_records_settings_are_one_line_config_errors_without_secrets(config, monkeypatch, text, env, message):
    if text is not None:
        config.write(text)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as error:
        config.open()
    assert "s3cret" not in str(error.value) and "\n" not in str(error.value)
    assert config.calls == []


def test_choosing_sqlite_does_not_import_pymongo(tmp_path):
    """`cms` starts without loading pymongo unless the records are in MongoDB."""
    code = ("import sys; from cloudmesh.transfer.records import open_records; import cloudmesh.transfer.api;"
            " open_records().close(); print('pymongo' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMS_TRANSFER_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=dict(env, CLOUDMESH_CONFIG_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_parts_of_an_object_are_forgotten_once_it_is_done(records):
    """Part MD5s only serve a resume; a settled object keeps none, so the store does not grow with
    every part ever sent."""
    records.create(transfer("t1"), objects(10, 20))
    records.part_done("t1", "f0", "u0", 1, "aa", 5)
    records.part_done("t1", "f1", "u1", 1, "bb", 5)
    records.update_object("t1", "f0", state="done", bytes_done=10)
    records.update_object("t1", "f1", state="failed", message="x")
    assert records.parts("t1", "f0", "u0") == {}
    assert records.parts("t1", "f1", "u1") == {1: "bb"}


def open_at_once(path: str, barrier) -> None:
    barrier.wait()
    SQLiteRecords(Path(path)).close()


def test_two_processes_opening_a_new_sqlite_file_at_once_both_succeed(tmp_path):
    """SQLite answers 'locked' at once to a switch to WAL while another process opens the same new
    file (it does not wait its busy timeout); both processes must still open it, 20 times over."""
    import multiprocessing
    context = multiprocessing.get_context("fork")
    for attempt in range(20):
        barrier = context.Barrier(2)
        processes = [context.Process(target=open_at_once, args=(str(tmp_path / f"{attempt}.db"), barrier))
                     for _ in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [process.exitcode for process in processes] == [0, 0], attempt


def test_watch_tells_workers_run_cancel_or_lost_without_renewing_the_lease(backend, records):
    """What a cluster's workers see: the owner's heartbeat answers, read only; a lease gone silent
    (the client died) is lost to them, and watching does not renew it."""
    records.create(transfer("t1", owner="first"), objects(1))
    assert records.watch("t1", "first") == "run"
    assert records.watch("t1", "someone-else") == "lost"
    assert records.watch("never", "first") == "lost"
    records.request_cancel("t1")
    assert records.watch("t1", "first") == "cancel"
    backend.poke("t1", heartbeat=time.time() - LEASE - 1)
    assert records.watch("t1", "first") == "lost"
    records.finish("t1", "failed", owner="first")
    assert records.watch("t1", "first") == "lost"


def test_found_reads_the_rows_of_named_objects_only(records):
    records.create(transfer("t1"), named(*(f"p{i}" for i in range(1200))))
    records.create(transfer("t2"), named("p1"))
    records.update_object("t1", "p7", state="done", bytes_done=5)
    rows = records.found("t1", [f"p{i}" for i in range(0, 1200, 2)] + ["missing"])
    assert sorted(rows) == sorted(f"p{i}" for i in range(0, 1200, 2))
    assert rows["p0"].transfer_id == "t1" and rows["p0"].state == "pending"
    assert records.found("t1", ["p7"])["p7"].bytes_done == 5
    assert records.found("t1", []) == {}


def test_parts_sent_by_several_processes_add_to_the_bytes_done(records):
    records.create(transfer("t1"), objects(100))
    records.part_done("t1", "f0", "u", 2, "bb", None, 30)
    records.part_done("t1", "f0", "u", 1, "aa", None, 40)
    assert records.objects("t1")[0].bytes_done == 70
    assert records.status("t1")["bytes_done"] == 70
    assert records.parts("t1", "f0", "u") == {1: "aa", 2: "bb"}


def test_worker_totals_add_up_per_worker_address_in_the_status(records):
    records.create(transfer("t1"), objects(1))
    records.create(transfer("t2"), objects(1))
    assert records.status("t1")["workers"] == {}
    records.worker_done("t1", "tcp://127.0.0.1:1", 3, 300)
    records.worker_done("t1", "tcp://127.0.0.1:2", 0, 50)
    records.worker_done("t1", "tcp://127.0.0.1:1", 2, 20)
    assert records.status("t1")["workers"] == {"tcp://127.0.0.1:1": {"objects": 5, "bytes": 320},
                                               "tcp://127.0.0.1:2": {"objects": 0, "bytes": 50}}
    assert records.status("t2")["workers"] == {}
    listed = {view["id"]: view["workers"] for view in records.transfers()}
    assert listed == {"t1": records.status("t1")["workers"], "t2": {}}
