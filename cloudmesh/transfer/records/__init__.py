"""Transfer-record stores. SQLite in the cloudmesh config directory is the default."""
from cloudmesh.transfer.config import config_dir
from cloudmesh.transfer.records.base import Records


def open_records() -> Records:
    from cloudmesh.transfer.records.sqlite import SQLiteRecords
    return SQLiteRecords(config_dir() / "transfer.db")


__all__ = ["Records", "open_records"]
