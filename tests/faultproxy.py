"""A fault-injecting reverse proxy for HTTP, for tests that put moto or Azurite behind a flaky network.

    with FaultProxy(emulators.s3_endpoint, seed=1, flavor="s3") as proxy:
        env.add_storage("flaky", "awss3", endpoint_url=proxy.url)
        proxy.configure(error_rate=0.2, match=("PUT", r"partNumber="))
        ...
        assert proxy.faults["error"] > 0

Every request to `proxy.url` is forwarded unchanged (method, path and query, headers including Host,
body) to the upstream, and the upstream's answer is streamed back, unless a fault is injected:

    error       answer 503 without forwarding (S3 SlowDown or Azure ServerBusy, by `flavor`)
    drop        close the connection without an answer, before forwarding
    drop_after  forward, let the upstream answer, then close the connection without an answer
    cut         send status, headers and half of a body longer than `cut_min_size`, then close
    corrupt     forward, then pass the answer on with one byte of its body flipped (a read
                corrupted in transit; the length and headers, checksums included, stay as sent)
    corrupt_up  forward the request with one byte of its body flipped (a write corrupted in transit)
    down        (a flag, not a rate) close every connection at its next request without an answer

The flipped byte is the middle one of the body (of each range, for ranged reads; of the first
chunk of a chunked answer). A corrupt or corrupt_up draw on a request or answer without a body
(or corrupt_up on a chunked request) injects nothing and is not counted.

Each request that `match` selects takes one draw from random.Random(seed), which picks at most one
fault by the rates, so a given seed injects the same faults into the same sequence of requests. With
concurrent clients the order of arrival, and so which request draws which fault, depends on thread
scheduling: use `match` and `faults_left` to aim a fault at particular requests.
"""
import http.client
import http.server
import random
import re
import socket
import socketserver
import sys
import threading
import uuid
from collections import namedtuple
from email.utils import formatdate
from urllib.parse import urlsplit

CHUNK = 64 * 1024
RATES = {"error": "error_rate", "drop": "drop_rate", "drop_after": "drop_after_rate", "cut": "cut_rate",
         "corrupt": "corrupt_rate", "corrupt_up": "corrupt_up_rate"}
FAULTS = (*RATES, "down")
DEFERRED = ("cut", "corrupt", "corrupt_up")  # faults that need a body (of some length) to take effect
DEFAULTS = {"error_rate": 0.0, "drop_rate": 0.0, "drop_after_rate": 0.0, "cut_rate": 0.0, "corrupt_rate": 0.0,
            "corrupt_up_rate": 0.0, "cut_min_size": 1024,
            "match": None, "down": False, "faults_left": None}
# Headers that describe one connection, not the request or response, so they are not passed on.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "expect", "transfer-encoding"}

Event = namedtuple("Event", "method path fault status headers")


