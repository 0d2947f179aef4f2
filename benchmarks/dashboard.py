"""Dashboard benchmark: what an open dashboard costs the service (issue 13), which polls once a
second rather than holding an event stream open.

It records --transfers finished transfers (10 objects each, a progress sample a second for a
minute) in a fresh SQLite store, starts the real `cms transfer serve` on it, and sends each poll a
dashboard page makes --requests times, one after another:

  list        GET /transfers?limit=50             (the transfers list, once a second)
  detail      GET /transfers/ID + /samples        (one transfer's page, once a second)
  statistics  GET /statistics                     (the statistics page, once a second)

For each it reports the service's CPU time per poll (from /proc/PID/stat, so it includes the
HTTP server, the validation and the records), the median answer time, and the share of one core
that one open dashboard takes at a poll a second.

    .venv/bin/python benchmarks/dashboard.py                 # or: make bench-dashboard
    .venv/bin/python benchmarks/dashboard.py --transfers 10000 --requests 100

It writes benchmarks/results-dashboard.md.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
import emulators as emu  # noqa: E402
from cloudmesh.transfer.records.base import Sample  # noqa: E402
from cloudmesh.transfer.records.sqlite import SQLiteRecords  # noqa: E402

CMS = str(Path(sys.executable).with_name("cms"))
TOKEN = "dashboard-benchmark-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
CONFIG = """cloudmesh:
  storage:
    local:
      cm: {kind: local, name: local}
      default: {directory: %s}
"""


def record(store: SQLiteRecords, transfers: int) -> None:
    """Finished transfers of 10 objects each, with a minute of samples."""
    for t in range(transfers):
        tid = f"t{t:06d}"
        store.create({"id": tid, "source": "local:src", "target": f"local:dst{t}", "copy": True, "recursive": True,
                      "route": "local->local", "owner": "bench", "listing": False},
                     [{"path": f"f{n}", "source_key": f"src/f{n}", "target_key": f"dst{t}/f{n}", "size": 1024,
                       "etag": None, "mtime": 1.0} for n in range(10)])
        store.update_objects(tid, [(f"f{n}", {"state": "done", "method": "stream", "proof": "md5",
                                             "bytes_done": 1024}) for n in range(10)])
        if t == 0:
            for second in range(60):
                store.add_sample(tid, Sample(time.time() + second, second * 170, second // 6))
        store.finish(tid, "completed", owner="bench")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(http, url: str, paths: list[str], pid: int, requests: int) -> tuple[float, float]:
    """CPU seconds of the service per poll, and the median seconds a poll takes."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in paths:  # warm up
        assert http.request("GET", url + path, headers=headers).status == 200, path
    took, before = [], cpu_seconds(pid)
    for _ in range(requests):
        started = time.perf_counter()
        for path in paths:
            assert http.request("GET", url + path, headers=headers).status == 200, path
        took.append(time.perf_counter() - started)
    return (cpu_seconds(pid) - before) / requests, statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transfers", type=int, nargs="+", default=[100, 1000, 10000],
                        help="transfers recorded (default 100 1000 10000, each a run)")
    parser.add_argument("--requests", type=int, default=200, help="polls of each page (default 200)")
    args = parser.parse_args()
    http = urllib3.PoolManager(retries=False)
    polls = {"list": ["/transfers?limit=50"], "detail": ["/transfers/t000000", "/transfers/t000000/samples"],
             "statistics": ["/statistics"]}
    rows = []
    for transfers in args.transfers:
        with tempfile.TemporaryDirectory(prefix="cmtransfer-dashboard-") as work:
            config = Path(work) / "config"
            config.mkdir()
            (config / "cloudmesh.yaml").write_text(CONFIG % work)
            store = SQLiteRecords(config / "transfer.db")
            print(f"recording {transfers:,} transfers ...", flush=True)
            record(store, transfers)
            store.close()
            port = emu.free_port()
            env = {**os.environ, "CLOUDMESH_CONFIG_DIR": str(config), "CMS_TRANSFER_TOKEN": TOKEN}
            service = subprocess.Popen([CMS, "transfer", "serve", f"--port={port}"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                emu.wait_for(f"{url}/health", service)
                for page, paths in polls.items():
                    cpu, median = measure(http, url, paths, service.pid, args.requests)
                    rows.append((transfers, page, cpu, median))
                    print(f"{transfers:>7,} {page:<10} {cpu * 1000:8.2f} ms CPU  {median * 1000:8.2f} ms", flush=True)
            finally:
                emu.stop([service.pid])
                service.wait()
    lines = ["# What an open dashboard costs the service", "",
             f"Command: `.venv/bin/python benchmarks/dashboard.py --transfers {' '.join(map(str, args.transfers))} "
             f"--requests {args.requests}`", "",
             "Each page polls once a second while its tab is visible; the cost is the service's CPU time "
             "(all its threads) per poll.", "",
             "| transfers recorded | page | service CPU per poll (ms) | answer, median (ms) | one open dashboard, share of a core |",
             "| ---: | --- | ---: | ---: | ---: |"]
    for transfers, page, cpu, median in rows:
        lines.append(f"| {transfers:,} | {page} | {cpu * 1000:.2f} | {median * 1000:.2f} | {cpu * 100:.1f}% |")
    report = "\n".join(lines) + "\n"
    print(report)
    (Path(__file__).resolve().parent / "results-dashboard.md").write_text(report)


if __name__ == "__main__":
    main()
