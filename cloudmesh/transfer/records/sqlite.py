"""Transfer records in an embedded SQLite file (WAL mode: several `cms` processes may share it)."""
import contextlib
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

from cloudmesh.transfer.errors import Conflict, IdInUse, NotFound
from cloudmesh.transfer.records.base import SETTLED, Records, owner_alive, state_of, statistic_view, status_view

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
    cancel INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transfers_state ON transfers(state, started);
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
CREATE TABLE IF NOT EXISTS parts (
    transfer_id TEXT NOT NULL,
    path TEXT NOT NULL,
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    PRIMARY KEY (transfer_id, path, upload, number)
);
"""
# Columns added after the first release, for databases created before them.
ADDED = {"transfers": {"owner": "TEXT", "heartbeat": "REAL", "cancel": "INTEGER NOT NULL DEFAULT 0"},
         "objects": {"etag": "TEXT", "mtime": "REAL", "upload": "TEXT", "part_size": "INTEGER", "proof": "TEXT",
                     "warning": "TEXT"}}

OBJECT_FIELDS = {"state", "bytes_done", "md5", "method", "proof", "message", "warning", "size", "etag", "mtime",
                 "upload", "part_size"}

COUNTS = """
SELECT count(*) AS objects_total,
       coalesce(sum(state = 'done'), 0) AS objects_done,
       coalesce(sum(state = 'failed'), 0) AS objects_failed,
       coalesce(sum(state = 'skipped'), 0) AS objects_skipped,
       coalesce(sum(state = 'unverified'), 0) AS objects_unverified,
       coalesce(sum(size), 0) AS bytes_total,
       coalesce(sum(bytes_done), 0) AS bytes_done,
       coalesce(sum(upload IS NOT NULL AND state NOT IN ('done', 'skipped', 'unverified')), 0) AS uploads_open