class FaultProxy:
    """A threaded reverse proxy on a free 127.0.0.1 port in front of one upstream, injecting faults.

    It is serving as soon as it is constructed; `stop()` (or leaving the `with` block) ends it."""

    def __init__(self, upstream: str, *, seed=0, flavor: str = "s3", timeout: float = 60, **settings):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://HOST:PORT, not {upstream!r}")
        if flavor not in ("s3", "azure"):
            raise ValueError(f"flavor must be 's3' or 'azure', not {flavor!r}")
        self._lock = threading.RLock()
        self.configure(**DEFAULTS | settings)
        self.upstream, self.flavor, self.timeout, self.seed = upstream, flavor, timeout, seed
        self._host, self._port = parts.hostname, parts.port
        self._random = random.Random(seed)
        self._sockets: set[socket.socket] = set()
        self.reset_counters()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    # Settings: assign one (proxy.error_rate = 1) or several at once with configure(); both are validated.

    def __setattr__(self, name, value):
        if name in DEFAULTS:
            self.configure(**{name: value})
        else:
            object.__setattr__(self, name, value)

    def configure(self, **settings) -> "FaultProxy":
        """Change some settings atomically: no request sees half of the change."""
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        with self._lock:
            new = {name: getattr(self, name, None) for name in DEFAULTS} | settings
            for name in RATES.values():
                if not 0 <= new[name] <= 1:
                    raise ValueError(f"{name} must be within 0..1, not {new[name]}")
            if sum(new[name] for name in RATES.values()) > 1:
                raise ValueError(f"the rates ({' + '.join(RATES.values())}) must not add up to more than 1")
            if new["faults_left"] is not None and new["faults_left"] < 0:
                raise ValueError("faults_left must be None or >= 0")
            predicate = _predicate(new["match"])
            for name, value in new.items():
                object.__setattr__(self, name, value)
            self._predicate = predicate
        return self

    # Counters.

    def reset_counters(self) -> None:
        with self._lock:
            self._seen = self._forwarded = self._bytes_up = 0
            self._faults = dict.fromkeys(FAULTS, 0)
            self._log: list[Event] = []

    @property
    def seen(self) -> int:
        """Requests received (whole request line and headers read), faulted or not."""
        with self._lock:
            return self._seen

    @property
    def forwarded(self) -> int:
        """Requests sent upstream in full, whatever became of the answer."""
        with self._lock:
            return self._forwarded

    @property
    def bytes_up(self) -> int:
        """Request-body bytes sent upstream by PUT and POST requests."""
        with self._lock:
            return self._bytes_up

    @property
    def faults(self) -> dict:
        """Faults injected so far, by kind: error, drop, drop_after, cut, down."""
        with self._lock:
            return dict(self._faults)

    @property
    def log(self) -> list:
        """One Event(method, path, fault, status, headers) per request, logged just before the client is
        answered: fault is None or its kind, status the HTTP status sent to the client (None: no answer
        at all), headers the request's headers (a dict with lowercase names)."""
        with self._lock:
            return list(self._log)

    # Lifetime.

    def stop(self) -> None:
        """Stop serving, close every client and upstream connection, and wait for all threads to end."""
        if self._thread is None:
            return
        self._server.shutdown()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()  # closes the listening socket and joins the handler threads
        self._thread.join()
        self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy({self.url} -> {self.upstream})"

    # Used by the handler threads.

    def _decide(self, method: str, path: str, headers) -> str | None:
        """Count a request and pick its fault: one draw for every request that `match` selects."""
        with self._lock:
            self._seen += 1
            if self.down:
                self._faults["down"] += 1
                return "down"
            if self._predicate and not self._predicate(method, path, headers):
                return None
            draw, edge = self._random.random(), 0.0
            if self.faults_left == 0:
                return None
            for kind, rate in RATES.items():
                edge += getattr(self, rate)
                if draw < edge:
                    if self.faults_left is not None:
                        object.__setattr__(self, "faults_left", self.faults_left - 1)
                    if kind not in DEFERRED:  # counted once the body turns out long enough
                        self._faults[kind] += 1
                    return kind
            return None

    def _applied(self, kind: str, applied: bool) -> None:
        """Count a deferred fault (cut, corrupt) once it took effect, or give its draw back."""
        with self._lock:
            if applied:
                self._faults[kind] += 1
            elif self.faults_left is not None:
                object.__setattr__(self, "faults_left", self.faults_left + 1)

    def _sent_up(self, method: str, size: int) -> None:
        if method in ("PUT", "POST"):
            with self._lock:
                self._bytes_up += size

    def _finished(self, event: Event, forwarded: bool) -> None:
        """Log a request's outcome; called before the client is answered, so counters are final by then."""
        with self._lock:
            self._forwarded += forwarded
            self._log.append(event)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)


def _predicate(match):
    """`match` as a function of (method, path, headers): None selects every request."""
    if match is None or callable(match):
        return match
    method, path = (re.compile(pattern) for pattern in match)
    return lambda m, p, headers: bool(method.fullmatch(m) and path.search(p))


