"""Object bytes over plain HTTP, on URLs that the cloud SDKs sign (S3 presigned URLs, Azure SAS).

The SDKs' request pipelines cost about 2 ms of CPU per request, four times a bare urllib3
request, and on a small machine that CPU is what bounds a transfer of many small files. So the
requests that carry object bytes (GET of an object or range, PUT of a small object) are sent
here; listing, multipart bookkeeping and server-side copies stay with the SDKs.
"""
import re
import time
import urllib.request
from typing import Callable
from urllib.parse import urlsplit

import urllib3

from cloudmesh.transfer.errors import TransferError
from cloudmesh.transfer.providers.base import Reader
from cloudmesh.transfer.retry import TRANSIENT_STATUS, Retry
from cloudmesh.transfer.tally import RETRIES

OPTIONS = {"num_pools": 8, "maxsize": 64, "retries": False, "timeout": urllib3.Timeout(connect=10, read=120)}
POOL = urllib3.PoolManager(**OPTIONS)
PROXIES = {scheme: urllib3.ProxyManager(url, **OPTIONS)
           for scheme, url in urllib.request.getproxies().items() if scheme in ("http", "https")}


def pool(url: str) -> urllib3.PoolManager:
    """The direct pool, or the proxy that HTTP(S)_PROXY names unless NO_PROXY exempts the host."""
    parts = urlsplit(url)
    proxy = PROXIES.get(parts.scheme)
    return proxy if proxy and not urllib.request.proxy_bypass(parts.hostname) else POOL


def send(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None,
         stream: bool = False, retry: Retry = Retry()) -> urllib3.BaseHTTPResponse:
    """One request, tried again after a connection failure or a transient status (503 SlowDown,
    ServerBusy...) within the retry's bounds; the last answer is returned whatever its status.
    A connection failure names the host only (the URL carries a signature)."""
    pauses = retry.pauses()
    while True:
        try:
            response = pool(url).request(method, url, body=body, headers=headers, preload_content=not stream,
                                         redirect=False)
        except urllib3.exceptions.HTTPError as e:
            response, failure = None, e
        else:
            if response.status not in TRANSIENT_STATUS:
                return response
        pause = next(pauses, None)
        if pause is None:
            if response is None:
                raise TransferError(f"cannot reach {urlsplit(url).netloc}: {failure.__class__.__name__}") from None
            return response
        RETRIES.add(str(response.status) if response is not None else failure.__class__.__name__)
        if response is not None:
            response.drain_conn()
            response.release_conn()
        time.sleep(pause)


def error_code(response: urllib3.BaseHTTPResponse) -> str:
    """The service's error code: Azure's x-ms-error-code header, or S3's <Code> in the XML body."""
    code = response.headers.get("x-ms-error-code")
    if code:
        return code
    match = re.search(rb"<Code>([^<]+)</Code>", response.data or b"")
    return match.group(1).decode() if match else str(response.status)


def byte_range(offset: int, length: int | None) -> dict:
    """The Range header for a part of an object, or none for the whole of it."""
    if not offset and length is None:
        return {}
    return {"Range": f"bytes={offset}-{'' if length is None else offset + length - 1}"}


def metadata_from(headers, prefix: str) -> dict:
    return {name[len(prefix):]: value for name, value in headers.items() if name.lower().startswith(prefix)}


class HTTPReader(Reader):
    """An object's bytes straight from an HTTP response. When the download breaks off midway,
    `reopen(bytes_read)` asks for the rest (of the same version of the object) and reading goes on."""

    def __init__(self, response: urllib3.BaseHTTPResponse, content_type: str | None, metadata: dict,
                 reopen: Callable[[int], urllib3.BaseHTTPResponse], retry: Retry = Retry()):
        self.response, self.reopen, self.retry, self.position = response, reopen, retry, 0
        self.content_type, self.metadata = content_type, metadata

    def read(self, size: int) -> bytes:
        pauses = None
        while True:
            try:
                data = self.response.read(size, decode_content=False)  # the stored bytes, even if gzip
                self.position += len(data)
                return data
            except (urllib3.exceptions.HTTPError, OSError) as e:
                pauses = pauses or self.retry.pauses()
                pause = next(pauses, None)
                if pause is None:
                    raise TransferError(f"the download broke off after {self.position} bytes "
                                        f"({e.__class__.__name__})") from None
                RETRIES.add("download broke off")
                self.response.close()
                time.sleep(pause)
                self.response = self.reopen(self.position)

    def close(self) -> None:
        self.response.release_conn()
