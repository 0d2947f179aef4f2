"""Transfer-record stores. SQLite in the cloudmesh config directory is the default; MongoDB
(records/mongo.py) when cloudmesh.yaml or the environment selects it (config.load_records_settings)."""
import math
import os

from cloudmesh.transfer.config import config_dir, load_records_settings
from cloudmesh.transfer.errors import ConfigError
from cloudmesh.transfer.limits import MAX_RECORDS_WAIT, RECORDS_WAIT
from cloudmesh.transfer.records.base import Records

WAIT_VARIABLE = "CMS_TRANSFER_RECORDS_WAIT"


def records_wait(default: float = RECORDS_WAIT) -> float:
    """How long a write to the SQLite records waits for another process's lock: $CMS_TRANSFER_RECORDS_WAIT
    (seconds, from 0 to MAX_RECORDS_WAIT) when set, so that a script can fail fast or a crowded
    host wait longer, else `default`."""
    value = os.environ.get(WAIT_VARIABLE, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_RECORDS_WAIT:
        raise ConfigError(f"{WAIT_VARIABLE} must be a number of seconds from 0 to {MAX_RECORDS_WAIT:g}, "
                          f"not {value[:40]!r}")
    return seconds


def open_records(kind: str | None = None, mongo_url: str | None = None, wait: float = RECORDS_WAIT) -> Records:
    """The configured store. `kind` ("sqlite" or "mongo") and `mongo_url` are options that override
    $CMS_TRANSFER_RECORDS / $CMS_TRANSFER_MONGO_URL and cloudmesh.yaml. `wait` is how long a write
    to SQLite waits while another process holds the file (limits.RECORDS_WAIT for the command,
    SERVICE_RECORDS_WAIT for the REST service); $CMS_TRANSFER_RECORDS_WAIT replaces it when set.
    pymongo is imported only when MongoDB is chosen, so that `cms` starts as fast without it."""
    settings = load_records_settings(kind=kind, mongo_url=mongo_url)
    if settings["kind"] == "mongo":
        from cloudmesh.transfer.records.mongo import connect
        return connect(settings)
    from cloudmesh.transfer.records.sqlite import SQLiteRecords
    return SQLiteRecords(config_dir() / "transfer.db", wait=records_wait(wait))


__all__ = ["Records", "open_records", "records_wait"]
