"""Logging as the real `cms transfer` does it: bare warnings on stderr by default, INFO with -v and
DEBUG with -vv, a DEBUG log file with timestamps (mode 0600) with --log-file, the traceback of an
unexpected error in the log, and the service's one line per request without its query string.
Unexpected errors are injected through a sitecustomize module on the subprocess's PYTHONPATH."""
import contextlib
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import urllib3

import emulators as emu
from conftest import CMS
from emulators import S3_SECRET

TOKEN = "logging-test-token-0123456789"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
SIGNATURE = "feedface0123456789"
FAULT = f"injected fault near {S3_SECRET} at http://127.0.0.1/b/k?X-Amz-Signature={SIGNATURE}"
SITECUSTOMIZE = f'''"""Bugs for tests/test_logging.py, where a key or id says so: each raises RuntimeError."""
from cloudmesh.transfer.engine import Engine
from cloudmesh.transfer.providers.local import LocalStorage


def failing(original, marker):
    def call(self, *args, **kwargs):
        if any(isinstance(arg, str) and marker in arg for arg in args):
            raise RuntimeError({FAULT!r})
        return original(self, *args, **kwargs)
    return call


LocalStorage.stat = failing(LocalStorage.stat, "stat-fault")
LocalStorage.open = failing(LocalStorage.open, "open-fault")
Engine.run = failing(Engine.run, "run-fault")
'''
http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=60))


@pytest.fixture
def faults(tmp_path) -> dict:
    """The environment that makes `cms` load the injected bugs."""
    folder = tmp_path / "faults"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(folder)}


def links(env) -> str:
    """A folder with a file, a symlinked folder (not listed: INFO) and a dangling link (skipped: WARNING)."""
    p = env.prefix
    env.put("local", f"{p}/src/a.txt", b"a" * 100)
    (env.local / p / "sub").mkdir()
    (env.local / p / "src" / "linked").symlink_to(env.local / p / "sub")
    (env.local / p / "src" / "dangling").symlink_to(env.local / p / "nothing")
    return p


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_without_options_only_warnings_reach_stderr_as_bare_lines(env):
    p = links(env)
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target=local:{p}/dst", "-r", "--output=json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"skipped 'local:{p}/src/dangling': it is a symbolic link to nothing"]


def test_verbose_shows_the_providers_info_lines_and_twice_debug_lines_but_never_the_sdks(env):
    p = links(env)
    once = env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/once", "-r", "-v")
    assert once.returncode == 0, once.stderr
    lines = once.stderr.splitlines()
    assert (f"INFO cloudmesh.transfer.providers.local: not listed: 'local:{p}/src/linked' is a symlinked folder, "
            "which listings do not descend into") in lines
    assert (f"WARNING cloudmesh.transfer.providers.local: skipped 'local:{p}/src/dangling': it is a symbolic "
            "link to nothing") in lines
    assert not [line for line in lines if line.startswith("DEBUG")], lines

    twice = env.transfer("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/twice", "-r", "-vv",
                         "--output=json")
    assert twice.returncode == 0, twice.stderr
    lines = twice.stderr.splitlines()
    assert any(line.startswith("DEBUG cloudmesh.transfer.command.transfer: cms transfer copy") for line in lines)
    sdk = [line for line in lines if re.match(r"\w+ (botocore|boto3|s3transfer|urllib3|azure)", line)]
    assert sdk == [], sdk
    assert env.tree("awss3", f"{p}/twice") == {"a.txt": b"a" * 100}


