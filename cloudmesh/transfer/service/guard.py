"""ASGI middleware in front of connexion: the bearer token, and a body's length and type, checked
before anything is read."""
import hmac
import json
import math
import re

from cloudmesh.transfer import limits

PUBLIC = frozenset({"/health"})  # the only paths answered without the token


class RequestGuard:
    """ASGI middleware in front of connexion. Without the bearer token only /health answers (401,
    also for the OpenAPI document and unknown paths); a Content-Length is read as HTTP allows
    (optional whitespace, one value however often repeated) and over limits.MAX_BODY is 413; a
    body that is not `application/json` (UTF-8) is 415. Refusals close the connection, since the
    body is not read."""

    def __init__(self, app, token: str, limit: int = limits.MAX_BODY):
        self.app, self.token, self.limit = app, token, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal:
            return await answer(send, *refusal)
        return await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple | None:
        """(status, title, detail, extra headers) for a request to refuse, else None."""
        headers = [(name, value.decode("latin-1")) for name, value in scope.get("headers") or []]
        if scope["path"] not in PUBLIC:
            authorization = [value for name, value in headers if name == b"authorization"]
            scheme, _, token = (authorization[0] if authorization else "").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return 401, "Unauthorized", "no bearer token: send Authorization: Bearer TOKEN", BEARER
            if not hmac.compare_digest(token.strip().encode(), self.token.encode()):
                return 401, "Unauthorized", "the bearer token is not valid", BEARER
        try:
            length = content_length([value for name, value in headers if name == b"content-length"])
        except ValueError:
            return 400, "Bad Request", "the Content-Length header is not one whole number", []
        if length > self.limit:
            return 413, "Payload Too Large", f"the request body is larger than {self.limit} bytes", []
        if length or any(name == b"transfer-encoding" for name, _ in headers):
            types = [value for name, value in headers if name == b"content-type"]
            media, *parameters = (types[0] if types else "").split(";")
            charset = {key.strip().lower(): value.strip().strip('"').lower()
                       for key, _, value in (p.partition("=") for p in parameters)}.get("charset", "utf-8")
            if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
                return 415, "Unsupported Media Type", \
                    "the request body must be JSON: send Content-Type: application/json", []
        return None


BEARER = [(b"www-authenticate", b"Bearer")]
DIGITS = re.compile(r"[0-9]+")


def content_length(values: list[str]) -> int | float:
    """The body length that the Content-Length headers give, 0 without one, as RFC 9110 8.6 has
    it: digits, with optional whitespace around; a list or repeat of one value is that value;
    anything else is a ValueError. A length of more than 20 digits is infinite."""
    parts = {part.strip(" \t") for value in values for part in value.split(",")}
    if not parts:
        return 0
    digits = parts.pop()
    if parts or not DIGITS.fullmatch(digits):
        raise ValueError("not one Content-Length")
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else math.inf


async def answer(send, status: int, title: str, detail: str, headers: list) -> None:
    """A problem+json answer that closes the connection."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
