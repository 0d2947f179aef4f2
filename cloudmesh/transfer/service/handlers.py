"""The operations of openapi.yaml (each operationId names the function here in snake case:
createTransfer -> create_transfer; see app.handler): thin calls into the
Transfer API, so that a transfer started over REST and one started with `cms transfer` are the
same thing in the records."""
import itertools
import threading
from dataclasses import asdict

from cloudmesh.transfer import __version__
from cloudmesh.transfer import config as settings
from cloudmesh.transfer.api import Transfer
from cloudmesh.transfer.errors import NotFound, UsageError
from cloudmesh.transfer.limits import BROWSE_ROWS, PREVIEW_ROWS, SERVICE_RECORDS_WAIT
from cloudmesh.transfer.options import TransferConfig
from cloudmesh.transfer.planner import Selection
from cloudmesh.transfer.records import open_records
from cloudmesh.transfer.records.base import State
from cloudmesh.transfer.service import app

READER = None  # one Transfer for reading the records, opened on first use; its store is shared
METRICS = None  # the Prometheus registry, made at the first scrape
OPENING = threading.RLock()
OPTIONS = ("parallel", "chunksize", "retries")  # of TransferConfig, as a request body names them


def reader() -> Transfer:
    """The service's Transfer for the records. A write waits SERVICE_RECORDS_WAIT for a lock that
    another process holds (then the request answers 503), since a waiting request holds a worker."""
    global READER
    with OPENING:
        if READER is None:
            READER = Transfer(records=open_records(wait=SERVICE_RECORDS_WAIT))
    return READER


def transfer(**options) -> Transfer:
    """A Transfer for one request or run, on the service's one record store (a connection, or a
    MongoDB client with its threads, per request would pile up)."""
    return Transfer(records=reader().records, **options)


def answer(body, status: int = 200, transfer_id: str | None = None):
    """A JSON answer (the operations also declare problem+json, so the type is named), with the
    transfer's URL as its Location where there is one to poll."""
    headers = {"Content-Type": "application/json"}
    if transfer_id:
        headers["Location"] = f"/transfers/{transfer_id}"
    return body, status, headers


def health():
    return answer({"status": "ok", "version": __version__})


def cluster_of(wanted: bool | None) -> str | bool | None:
    """Where a request's transfer runs: the service's configured cluster (unless it asks for
    false), never an address of the request's own (a scheduler can make its clients run code)."""
    if wanted is False:
        return False
    if wanted and not settings.load_cluster():
        raise UsageError("cluster is true but no cluster is configured for this service (cloudmesh.transfer.cluster)")
    return None


def create_transfer(body: dict):
    api = transfer(config=TransferConfig.of(**{name: body[name] for name in OPTIONS if name in body}),
                   cluster=cluster_of(body.get("cluster")))
    selection = Selection(body.get("include", []), body.get("exclude", []), body.get("sync"))

    def prepare():
        api.connect()
        try:
            return api.create(body["source"], body["target"], body.get("recursive", False), body.get("id"),
                              body.get("move", False), selection)
        except BaseException as e:
            api.disconnect()
            if isinstance(e, NotFound):  # a source that does not exist is bad input here, not an unknown transfer
                raise UsageError(str(e)) from None
            raise

    run = app.SERVICE.launch(api, prepare)
    return answer(reader().status(run.id), 202, run.id)


def list_transfers(state: str | None = None, limit: int = 50, offset: int = 0):
    api = reader()
    return answer({"items": api.transfers(state, limit, offset), "total": api.count(state), "limit": limit,
                   "offset": offset})


def get_transfer(id: str):
    return answer(reader().status(id))


def cancel_transfer(id: str):
    running = reader().status(id)["state"] == State.RUNNING
    return answer(transfer().cancel(id, wait=False), 202 if running else 200)


def resume_transfer(id: str):
    api = transfer()
    run = app.SERVICE.launch(api, lambda: api.reopen(id))
    return answer(reader().status(id), 202, id) if run else answer(reader().status(id))


def cleanup_transfer(id: str):
    return answer({"id": id, "discarded": transfer().cleanup(id)})


def get_samples(id: str):
    api = reader()
    api.status(id)  # NotFound for an unknown id
    return answer({"id": id, "samples": [asdict(sample) for sample in api.records.samples(id)]})


def preview_transfer(body: dict):
    """The first PREVIEW_ROWS rows of a dry run, and whether there are more."""
    try:
        rows = transfer().preview(body["source"], body["target"], body.get("recursive", False), body.get("move", False),
                                  include=body.get("include", []), exclude=body.get("exclude", []),
                                  sync=body.get("sync"))
        shown = list(itertools.islice(rows, PREVIEW_ROWS + 1))
    except NotFound as e:  # a source that does not exist is bad input here, not an unknown transfer
        raise UsageError(str(e)) from None
    return answer({"source": body["source"], "target": body["target"], "rows": shown[:PREVIEW_ROWS],
                   "truncated": len(shown) > PREVIEW_ROWS})


def list_objects(location: str):
    """One folder level, for the dashboard's folder browser: BROWSE_ROWS entries at most."""
    entries = transfer().list(location, limit=BROWSE_ROWS + 1)
    return answer({"location": location, "entries": entries[:BROWSE_ROWS], "truncated": len(entries) > BROWSE_ROWS})


def check(body: dict):
    try:
        return answer(transfer().check(body["source"], body["target"], body.get("recursive", False),
                                       body.get("download", False)))
    except NotFound as e:  # a source that does not exist is bad input here, not an unknown transfer
        raise UsageError(str(e)) from None


def get_statistics():
    return answer(reader().statistic())


def get_metrics():
    """Prometheus' text format (service/metrics.py, imported on the first scrape: prometheus_client
    costs 50 ms to import)."""
    global METRICS
    with OPENING:
        if METRICS is None:
            from cloudmesh.transfer.service.metrics import Metrics
            METRICS = Metrics(reader())
    return METRICS.text(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


def list_storages():
    return answer([{"name": name, "kind": storage.kind} for name, storage in settings.load_storages().items()])