def test_a_log_file_gets_timestamped_debug_lines_of_every_logger_is_private_and_grows(env):
    p = links(env)
    log = env.config_dir.parent / "transfer.log"
    first = env.transfer("copy", f"--source=local:{p}/src", f"--target=azure:{p}/dst", "-r", f"--id={p}",
                         f"--log-file={log}")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [f"skipped 'local:{p}/src/dangling': it is a symbolic link to nothing"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = log_lines(log)
    assert all(re.match(rf"{STAMP} (DEBUG|INFO|WARNING|ERROR) [\w.]+ \[\d+ [^\]]+\]: ", line)
               for line in lines if not line.startswith((" ", "Traceback"))), lines
    assert any(" DEBUG cloudmesh.transfer.command.transfer " in line for line in lines)
    assert any(" INFO cloudmesh.transfer.providers.local " in line and "symlinked folder" in line for line in lines)
    assert any(re.search(r" DEBUG (azure|urllib3)[\w.]* ", line) for line in lines), lines

    os.chmod(log, 0o644)
    second = env.transfer("status", f"--id={p}", f"--log-file={log}")
    assert second.returncode == 0, second.stderr
    assert log_lines(log)[:len(lines)] == lines and len(log_lines(log)) > len(lines)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_in_the_cms_shell_a_lines_logging_options_hold_for_that_line_only(env):
    p = links(env)
    log = env.config_dir.parent / "shell.log"
    result = env.cms(input=f"transfer copy --source=local:{p}/src --target=local:{p}/one -r -v --log-file={log}\n"
                           f"transfer copy --source=local:{p}/src --target=local:{p}/two -r\n")
    warned = [line for line in result.stderr.splitlines() if "dangling" in line]
    assert warned == [f"WARNING cloudmesh.transfer.providers.local: skipped 'local:{p}/src/dangling': it is a "
                      "symbolic link to nothing", f"skipped 'local:{p}/src/dangling': it is a symbolic link to nothing"]
    assert f"--target=local:{p}/one" in log.read_text() and f"local:{p}/two" not in log.read_text()


def test_a_log_file_that_cannot_be_written_is_one_error_line(env):
    result = env.transfer("status", f"--log-file={env.config_dir}/missing/transfer.log")
    assert result.returncode == 2
    assert result.stderr == f"ERROR: cannot write the log file {env.config_dir}/missing/transfer.log: " \
                            "No such file or directory\n"


def test_an_internal_errors_traceback_goes_to_the_log_masked_not_to_a_quiet_stderr(env, faults):
    log = env.config_dir.parent / "transfer.log"
    quiet = env.transfer("list", "--target=local:stat-fault", **faults)
    assert (quiet.returncode, quiet.stderr) == (1, "ERROR: internal error (RuntimeError); run with --log-file=LOG "
                                                   "or -v for its traceback\n")

    logged = env.transfer("list", "--target=local:stat-fault", f"--log-file={log}", **faults)
    assert (logged.returncode, logged.stderr) == (1, "ERROR: internal error (RuntimeError); its traceback is in "
                                                     "the log\n")
    text = log.read_text()
    assert re.search(rf"{STAMP} ERROR cloudmesh.transfer.command.transfer \[\d+ MainThread\]: internal error\n"
                     r"Traceback \(most recent call last\):\n", text), text
    assert "RuntimeError: injected fault near ******** at http://127.0.0.1/b/k?********" in text
    assert S3_SECRET not in text and SIGNATURE not in text

    verbose = env.transfer("list", "--target=local:stat-fault", "-v", **faults)
    assert verbose.returncode == 1
    assert "ERROR cloudmesh.transfer.command.transfer: internal error\nTraceback" in verbose.stderr
    assert "RuntimeError: injected fault near ********" in verbose.stderr and S3_SECRET not in verbose.stderr

    debug = env.transfer("list", "--target=local:stat-fault", CMS_TRANSFER_DEBUG="1", **faults)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_the_engines_unexpected_error_reaches_the_log_file_with_its_traceback(env, faults):
    p = env.prefix
    env.put("local", f"{p}/src/open-fault.txt", b"x")
    log = env.config_dir.parent / "transfer.log"
    result = env.transfer("copy", f"--source=local:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}",
                          f"--log-file={log}", **faults)
    assert result.returncode == 1, result.stderr
    text = log.read_text()
    assert re.search(rf"{STAMP} ERROR cloudmesh.transfer.engine \[\d+ [^\]]+\]: copying open-fault.txt\n"
                     r"Traceback \(most recent call last\):\n", text), text
    assert "RuntimeError: injected fault near ********" in text and S3_SECRET not in text


@contextlib.contextmanager
def serving(env, *options, **environ):
    """`cms transfer serve` with `options` on a free port, its stderr in a file; stopped with SIGTERM.
    Yields the base URL and the stderr file."""
    port = emu.free_port()
    stderr = env.config_dir.parent / f"service-{port}.err"
    with open(stderr, "ab") as out:
        process = subprocess.Popen([CMS, "transfer", "serve", f"--port={port}", *options], stdout=out, stderr=out,
                                   env=env.environ(CMS_TRANSFER_TOKEN=TOKEN, **environ), cwd=env.config_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if http.request("GET", f"{url}/health").status == 200:
                    break
            time.sleep(0.1)
        yield url, stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def call(url: str, method: str, path: str, body: dict | None = None, token: str | None = TOKEN):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return http.request(method, f"{url}{path}", json=body, headers=headers)


def finished(url: str, transfer_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = call(url, "GET", f"/transfers/{transfer_id}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise AssertionError(f"transfer {transfer_id} still runs")


def test_the_service_logs_a_line_per_request_without_its_query_string(env):
    log = env.config_dir.parent / "service.log"
    with serving(env, f"--log-file={log}") as (url, stderr):
        assert call(url, "GET", "/transfers?limit=1").status == 200
        assert call(url, "GET", f"/transfers?state={TOKEN}").status == 400
        assert call(url, "GET", "/statistics", token="wrong-token").status == 401
        assert call(url, "GET", "/health", token=None).status == 200
    for text in (stderr.read_text(), log.read_text()):
        lines = re.findall(r"INFO cloudmesh\.transfer\.service\.requests(?: \[[^\]]+\])?: (.*)", text)
        requests = [re.sub(r"\d+\.\dms 127\.0\.0\.1:\d+$", "MS CLIENT", line) for line in lines]
        assert set(requests[:-4]) == {"GET /health 200 MS CLIENT"}, text  # serving() waiting for the start
        assert requests[-4:] == ["GET /transfers 200 MS CLIENT", "GET /transfers 400 MS CLIENT",
                                 "GET /statistics 401 MS CLIENT", "GET /health 200 MS CLIENT"], text
        assert TOKEN not in text and "?limit" not in text and "HTTP/1.1" not in text
    assert re.search(rf"^{STAMP} INFO uvicorn.error: Application shutdown complete", stderr.read_text(), re.M)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_the_services_unexpected_errors_reach_its_log_with_their_tracebacks(env, faults):
    p = env.prefix
    env.put("local", f"{p}/a/open-fault.txt", b"x")
    env.put("local", f"{p}/b/fine.txt", b"y")
    with serving(env, **faults) as (url, stderr):
        copying = {"source": f"local:{p}/a", "target": f"local:{p}/a-copy", "recursive": True, "id": f"{p}-a"}
        assert call(url, "POST", "/transfers", copying).status == 202
        assert finished(url, f"{p}-a")["state"] == "failed"
        stopped = {"source": f"local:{p}/b", "target": f"local:{p}/b-copy", "recursive": True,
                   "id": f"run-fault-{p}"}
        assert call(url, "POST", "/transfers", stopped).status == 202
        assert finished(url, f"run-fault-{p}")["state"] == "failed"
    text = stderr.read_text()
    assert re.search(rf"{STAMP} ERROR cloudmesh.transfer.engine: copying open-fault.txt\nTraceback ", text), text
    assert re.search(rf"{STAMP} ERROR cloudmesh.transfer.service.app: transfer 'run-fault-{p}' stopped by an "
                     r"internal error\nTraceback (.*\n)*RuntimeError: injected fault near \*{8} ", text), text
    assert S3_SECRET not in text and SIGNATURE not in text
