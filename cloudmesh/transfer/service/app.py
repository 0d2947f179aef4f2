"""The REST service: the OpenAPI document in this folder served spec-first by connexion, on uvicorn.

connexion routes each operation to service/handlers.py, validates requests and responses
against openapi.yaml and checks the bearer token; the handlers call the same Transfer API as the
command. Transfers run in background threads of this process; stopping the service leaves the
running ones interrupted, to resume.

Around connexion: RequestGuard refuses, before connexion reads anything, a request without the
token (only /health is public), with a bad or too large Content-Length, or with a body that is not
JSON (guard.py); TimedHttp (timeouts.py, uvicorn's protocol) closes a connection whose request
does not arrive in time; the validators (validation.py) answer bad bodies and parameters with one
line that names the field. token.py finds or writes the bearer token. Outermost, RequestLog logs
a line per request (logs.py configures where it goes).
"""
import contextlib
import hmac
import logging
import math
import re
import sqlite3
import sys
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():  # connexion imports starlette's test client, which warns about httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import connexion
from connexion.datastructures import MediaTypeDict
from connexion.options import SwaggerUIOptions
from connexion.problem import problem
from connexion.resolver import Resolver
from pymongo.errors import PyMongoError

from cloudmesh.transfer import limits
from cloudmesh.transfer.api import Run, Transfer
from cloudmesh.transfer.options import memory_budget
from cloudmesh.transfer.errors import (ConfigError, Conflict, NotFound, RecordsBusy, RecordsError, TransferError,
                                       UsageError)
from cloudmesh.transfer.limits import MiB
from cloudmesh.transfer.service.dashboard import Dashboard
from cloudmesh.transfer.service.guard import RequestGuard
from cloudmesh.transfer.service.timeouts import TimedHttp
from cloudmesh.transfer.service.token import service_token
from cloudmesh.transfer.service.validation import BodyValidator, ParameterCheck

SPEC = Path(__file__).with_name("openapi.yaml")
SHUTDOWN_WAIT = 20.0
log = logging.getLogger(__name__)
requests_log = logging.getLogger("cloudmesh.transfer.service.requests")


class Busy(TransferError):
    """The service runs as many transfers as it may."""


class OverBudget(Busy):
    """The transfers the service runs hold too much of its memory budget to start another."""


@dataclass
class Running:
    """A transfer this service runs: its API object and its thread."""

    api: Transfer
    thread: threading.Thread


def mib(size: int) -> str:
    return f"{math.ceil(size / MiB)}MiB"


class Service:
    """Runs transfers in daemon threads, at most `limit` at once and within the memory `budget`
    (parallel x chunksize) together, each with a Transfer of its own (which refuses one transfer
    over the budget by itself). A transfer that does not fit beside the others is refused (429),
    not queued: the client retries, as it does when all slots are taken."""

    def __init__(self, token: str, limit: int = limits.MAX_RUNNING, budget: int = limits.MEMORY_BUDGET):
        self.token = token
        self.limit, self.budget = limit, budget
        self.slots = threading.BoundedSemaphore(limit)
        self.running: dict[str, Running] = {}
        self.memory = 0  # bytes held by the transfers running and being prepared
        self.lock = threading.Lock()

    def launch(self, api: Transfer, prepare) -> Run | None:
        """Take a slot and the transfer's memory, call `prepare()` (create or reopen a transfer:
        errors reach the caller) and run what it returns in the background; None (nothing to run)
        gives both back."""
        needed = api.options.memory
        if not self.slots.acquire(blocking=False):
            raise Busy(f"{self.limit} transfers are running in this service; try again later")
        with self.lock:
            if self.memory + needed > self.budget:
                self.slots.release()
                raise OverBudget(f"the transfers running in this service hold {mib(self.memory)} of the "
                                 f"{mib(self.budget)} memory budget; this one needs {mib(needed)}; try again later")
            self.memory += needed
        try:
            run = prepare()
        except BaseException:
            self.give_back(needed)
            raise
        if run is None:
            self.give_back(needed)
            return None
        thread = threading.Thread(target=self.execute, args=(api, run, needed), name=f"transfer {run.id}",
                                  daemon=True)
        with self.lock:
            self.running[run.id] = Running(api, thread)
        thread.start()
        return run

    def give_back(self, memory: int) -> None:
        with self.lock:
            self.memory -= memory
        self.slots.release()

    def execute(self, api: Transfer, run: Run, memory: int) -> None:
        try:
            api.execute(run)
        except TransferError as e:
            log.warning("transfer '%s' failed: %s", run.id, e)  # its record says so too
        except Exception:
            log.exception("transfer '%s' stopped by an internal error", run.id)
        finally:
            with self.lock:
                if run.id in self.running and self.running[run.id].thread is threading.current_thread():
                    del self.running[run.id]
            self.give_back(memory)

    def shutdown(self) -> None:
        """Stop every running transfer as a crash would (each then reads interrupted), and wait
        briefly for their parts in flight."""
        with self.lock:
            running = list(self.running.values())
        for each in running:
            each.api.interrupt()
        for each in running:
            each.thread.join(SHUTDOWN_WAIT)