def _error_reply(flavor: str) -> tuple[list, bytes]:
    """Headers and body of a 503 as the upstream itself would send it when overloaded."""
    request_id = uuid.uuid4().hex
    if flavor == "s3":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                f"<Message>Please reduce your request rate.</Message><RequestId>{request_id}</RequestId></Error>")
        headers = [("x-amz-request-id", request_id)]
    else:
        body = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>The server is "
                f"currently unable to receive requests. Please retry your request.\nRequestId:{request_id}</Message>"
                "</Error>")
        headers = [("x-ms-error-code", "ServerBusy"), ("x-ms-request-id", request_id)]
    data = body.encode()
    return [("Content-Type", "application/xml"), ("Date", formatdate(usegmt=True)), *headers,
            ("Content-Length", str(len(data)))], data


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    request_queue_size = 128  # a transfer opens 16 or more connections at once
    block_on_close = True  # server_close() joins the handler threads

    def handle_error(self, request, client_address):
        """Connections broken by a fault, by the client or by stop() are expected; anything else is a bug."""
        if not isinstance(sys.exc_info()[1], (OSError, http.client.HTTPException)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the client; upstream gets a new connection per request
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, False)

    def log_message(self, format, *args):
        pass

    def proxy(self):
        proxy = self.server.proxy
        self.fault, self.sent_up, self.recorded = proxy._decide(self.command, self.path, self.headers), False, False
        try:
            if self.fault == "down":  # the body is left unread, so the client may see a reset
                return
            body = self.read_body()
            if self.fault in ("error", "drop"):
                for _ in body:
                    pass
                if self.fault == "error":
                    self.send_error_reply(proxy.flavor)
                return
            self.forward(proxy, body)
        finally:
            if not self.recorded:  # the client gets no answer
                self.record(None)
                self.close_connection = True

    def record(self, status: int | None) -> None:
        """Log the request before the client is answered, so the log is complete when its call returns."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.proxy._finished(Event(self.command, self.path, self.fault, status, headers),
                                    forwarded=self.sent_up)
        self.recorded = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = proxy

    def read_body(self):
        """The request body in chunks, framed by Content-Length or chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers are dropped
                    return
                yield from self.read_exactly(size)
                self.rfile.readline(8)
        else:
            yield from self.read_exactly(int(self.headers.get("Content-Length") or 0))

    def read_exactly(self, size: int):
        while size > 0:
            data = self.rfile.read(min(size, CHUNK))
            if not data:
                raise ConnectionError("client closed the connection inside a request body")
            size -= len(data)
            yield data

    def send_error_reply(self, flavor: str) -> None:
        headers, body = _error_reply(flavor)
        self.record(503)
        self.send_response_only(503, "Service Unavailable" if flavor == "s3" else "Server Busy")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self, proxy: FaultProxy, body) -> None:
        """Send the request upstream and stream its answer back, cutting or dropping it if told to."""
        upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=proxy.timeout)
        try:
            upstream.connect()
            proxy._track(upstream.sock, True)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if "Host" not in self.headers:
                upstream.putheader("Host", f"{proxy._host}:{proxy._port}")
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            if self.fault == "corrupt_up":
                length = int(self.headers.get("Content-Length") or 0)
                applied = length > 0 and not chunked
                proxy._applied("corrupt_up", applied)
                body, self.fault = (flipped(body, length // 2), "corrupt_up") if applied else (body, None)
            for data in body:
                upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                proxy._sent_up(self.command, len(data))
            if chunked:
                upstream.send(b"0\r\n\r\n")
            self.sent_up = True
            response = upstream.getresponse()
            if self.fault != "drop_after":
                self.relay(proxy, response)
        finally:
            if upstream.sock is not None:
                proxy._track(upstream.sock, False)
            upstream.close()

    def relay(self, proxy: FaultProxy, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        has_body = self.command != "HEAD" and response.status >= 200 and response.status not in (204, 304)
        rechunk = has_body and length is None and self.request_version == "HTTP/1.1"
        cut = corrupt = False
        if self.fault == "cut":
            cut = has_body and length is not None and int(length) > proxy.cut_min_size
            proxy._applied("cut", cut)
            self.fault = "cut" if cut else None
            self.close_connection |= cut
        elif self.fault == "corrupt":
            corrupt = has_body and (length is None or int(length) > 0)
            proxy._applied("corrupt", corrupt)
            self.fault = "corrupt" if corrupt else None
        self.record(response.status)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        elif has_body and length is None:
            self.close_connection = True  # an HTTP/1.0 client reads the body until the connection closes
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        left = int(length) // 2 if cut else None
        chunks = iter(lambda: response.read(CHUNK if left is None else min(CHUNK, left)), b"")
        if corrupt:
            chunks = flipped(chunks, None if length is None else int(length) // 2)
        while has_body and left != 0:
            data = next(chunks, b"")
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
            if left is not None:
                left -= len(data)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")


def flipped(chunks, position: int | None):
    """The chunks of a body, with the byte at `position` inverted (None: the middle one of the
    first chunk, for a body of unknown length)."""
    offset = 0
    for data in chunks:
        if position is None and data:
            position = len(data) // 2
        if position is not None and offset <= position < offset + len(data):
            at = position - offset
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        offset += len(data)
        yield data
