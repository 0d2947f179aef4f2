"""The service's bearer token: from the environment, or a file in the config directory that the
first start on a loopback address writes whole (services started together share it)."""
import ipaddress
import os
import secrets
import socket
import tempfile
from pathlib import Path

from cloudmesh.transfer.config import config_dir
from cloudmesh.transfer.errors import ConfigError

TOKEN_FILE = "transfer-token"
TOKEN_VARIABLE = "CMS_TRANSFER_TOKEN"


def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (socket.gaierror, ValueError):
        return False


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the token file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def write_token(path: Path) -> str:
    """A new token in `path` (mode 0600), written whole to a temporary file first and linked into
    place, so that no process reads it half written; if another process linked its token first,
    that one (both then serve the same token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return read_token(path)
    finally:
        os.unlink(temporary)
    return token


def service_token(host: str) -> tuple[str, str]:
    """The bearer token and where it comes from: $CMS_TRANSFER_TOKEN, else the token file in the
    config directory, else (only on a loopback address) a new one written there with mode 0600."""
    if os.environ.get(TOKEN_VARIABLE, "").strip():
        return os.environ[TOKEN_VARIABLE].strip(), f"${TOKEN_VARIABLE}"
    path = config_dir() / TOKEN_FILE
    if path.exists():
        return read_token(path), str(path)
    if not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without a token: set {TOKEN_VARIABLE} or write one to {path}")
    return write_token(path), str(path)
