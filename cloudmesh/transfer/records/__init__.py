"""Transfer-record stores. SQLite in the cloudmesh config directory is the default; MongoDB
(records/mongo.py) when cloudmesh.yaml or the environment selects it (config.load_records_settings)."""
from cloudmesh.transfer.config import config_dir, load_records_settings
from cloudmesh.transfer.records.base import Records


def open_records(kind: str | None = None, mongo_url: str | None = None) -> Records:
    """The configured store. `kind` ("sqlite" or "mongo") and `mongo_url` are options that override
    $CMS_TRANSFER_RECORDS / $CMS_TRANSFER_MONGO_URL and cloudmesh.yaml. pymongo is imported only
    when MongoDB is chosen, so that `cms` starts as fast without it."""
    settings = load_records_settings(kind=kind, mongo_url=mongo_url)
    if settings["kind"] == "mongo":
        from cloudmesh.transfer.records.mongo import connect
        return connect(settings)
    from cloudmesh.transfer.records.sqlite import SQLiteRecords
    return SQLiteRecords(config_dir() / "transfer.db")


__all__ = ["Records", "open_records"]
