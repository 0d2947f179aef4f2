"""Transfer records in MongoDB (pymongo): the same records as records/sqlite.py, for several hosts.

The collections: `transfers` (one document per transfer, _id = the transfer id), `objects` (one per
object: transfer_id, seq, path and the columns of SQLite's objects table), `parts` (transfer_id,
path, upload, number, md5), `workers` (what each worker of a cluster settled) and `samples`
(transfer_id, at, bytes_done, objects_done). MongoDB updates one document atomically, so every write
that must not be lost to a concurrent one is a single update_one/find_one_and_update whose filter
carries the condition: a claim is a compare-and-swap on the owner and heartbeat it read, a heartbeat
and a finish with an owner are filtered on that owner. No multi-document transactions are used (they
need a replica set): where SQLite writes two rows in one transaction, the order of the writes is
chosen so that a crash between them leaves true records (see create and part_done).

This module imports pymongo; records/__init__.py imports it only when MongoDB is selected.
"""
import functools
import os
import socket
import time
from urllib.parse import unquote

import pymongo
from pymongo.errors import (BulkWriteError, ConfigurationError, ConnectionFailure, DuplicateKeyError, OperationFailure,
                            PyMongoError)

from cloudmesh.transfer import limits
from cloudmesh.transfer.errors import Conflict, ConfigError, IdInUse, NotFound, RecordsError, TransferError
from cloudmesh.transfer.records.base import (SETTLED, Beat, ObjectRow, Records, Sample, day_of, owner_alive, state_of,
                                             statistic_since, statistic_view, status_view, watched, workers_view)

TRANSFER_FIELDS = ("state", "source", "target", "route", "copy", "recursive", "started", "finished", "host", "pid",
                   "message", "owner", "heartbeat", "cancel", "listing", "cursor", "selection")
OBJECT_FIELDS = {"state", "bytes_done", "md5", "method", "proof", "message", "warning", "size", "etag", "mtime",
                 "upload", "part_size"}
