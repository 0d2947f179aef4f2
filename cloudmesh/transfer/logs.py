"""Logging for the command and the REST service, set up in this one place (`configured`).

Without options only warnings reach stderr, as bare messages, as Python's last-resort handler
printed them before. -v adds cloudmesh's INFO lines, -vv its DEBUG lines; the service logs at INFO
(a line per request) by default, with timestamps. --log-file=LOG appends every logger's DEBUG lines,
with UTC timestamps, to LOG (mode 0600). The SDKs' loggers (botocore, azure, urllib3, ...) log
requests, URLs and headers below WARNING, so stderr shows only their warnings and the log file
the rest; botocore's signing and request dumps (signatures, part bodies), its event and model
noise, and connexion's steps never go below INFO.

Every handler made here masks secrets (Masking): the secret fields of cloudmesh.yaml, the service
token, the SDKs' credential variables, and the signatures that presigned and SAS URLs carry.
"""
import contextlib
import functools
import logging
import os
import re
import stat
import sys
import time
from pathlib import Path

from cloudmesh.transfer.config import MASK, config_dir, is_secret, read_yaml
from cloudmesh.transfer.errors import ConfigError, UsageError
from cloudmesh.transfer.limits import MIN_MASKED_SECRET

TERSE_FORMAT = "%(message)s"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
SERVICE_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s [%(process)d %(threadName)s]: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # stderr's level by the count of -v
OWN = ("cloudmesh.", "uvicorn.")  # the loggers whose INFO and DEBUG lines stderr shows
NO_DEBUG = ("botocore.auth",  # signatures and the strings signed
            "botocore.endpoint",  # every request's parameters, part bodies included
            "botocore.hooks", "botocore.loaders",  # every event handler called, every model file read
            "connexion")  # every operation of the spec at start, every step of each request
CREDENTIAL_VARIABLES = ("CMS_TRANSFER_TOKEN", "CMS_TRANSFER_MONGO_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING")

# What signed URLs, connection strings and headers carry, whatever the values: a query string with
# a signature (S3 presigned, Azure SAS) is masked whole; a signing parameter elsewhere (Signature=
# in an Authorization header, a percent-encoded URL inside another) keeps its name.
SIGNING = r"x-amz-signature|x-amz-credential|x-amz-security-token|awsaccesskeyid|signature|sig"
SIGNED_QUERY = re.compile(rf"\?(?=(?:[^\s\"'<>#?]*&)?(?:{SIGNING})=)[^\s\"'<>#]*", re.IGNORECASE)
NAME_START = r"(?:(?<![\w-])|(?<=%3F)|(?<=%26))"  # not inside a longer name; or after an encoded ? or &
SECRET_PARAMETER = re.compile(rf"{NAME_START}({SIGNING}|credential|accountkey|sharedaccesssignature)(=|%3D)"
                              r"(?:(?!%26)[^\s&;,\"'<>])+", re.IGNORECASE)
AUTHORIZATION = re.compile(r"(authorization['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)[^'\"\r\n]+", re.IGNORECASE)
USERINFO = re.compile(r"(://[^/\s:@'\"]+:)[^/\s@'\"]+@")
# Characters a terminal acts on rather than shows, and line breaks that would forge a log line.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """`text` with every control character escaped (ESC as \\x1b), so that a name cannot steer a
    terminal or fake a log line."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def formatter(layout: str) -> logging.Formatter:
    """A formatter with UTC timestamps, as the transfer records keep their times."""
    made = logging.Formatter(layout, DATE_FORMAT)
    made.converter = time.gmtime
    return made


def hidden(value, secret: bool = False) -> list[str]:
    """The values of a config document that look secret (config.is_secret): every number and
    string whose nearest key does. A storage named like a secret ("keys") keeps its bucket shown."""
    if isinstance(value, dict):
        return [text for key, each in value.items() for text in hidden(each, is_secret(str(key)))]
    if isinstance(value, list):
        return [text for each in value for text in hidden(each, secret)]
    return [str(value)] if secret and value is not None and not isinstance(value, bool) else []


def secret_values(config_file: Path, token_file: Path) -> set[str]:
    """The secrets this process may meet: the secret fields of cloudmesh.yaml, the service token
    (file or variable) and the SDKs' credential variables."""
    try:
        data = read_yaml(config_file, "cloudmesh.yaml")
    except ConfigError:
        data = None
    values = set(hidden(data))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        values.add(token_file.read_text(encoding="utf-8"))
    values.update(os.environ.get(name, "") for name in CREDENTIAL_VARIABLES)
    return {text for value in values for text in (value, value.strip()) if len(text) >= MIN_MASKED_SECRET}


def stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class KnownSecrets:
    """Masks the known secret values in a text, read at the first line logged and again whenever
    their sources change (a service's cloudmesh.yaml may gain a storage)."""

    def __init__(self):
        self.current: tuple[tuple, re.Pattern | None] = ((), None)  # the sources' stamps, the pattern

    @functools.cached_property
    def files(self) -> tuple[Path, Path]:
        """cloudmesh.yaml and the service's token file (found when a first line is logged, so that
        a command that logs nothing does not import the service)."""
        from cloudmesh.transfer.service.token import TOKEN_FILE
        folder = config_dir()
        return folder / "cloudmesh.yaml", folder / TOKEN_FILE

    def mask(self, text: str) -> str:
        stamps = (*map(stamp, self.files), *map(os.environ.get, CREDENTIAL_VARIABLES))
        seen, pattern = self.current  # one tuple, so that threads never see a stamp with another's pattern
        if stamps != seen:
            values = sorted(secret_values(*self.files), key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, values))) if values else None
            self.current = (stamps, pattern)
        return pattern.sub(MASK, text) if pattern else text


class Masking(logging.Filter):
    """Masks secrets in a record's message, traceback and stack, and escapes the control
    characters of its message (so that an object name cannot forge a line), before any handler
    formats it. Passes every record."""

    def __init__(self):
        super().__init__()
        self.known = KnownSecrets()

    def mask(self, text: str) -> str:
        text = SIGNED_QUERY.sub("?" + MASK, self.known.mask(text))
        text = SECRET_PARAMETER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
        text = AUTHORIZATION.sub(lambda m: m[1] + MASK, text)
        return USERINFO.sub(lambda m: f"{m[1]}{MASK}@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # arguments that do not fit the message: the handler reports that
        record.msg = escape(self.mask(message))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record, as logging's last resort does, so that
    redirections made later (the cms shell's, a test's) apply."""

    def __init__(self, level: int):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


class LogFile(logging.StreamHandler):
    """Appends to a file that only its owner may read: created with mode 0600, and narrowed to it
    when it is a wider regular file."""

    def __init__(self, path: str):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise UsageError(f"cannot write the log file {path}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, 0o600)
        except OSError as e:
            os.close(fd)
            raise UsageError(f"the log file {path} may be read by others and cannot be made private: "
                             f"{e.strerror}") from None
        super().__init__(os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace"))
        self.setLevel(logging.DEBUG)

    def close(self) -> None:
        with self.lock:
            self.stream.close()
        super().close()


def shown_on_stderr(record: logging.LogRecord) -> bool:
    """stderr shows cloudmesh's and uvicorn's lines from its level up, other libraries' from WARNING,
    and no record logged with extra={"stderr": False} (for the log file only)."""
    return getattr(record, "stderr", True) and (record.levelno >= logging.WARNING or record.name.startswith(OWN))


@contextlib.contextmanager
def configured(verbose: int = 0, log_file: str | None = None, service: bool = False):
    """Log as the command's options ask while the block runs (one command, or the service's life),
    then as before. `verbose` counts -v (the service starts at one); a log file that cannot be
    written is a UsageError."""
    console = Stderr(LEVELS[min(max(verbose, int(service)), len(LEVELS) - 1)])
    console.setFormatter(formatter(SERVICE_FORMAT if service else CONSOLE_FORMAT if verbose else TERSE_FORMAT))
    console.addFilter(shown_on_stderr)
    handlers = [console]
    if log_file:
        handlers.append(LogFile(log_file))
        handlers[-1].setFormatter(formatter(FILE_FORMAT))
    masking = Masking()
    for handler in handlers:
        handler.addFilter(masking)
    lowest = min(handler.level for handler in handlers)
    root, own = logging.getLogger(), logging.getLogger("cloudmesh")
    quiet = [logging.getLogger(name) for name in NO_DEBUG]
    saved = [(logger, logger.level) for logger in (root, own, *quiet)]
    root.setLevel(logging.DEBUG if log_file else logging.WARNING)
    own.setLevel(lowest)
    for logger in quiet:
        logger.setLevel(max(logging.INFO, root.level))
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for logger, level in saved:
            logger.setLevel(level)
