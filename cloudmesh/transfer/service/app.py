"""The REST service: the OpenAPI document in this folder served spec-first by connexion, on uvicorn.

connexion routes each operation to service/handlers.py, validates requests and responses
against openapi.yaml and checks the bearer token; the handlers call the same Transfer API as the
command. Transfers run in background threads of this process; stopping the service leaves the
running ones interrupted, to resume.
"""
import contextlib
import hmac
import ipaddress
import os
import secrets
import socket
import sys
import threading
import warnings
from pathlib import Path

with warnings.catch_warnings():  # connexion imports starlette's test client, which warns about httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import connexion
from connexion.options import SwaggerUIOptions
from connexion.problem import problem

from cloudmesh.transfer.api import Run, Transfer
from cloudmesh.transfer.config import config_dir
from cloudmesh.transfer.errors import ConfigError, Conflict, NotFound, TransferError, UsageError

SPEC = Path(__file__).with_name("openapi.yaml")
TOKEN_FILE = "transfer-token"
TOKEN_VARIABLE = "CMS_TRANSFER_TOKEN"
MAX_BODY = 64 * 1024
MAX_RUNNING = 4
SHUTDOWN_WAIT = 20.0


class Busy(TransferError):
    """The service runs as many transfers as it may."""


class Service:
    """Runs transfers in daemon threads, at most `limit` at once, each with a Transfer of its own."""

    def __init__(self, token: str, limit: int = MAX_RUNNING):
        self.token = token
        self.slots = threading.BoundedSemaphore(limit)
        self.running: dict[str, tuple[Transfer, threading.Thread]] = {}
        self.lock = threading.Lock()

    def launch(self, api: Transfer, prepare) -> Run | None:
        """Take a slot, call `prepare()` (create or reopen a transfer: errors reach the caller) and
        run what it returns in the background; None (nothing to run) gives the slot back."""
        if not self.slots.acquire(blocking=False):
            raise Busy(f"{MAX_RUNNING} transfers are running in this service; try again later")
        try:
            run = prepare()
        except BaseException:
            self.slots.release()
            raise
        if run is None:
            self.slots.release()
            return None
        thread = threading.Thread(target=self.execute, args=(api, run), name=f"transfer {run.id}", daemon=True)
        with self.lock:
            self.running[run.id] = (api, thread)
        thread.start()
        return run

    def execute(self, api: Transfer, run: Run) -> None:
        try:
            api.execute(run)
        except Exception as e:
            print(f"transfer '{run.id}' stopped: {e.__class__.__name__}", file=sys.stderr)
        finally:
            with self.lock:
                if self.running.get(run.id, (None, None))[1] is threading.current_thread():
                    del self.running[run.id]
            self.slots.release()

    def shutdown(self) -> None:
        """Stop every running transfer as a crash would (each then reads interrupted), and wait
        briefly for their parts in flight."""
        with self.lock:
            running = list(self.running.values())
        for api, _ in running:
            api.interrupt()
        for _, thread in running:
            thread.join(SHUTDOWN_WAIT)


SERVICE: Service | None = None  # the service this process serves, set by create_app


def check_token(token: str) -> dict | None:
    """connexion's bearer check: the token, compared in constant time."""
    if SERVICE and hmac.compare_digest(token.encode(), SERVICE.token.encode()):
        return {"sub": "operator"}
    return None


def problem_for(request, error: Exception):
    """A TransferError as application/problem+json, with its one line as the detail."""
    if isinstance(error, Busy):
        status, title = 429, "Too Many Requests"
    elif isinstance(error, Conflict):
        status, title = 409, "Conflict"
    elif isinstance(error, (UsageError, ConfigError)):
        status, title = 400, "Bad Request"
    elif isinstance(error, NotFound):
        status, title = 404, "Not Found"
    else:
        status, title = 502, "Bad Gateway"
    return problem(status, title, " ".join(str(error).split()))


class BodyLimit:
    """ASGI middleware: refuse a request whose Content-Length is over `limit` bytes with 413
    before its body is read (connexion refuses chunked bodies, which carry none, with 400)."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        length = dict(scope.get("headers") or []).get(b"content-length") if scope["type"] == "http" else None
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_large(send, self.limit)
        return await self.app(scope, receive, send)


async def too_large(send, limit: int) -> None:
    body = (f'{{"type": "about:blank", "title": "Payload Too Large", "status": 413, '
            f'"detail": "the request body is larger than {limit} bytes"}}').encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(token: str) -> BodyLimit:
    """The ASGI application: the spec-first API behind the body limit."""
    global SERVICE
    SERVICE = Service(token)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        SERVICE.shutdown()

    app = connexion.AsyncApp(__name__, lifespan=lifespan)
    app.add_api(SPEC, validate_responses=True, strict_validation=True,
                swagger_ui_options=SwaggerUIOptions(swagger_ui=False))
    app.add_error_handler(TransferError, problem_for)
    return BodyLimit(app)


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (socket.gaierror, ValueError):
        return False


def service_token(host: str) -> tuple[str, str]:
    """The bearer token and where it comes from: $CMS_TRANSFER_TOKEN, else the token file in the
    config directory, else (only on a loopback address) a new one written there with mode 0600."""
    if os.environ.get(TOKEN_VARIABLE, "").strip():
        return os.environ[TOKEN_VARIABLE].strip(), f"${TOKEN_VARIABLE}"
    path = config_dir() / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError(f"the token file {path} is empty")
        return token, str(path)
    if not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without a token: set {TOKEN_VARIABLE} or write one to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, str(path)


def serve(host: str = "127.0.0.1", port: int = 8400) -> None:
    """Serve the API with uvicorn until SIGINT or SIGTERM."""
    import uvicorn
    token, where = service_token(host)
    print(f"cms transfer service on http://{host}:{port} (bearer token: {where})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(token), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