FROM objects WHERE transfer_id = ?
"""


BUSY_SECONDS = 30  # how long a write waits for another process's transaction


class SQLiteRecords(Records):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, timeout=BUSY_SECONDS, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as db:  # one process at a time creates or migrates the schema
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, columns in ADDED.items():
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def wal(self) -> None:
        """Switch the file to WAL mode. SQLite answers 'locked' at once, without waiting, while
        another process opens the same new file, so this waits as a busy timeout would."""
        deadline = time.monotonic() + BUSY_SECONDS
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
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that processes never deadlock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def write(self, sql: str, args) -> int:
        with self.transaction() as db:
            return db.execute(sql, args).rowcount

    def create(self, transfer: dict, objects: list[dict]) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM transfers WHERE id = ?", (transfer["id"],)).fetchone()
            if row:
                raise IdInUse(f"transfer id '{transfer['id']}' is already used ({row['state']}); choose another id")
            now = time.time()
            db.execute(
                "INSERT INTO transfers (id, state, source, target, route, copy, recursive, started, host, pid,"
                " owner, heartbeat) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (transfer["id"], transfer["source"], transfer["target"], transfer["route"],
                 int(transfer["copy"]), int(transfer["recursive"]), now, socket.gethostname(), os.getpid(),
                 transfer["owner"], now))
            db.executemany(
                "INSERT INTO objects (transfer_id, seq, path, source_key, target_key, size, etag, mtime)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(transfer["id"], seq, o["path"], o["source_key"], o["target_key"], o["size"], o.get("etag"),
                  o.get("mtime")) for seq, o in enumerate(objects)])

    def part_done(self, transfer_id: str, path: str, upload: str, number: int, md5: str, bytes_done: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO parts (transfer_id, path, upload, number, md5) VALUES (?, ?, ?, ?, ?)",
                       (transfer_id, path, upload, number, md5))
            db.execute("UPDATE objects SET bytes_done = ? WHERE transfer_id = ? AND path = ?",
                       (bytes_done, transfer_id, path))

    def parts(self, transfer_id: str, path: str, upload: str) -> dict[int, str]:
        with self.lock:
            return dict(self.db.execute("SELECT number, md5 FROM parts WHERE transfer_id = ? AND path = ? AND upload = ?",
                                        (transfer_id, path, upload)).fetchall())

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

    def heartbeat(self, transfer_id: str, owner: str) -> str:
        with self.transaction() as db:
            if not db.execute("UPDATE transfers SET heartbeat = ? WHERE id = ? AND owner = ? AND state = 'running'",
                              (time.time(), transfer_id, owner)).rowcount:
                return "lost"
            cancel = db.execute("SELECT cancel FROM transfers WHERE id = ?", (transfer_id,)).fetchone()[0]
        return "cancel" if cancel else "run"

    def request_cancel(self, transfer_id: str) -> None:
        self.write("UPDATE transfers SET cancel = 1 WHERE id = ? AND state = 'running'", (transfer_id,))

    def update_object(self, transfer_id: str, path: str, **fields) -> None:
        unknown = set(fields) - OBJECT_FIELDS
        if unknown:
            raise ValueError(f"unknown object fields {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE objects SET {assignments} WHERE transfer_id = ? AND path = ?",
                       (*fields.values(), transfer_id, path))
            if fields.get("state") in SETTLED:
                db.execute("DELETE FROM parts WHERE transfer_id = ? AND path = ?", (transfer_id, path))

    def finish(self, transfer_id: str, state: str, message: str | None = None, owner: str | None = None) -> None:
        self.write("UPDATE transfers SET state = ?, finished = ?, message = ?, cancel = 0"
                   " WHERE id = ? AND (? IS NULL OR owner = ?)",
                   (state, time.time(), message, transfer_id, owner, owner))

    def view(self, row: sqlite3.Row) -> dict:
        counts = dict(self.db.execute(COUNTS, (row["id"],)).fetchone())
        for column, name in (("method", "methods"), ("proof", "proofs")):
            counts[name] = dict(self.db.execute(
                f"SELECT {column}, count(*) FROM objects WHERE transfer_id = ? AND {column} IS NOT NULL"
                f" GROUP BY {column} ORDER BY {column}", (row["id"],)).fetchall())
        notes = [dict(e) for e in self.db.execute(
            "SELECT path, state, message, warning FROM objects WHERE transfer_id = ?"
            " AND (state IN ('failed', 'unverified') OR warning IS NOT NULL) ORDER BY seq", (row["id"],))]
        return status_view(dict(row), counts, notes)

    def status(self, transfer_id: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM transfers WHERE id = ?", (transfer_id,)).fetchone()
            return self.view(row) if row else None

    def rows(self, state: str | None) -> list[sqlite3.Row]:
        """The transfer rows in one (shown) state, newest first; the state is derived, so filtered here."""
        rows = self.db.execute("SELECT * FROM transfers ORDER BY started DESC, id").fetchall()
        return [row for row in rows if state is None or state_of(dict(row)) == state]

    def transfers(self, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict]:
        with self.lock:
            rows = self.rows(state)
            page = rows[offset:] if limit is None else rows[offset:offset + limit]
            return [self.view(row) for row in page]

    def count(self, state: str | None = None) -> int:
        with self.lock:
            return len(self.rows(state))

    def objects(self, transfer_id: str) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(
                "SELECT * FROM objects WHERE transfer_id = ? ORDER BY seq", (transfer_id,))]

    def statistic(self) -> dict:
        with self.lock:
            states = {}
            for row in self.db.execute("SELECT * FROM transfers"):
                state = state_of(dict(row))
                states[state] = states.get(state, 0) + 1
            routes = self.db.execute(
                "SELECT t.route, count(DISTINCT t.id) AS transfers,"
                " coalesce(sum(CASE WHEN o.state = 'done' THEN o.size END), 0) AS bytes,"
                " coalesce(sum(o.state = 'done'), 0) AS objects"
                " FROM transfers t LEFT JOIN objects o ON o.transfer_id = t.id GROUP BY t.route ORDER BY t.route"
            ).fetchall()
            seconds = self.db.execute(
                "SELECT coalesce(sum(finished - started), 0) FROM transfers WHERE finished IS NOT NULL").fetchone()[0]
        by_route = {r["route"]: {"transfers": r["transfers"], "bytes": r["bytes"], "objects": r["objects"]}
                    for r in routes}
        return statistic_view(states, by_route, seconds)

    def close(self) -> None:
        self.db.close()
