"""Transfer records in an embedded SQLite file (WAL mode: several `cms` processes may share it).

Every sqlite3 or OS error leaves this module as one RecordsError naming the file (RecordsBusy when
another process holds it locked for longer than a write waits), wherever it happens: on opening,
or in a write in the middle of a transfer."""
import contextlib
import errno
import functools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

from cloudmesh.transfer import limits
from cloudmesh.transfer.errors import Conflict, IdInUse, NotFound, RecordsBusy, RecordsError
from cloudmesh.transfer.limits import RECORDS_WAIT
from cloudmesh.transfer.records.base import (SETTLED, Beat, ObjectRow, Records, Sample, owner_alive, state_of,
                                             statistic_since, statistic_view, status_view, watched, workers_view)

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    route TEXT NOT NULL,
    copy INTEGER NOT NULL,
    recursive INTEGER NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    host TEXT,
    pid INTEGER,
    message TEXT,
    owner TEXT,
    heartbeat REAL,
    cancel INTEGER NOT NULL DEFAULT 0,
    listing INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    selection TEXT
);
CREATE INDEX IF NOT EXISTS transfers_state ON transfers(state, started);
CREATE INDEX IF NOT EXISTS transfers_started ON transfers(started);
CREATE TABLE IF NOT EXISTS objects (
    transfer_id TEXT NOT NULL REFERENCES transfers(id),
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    source_key TEXT NOT NULL,
    target_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    bytes_done INTEGER NOT NULL DEFAULT 0,
    md5 TEXT,
    method TEXT,
    message TEXT,
    etag TEXT,
    mtime REAL,
    upload TEXT,
    part_size INTEGER,
    proof TEXT,
    warning TEXT,
    PRIMARY KEY (transfer_id, path)
);
CREATE TABLE IF NOT EXISTS totals (
    transfer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts (
    transfer_id TEXT NOT NULL,
    path TEXT NOT NULL,
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    PRIMARY KEY (transfer_id, path, upload, number)
);
CREATE TABLE IF NOT EXISTS samples (
    transfer_id TEXT NOT NULL,
    at REAL NOT NULL,
    bytes_done INTEGER NOT NULL,
    objects_done INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_at ON samples(transfer_id, at);
"""
# Columns added after the first release, for databases created before them.
ADDED = {"transfers": {"owner": "TEXT", "heartbeat": "REAL", "cancel": "INTEGER NOT NULL DEFAULT 0",
                       "listing": "INTEGER NOT NULL DEFAULT 0", "cursor": "TEXT",
                       "selection": "TEXT"},
         "objects": {"etag": "TEXT", "mtime": "REAL", "upload": "TEXT", "part_size": "INTEGER", "proof": "TEXT",
                     "warning": "TEXT"}}

OBJECT_FIELDS = {"state", "bytes_done", "md5", "method", "proof", "message", "warning", "size", "etag", "mtime",
                 "upload", "part_size"}

SETTLED_SQL = ", ".join(f"'{state}'" for state in SETTLED)
ADD = "ON CONFLICT DO UPDATE SET value = value + excluded.value"
# Per-transfer counters in `totals`, kept by SQLite itself as object rows change, so that status
# and statistic read a few rows instead of counting millions: objects and bytes by state
# ('state:done', 'bytes:done'), bytes done, objects by method and proof, and open uploads. Rows
# are inserted pending with nothing done (as `insert` does) and never deleted.
TRIGGERS = {
    "totals_insert": f"""AFTER INSERT ON objects BEGIN
        INSERT INTO totals VALUES (new.transfer_id, 'state:' || new.state, 1),
                                  (new.transfer_id, 'bytes:' || new.state, new.size) {ADD}; END""",
    "totals_state": f"""AFTER UPDATE OF state, size ON objects
        WHEN old.state IS NOT new.state OR old.size IS NOT new.size BEGIN
        INSERT INTO totals VALUES (new.transfer_id, 'state:' || old.state, -1),
                                  (new.transfer_id, 'state:' || new.state, 1),
                                  (new.transfer_id, 'bytes:' || old.state, -old.size),
                                  (new.transfer_id, 'bytes:' || new.state, new.size) {ADD}; END""",
    "totals_bytes_done": f"""AFTER UPDATE OF bytes_done ON objects WHEN old.bytes_done IS NOT new.bytes_done BEGIN
        INSERT INTO totals VALUES (new.transfer_id, 'bytes_done', new.bytes_done - old.bytes_done) {ADD}; END""",
    **{f"totals_{column}": f"""AFTER UPDATE OF {column} ON objects WHEN old.{column} IS NOT new.{column} BEGIN
        INSERT INTO totals SELECT new.transfer_id, '{column}:' || old.{column}, -1 WHERE old.{column} IS NOT NULL {ADD};
        INSERT INTO totals SELECT new.transfer_id, '{column}:' || new.{column}, 1 WHERE new.{column} IS NOT NULL {ADD};
        END""" for column in ("method", "proof")},
    "totals_uploads": f"""AFTER UPDATE OF upload, state ON objects
        WHEN (old.upload IS NOT NULL AND old.state NOT IN ({SETTLED_SQL})) IS NOT
             (new.upload IS NOT NULL AND new.state NOT IN ({SETTLED_SQL})) BEGIN
        INSERT INTO totals VALUES (new.transfer_id, 'uploads_open',
            CASE WHEN new.upload IS NOT NULL AND new.state NOT IN ({SETTLED_SQL}) THEN 1 ELSE -1 END) {ADD}; END""",
}
# Every other sample of a transfer but its first and newest (in time order), once it holds more than `?`.
THINNED = """SELECT rowid FROM (SELECT rowid, row_number() OVER (ORDER BY at, rowid) AS n, count(*) OVER () AS held
    FROM samples WHERE transfer_id = ?) WHERE held > ? AND n % 2 = 0 AND n < held"""
# The counters of the objects recorded before `totals` existed.
BACKFILL = [
    f"""INSERT INTO totals SELECT transfer_id, 'state:' || state, count(*) FROM objects GROUP BY transfer_id, state
        UNION ALL SELECT transfer_id, 'bytes:' || state, sum(size) FROM objects GROUP BY transfer_id, state
        UNION ALL SELECT transfer_id, 'bytes_done', sum(bytes_done) FROM objects GROUP BY transfer_id
        UNION ALL SELECT transfer_id, 'method:' || method, count(*) FROM objects WHERE method IS NOT NULL
            GROUP BY transfer_id, method
        UNION ALL SELECT transfer_id, 'proof:' || proof, count(*) FROM objects WHERE proof IS NOT NULL
            GROUP BY transfer_id, proof
        UNION ALL SELECT transfer_id, 'uploads_open', count(*) FROM objects
            WHERE upload IS NOT NULL AND state NOT IN ({SETTLED_SQL}) GROUP BY transfer_id""",
]
DERIVED = ("running", "interrupted")  # shown states that the owner's liveness tells apart, not the column
NOTES = "state IN ('failed', 'unverified') OR warning IS NOT NULL"  # the objects a status lists, by a partial index
# Indexes on columns that later releases added: made once those are there.
INDEXES = ["CREATE INDEX IF NOT EXISTS objects_seq ON objects(transfer_id, seq)",
           f"CREATE INDEX IF NOT EXISTS objects_notes ON objects(transfer_id, seq) WHERE {NOTES}"]

log = logging.getLogger(__name__)


def columns_of(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def schema_columns() -> dict[str, set[str]]:
    """The columns of each table of SCHEMA, as SQLite itself reads it."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.executescript(SCHEMA)
        return {table: columns_of(db, table) for table in ("transfers", "objects", "totals", "parts", "samples")}


COLUMNS = schema_columns()


def guarded(method):
    """Let no sqlite3 or OS error out of a store method: each becomes one RecordsError (see failure)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as e:
            raise self.failure(e) from None
    return call


class SQLiteRecords(Records):
    """The records in one SQLite file. A write waits up to `wait` seconds while another process
    holds the file locked; reads never wait for a writer (WAL), and opening a file whose schema is
    current only reads, so that `status` works while another process writes."""

    @guarded
    def __init__(self, path: Path, wait: float = RECORDS_WAIT):
        self.path, self.wait = path, wait
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # private from the start, not by umask
        self.db = sqlite3.connect(path, timeout=wait, check_same_thread=False, isolation_level=None)
        try:
            self.db.row_factory = sqlite3.Row
            self.wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            if self.missing():
                with self.transaction() as db:  # one process at a time creates or migrates the schema
                    self.migrate(db)
        except BaseException:
            self.db.close()
            raise

    def failure(self, error: Exception) -> RecordsError:
        """An sqlite3 or OS error as one line that names the file and says what to do."""
        where = f"the transfer records {self.path}"
        if isinstance(error, sqlite3.Error):
            name = getattr(error, "sqlite_errorname", "") or ""
            if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                return RecordsBusy(f"{where} are locked by another process (waited {self.wait:g} s); try again")
            if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
                return self.not_ours("are not a SQLite database (corrupt or not ours)")
            if name.startswith("SQLITE_READONLY"):
                return RecordsError(f"{where} cannot be written (read-only): make the file and its folder writable")
            if name.startswith("SQLITE_CANTOPEN"):
                return RecordsError(f"{where} cannot be opened: its folder {self.path.parent} must be writable "
                                    f"(SQLite keeps {self.path.name}-wal and {self.path.name}-shm beside it)")
            if name.startswith("SQLITE_FULL"):
                return RecordsError(f"{where} cannot be written: the disk is full")
            if name.startswith(("SQLITE_PERM", "SQLITE_AUTH")):
                return RecordsError(f"{where} cannot be written (permission denied): make the file and its folder "
                                    "writable")
            return RecordsError(f"{where} failed: {' '.join(str(error).split()) or type(error).__name__}")
        reason = error.strerror or type(error).__name__
        if isinstance(error, IsADirectoryError):
            return RecordsError(f"{where} cannot be opened: it is a folder, not a file; move it aside to start afresh")
        if isinstance(error, (FileExistsError, NotADirectoryError)):
            return RecordsError(f"{where} cannot be opened: {self.path.parent} is not a folder")
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return RecordsError(f"{where} cannot be written ({reason}): make the file and its folder writable")
        if error.errno == errno.ENOSPC:
            return RecordsError(f"{where} cannot be written: the disk is full")
        return RecordsError(f"{where} cannot be opened: {reason}")

    def not_ours(self, what: str) -> RecordsError:
        name = self.path.name
        return RecordsError(f"the transfer records {self.path} {what}: move it aside, with {name}-wal and {name}-shm "
                            "if present, to start afresh")

    def missing(self) -> bool:
        """Whether the schema lacks a table or column (read only: no lock is taken). A table of
        ours that lacks columns no release added is another program's, not one to migrate."""
        for table, expected in COLUMNS.items():
            present = columns_of(self.db, table)
            if present and not expected - set(ADDED.get(table, {})) <= present:
                raise self.not_ours(f"hold a table '{table}' that is not cms transfer's (not ours)")
            if expected - present:
                return True
        triggers = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        return not set(TRIGGERS) <= triggers

    @staticmethod
    def migrate(db: sqlite3.Connection) -> None:
        """Create the tables, add the columns that later releases added, and the counters' triggers
        (counting the objects already recorded when the counters are new), inside a transaction."""
        counted = bool(columns_of(db, "totals"))
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for table, columns in ADDED.items():
            present = columns_of(db, table)
            for name, kind in columns.items():
                if name not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        for statement in INDEXES:
            db.execute(statement)
        for name, body in TRIGGERS.items():
            db.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
        if not counted:
            for statement in BACKFILL:
                db.execute(statement)

    def wal(self) -> None:
        """Switch the file to WAL mode, unless it is in it already (which needs no lock). SQLite
        answers 'locked' at once, without waiting, while another process opens the same new file,
        so this waits as a busy timeout would."""
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that processes never deadlock.
        A failed one is rolled back if SQLite has not done so itself; the first error is reported."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error as e:
                        log.warning("rolling back in %s: %s", self.path, e)
                raise

    def write(self, sql: str, args) -> int:
        with self.transaction() as db:
            return db.execute(sql, args).rowcount

    @guarded
    def create(self, transfer: dict, objects: list[dict] = ()) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM transfers WHERE id = ?", (transfer["id"],)).fetchone()
            if row:
                raise IdInUse(f"transfer id '{transfer['id']}' is already used ({row['state']}); choose another id")
            now = time.time()
            db.execute(
                "INSERT INTO transfers (id, state, source, target, route, copy, recursive, started, host, pid,"
                " owner, heartbeat, listing, selection) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (transfer["id"], transfer["source"], transfer["target"], transfer["route"],
                 int(transfer["copy"]), int(transfer["recursive"]), now, socket.gethostname(), os.getpid(),
                 transfer["owner"], now, int(bool(transfer.get("listing"))), json.dumps(transfer.get("selection"))))
            self.insert(db, transfer["id"], objects, 0)

    @staticmethod
    def insert(db: sqlite3.Connection, transfer_id: str, objects: list[dict], first: int) -> None:
        """Add planned objects numbered from `first`; one already there (a page listed twice) is kept."""
        db.executemany(
            "INSERT OR IGNORE INTO objects (transfer_id, seq, path, source_key, target_key, size, etag, mtime)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(transfer_id, seq, o["path"], o["source_key"], o["target_key"], o["size"], o.get("etag"),
              o.get("mtime")) for seq, o in enumerate(objects, first)])

    @guarded
    def add_objects(self, transfer_id: str, objects: list[dict], cursor: str | None, last: bool) -> None:
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM transfers WHERE id = ?", (transfer_id,)).fetchone() is None:
                raise NotFound(f"no transfer with id '{transfer_id}'")
            following = db.execute("SELECT coalesce(max(seq) + 1, 0) FROM objects WHERE transfer_id = ?",
                                   (transfer_id,)).fetchone()[0]  # by the objects_seq index
            self.insert(db, transfer_id, objects, following)
            db.execute("UPDATE transfers SET cursor = ?, listing = ? WHERE id = ?",
                       (cursor, int(not last), transfer_id))

    @guarded
    def cursor(self, transfer_id: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT cursor FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
            return row[0] if row else None

    @guarded
    def part_done(self, transfer_id: str, path: str, upload: str, number: int, md5: str, bytes_done: int | None,
                  size: int = 0) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO parts (transfer_id, path, upload, number, md5) VALUES (?, ?, ?, ?, ?)",
                       (transfer_id, path, upload, number, md5))
            db.execute("UPDATE objects SET bytes_done = coalesce(?, bytes_done + ?) WHERE transfer_id = ? AND path = ?",
                       (bytes_done, size, transfer_id, path))

    @guarded
    def parts(self, transfer_id: str, path: str, upload: str) -> dict[int, str]:
        with self.lock:
            return dict(self.db.execute("SELECT number, md5 FROM parts WHERE transfer_id = ? AND path = ? AND upload = ?",
                                        (transfer_id, path, upload)).fetchall())

    @guarded
    def claim(self, transfer_id: str, owner: str, reset: bool = True) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT * FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
            if row is None:
                raise NotFound(f"no transfer with id '{transfer_id}'")
            if row["state"] == "running" and owner_alive(dict(row)):
                raise Conflict(f"transfer '{transfer_id}' is still running (process {row['pid']} on "
                                 f"{row['host']}); cancel it or wait for it")
            db.execute("UPDATE transfers SET state = 'running', finished = NULL, message = NULL, cancel = 0,"
                       " host = ?, pid = ?, owner = ?, heartbeat = ? WHERE id = ?",
                       (socket.gethostname(), os.getpid(), owner, time.time(), transfer_id))
            if reset:
                db.execute("UPDATE objects SET state = 'pending', bytes_done = 0, message = NULL"
                           " WHERE transfer_id = ? AND state IN ('pending', 'failed')", (transfer_id,))

    @guarded
    def heartbeat(self, transfer_id: str, owner: str) -> Beat:
        with self.transaction() as db:
            if not db.execute("UPDATE transfers SET heartbeat = ? WHERE id = ? AND owner = ? AND state = 'running'",
                              (time.time(), transfer_id, owner)).rowcount:
                return Beat.LOST
            cancel = db.execute("SELECT cancel FROM transfers WHERE id = ?", (transfer_id,)).fetchone()[0]
        return Beat.CANCEL if cancel else Beat.RUN

    @guarded
    def watch(self, transfer_id: str, owner: str) -> Beat:
        with self.lock:
            row = self.db.execute("SELECT owner, state, cancel, heartbeat FROM transfers WHERE id = ?",
                                  (transfer_id,)).fetchone()
        return watched(owner, row and dict(row), time.time())

    @guarded
    def found(self, transfer_id: str, paths: list[str]) -> dict[str, ObjectRow]:
        rows = {}
        with self.lock:
            for start in range(0, len(paths), 500):  # within SQLite's limit of bound parameters
                chunk = paths[start:start + 500]
                for r in self.db.execute(f"SELECT * FROM objects WHERE transfer_id = ? AND path IN "
                                         f"({', '.join('?' * len(chunk))})", (transfer_id, *chunk)):
                    rows[r["path"]] = ObjectRow.of(dict(r))
        return rows

    @guarded
    def worker_done(self, transfer_id: str, worker: str, objects: int, nbytes: int) -> None:
        with self.transaction() as db:
            db.executemany(f"INSERT INTO totals VALUES (?, ?, ?) {ADD}",
                           [(transfer_id, f"worker-objects:{worker}", objects),
                            (transfer_id, f"worker-bytes:{worker}", nbytes)])

    @guarded
    def request_cancel(self, transfer_id: str) -> None:
        self.write("UPDATE transfers SET cancel = 1 WHERE id = ? AND state = 'running'", (transfer_id,))

    def update_object(self, transfer_id: str, path: str, **fields) -> None:
        self.update_objects(transfer_id, [(path, fields)])

    @guarded
    def update_objects(self, transfer_id: str, updates: list[tuple[str, dict]]) -> None:
        """Every change in one transaction (one commit for a batch of objects)."""
        for _, fields in updates:
            unknown = set(fields) - OBJECT_FIELDS
            if unknown:
                raise ValueError(f"unknown object fields {sorted(unknown)}")
        with self.transaction() as db:
            for path, fields in updates:
                if not fields:
                    continue
                assignments = ", ".join(f"{name} = ?" for name in fields)
                db.execute(f"UPDATE objects SET {assignments} WHERE transfer_id = ? AND path = ?",
                           (*fields.values(), transfer_id, path))
                if fields.get("state") in SETTLED:
                    db.execute("DELETE FROM parts WHERE transfer_id = ? AND path = ?", (transfer_id, path))

    @guarded
    def finish(self, transfer_id: str, state: str, message: str | None = None, owner: str | None = None) -> None:
        self.write("UPDATE transfers SET state = ?, finished = ?, message = ?, cancel = 0"
                   " WHERE id = ? AND (? IS NULL OR owner = ?)",
                   (state, time.time(), message, transfer_id, owner, owner))

    def view(self, row: sqlite3.Row) -> dict:
        totals = dict(self.db.execute("SELECT name, value FROM totals WHERE transfer_id = ?", (row["id"],)).fetchall())

        def each(kind: str) -> dict[str, int]:
            return {name[len(kind) + 1:]: value for name, value in sorted(totals.items())
                    if name.startswith(f"{kind}:") and value}

        states = each("state")
        counts = {"objects_total": sum(states.values()), "bytes_total": sum(each("bytes").values()),
                  "bytes_done": totals.get("bytes_done", 0), "uploads_open": totals.get("uploads_open", 0),
                  "methods": each("method"), "proofs": each("proof"),
                  "workers": workers_view(each("worker-objects"), each("worker-bytes")),
                  **{f"objects_{state}": states.get(state, 0) for state in ("done", "failed", "skipped", "unverified")}}
        notes = [dict(e) for e in self.db.execute(
            f"SELECT path, state, message, warning FROM objects WHERE transfer_id = ? AND ({NOTES}) ORDER BY seq",
            (row["id"],))]
        transfer = dict(row)
        transfer["selection"] = json.loads(transfer["selection"] or "null")
        return status_view(transfer, counts, notes)

    @guarded
    def status(self, transfer_id: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
            return self.view(row) if row else None

    def rows(self, state: str | None, limit: int | None = None, offset: int = 0) -> list[sqlite3.Row]:
        """The transfer rows in one shown state, newest first (a page of them with `limit`). A running
        transfer shows as running or interrupted, which only its owner's liveness tells: those two are
        filtered here, the other states by the query (and paged by SQLite), as records/mongo.py does."""
        if state in DERIVED:
            rows = [row for row in self.db.execute(
                "SELECT * FROM transfers WHERE state IN ('running', ?) ORDER BY started DESC, id", (state,))
                if state_of(dict(row)) == state]
            return rows[offset:] if limit is None else rows[offset:offset + limit]
        where, args = ("", ()) if state is None else ("WHERE state = ?", (state,))
        return self.db.execute(f"SELECT * FROM transfers {where} ORDER BY started DESC, id LIMIT ? OFFSET ?",
                               (*args, -1 if limit is None else limit, offset)).fetchall()

    @guarded
    def transfers(self, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        with self.lock:
            return [self.view(row) for row in self.rows(state, limit, offset)]

    @guarded
    def count(self, state: str | None = None) -> int:
        with self.lock:
            if state in DERIVED:
                return len(self.rows(state))
            where, args = ("", ()) if state is None else ("WHERE state = ?", (state,))
            return self.db.execute(f"SELECT count(*) FROM transfers {where}", args).fetchone()[0]

    @guarded
    def objects(self, transfer_id: str, after: int = -1, limit: int | None = None,
                unsettled: bool = False) -> list[ObjectRow]:
        settled = f"AND state NOT IN ({SETTLED_SQL})" if unsettled else ""
        with self.lock:
            return [ObjectRow.of(dict(r)) for r in self.db.execute(
                f"SELECT * FROM objects WHERE transfer_id = ? AND seq > ? {settled} ORDER BY seq LIMIT ?",
                (transfer_id, after, -1 if limit is None else limit))]

    @guarded
    def add_sample(self, transfer_id: str, sample: Sample) -> bool:
        with self.transaction() as db:
            db.execute("INSERT INTO samples (transfer_id, at, bytes_done, objects_done) VALUES (?, ?, ?, ?)",
                       (transfer_id, sample.at, sample.bytes_done, sample.objects_done))
            return db.execute(f"DELETE FROM samples WHERE rowid IN ({THINNED})",
                              (transfer_id, limits.SAMPLES_MAX)).rowcount > 0

    @guarded
    def samples(self, transfer_id: str) -> list[Sample]:
        with self.lock:
            return [Sample(*row) for row in self.db.execute(
                "SELECT at, bytes_done, objects_done FROM samples WHERE transfer_id = ? ORDER BY at, rowid",
                (transfer_id,))]

    @guarded
    def statistic(self) -> dict:
        now = time.time()
        with self.lock:
            states = dict(self.db.execute("SELECT state, count(*) FROM transfers WHERE state != 'running' GROUP BY state"))
            for row in self.db.execute("SELECT * FROM transfers WHERE state = 'running'"):
                state = state_of(dict(row))
                states[state] = states.get(state, 0) + 1
            routes = self.db.execute(
                "SELECT t.route, count(DISTINCT t.id) AS transfers,"
                " coalesce(sum(CASE WHEN x.name = 'bytes:done' THEN x.value END), 0) AS bytes,"
                " coalesce(sum(CASE WHEN x.name = 'state:done' THEN x.value END), 0) AS objects"
                " FROM transfers t LEFT JOIN totals x ON x.transfer_id = t.id AND x.name IN ('bytes:done', 'state:done')"
                " GROUP BY t.route ORDER BY t.route").fetchall()
            seconds = self.db.execute(
                "SELECT coalesce(sum(finished - started), 0) FROM transfers WHERE finished IS NOT NULL").fetchone()[0]
            by_day = dict(self.db.execute(
                "SELECT date(t.started, 'unixepoch') AS day, sum(x.value) FROM transfers t"
                " JOIN totals x ON x.transfer_id = t.id AND x.name = 'bytes:done'"
                " WHERE t.started >= ? GROUP BY day", (statistic_since(now),)).fetchall())
        by_route = {r["route"]: {"transfers": r["transfers"], "bytes": r["bytes"], "objects": r["objects"]}
                    for r in routes}
        return statistic_view(states, by_route, seconds, by_day, now)

    @guarded
    def close(self) -> None:
        self.db.close()