NEWEST_FIRST = [("started", pymongo.DESCENDING), ("_id", pymongo.ASCENDING)]
IN_TIME = [("at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
INDEXES = {
    "objects": [([("transfer_id", 1), ("path", 1)], {"unique": True, "name": "transfer_path"}),
                ([("transfer_id", 1), ("seq", 1)], {"name": "transfer_seq"}),
                ([("transfer_id", 1), ("state", 1)], {"name": "transfer_state"})],
    "parts": [([("transfer_id", 1), ("path", 1), ("upload", 1), ("number", 1)], {"unique": True, "name": "part"})],
    "workers": [([("transfer_id", 1), ("worker", 1)], {"unique": True, "name": "transfer_worker"})],
    "samples": [([("transfer_id", 1), ("at", 1)], {"name": "transfer_at"})],
    "transfers": [([("state", 1), ("started", -1), ("_id", 1)], {"name": "state_started"}),
                  ([("started", -1), ("_id", 1)], {"name": "started"})],
}
VIEW_BATCH = 500  # transfers whose views are built by one set of queries (bounds the $in lists)
CLAIM_TRIES = 10  # a claim re-reads after losing a race; it gives up only if the record keeps changing
TIMEOUT_MS = 5000  # how long to look for a server before giving up (unless the URL sets serverSelectionTimeoutMS)
AUTH_FAILED, UNAUTHORIZED, DUPLICATE_KEY = 18, 13, 11000  # MongoDB error codes


def hosts_of(url: str) -> str:
    """The host:port list of a mongodb:// URL, without its user and password."""
    rest = url.split("://", 1)[-1]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    return netloc.rsplit("@", 1)[-1]


def secrets_of(url: str | None, password: str | None) -> list[str]:
    """The strings no message may show: the password, as given and as written in the URL."""
    found = [password] if password else []
    if url:
        netloc = url.split("://", 1)[-1].split("/", 1)[0]
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            if ":" in userinfo:
                secret = userinfo.split(":", 1)[1]
                found += [secret, unquote(secret)]
    return [s for s in found if s]


def connect(settings: dict) -> "MongoRecords":
    """MongoRecords on the server that `settings` (config.load_records_settings) names."""
    url = settings.get("url")
    password = settings.get("password")
    secrets = secrets_of(url, password)
    where = hosts_of(url) if url else f"{settings['host']}:{settings['port']}"
    try:
        if url:
            options = {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": TIMEOUT_MS}
            client = pymongo.MongoClient(url, **options)
        else:
            credentials = {"username": settings["username"], "password": password} if settings.get("username") else {}
            client = pymongo.MongoClient(host=settings["host"], port=settings["port"],
                                         serverSelectionTimeoutMS=TIMEOUT_MS, **credentials)
        database = client.get_default_database(settings.get("dbname") or "cloudmesh")
    except (PyMongoError, ValueError) as e:  # pymongo says ValueError of some malformed URLs
        raise translate(e, where, secrets) from None
    try:
        return MongoRecords(database, where=where, secrets=secrets, client=client)
    except BaseException:
        client.close()
        raise


def translate(error: Exception, where: str, secrets: list[str]) -> TransferError:
    """A pymongo error as one line that names the server but never a password: a ConfigError for
    settings the server refuses, else a RecordsError (the records cannot be read or written)."""
    def clean(text) -> str:
        text = " ".join(str(text).split())
        for secret in secrets:
            text = text.replace(secret, "********")
        return text[:300]

    if isinstance(error, (ConfigurationError, ValueError)):
        return ConfigError(f"invalid MongoDB settings for the transfer records: {clean(error)}")
    if isinstance(error, ConnectionFailure):
        reason = str(error).split(", Timeout:")[0].split(" (configured timeouts")[0].removeprefix(f"{where}: ")
        return RecordsError(f"cannot reach the MongoDB transfer records at {where}: {clean(reason)}")
    if isinstance(error, OperationFailure):
        message = clean((error.details or {}).get("errmsg") or error)
        if error.code == AUTH_FAILED:
            return ConfigError(f"MongoDB at {where} rejected the username or password of the transfer records")
        if error.code == UNAUTHORIZED:
            return ConfigError(f"the MongoDB user may not use the transfer records at {where}: {message}")
        return RecordsError(f"the MongoDB transfer records at {where} failed: {message}")
    return RecordsError(f"the MongoDB transfer records at {where} failed: {type(error).__name__}: {clean(error)}")


def guarded(method):
    """Let no pymongo error out: each becomes a one-line RecordsError or ConfigError."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except PyMongoError as e:
            raise translate(e, self.where, self.secrets) from None
    return call


class MongoRecords(Records):
    """The records in one MongoDB database (a pymongo Database, or mongomock's in tests)."""

    @guarded
    def __init__(self, database, where: str = "MongoDB", secrets: list[str] = (), client=None):
        self.where, self.secrets, self.client = where, list(secrets), client
        self.db = database
        self.transfers_ = database["transfers"]
        self.objects_ = database["objects"]
        self.parts_ = database["parts"]
        self.workers_ = database["workers"]
        self.samples_ = database["samples"]
        for name, indexes in INDEXES.items():
            for keys, options in indexes:
                database[name].create_index(keys, **options)

    @staticmethod
    def row(doc: dict) -> dict:
        """A transfer document as the row SQLite would give (id, then every column; None where absent)."""
        return {"id": doc["_id"], **{name: doc.get(name) for name in TRANSFER_FIELDS}}

    @guarded
    def create(self, transfer: dict, objects: list[dict] = ()) -> None:
        """The transfer document first: its unique _id decides which of two creators of one id wins,
        and the loser touches no object. A failure while inserting the objects removes the transfer."""
        now = time.time()
        try:
            self.transfers_.insert_one(
                {"_id": transfer["id"], "state": "running", "source": transfer["source"], "target": transfer["target"],
                 "route": transfer["route"], "copy": int(transfer["copy"]), "recursive": int(transfer["recursive"]),
                 "started": now, "finished": None, "host": socket.gethostname(), "pid": os.getpid(),
                 "message": None, "owner": transfer["owner"], "heartbeat": now, "cancel": 0,
                 "listing": int(bool(transfer.get("listing"))), "cursor": None,
                 "selection": transfer.get("selection")})
        except DuplicateKeyError:
            found = self.transfers_.find_one({"_id": transfer["id"]}, {"state": 1}) or {}
            state = f" ({found['state']})" if found.get("state") else ""
            raise IdInUse(f"transfer id '{transfer['id']}' is already used{state}; choose another id") from None
        if not objects:
            return
        try:
            self.insert(transfer["id"], objects, 0)
        except BaseException:
            try:
                self.objects_.delete_many({"transfer_id": transfer["id"]})
                self.transfers_.delete_one({"_id": transfer["id"]})
            except PyMongoError:
                pass  # the first error is the one to report
            raise

    def insert(self, transfer_id: str, objects: list[dict], first: int) -> None:
        """Add planned objects numbered from `first`; one already there (a page listed again after a
        crash between its objects and its cursor) is kept, as the unique index tells."""
        if objects:
            try:
                self.objects_.insert_many(
                    [{"transfer_id": transfer_id, "seq": seq, "path": o["path"], "source_key": o["source_key"],
                      "target_key": o["target_key"], "size": o["size"], "state": "pending", "bytes_done": 0,
                      "md5": None, "method": None, "proof": None, "message": None, "warning": None,
                      "etag": o.get("etag"), "mtime": o.get("mtime"), "upload": None, "part_size": None}
                     for seq, o in enumerate(objects, first)], ordered=False)
            except BulkWriteError as e:
                if any(error.get("code") != DUPLICATE_KEY for error in e.details.get("writeErrors", [])):
                    raise

    @guarded
    def add_objects(self, transfer_id: str, objects: list[dict], cursor: str | None, last: bool) -> None:
        """The objects first, then the cursor: a crash between them lists the page again."""
        if self.transfers_.find_one({"_id": transfer_id}, {"_id": 1}) is None:
            raise NotFound(f"no transfer with id '{transfer_id}'")
        latest = self.objects_.find_one({"transfer_id": transfer_id}, {"seq": 1}, sort=[("seq", -1)])
        self.insert(transfer_id, objects, latest["seq"] + 1 if latest else 0)
        self.transfers_.update_one({"_id": transfer_id}, {"$set": {"cursor": cursor, "listing": int(not last)}})

    @guarded
    def cursor(self, transfer_id: str) -> str | None:
        return (self.transfers_.find_one({"_id": transfer_id}, {"cursor": 1}) or {}).get("cursor")

    @guarded
    def part_done(self, transfer_id: str, path: str, upload: str, number: int, md5: str, bytes_done: int | None,
                  size: int = 0) -> None:
        """The part first, then the object's bytes done: a crash between them loses only progress."""
        self.parts_.update_one({"transfer_id": transfer_id, "path": path, "upload": upload, "number": number},
                               {"$set": {"md5": md5}}, upsert=True)
        change = {"$inc": {"bytes_done": size}} if bytes_done is None else {"$set": {"bytes_done": bytes_done}}
        self.objects_.update_one({"transfer_id": transfer_id, "path": path}, change)

    @guarded
    def parts(self, transfer_id: str, path: str, upload: str) -> dict[int, str]:
        return {doc["number"]: doc["md5"] for doc in self.parts_.find(
            {"transfer_id": transfer_id, "path": path, "upload": upload}, {"number": 1, "md5": 1, "_id": 0})}

    @guarded
    def claim(self, transfer_id: str, owner: str, reset: bool = True) -> None:
        """Compare-and-swap: the update only matches while state, owner and heartbeat are what was
        read and judged, so of two claimers one wins and the other re-reads a live owner."""
        for _ in range(CLAIM_TRIES):
            doc = self.transfers_.find_one({"_id": transfer_id})
            if doc is None:
                raise NotFound(f"no transfer with id '{transfer_id}'")
            row = self.row(doc)
            if row["state"] == "running" and owner_alive(row):
                raise Conflict(f"transfer '{transfer_id}' is still running (process {row['pid']} on "
                                 f"{row['host']}); cancel it or wait for it")
            seen = {"_id": transfer_id, "state": row["state"], "owner": row["owner"], "heartbeat": row["heartbeat"]}
            taken = self.transfers_.update_one(seen, {"$set": {
                "state": "running", "finished": None, "message": None, "cancel": 0, "host": socket.gethostname(),
                "pid": os.getpid(), "owner": owner, "heartbeat": time.time()}})
            if taken.matched_count and not reset:
                return
            if taken.matched_count:
                self.objects_.update_many({"transfer_id": transfer_id, "state": {"$in": ["pending", "failed"]}},
                                          {"$set": {"state": "pending", "bytes_done": 0, "message": None}})
                return
        raise TransferError(f"transfer '{transfer_id}' kept changing while it was claimed; try again")

    @guarded
    def heartbeat(self, transfer_id: str, owner: str) -> Beat:
        doc = self.transfers_.find_one_and_update({"_id": transfer_id, "owner": owner, "state": "running"},
                                                  {"$set": {"heartbeat": time.time()}}, projection={"cancel": 1},
                                                  return_document=pymongo.ReturnDocument.AFTER)
        if doc is None:
            return Beat.LOST
        return Beat.CANCEL if doc.get("cancel") else Beat.RUN

    @guarded
    def watch(self, transfer_id: str, owner: str) -> Beat:
        doc = self.transfers_.find_one({"_id": transfer_id}, {"owner": 1, "state": 1, "cancel": 1, "heartbeat": 1})
        return watched(owner, doc and {"cancel": 0, "heartbeat": None, **doc}, time.time())

    @guarded
    def found(self, transfer_id: str, paths: list[str]) -> dict[str, ObjectRow]:
        return {doc["path"]: ObjectRow.of(doc) for doc in self.objects_.find({"transfer_id": transfer_id,
                                                                               "path": {"$in": list(paths)}})}

    @guarded
    def worker_done(self, transfer_id: str, worker: str, objects: int, nbytes: int) -> None:
        self.workers_.update_one({"transfer_id": transfer_id, "worker": worker},
                                 {"$inc": {"objects": objects, "bytes": nbytes}}, upsert=True)

    @guarded
    def request_cancel(self, transfer_id: str) -> None:
        self.transfers_.update_one({"_id": transfer_id, "state": "running"}, {"$set": {"cancel": 1}})

    @guarded
    def update_object(self, transfer_id: str, path: str, **fields) -> None:
        unknown = set(fields) - OBJECT_FIELDS
        if unknown:
            raise ValueError(f"unknown object fields {sorted(unknown)}")
        if fields:
            self.objects_.update_one({"transfer_id": transfer_id, "path": path}, {"$set": fields})
        if fields.get("state") in SETTLED:
            self.parts_.delete_many({"transfer_id": transfer_id, "path": path})

    @guarded
    def update_objects(self, transfer_id: str, updates: list[tuple[str, dict]]) -> None:
        """Every change in one ordered bulk write (one round trip for a batch of objects)."""
        changes, settled = [], []
        for path, fields in updates:
            unknown = set(fields) - OBJECT_FIELDS
            if unknown:
                raise ValueError(f"unknown object fields {sorted(unknown)}")
            match = {"transfer_id": transfer_id, "path": path}
            if fields:
                changes.append(pymongo.UpdateOne(match, {"$set": fields}))
            if fields.get("state") in SETTLED:
                settled.append(pymongo.DeleteMany(match))
        if changes:
            self.objects_.bulk_write(changes, ordered=True)
        if settled:
            self.parts_.bulk_write(settled, ordered=False)

    @guarded
    def finish(self, transfer_id: str, state: str, message: str | None = None, owner: str | None = None) -> None:
        match = {"_id": transfer_id} if owner is None else {"_id": transfer_id, "owner": owner}
        self.transfers_.update_one(match, {"$set": {"state": state, "finished": time.time(), "message": message,
                                                    "cancel": 0}})

    def views(self, docs: list[dict]) -> list[dict]:
        """Status views of transfer documents: three queries over their objects, however many."""
        ids = [doc["_id"] for doc in docs]
        counts = {tid: {"objects_total": 0, "objects_done": 0, "objects_failed": 0, "objects_skipped": 0,
                        "objects_unverified": 0, "bytes_total": 0, "bytes_done": 0, "uploads_open": 0, "methods": {},
                        "proofs": {}} for tid in ids}
        groups = self.objects_.aggregate([
            {"$match": {"transfer_id": {"$in": ids}}},
            {"$group": {"_id": {"transfer": "$transfer_id", "state": "$state", "method": "$method", "proof": "$proof"},
                        "objects": {"$sum": 1}, "size": {"$sum": "$size"}, "bytes_done": {"$sum": "$bytes_done"}}}])
        for group in groups:
            key = group["_id"]
            count = counts[key["transfer"]]
            count["objects_total"] += group["objects"]
            count["bytes_total"] += group["size"]
            count["bytes_done"] += group["bytes_done"]
            if key.get("state") in ("done", "failed", "skipped", "unverified"):
                count[f"objects_{key['state']}"] += group["objects"]
            for field, name in (("method", "methods"), ("proof", "proofs")):
                if key.get(field) is not None:
                    count[name][key[field]] = count[name].get(key[field], 0) + group["objects"]
        for group in self.objects_.aggregate([
                {"$match": {"transfer_id": {"$in": ids}, "upload": {"$ne": None},
                            "state": {"$nin": list(SETTLED)}}},
                {"$group": {"_id": "$transfer_id", "open": {"$sum": 1}}}]):
            counts[group["_id"]]["uploads_open"] = group["open"]
        notes = {tid: [] for tid in ids}
        for doc in self.objects_.find({"transfer_id": {"$in": ids},
                                       "$or": [{"state": {"$in": ["failed", "unverified"]}},
                                               {"warning": {"$ne": None}}]},
                                      {"transfer_id": 1, "path": 1, "state": 1, "message": 1, "warning": 1,
                                       "_id": 0}).sort([("transfer_id", 1), ("seq", 1)]):
            notes[doc["transfer_id"]].append({"path": doc["path"], "state": doc["state"],
                                              "message": doc.get("message"), "warning": doc.get("warning")})
        for doc in self.workers_.find({"transfer_id": {"$in": ids}}):
            workers = counts[doc["transfer_id"]].setdefault("workers", {})
            workers[doc["worker"]] = {"objects": doc.get("objects", 0), "bytes": doc.get("bytes", 0)}
        views = []
        for doc in docs:
            count = counts[doc["_id"]]
            workers = count.get("workers", {})
            count["workers"] = workers_view({w: v["objects"] for w, v in workers.items()},
                                            {w: v["bytes"] for w, v in workers.items()})
            count["methods"] = dict(sorted(count["methods"].items()))
            count["proofs"] = dict(sorted(count["proofs"].items()))
            views.append(status_view(self.row(doc), count, notes[doc["_id"]]))
        return views

    @guarded
    def status(self, transfer_id: str) -> dict | None:
        doc = self.transfers_.find_one({"_id": transfer_id})
        return self.views([doc])[0] if doc else None

    def docs(self, state: str | None, limit: int | None = None, offset: int = 0) -> list[dict]:
        """The transfer documents in one shown state, newest first (a page of them with `limit`).
        A running transfer shows as running or interrupted, which only its owner's liveness tells:
        those two are filtered here, the other states by the query (and paged by the server)."""
        derived = state in ("running", "interrupted") or offset < 0 or (limit is not None and limit < 0)
        if not derived:
            if limit == 0:
                return []  # MongoDB reads a limit of 0 as no limit
            cursor = self.transfers_.find({} if state is None else {"state": state}).sort(NEWEST_FIRST).skip(offset)
            return list(cursor if limit is None else cursor.limit(limit))
        query = {} if state is None else {"state": {"$in": ["running", state]}}
        docs = [doc for doc in self.transfers_.find(query).sort(NEWEST_FIRST)
                if state is None or state_of(self.row(doc)) == state]
        return docs[offset:] if limit is None else docs[offset:offset + limit]

    @guarded
    def transfers(self, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        page = self.docs(state, limit, offset)
        batches = (page[start:start + VIEW_BATCH] for start in range(0, len(page), VIEW_BATCH))
        return [view for batch in batches for view in self.views(batch)]

    @guarded
    def count(self, state: str | None = None) -> int:
        if state in ("running", "interrupted"):
            return len(self.docs(state))
        return self.transfers_.count_documents({} if state is None else {"state": state})

    @guarded
    def objects(self, transfer_id: str, after: int = -1, limit: int | None = None,
                unsettled: bool = False) -> list[ObjectRow]:
        query = {"transfer_id": transfer_id, "seq": {"$gt": after}}
        if unsettled:
            query["state"] = {"$nin": list(SETTLED)}
        if limit == 0:
            return []  # MongoDB reads a limit of 0 as no limit
        found = self.objects_.find(query).sort("seq", 1)
        return [ObjectRow.of(doc) for doc in (found if limit is None else found.limit(limit))]

    @guarded
    def add_sample(self, transfer_id: str, sample: Sample) -> bool:
        """Thinned by deleting the _ids of every other sample but the first and the newest."""
        match = {"transfer_id": transfer_id}
        self.samples_.insert_one({**match, "at": sample.at, "bytes_done": sample.bytes_done,
                                  "objects_done": sample.objects_done})
        if self.samples_.count_documents(match) <= limits.SAMPLES_MAX:
            return False
        ids = [doc["_id"] for doc in self.samples_.find(match, {"_id": 1}).sort(IN_TIME)]
        self.samples_.delete_many({"_id": {"$in": ids[1:-1:2]}})
        return True

    @guarded
    def samples(self, transfer_id: str) -> list[Sample]:
        return [Sample(doc["at"], doc["bytes_done"], doc["objects_done"])
                for doc in self.samples_.find({"transfer_id": transfer_id}, {"_id": 0}).sort(IN_TIME)]

    @guarded
    def statistic(self) -> dict:
        now = time.time()
        since = statistic_since(now)
        states, routes, route_of, started, seconds = {}, {}, {}, {}, 0.0
        for doc in self.transfers_.find():
            row = self.row(doc)
            state = state_of(row)
            states[state] = states.get(state, 0) + 1
            if row["finished"] is not None:
                seconds += row["finished"] - row["started"]
            route_of[row["id"]], started[row["id"]] = row["route"], row["started"]
            routes.setdefault(row["route"], {"transfers": 0, "bytes": 0, "objects": 0})["transfers"] += 1
        by_day = {}
        for group in self.objects_.aggregate([
                {"$match": {"state": "done"}},
                {"$group": {"_id": "$transfer_id", "bytes": {"$sum": "$size"}, "objects": {"$sum": 1}}}]):
            route = route_of.get(group["_id"])
            if route is not None:  # objects of no transfer count nowhere, as in SQLite's join
                routes[route]["bytes"] += group["bytes"]
                routes[route]["objects"] += group["objects"]
                if started[group["_id"]] >= since:
                    day = day_of(started[group["_id"]])
                    by_day[day] = by_day.get(day, 0) + group["bytes"]
        by_route = dict(sorted(routes.items()))
        return statistic_view(states, by_route, seconds, by_day, now)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
