"""The REST service against hostile and careless clients: the real `cms transfer serve` in a
subprocess on a free loopback port (tests/test_service.py's Service), driven over HTTP and raw
sockets. Bad bodies, parameters and headers get a 4xx problem with one line naming the field and
echoing no value, never a 500 or a traceback in the log; only /health answers without the token;
slow clients are cut off while others are served; two services started at once share one token;
locked records answer 503 with Retry-After; the transfers of one service share one memory budget."""
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import urllib3

import emulators as emu
from conftest import CMS
from faultproxy import FaultProxy
from test_service import TOKEN, Service, http, problem

HEADER_TIMEOUT, BODY_TIMEOUT = 10.0, 20.0  # limits.REQUEST_HEADER_TIMEOUT and REQUEST_BODY_TIMEOUT
SLACK = 3.0
SECRET = "hunter2-Zq8rT-not-to-be-echoed"
GOOD = {"source": "local:a.txt", "target": "local:b.txt"}


def isolated_environ(root: Path) -> dict:
    """A config dir under `root` whose only storage is an empty local folder, and an environment on it."""
    local = {"cm": {"kind": "local"}, "default": {"directory": str(root / "local")}}
    emu.write_config(root / "config", {"local": local})
    (root / "local").mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "CMS_TRANSFER"))}
    return dict(environ, CLOUDMESH_CONFIG_DIR=str(root / "config"))


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """One service for the table-driven tests: each request touches nothing but an empty folder."""
    root = tmp_path_factory.mktemp("hardening")
    running = Service(isolated_environ(root), root / "config")
    yield running
    running.stop()