SERVICE: Service | None = None  # the service this process serves, set by create_app


def check_token(token: str) -> dict | None:
    """connexion's bearer check: the token, compared in constant time."""
    if SERVICE and hmac.compare_digest(token.encode(), SERVICE.token.encode()):
        return {"sub": "operator"}
    return None


# Errors as application/problem+json: every known family is a 4xx, a 502 or a 503.


def problem_for(request, error: Exception):
    """A TransferError as application/problem+json, with its one line as the detail."""
    headers = None
    if isinstance(error, Busy):
        status, title = 429, "Too Many Requests"
    elif isinstance(error, Conflict):
        status, title = 409, "Conflict"
    elif isinstance(error, (UsageError, ConfigError)):
        status, title = 400, "Bad Request"
    elif isinstance(error, NotFound):
        status, title = 404, "Not Found"
    elif isinstance(error, RecordsError):
        status, title = 503, "Service Unavailable"
        if isinstance(error, RecordsBusy):
            headers = {"Retry-After": str(limits.RECORDS_RETRY_AFTER)}
    else:
        status, title = 502, "Bad Gateway"
    return problem(status, title, " ".join(str(error).split()), headers=headers)


def store_problem(request, error: Exception):
    """A record store's own exception that its Records class did not turn into a RecordsError:
    a 503 all the same (with Retry-After when the store is locked), and its traceback in the log."""
    log.error("the transfer records failed: %s", error.__class__.__name__, exc_info=error)
    busy = getattr(error, "sqlite_errorname", None) in ("SQLITE_BUSY", "SQLITE_LOCKED")
    return problem(503, "Service Unavailable", f"the transfer records failed ({error.__class__.__name__}); "
                   "try again later, or see the service log",
                   headers={"Retry-After": str(limits.RECORDS_RETRY_AFTER)} if busy else None)


def bug_problem(request, error: Exception):
    """Anything else is a bug: 500 with the exception's class (as the command's `internal error`),
    and its traceback in the log."""
    log.error("internal error in %s %s", request.method, request.url.path, exc_info=error)
    return problem(500, "Internal Server Error",
                   f"internal error ({error.__class__.__name__}); the service log has the traceback")


class RequestLog:
    """ASGI middleware that logs one INFO line per HTTP request: method, path without the query
    string (which may hold secrets; uvicorn's own access log, which prints it, is off), status
    ("-" when none was sent), duration and client."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # uvicorn answers 500 for it
            raise
        finally:
            client = scope.get("client")
            requests_log.info("%s %s %s %.1fms %s", scope["method"], scope["path"], status or "-",
                              (time.perf_counter() - started) * 1000, f"{client[0]}:{client[1]}" if client else "-")


def handler(operation_id: str):
    """The function of handlers.py for an operationId of openapi.yaml (createTransfer ->
    create_transfer): the contract keeps short ids, which clients generated from it are named by."""
    from cloudmesh.transfer.service import handlers
    return getattr(handlers, re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower())


def create_app(token: str, budget: int = limits.MEMORY_BUDGET) -> RequestLog:
    """The ASGI application: the spec-first API behind the guard, the dashboard's static pages
    in front of it, each request logged."""
    global SERVICE
    SERVICE = Service(token, budget=budget)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        SERVICE.shutdown()

    app = connexion.AsyncApp(__name__, lifespan=lifespan)
    app.add_api(SPEC, validate_responses=True, strict_validation=True, resolver=Resolver(function_resolver=handler),
                swagger_ui_options=SwaggerUIOptions(swagger_ui=False),
                validator_map={"body": MediaTypeDict({"*/*json": BodyValidator}), "parameter": ParameterCheck})
    app.add_error_handler(TransferError, problem_for)
    app.add_error_handler(sqlite3.Error, store_problem)
    app.add_error_handler(PyMongoError, store_problem)
    app.add_error_handler(Exception, bug_problem)
    return RequestLog(Dashboard(RequestGuard(app, token)))


def dashboard_line(host: str, port: int, token: str, where: str, terminal: bool) -> str:
    """The dashboard's address for the person who started the service: on a terminal with the token
    in the fragment (which a browser never sends: the page keeps it in sessionStorage), else
    without it, since output that is not a terminal tends to end up in logs."""
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}/ui/"
    if terminal:
        return f"dashboard: {address}#token={urllib.parse.quote(token, safe='')}"
    return f"dashboard: {address} (sign in with the bearer token: {where})"


def serve(host: str = "127.0.0.1", port: int = 8400) -> None:
    """Serve the API with uvicorn until SIGINT or SIGTERM (HTTP only: no WebSocket upgrades),
    logging through the handlers logs.configured set up (log_config=None: uvicorn adds none)."""
    import uvicorn
    token, where = service_token(host)
    budget = memory_budget()
    log.info("cms transfer service on http://%s:%d (bearer token: %s)", host, port, where)
    print(dashboard_line(host, port, token, where, sys.stdout.isatty()), flush=True)
    uvicorn.run(create_app(token, budget), host=host, port=port, log_config=None, log_level="info", access_log=False,
                timeout_graceful_shutdown=5, http=TimedHttp, ws="none")
