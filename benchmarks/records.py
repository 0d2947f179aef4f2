"""Records benchmark: `cms transfer status --id` and `statistic` with a million objects recorded (issue 11).

It records one transfer of --count objects (1,000,000 by default) in a fresh SQLite store, as a
run would: the transfer first, its objects a page at a time, then their outcomes in batches (most
done, some failed, skipped and unverified, with methods and proofs). Then it times

  status     `cms transfer status --id=ID --output=json`, a new process each time
  statistic  `cms transfer statistic --output=json`
  start-up   `cms transfer status --id=missing` (the process alone, answering "no transfer")

and, in this process, the store's own `status(id)` and `statistic()` (no start-up). The target is
0.5 s for the commands. It also reports how long recording the objects and their outcomes took,
which is what the engine pays.

    .venv/bin/python benchmarks/records.py               # or: make bench-records
    .venv/bin/python benchmarks/records.py --count 100000 --runs 5

It writes benchmarks/results-records.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudmesh.transfer.limits import BATCH_OBJECTS, LIST_PAGE
from cloudmesh.transfer.records.sqlite import SQLiteRecords

CMS = str(Path(sys.executable).with_name("cms"))
TARGET_SECONDS = 0.5
ID = "scale-records"
CONFIG = """cloudmesh:
  storage:
    local:
      cm: {kind: local, name: local}
      default: {directory: %s}
"""


def outcome(n: int) -> dict:
    """What became of object n: mostly done by stream and MD5, a few of each other state."""
    if n % 1000 == 1:
        return {"state": "failed", "message": f"object {n} failed"}
    if n % 1000 == 2:
        return {"state": "unverified", "method": "stream", "proof": "none", "bytes_done": 1024,
                "message": "copied, but not verified"}
    if n % 100 == 3:
        return {"state": "skipped", "method": "skip", "proof": None}
    return {"state": "done", "method": "stream", "proof": "md5", "md5": f"{n:032x}", "bytes_done": 1024}


def record(store: SQLiteRecords, count: int) -> tuple[float, float]:
    """Record a transfer of `count` objects and their outcomes; the seconds each half took."""
    started = time.perf_counter()
    store.create({"id": ID, "source": "local:src", "target": "local:dst", "copy": True, "recursive": True,
                  "route": "local->local", "owner": "bench", "listing": True})
    for first in range(0, count, LIST_PAGE):
        page = [{"path": f"d{n // 1000:04d}/f{n:07d}", "source_key": f"src/d{n // 1000:04d}/f{n:07d}",
                 "target_key": f"dst/d{n // 1000:04d}/f{n:07d}", "size": 1024, "etag": f"e{n}", "mtime": 1.0}
                for n in range(first, min(first + LIST_PAGE, count))]
        store.add_objects(ID, page, page[-1]["source_key"] if first + LIST_PAGE < count else None,
                          last=first + LIST_PAGE >= count)
    listed = time.perf_counter()
    for first in range(0, count, BATCH_OBJECTS):
        store.update_objects(ID, [(f"d{n // 1000:04d}/f{n:07d}", outcome(n))
                                  for n in range(first, min(first + BATCH_OBJECTS, count))])
    store.finish(ID, "failed", owner="bench")
    return listed - started, time.perf_counter() - listed


def timed(command: list[str], env: dict, runs: int) -> tuple[float, str]:
    """The median wall time of `runs` runs, and the last run's stdout."""
    times, out = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - started)
        out = result.stdout
    return statistics.median(times), out


def in_process(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="objects recorded (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each timing; the median is shown (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmtransfer-records-") as work:
        config = Path(work) / "config"
        config.mkdir()
        (config / "cloudmesh.yaml").write_text(CONFIG % work)
        env = {**os.environ, "CLOUDMESH_CONFIG_DIR": str(config)}
        store = SQLiteRecords(config / "transfer.db")
        print(f"recording {args.count:,} objects ...", flush=True)
        listing, outcomes = record(store, args.count)
        rows = [("record the objects, a page at a time", listing, None),
                ("record their outcomes, in batches", outcomes, None)]
        status_s, out = timed([CMS, "transfer", "status", f"--id={ID}", "--output=json"], env, args.runs)
        status = json.loads(out)
        assert status["objects_total"] == args.count, status["objects_total"]
        statistic_s, out = timed([CMS, "transfer", "statistic", "--output=json"], env, args.runs)
        assert json.loads(out)["transfers"]["failed"] == 1
        startup_s, _ = timed([CMS, "transfer", "status", "--id=missing"], env, args.runs)
        rows += [("`cms transfer status --id`", status_s, TARGET_SECONDS),
                 ("`cms transfer statistic`", statistic_s, TARGET_SECONDS),
                 ("`cms transfer status --id=missing` (start-up alone)", startup_s, None),
                 ("store.status(id), in process", in_process(lambda: store.status(ID), args.runs), None),
                 ("store.statistic(), in process", in_process(store.statistic, args.runs), None)]
        store.close()
    lines = [f"# Records at {args.count:,} objects", "",
             f"Command: `.venv/bin/python benchmarks/records.py --count {args.count} --runs {args.runs}`", "",
             "| what | seconds | target | met |", "| --- | ---: | ---: | --- |"]
    for what, seconds, target in rows:
        met = "-" if target is None else ("yes" if seconds <= target else "**no**")
        lines.append(f"| {what} | {seconds:.3f} | {'-' if target is None else target} | {met} |")
    report = "\n".join(lines) + "\n"
    print(report)
    (Path(__file__).resolve().parent / "results-records.md").write_text(report)


if __name__ == "__main__":
    main()
