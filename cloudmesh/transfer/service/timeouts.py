"""uvicorn's protocol with the request timeouts it lacks (uvicorn issue #157: only keep-alive is
timed), so that a slow client cannot hold a connection open."""
import asyncio
import enum
import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cloudmesh.transfer import limits


class Phase(enum.Enum):
    """What a connection waits for from its client."""

    IDLE = "a request"
    HEADERS = "request headers"
    BODY = "request body"


class TimedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for receiving a request: its headers within
    limits.REQUEST_HEADER_TIMEOUT of the connection (or of the request's first byte on a kept-alive
    connection), its body within limits.REQUEST_BODY_TIMEOUT of the headers. A request late is
    answered 408 and its connection closed; an idle new connection is closed. This sits below ASGI
    on purpose: middleware sees no request before its headers are complete, nor a body the
    application does not read (after a 401 or 413, uvicorn goes on reading it untimed, each byte
    cancelling the keep-alive timer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.phase = Phase.IDLE

    def arm(self, phase: Phase, seconds: float) -> None:
        self.disarm()
        self.phase = phase
        self.deadline = self.loop.call_later(seconds, self.expired, seconds)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.arm(Phase.IDLE, limits.REQUEST_HEADER_TIMEOUT)

    def connection_lost(self, exc) -> None:
        self.disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.deadline is None:
            self.arm(Phase.HEADERS, limits.REQUEST_HEADER_TIMEOUT)
        else:  # the connection's first request: its deadline runs from the connection
            self.phase = Phase.HEADERS

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.arm(Phase.BODY, limits.REQUEST_BODY_TIMEOUT)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.disarm()
        self.phase = Phase.IDLE

    def unanswered(self) -> bool:
        """Whether nothing is being written on this connection, so that a 408 can be."""
        if self.pipeline:
            return False
        if self.phase is Phase.HEADERS:
            return self.cycle is None or self.cycle.response_complete
        return not self.cycle.response_started

    def expired(self, seconds: float) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.phase is not Phase.IDLE:
            client = "%s:%d" % self.client if self.client else "a client"
            self.logger.warning("closing the connection from %s: its %s did not arrive within %gs",
                                client, self.phase.value, seconds)
            if self.unanswered():
                self.transport.write(timeout_answer(self.server_state.default_headers, self.phase, seconds))
        self.transport.close()


def timeout_answer(default_headers, phase: Phase, seconds: float) -> bytes:
    """A raw 408 problem+json answer, written by the protocol outside of any ASGI cycle."""
    body = json.dumps({"type": "about:blank", "title": "Request Timeout", "status": 408,
                       "detail": f"the {phase.value} did not arrive within {seconds:g} seconds"}).encode()
    lines = [STATUS_LINE[408], *(name + b": " + value + b"\r\n" for name, value in default_headers),
             b"content-type: application/problem+json\r\n", b"content-length: %d\r\n" % len(body),
             b"connection: close\r\n\r\n", body]
    return b"".join(lines)
