"""The web dashboard at /ui: static files (service/ui, no build step) served before the token
guard, since they hold no data; the page itself calls the REST API with the bearer token, which
it keeps in sessionStorage. Every answer carries a strict Content-Security-Policy: scripts and
styles from this origin only, no inline script, no framing, no form posted anywhere."""
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from cloudmesh.transfer.service.guard import answer

UI = Path(__file__).with_name("ui")
PREFIX = "/ui"
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", POLICY.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-cache")]


class Dashboard:
    """ASGI middleware: /ui/... from the ui folder (index.html for /ui/), /ui redirected to /ui/,
    everything else passed on to `app`."""

    def __init__(self, app):
        self.app = app
        self.files = StaticFiles(directory=UI, html=True)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return await self.app(scope, receive, send)

        async def secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        if path == PREFIX:
            return await RedirectResponse(PREFIX + "/", status_code=308)(scope, receive, secured)
        try:
            await self.files({**scope, "root_path": scope.get("root_path", "") + PREFIX}, receive, secured)
        except HTTPException as e:  # StaticFiles' 404 and 405, outside a Starlette app
            if e.status_code == 405:
                return await answer(secured, 405, e.detail, "the dashboard's pages are read with GET",
                                    [(b"allow", b"GET, HEAD")])
            await answer(secured, e.status_code, e.detail, f"no such page of the dashboard: {path}", [])