def send(service: Service, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request with exactly these headers (and the token), and the part of the service log it wrote."""
    before = service.log.stat().st_size
    response = http.request(method, f"{service.url}{path}", body=body,
                            headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    time.sleep(0.05)  # the log line of an answer may follow the answer by a moment
    with open(service.log, "rb") as log:
        log.seek(before)
        return response, log.read().decode(errors="replace")


def one_line_problem(response, status: int, log: str) -> str:
    """A problem+json answer with `status` and a one-line detail, and no 500 or traceback logged."""
    body = problem(response, status)
    assert "\n" not in body["detail"] and len(body["detail"]) <= 300, body["detail"]
    assert "Traceback" not in log and '" 500' not in log, log
    return body["detail"]


def as_json(value) -> bytes:
    return json.dumps(value).encode()


JSON = {"Content-Type": "application/json"}

# (id, method, path, headers, body, status, a part of the detail)
HOSTILE = [
    ("10000-nested-arrays", "POST", "/transfers", JSON, b"[" * 10000 + b"]" * 10000, 400, "levels deep"),
    ("900-nested-arrays-in-a-field", "POST", "/transfers", JSON,
     b'{"source": "local:a", "target": "local:b", "include": ' + b"[" * 900 + b"]" * 900 + b"}", 400, "levels deep"),
    ("5000-nested-objects-check", "POST", "/checks", JSON, b'{"source": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
     400, "levels deep"),
    ("no-content-type", "POST", "/transfers", {}, as_json(GOOD), 415, "Content-Type: application/json"),
    ("no-content-type-check", "POST", "/checks", {}, as_json(GOOD), 415, "Content-Type: application/json"),
    ("text-plain", "POST", "/transfers", {"Content-Type": "text/plain"}, as_json(GOOD), 415, "application/json"),
    ("latin-1-charset", "POST", "/transfers", {"Content-Type": "application/json; charset=latin-1"},
     as_json(GOOD), 415, "application/json"),
    ("5000-digit-parallel", "POST", "/transfers", JSON,
     b'{"source": "local:a", "target": "local:b", "parallel": ' + b"7" * 5000 + b"}", 400, "more than 100 digits"),
    ("30-digit-parallel", "POST", "/transfers", JSON, as_json({**GOOD, "parallel": 10 ** 30}), 400,
     "field 'parallel' must be at most 64"),
    ("parallel-1e308", "POST", "/transfers", JSON, b'{"source": "local:a", "target": "local:b", "parallel": 1e308}',
     400, "field 'parallel' must be a whole number"),
    ("parallel-1e400", "POST", "/transfers", JSON, b'{"source": "local:a", "target": "local:b", "parallel": 1e400}',
     400, "field 'parallel' must be a whole number"),
    ("parallel-NaN", "POST", "/transfers", JSON, b'{"source": "local:a", "target": "local:b", "parallel": NaN}',
     400, "NaN, which JSON does not allow"),
    ("retries-minus-Infinity", "POST", "/transfers", JSON,
     b'{"source": "local:a", "target": "local:b", "retries": -Infinity}', 400, "-Infinity, which JSON does not allow"),
    ("parallel-true", "POST", "/transfers", JSON, as_json({**GOOD, "parallel": True}), 400,
     "field 'parallel' must be a whole number"),
    ("parallel-string", "POST", "/transfers", JSON, as_json({**GOOD, "parallel": "8"}), 400,
     "field 'parallel' must be a whole number"),
    ("recursive-1", "POST", "/transfers", JSON, as_json({**GOOD, "recursive": 1}), 400,
     "field 'recursive' must be true or false"),
    ("unknown-field", "POST", "/transfers", JSON, as_json({**GOOD, "colour": "red"}), 400,
     "unknown field 'colour' in the request body; the fields are source, target"),
    ("array-body", "POST", "/transfers", JSON, b"[]", 400, "the request body must be an object"),
    ("string-body", "POST", "/checks", JSON, b'"local:a"', 400, "the request body must be an object"),
    ("null-body", "POST", "/transfers", JSON, b"null", 400, "the request body must be an object"),
    ("missing-field", "POST", "/checks", JSON, as_json({"source": "local:a"}), 400, "field 'target' is required"),
    ("not-utf-8", "POST", "/transfers", JSON, b'{"source": "local:\xff", "target": "local:b"}', 400, "not UTF-8"),
    ("not-json", "POST", "/transfers", JSON, b"{not json", 400, "the request body is not JSON: Expecting"),
    ("query-not-a-number", "GET", "/transfers?limit=ten", {}, None, 400,
     "query parameter 'limit' must be a whole number"),
    ("query-5000-digits", "GET", "/transfers?offset=" + "9" * 5000, {}, None, 400, "query parameter 'offset' must"),
    ("unknown-query-parameter", "GET", "/transfers?colour=red", {}, None, 400,
     "unknown query parameter 'colour'; the parameters are state, limit, offset"),
]


@pytest.mark.parametrize("method, path, headers, body, status, detail", [row[1:] for row in HOSTILE],
                         ids=[row[0] for row in HOSTILE])
def test_a_hostile_request_is_a_4xx_problem_with_one_line(isolated, method, path, headers, body, status, detail):
    response, log = send(isolated, method, path, body, headers)
    assert detail in one_line_problem(response, status, log)


# (id, method, path, body, a part of the detail): SECRET or a long value must not come back.
ECHOES = [
    ("id-pattern", "POST", "/transfers", {**GOOD, "id": SECRET + " !"}, "field 'id' must match ^[A-Za-z0-9]"),
    ("sync-enum", "POST", "/transfers", {**GOOD, "sync": SECRET}, "field 'sync' must be one of checksum, mtime"),
    ("include-item-type", "POST", "/transfers", {**GOOD, "include": ["a", {"key": SECRET}]},
     "field 'include[1]' must be a string"),
    ("include-type", "POST", "/transfers", {**GOOD, "include": SECRET}, "field 'include' must be an array"),
    ("chunksize-length", "POST", "/transfers", {**GOOD, "chunksize": SECRET * 2},
     "field 'chunksize' must have at most 32 characters"),
    ("60KiB-source", "POST", "/transfers", {**GOOD, "source": "local:" + SECRET * 2000},
     "field 'source' must have at most 4200 characters"),
    ("unknown-field-with-a-secret", "POST", "/transfers", {**GOOD, "password": SECRET}, "unknown field 'password'"),
    ("5000-character-unknown-field", "POST", "/transfers", {**GOOD, "k" * 5000: SECRET}, "unknown field 'kkkkkkkk"),
    ("check-download-type", "POST", "/checks", {**GOOD, "download": SECRET}, "field 'download' must be true or false"),
    ("query-enum", "GET", f"/transfers?state={SECRET}", None, "query parameter 'state' must be one of running"),
    ("query-type", "GET", f"/transfers?limit={SECRET}", None, "query parameter 'limit' must be a whole number"),
    ("path-pattern", "GET", f"/transfers/{SECRET}%20x", None, "path parameter 'id' must match"),
    ("path-pattern-cancel", "POST", f"/transfers/{SECRET}!/cancel", None, "path parameter 'id' must match"),
]


@pytest.mark.parametrize("method, path, body, detail", [row[1:] for row in ECHOES], ids=[row[0] for row in ECHOES])
def test_a_validation_detail_names_the_field_and_echoes_no_value(isolated, method, path, body, detail):
    """One line naming the field and the rule; neither the answer nor the log repeats the value."""
    response, log = send(isolated, method, path, as_json(body) if body is not None else None, JSON)
    assert detail in one_line_problem(response, 400, log)
    assert SECRET not in response.data.decode() and len(response.data) < 600
    if body is not None:  # (the access log has the URL a client asked for)
        assert SECRET not in log


def exchange(port: int, data: bytes, seconds: float = 10) -> bytes:
    """Send raw bytes, read the answer until the service closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def raw_request(lengths: list[bytes], body: bytes) -> bytes:
    return (b"POST /checks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nContent-Type: application/json\r\nConnection: close\r\n" +
            b"".join(b"Content-Length:" + length + b"\r\n" for length in lengths) + b"\r\n" + body)


BODY = b'{"source": "local:a"}'  # 21 bytes: read, it is answered "field 'target' is required"
# (id, Content-Length values, status, a part of the answer)
LENGTHS = [
    ("spaces-around", [b"  21 "], 400, b"field 'target' is required"),
    ("tabs-around", [b"\t21\t"], 400, b"field 'target' is required"),
    ("leading-zeros", [b" 0021"], 400, b"field 'target' is required"),
    ("a-list-of-two-values", [b" 21, 22"], 400, b"Bad Request"),
    ("two-differing-headers", [b" 21", b" 22"], 400, b"Bad Request"),
    ("not-a-number", [b" twenty-one"], 400, b"Bad Request"),
    ("over-the-limit", [b" 99999999999"], 413, b"larger than 65536 bytes"),
]


@pytest.mark.parametrize("lengths, status, part", [row[1:] for row in LENGTHS], ids=[row[0] for row in LENGTHS])
def test_content_length_is_read_as_http_allows(isolated, lengths, status, part):
    """Optional whitespace around the digits is legal (RFC 9110 5.5); several values that differ or
    no number are a 400, not a 413; only a length over the limit is a 413."""
    answer = exchange(isolated.port, raw_request(lengths, BODY))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert part in answer, answer


@pytest.mark.parametrize("path", ["/openapi.json", "/openapi.yaml", "/uix", "/transfers", "/no-such-path"])
def test_only_health_answers_without_the_token(isolated, path):
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {TOKEN}"}):
        response = http.request("GET", f"{isolated.url}{path}", headers=headers)
        problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert http.request("GET", f"{isolated.url}/health").status == 200
    document = http.request("GET", f"{isolated.url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert document.status == 200 and "/transfers" in json.loads(document.data)["paths"]


@dataclass
class SlowClient:
    """A raw connection that sends `first`, then `trickle` a byte every half second, and notes
    when (and with what answer) the service closed it."""

    port: int
    first: bytes
    trickle: bytes = b""
    answer: bytes = b""
    seconds: float | None = None  # from the connection to its close by the service
    thread: threading.Thread = field(init=False)

    def __post_init__(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as connection:
            start = time.monotonic()
            connection.sendall(self.first)
            connection.settimeout(0.5)
            sent = 0
            while time.monotonic() - start < BODY_TIMEOUT + 10:
                try:
                    chunk = connection.recv(65536)
                except socket.timeout:
                    chunk = None
                except ConnectionResetError:
                    chunk = b""
                if chunk == b"":
                    self.seconds = time.monotonic() - start
                    return
                self.answer += chunk or b""
                if sent < len(self.trickle):
                    try:
                        connection.send(self.trickle[sent:sent + 1])
                        sent += 1
                    except OSError:
                        self.seconds = time.monotonic() - start
                        return


def test_slow_clients_are_cut_off_while_others_are_served(isolated):
    """A connection that sends nothing, headers a byte at a time, a Content-Length and then no
    body, or a body a byte at a time after it was answered: each is closed within its timeout
    (a 408 where no answer was started), and /health answers at once all along."""
    token = f"Authorization: Bearer {TOKEN}\r\n".encode()
    idle = SlowClient(isolated.port, b"")
    headers = SlowClient(isolated.port, b"GET /transfers HTTP/1.1\r\n", b"Host: 127.0.0.1\r\nX-Slow: " + b"s" * 100)
    no_body = SlowClient(isolated.port, b"POST /transfers HTTP/1.1\r\nHost: 127.0.0.1\r\n" + token +
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sou")
    after_answer = SlowClient(isolated.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n", b"x" * 100)
    clients = (idle, headers, no_body, after_answer)
    while any(client.thread.is_alive() for client in clients):
        start = time.monotonic()
        assert http.request("GET", f"{isolated.url}/health").status == 200
        assert time.monotonic() - start < 1
        time.sleep(0.5)
    for client, limit in ((idle, HEADER_TIMEOUT), (headers, HEADER_TIMEOUT), (no_body, BODY_TIMEOUT),
                          (after_answer, BODY_TIMEOUT)):
        assert client.seconds is not None, f"still open after {BODY_TIMEOUT + 10}s: {client.answer[:200]!r}"
        assert limit - 1 <= client.seconds <= limit + SLACK, (client.seconds, client.answer[:200])
    assert idle.answer == b""
    assert headers.answer.startswith(b"HTTP/1.1 408 ") and b"request headers did not arrive" in headers.answer
    assert no_body.answer.startswith(b"HTTP/1.1 408 ") and b"request body did not arrive" in no_body.answer
    assert after_answer.answer.startswith(b"HTTP/1.1 200 ") and b" 408 " not in after_answer.answer
    assert "Traceback" not in isolated.log.read_text()


# An audit hook that holds each `cms` process at its first touch of the token file until both
# got there, so that the two race on creating it every time (run from sitecustomize at startup).
BARRIER = '''
import os, sys, time
_meeting, _arrived = os.environ.get("TEST_TOKEN_MEETING"), []

def _meet(event, args):
    if _arrived or event not in ("open", "os.link") or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if "transfer-token" in os.fsdecode(args[0]):
        _arrived.append(True)
        open(os.path.join(_meeting, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 20
        while len(os.listdir(_meeting)) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)

if _meeting:
    sys.addaudithook(_meet)
'''


def test_two_services_started_at_once_on_a_fresh_config_dir_share_one_token(tmp_path):
    """Without $CMS_TRANSFER_TOKEN, both create the token file at the same moment (an audit hook
    makes them meet there): both start, and both take the token that is in the file."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(BARRIER)
    for round in range(3):
        root = tmp_path / f"round{round}"
        root.mkdir()
        (root / "meeting").mkdir()
        environ = dict(isolated_environ(root), PYTHONPATH=str(tmp_path / "hook"),
                       TEST_TOKEN_MEETING=str(root / "meeting"))
        ports = [emu.free_port(), emu.free_port()]
        logs = [root / f"service-{port}.log" for port in ports]
        processes = []
        for port, log in zip(ports, logs):
            with open(log, "wb") as output:
                processes.append(subprocess.Popen([CMS, "transfer", "serve", f"--port={port}"], env=environ, cwd=root,
                                                  stdout=output, stderr=subprocess.STDOUT))
        try:
            for port, process, log in zip(ports, processes, logs):
                deadline = time.monotonic() + 30
                while not listening(port):
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            assert len(os.listdir(root / "meeting")) == 2  # both met at the token file
            token = (root / "config" / "transfer-token").read_text().strip()
            assert len(token) >= 32
            for port in ports:
                url = f"http://127.0.0.1:{port}/transfers"
                assert http.request("GET", url, headers={"Authorization": f"Bearer {token}"}).status == 200
                assert http.request("GET", url, headers={"Authorization": "Bearer other"}).status == 401
            assert [p.name for p in (root / "config").iterdir() if "token" in p.name] == ["transfer-token"]
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for log in logs:
            assert "Traceback" not in log.read_text() and token not in log.read_text()


def listening(port: int) -> bool:
    try:
        return http.request("GET", f"http://127.0.0.1:{port}/health").status == 200
    except urllib3.exceptions.HTTPError:
        return False


@pytest.fixture
def service(env):
    running = Service(env.environ(), env.config_dir)
    yield running
    running.stop()


def test_locked_records_answer_503_with_retry_after(env, service):
    """Another process holds transfer.db in an exclusive transaction: a POST that must write the
    records answers 503 with Retry-After once the service's wait is over (not 500); reads go on."""
    env.put("local", f"{env.prefix}/f.txt", b"f")
    body = {"source": f"local:{env.prefix}/f.txt", "target": f"local:{env.prefix}/g.txt"}
    assert service.call("GET", "/transfers").status == 200  # the records exist
    holder = sqlite3.connect(env.config_dir / "transfer.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        start = time.monotonic()
        response = service.call("POST", "/transfers", body)
        waited = time.monotonic() - start
        detail = problem(response, 503)["detail"]
        assert response.headers["Retry-After"].isdigit(), response.headers
        assert "\n" not in detail and waited < 35, (detail, waited)
        assert service.call("GET", "/transfers").status == 200
    finally:
        holder.rollback()
        holder.close()
    assert service.call("POST", "/transfers", {**body, "id": env.prefix}).status == 202
    assert service.wait(env.prefix)["state"] == "completed"
    assert "Traceback" not in service.log.read_text()


def test_every_record_store_error_is_a_503_and_a_locked_store_says_when_to_retry(tmp_path):
    """The mapping itself, for each error family of the stores (records/): RecordsBusy and
    RecordsError are 503 (the first with Retry-After), any other TransferError stays 502, and a
    raw sqlite3 or pymongo exception that a store let through is a 503 too, never a 500."""
    from pymongo.errors import ServerSelectionTimeoutError

    from cloudmesh.transfer.errors import RecordsBusy, RecordsError, TransferError
    from cloudmesh.transfer.service.app import problem_for, store_problem

    path = tmp_path / "locked.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder, \
            contextlib.closing(sqlite3.connect(path, timeout=0)) as other:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("CREATE TABLE t (x)")
        holder.rollback()
    answers = [(problem_for(None, RecordsBusy("the transfer records are locked")), 503, True),
               (problem_for(None, RecordsError("the transfer records are corrupt")), 503, False),
               (problem_for(None, TransferError("the storage refused")), 502, False),
               (store_problem(None, locked.value), 503, True),
               (store_problem(None, ServerSelectionTimeoutError("no server")), 503, False)]
    for answer, status, retry in answers:
        detail = json.loads(answer.body)["detail"]
        assert (answer.status_code, "Retry-After" in answer.headers) == (status, retry), detail
        assert answer.headers["Content-Type"] == "application/problem+json" and "\n" not in detail
        if retry:
            assert answer.headers["Retry-After"].isdigit()


def test_the_transfers_of_a_service_share_one_memory_budget(env, service):
    """parallel x chunksize summed over the running transfers stays within the 2048MiB budget: a
    transfer that would pass it is refused with 429 naming what is held, one that fits exactly
    starts, and memory comes back when a transfer ends. A proxy keeps the transfers running by
    answering their PUTs with 503 SlowDown (retried for up to two minutes) until it lets them by."""
    p = env.prefix
    env.put("local", f"{p}/one.txt", b"1")
    with FaultProxy(env.emulators.s3_endpoint, flavor="s3") as proxy:
        proxy.configure(error_rate=1.0, match=("PUT", ".*"))
        env.add_storage("stalled", "awss3", endpoint_url=proxy.url)

        def start(name: str, parallel: int, chunksize: str):
            return service.call("POST", "/transfers", {"source": f"local:{p}/one.txt", "target": f"stalled:{p}/{name}",
                                                       "id": f"{p}-{name}", "parallel": parallel,
                                                       "chunksize": chunksize, "retries": 20})

        assert start("a", 2, "512MiB").status == 202  # 1024MiB
        assert start("b", 1, "512MiB").status == 202  # 512MiB
        refused = problem(start("c", 4, "256MiB"), 429)["detail"]
        assert refused == ("the transfers running in this service hold 1536MiB of the 2048MiB memory budget; "
                           "this one needs 1024MiB; try again later")
        assert start("d", 2, "256MiB").status == 202  # 512MiB: exactly the budget
        assert "hold 2048MiB of the 2048MiB" in problem(start("e", 1, "1MiB"), 429)["detail"]
        assert {service.json("GET", f"/transfers/{p}-{t}")["state"] for t in "abd"} == {"running"}

        proxy.configure(match=("PUT", rf"/{p}/[bcd]\b"))  # a's next try goes through
        assert service.wait(f"{p}-a", 60)["state"] == "completed"
        deadline = time.monotonic() + 10
        while (again := start("c", 4, "256MiB")).status == 429 and time.monotonic() < deadline:
            time.sleep(0.2)  # a's thread gives its memory back as it ends, just after its record does
        assert again.status == 202, again.data
        assert service.json("GET", f"/transfers/{p}-b")["state"] == "running"

        proxy.configure(error_rate=0.0)
        assert {service.wait(f"{p}-{name}", 60)["state"] for name in "bcd"} == {"completed"}
    assert "Traceback" not in service.log.read_text()
