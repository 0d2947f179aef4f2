"""Scale benchmark: `cms transfer` and rclone side by side at many objects (issue 11).

Each case runs the tools in turn, one run at a time, and reports wall time, peak RSS, CPU
(user + sys), time to first byte and the ratio cms / rclone:

  local-100k    100,000 x 1 KiB local -> local               cms vs rclone copy
  memory-100k   100,000 x 1 KiB through the in-memory provider cms only: the engine alone
  memory-1m     1,000,000 objects the same way                cms only; not in the default set
  cloud-1k      1,000 x 64 KiB S3 -> Azure and Azure -> S3    cms vs rclone copy (bench.py c, d)
  sync-1k       rerun of 1,000 unchanged objects S3 -> Azure  cms --sync vs rclone copy --checksum (bench.py f)

    .venv/bin/python benchmarks/scale.py                              # all but memory-1m (or: make bench-scale)
    .venv/bin/python benchmarks/scale.py --case memory-100k,memory-1m # is peak RSS flat in the object count?
    .venv/bin/python benchmarks/scale.py --count 2000 --runs 3        # a quick check at 2,000 objects

The local source files are generated once into a cache under --workdir (kept for the next run);
moto and Azurite are started (deploy/emulators.py) only for the cloud-1k and sync-1k cases.
It writes benchmarks/results-scale.md and results-scale.json.
"""
import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import KiB, Contender, Loc, Measurement, Sample, ToolFailed  # noqa: E402

log = logging.getLogger("scale")

COUNT = 100_000                 # objects of local-100k and memory-100k (--count changes it)
SCALE_1M = 10                   # memory-1m has SCALE_1M x --count objects
OBJECT_SIZE = 1 * KiB           # the local and memory objects
PER_FOLDER = 1000               # local source files per folder
POLL_SECONDS = 0.02             # how often the target is looked at for its first object
RSS_FLAT = 1.15                 # targets of the issue: memory-1m's peak RSS within 15% of memory-100k's,
LOCAL_WALL, LOCAL_RSS_MIB = 1.5, 150       # local-100k: wall <= 1.5 x rclone, peak RSS <= 150 MiB,
FIRST_BYTE_SECONDS = 2.0                   # the first object within 2 s,
CLOUD_WALL, SYNC_WALL = 0.8, 1.0           # cloud-1k <= 0.8 x rclone, sync-1k <= rclone --checksum
NO_PROCESS = 0                  # a pid for "no emulator": bench.cpu_seconds reads 0 for it
CMS = str(Path(sys.executable).with_name("cms"))


@dataclass(frozen=True)
class Case:
    key: str
    what: str                   # "local", "memory", "cloud" or "sync"
    emulated: bool = False      # needs moto and Azurite
    scale: int = 1              # objects per --count (local and memory)

    def objects(self, count: int) -> int:
        """The case's object count: bench.py's 1,000 for the cloud cases, else scale x --count."""
        return bench.SMALL_FILES if self.emulated else self.scale * count


CASES = {c.key: c for c in (Case("local-100k", "local"), Case("memory-100k", "memory"),
                            Case("memory-1m", "memory", scale=SCALE_1M),
                            Case("cloud-1k", "cloud", emulated=True), Case("sync-1k", "sync", emulated=True))}
DEFAULT_CASES = [k for k in CASES if k != "memory-1m"]
MEMORY_STORAGE = {"memory-100k": "gen", "memory-1m": "gen1m"}   # the generating source of each memory case
CLOUD_ROWS = {"c": "cloud-1k S3->Azure", "d": "cloud-1k Azure->S3"}  # bench.py's cases -> rows here


@dataclass
class Timed(Sample):
    """bench.py's Sample of one run, with the seconds from the process start until the first
    object was at the target (None: not observable, or nothing was written)."""
    ttfb: float | None = None


class FirstObject:
    """Times, in a thread, how long after entering `exists()` first answers True (every POLL_SECONDS)."""

    def __init__(self, exists):
        self.exists, self.seconds = exists, None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def __enter__(self) -> "FirstObject":
        self.start = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def poll(self) -> None:
        while not self.done.is_set():
            try:
                if self.exists():
                    self.seconds = time.perf_counter() - self.start
                    return
            except Exception as e:          # a failed look is no first object; the next may succeed
                log.warning("looking for the first object failed: %s", e)
            self.done.wait(POLL_SECONDS)


def any_file(folder: Path) -> bool:
    """Whether a file with at least one byte lies under `folder`. Hidden names, such as cms's
    partial files, are not counted: they are not at the target yet."""
    pending = [folder]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size:
                    return True
    return False


def tree_totals(folder: Path) -> tuple[int, int]:
    """(bytes, files) under a folder."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


class Scale(bench.Bench):
    """bench.py's Bench (emulators, rclone.conf, SDK clients, the cloud cases), with the local
    storage rooted at the cache of generated files, and the memory storages."""

    def __init__(self, workdir: Path, runs: int, count: int):
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
        super().__init__(self.run_dir, runs, azcopy=None)
        self.count = count
        self.local_root = workdir / "data"          # cached sources (kept) and this run's targets
        self.out = f"out/{self.run_dir.name}"
        self.moto_pid = self.azurite_pid = NO_PROCESS
        self.rclone_conf = self.run_dir / "rclone.conf"
        self.emulated = False
        for folder in (self.local_root, self.config_dir, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.rclone_conf.touch()

    def start(self) -> None:
        super().start()
        self.emulated = True

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.local_root / self.out, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def make_cloud_data(self, cases: list[str]) -> None:
        """bench.py's 1,000 x 64 KiB objects: in S3 and Azure for cloud-1k (its c, d), in S3 for sync-1k (f)."""
        keys = ({"c", "d"} if "cloud-1k" in cases else set()) | ({"f"} if "sync-1k" in cases else set())
        self.make_data(keys, big=False)

    def write_storages(self) -> None:
        """cloudmesh.yaml: `local` (at the cache), the emulators' storages when started, and the
        memory storages: `gen`/`gen1m` generate the objects, `sink` proves and keeps none of them (so
        that peak RSS is the engine's, not a store's)."""
        local = {"cm": {"kind": "local", "name": "local"}, "default": {"directory": str(self.local_root)}}
        section = self.em.storages(self.local_root) if self.emulated else {"local": local}
        for case, name in MEMORY_STORAGE.items():
            section[name] = {"cm": {"kind": "memory"},
                             "default": {"generate": CASES[case].objects(self.count), "size": OBJECT_SIZE}}
        section["probe"] = {"cm": {"kind": "memory"}, "default": {"generate": 1, "size": OBJECT_SIZE}}
        section["sink"] = {"cm": {"kind": "memory"}, "default": {"keep": "nothing"}}
        bench.emulators.write_config(self.config_dir, section)

    def fresh_records(self) -> None:
        """Each cms run starts with empty transfer records, so no run pays for an earlier one's rows."""
        for path in self.config_dir.glob("transfer.db*"):
            path.unlink()

    def timed(self, action, exists=None) -> Timed:
        """Run `action` (-> bench Sample), timing the first object with `exists` when given."""
        if exists is None:
            return Timed(**asdict(action()))
        with FirstObject(exists) as first:
            sample = action()
        return Timed(**asdict(sample), ttfb=first.seconds)

    def run(self, command: list[str], env: dict, name: str) -> tuple[Sample, str]:
        return bench.run_command(command, env, self.logs / name, self.moto_pid, self.azurite_pid)

    # -- local-100k -------------------------------------------------------------------------------

    def local_source(self) -> str:
        """`count` random files of OBJECT_SIZE in folders of PER_FOLDER, generated once into the cache."""
        name = f"src-{self.count}x{OBJECT_SIZE}"
        folder, ready = self.local_root / name, self.local_root / f"{name}.ready"
        if not ready.exists():
            print(f"generating {self.count:,} files of {OBJECT_SIZE} bytes into {folder}", flush=True)
            started = time.perf_counter()
            shutil.rmtree(folder, ignore_errors=True)
            for i in range(self.count):
                if i % PER_FOLDER == 0:
                    (folder / f"d{i // PER_FOLDER:03d}").mkdir(parents=True)
                (folder / f"d{i // PER_FOLDER:03d}" / f"f{i:07d}.bin").write_bytes(os.urandom(OBJECT_SIZE))
            ready.touch()
            print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
        return name

    def local_contenders(self) -> list[Contender]:
        source = Loc("local", self.local_source())
        m = {tool: Measurement("local-100k", tool, self.count * OBJECT_SIZE, self.count) for tool in ("cms", "rclone")}
        return [Contender(m[tool], tool, lambda run, tool=tool: self.local_run(tool, source, run)) for tool in m]

    def local_run(self, tool: str, source: Loc, run: int) -> Timed:
        """Copy the local source to a target that does not exist yet, check it, remove it."""
        target = Loc("local", f"{self.out}/{tool}-{run}")
        folder = self.local_root / target.path
        shutil.rmtree(folder, ignore_errors=True)
        if tool == "cms":
            self.fresh_records()
            command, env = self.cms_command(source, target, True), self.cms_env()
        else:
            command, env = self.rclone_command(source, target, False), self.rclone_env()
        try:
            sample = self.timed(lambda: self.local_copy(tool, command, env, f"local-{tool}-{run}"),
                                lambda: any_file(folder))
            landed = tree_totals(folder)
            if landed != (self.count * OBJECT_SIZE, self.count):
                raise ToolFailed(f"target holds {landed[1]} files / {landed[0]} bytes, "
                                 f"expected {self.count} / {self.count * OBJECT_SIZE}")
            return sample
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def local_copy(self, tool: str, command: list[str], env: dict, name: str) -> Sample:
        sample, stdout = self.run(command, env, name)
        if tool == "cms":
            self.take_cms_status(sample, stdout)
        return sample

    # -- memory-100k, memory-1m ---------------------------------------------------------------------

    def memory_missing(self) -> str | None:
        """Why the memory provider cannot be used (None when `cms transfer list` lists its generator)."""
        try:
            self.run([CMS, "transfer", "list", "--target=probe:g", "-r"], self.cms_env(), "memory-probe")
        except ToolFailed as e:
            return str(e)
        return None

    def memory_contender(self, key: str) -> Contender:
        objects = CASES[key].objects(self.count)
        m = Measurement(key, "cms", objects * OBJECT_SIZE, objects, note="engine only")
        return Contender(m, "cms", lambda run: self.memory_run(key, objects, run))

    def memory_run(self, key: str, objects: int, run: int) -> Timed:
        """Generated objects into the memory sink; the JSON status must count every one of them."""
        self.fresh_records()
        command = [CMS, "transfer", "copy", f"--source={MEMORY_STORAGE[key]}:g", "--target=sink:out", "-r",
                   "--output=json"]
        sample, stdout = self.run(command, self.cms_env(), f"{key}-{run}")
        self.take_cms_status(sample, stdout)
        done = bench.cms_status(stdout).get("objects_done")
        if done != objects or sample.bytes_done != objects * OBJECT_SIZE:
            raise ToolFailed(f"{done} objects / {sample.bytes_done} bytes done, expected {objects} / "
                             f"{objects * OBJECT_SIZE}")
        return Timed(**asdict(sample))

    # -- cloud-1k, sync-1k ----------------------------------------------------------------------

    def exists_under(self, loc: Loc):
        """A check whether any object lies under an S3 or Azure path."""
        prefix = loc.path + "/"
        if loc.store == "s3":
            return lambda: self.s3.list_objects_v2(Bucket=bench.emulators.BUCKET, Prefix=prefix,
                                                   MaxKeys=1).get("KeyCount", 0) > 0
        return lambda: next(iter(self.container.list_blobs(name_starts_with=prefix, results_per_page=1)),
                            None) is not None

    def cloud_contenders(self, key: str) -> list[Contender]:
        """bench.py's copy of case c or d by cms and rclone, with the first object timed."""
        case = bench.CASES[key]
        contenders = self.copy_contenders(case, [("cms", "cms", ()), ("rclone", "rclone", ())])
        for c in contenders:
            c.measurement.case = CLOUD_ROWS[key]
            c.attempt = lambda run, attempt=c.attempt, tool=c.tool: self.cloud_run(case, tool, attempt, run)
        return contenders

    def cloud_run(self, case: bench.Case, tool: str, attempt, run: int) -> Timed:
        if tool == "cms":
            self.fresh_records()
        return self.timed(lambda: attempt(run), self.exists_under(self.target_for(case, tool, str(run))))

    def sync_measurements(self) -> list[Measurement]:
        """bench.py's case f (a finished 1,000-object copy, rerun) with cms --sync and rclone --checksum."""
        contenders, failed, targets = self.sync_contenders(bench.CASES["f"], [
            ("cms --sync", "cms", ("--sync",)), ("rclone --checksum", "rclone", ("--checksum",))])
        for c in contenders:
            c.measurement.case = "sync-1k"
            c.attempt = lambda run, attempt=c.attempt, tool=c.tool: self.sync_run(tool, attempt, run)
        for m in failed:
            m.case = "sync-1k"
        try:
            self.rounds(contenders, warmup=False)
        finally:
            for target in targets:
                self.delete(Loc(target.store, target.path + "/"))
        return [c.measurement for c in contenders] + failed

    def sync_run(self, tool: str, attempt, run: int) -> Timed:
        if tool == "cms":
            self.fresh_records()
        sample = self.timed(lambda: attempt(run))
        if tool == "cms" and sample.bytes_done != 0:
            raise ToolFailed(f"the --sync rerun copied {sample.bytes_done} bytes of unchanged objects")
        return sample


# ---------------------------------------------------------------------------------------------
# Running the cases
# ---------------------------------------------------------------------------------------------

def run_cases(scale: Scale, cases: list[str]) -> list[Measurement]:
    measurements = []
    for key in cases:
        print(f"\n{key}: {title(key, scale.count)}", flush=True)
        what = CASES[key].what
        if what == "sync":
            measurements += scale.sync_measurements()
            continue
        if what == "memory":
            reason = scale.memory_missing()
            if reason:
                print(f"  skipped: the in-memory provider is not usable ({reason})", flush=True)
                scale.failures.append(f"{key} skipped: the in-memory provider is not usable ({reason})")
                continue
            contenders = [scale.memory_contender(key)]
        elif what == "local":
            contenders = scale.local_contenders()
        else:
            contenders = scale.cloud_contenders("c") + scale.cloud_contenders("d")
        scale.rounds(contenders, warmup=False)
        measurements += [c.measurement for c in contenders]
    return measurements


def find(measurements: list[Measurement], case: str, tool: str) -> Measurement | None:
    return next((m for m in measurements if m.case == case and m.tool == tool and m.samples), None)


def peer_of(m: Measurement, measurements: list[Measurement]) -> Measurement | None:
    """The rclone row a cms row is compared with."""
    if not m.tool.startswith("cms"):
        return None
    return next((p for p in measurements if p.case == m.case and p.tool.startswith("rclone") and p.samples), None)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate(measurements: list[Measurement]) -> list[dict]:
    """The issue's targets for what was measured, in the order of the cases."""
    targets = []

    def add(case: str, target: str, cms: str, reference: str, value: float | None, limit: float) -> None:
        if value is not None:
            targets.append({"case": case, "target": target, "cms": cms, "reference": reference,
                            "ratio": f"{value:.2f}", "met": value <= limit})

    cms, rclone = find(measurements, "local-100k", "cms"), find(measurements, "local-100k", "rclone")
    if cms and rclone:
        add("local-100k", f"wall <= {LOCAL_WALL} x rclone", f"{cms.seconds:.2f} s", f"rclone {rclone.seconds:.2f} s",
            ratio(cms.seconds, rclone.seconds), LOCAL_WALL)
    if cms:
        rss = cms.median("rss_mib")
        add("local-100k", f"peak RSS <= {LOCAL_RSS_MIB} MiB", f"{rss:.0f} MiB", f"{LOCAL_RSS_MIB} MiB",
            rss / LOCAL_RSS_MIB, 1.0)
    small, large = find(measurements, "memory-100k", "cms"), find(measurements, "memory-1m", "cms")
    if small and large:
        add("memory-1m", f"peak RSS within {RSS_FLAT - 1:.0%} of memory-100k's", f"{large.median('rss_mib'):.0f} MiB",
            f"memory-100k {small.median('rss_mib'):.0f} MiB", ratio(large.median("rss_mib"), small.median("rss_mib")),
            RSS_FLAT)
    for m in measurements:
        if m.tool == "cms" and m.median("ttfb") is not None:
            add(m.case, f"first byte within {FIRST_BYTE_SECONDS:.0f} s", f"{m.median('ttfb'):.2f} s",
                f"{FIRST_BYTE_SECONDS:.0f} s", m.median("ttfb") / FIRST_BYTE_SECONDS, 1.0)
    for row in CLOUD_ROWS.values():
        cms, rclone = find(measurements, row, "cms"), find(measurements, row, "rclone")
        if cms and rclone:
            add(row, f"wall <= {CLOUD_WALL} x rclone", f"{cms.seconds:.2f} s", f"rclone {rclone.seconds:.2f} s",
                ratio(cms.seconds, rclone.seconds), CLOUD_WALL)
    cms, rclone = find(measurements, "sync-1k", "cms --sync"), find(measurements, "sync-1k", "rclone --checksum")
    if cms and rclone:
        add("sync-1k", "wall <= rclone copy --checksum", f"{cms.seconds:.2f} s", f"rclone {rclone.seconds:.2f} s",
            ratio(cms.seconds, rclone.seconds), SYNC_WALL)
    order = {m.case: i for i, m in reversed(list(enumerate(measurements)))}
    return sorted(targets, key=lambda t: order[t["case"]])


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def title(key: str, count: int) -> str:
    case = CASES.get(key)
    if case is None:                            # a row of cloud-1k
        return f"{bench.SMALL_FILES:,} x 64 KiB " + key.split()[1].replace("->", " -> ")
    n = case.objects(count)
    return {"local": f"{n:,} x 1 KiB local -> local",
            "memory": f"{n:,} x 1 KiB memory -> memory (the engine alone)",
            "cloud": f"{n:,} x 64 KiB S3 -> Azure and Azure -> S3",
            "sync": f"--sync rerun of {n:,} unchanged objects S3 -> Azure"}[case.what]


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def measurements_table(measurements: list[Measurement]) -> str:
    lines = ["| case | tool | objects | wall s | peak RSS MiB | CPU s (user+sys) | first byte s | "
             "cms / rclone: wall, RSS, CPU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in measurements:
        if not m.samples:
            lines.append(f"| {m.case} | {m.tool} | {m.nobjects:,} | failed: {'; '.join(m.failures)[:160]} | | | | |")
            continue
        peer = peer_of(m, measurements)
        ratios = "-" if peer is None else ", ".join(
            number(ratio(m.median(name), peer.median(name))) for name in ("seconds", "rss_mib", "cpu_client"))
        runs = "" if len(m.samples) == 1 else f" ({bench.run_list(m)})"
        marked = "!" if any(s.disturbed for s in m.samples) else ""
        lines.append(f"| {m.case} | {m.tool} | {m.nobjects:,} | {number(m.seconds)}{marked}{runs} | "
                     f"{number(m.median('rss_mib'), 0)} | {number(m.median('cpu_client'), 1)} | "
                     f"{number(m.median('ttfb'))} | {ratios} |")
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> str:
    lines = ["| case | target | cms | reference | ratio | met |", "| --- | --- | --- | --- | ---: | --- |"]
    lines += [f"| {t['case']} | {t['target']} | {t['cms']} | {t['reference']} | {t['ratio']} | "
              f"{'yes' if t['met'] else '**no**'} |" for t in targets]
    return "\n".join(lines)


def machine_facts(emulated: bool) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    facts = {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory / 1024**2, 1),
             "kernel": platform.release(), "python": platform.python_version(),
             "cloudmesh-transfer": importlib.metadata.version("cloudmesh-transfer"),
             "rclone": bench.output(["rclone", "version"]).splitlines()[0]}
    if emulated:
        azurite = bench.REPO / "deploy" / "node_modules" / "azurite" / "package.json"
        facts["moto"] = importlib.metadata.version("moto")
        facts["azurite"] = json.loads(azurite.read_text())["version"]
    return facts


def markdown(report: dict, table: str, targets: str) -> str:
    lines = [f"# cms transfer scale benchmark, {report['date']}", "",
             f"Command: `{report['command']}` (total {report['total_seconds'] / 60:.1f} min; {report['runs']} "
             f"run(s) per case and tool, medians shown).", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()) +
             f"; load average at the start {report['load_at_start']}.", "",
             f"Code under test: {report['code']['start']} at the start, {report['code']['end']} at the end.", "",
             "Wall time and first byte count from the process start (Python or Go start-up included); peak RSS "
             "and CPU are GNU time's %M and %U + %S of the tool; first byte is the first object (a file of at least "
             "one byte, or a listed object) seen at the target, looked for every 20 ms; '-' where it is not "
             "observable (the memory sink lives inside cms; a --sync rerun writes nothing). Every cms run starts "
             "with empty transfer records. `!` marks a run during which other processes used more than a quarter "
             "of a CPU.", "",
             "## Measurements", "", table, "", "## Targets", ""]
    if report["count"] != COUNT:
        lines += [f"Scaled down with --count {report['count']:,}: the issue states the targets of local-100k, "
                  f"memory-100k and memory-1m for {COUNT:,} and {SCALE_1M * COUNT:,} objects.", ""]
    lines += [targets, ""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in report["failures"]] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default=",".join(DEFAULT_CASES),
                        help=f"cases to run, comma-separated: {', '.join(CASES)} (default: all but memory-1m)")
    parser.add_argument("--runs", type=int, default=1, help="runs per case and tool; the median is shown (default 1)")
    parser.add_argument("--count", type=int, default=COUNT,
                        help=f"objects of local-100k and memory-100k (default {COUNT:,}); memory-1m has "
                             f"{SCALE_1M} x as many; cloud-1k and sync-1k keep {bench.SMALL_FILES:,}")
    parser.add_argument("--workdir", default=str(bench.CACHE / "scale"),
                        help="where the generated local files are kept between runs (default: %(default)s)")
    args = parser.parse_args(argv)
    chosen = [k.strip() for k in args.case.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.runs < 1 or args.count < 1:
        parser.error("--runs and --count must be at least 1")
    args.cases = [k for k in CASES if k in chosen]
    return args


def main(argv: list[str]) -> int:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    args = arguments(argv)
    started, date = time.perf_counter(), datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    code_at_start, load_at_start = bench.code_version(), " ".join(Path("/proc/loadavg").read_text().split()[:3])
    bench.stop_on_sigterm()
    bench.ensure_debian_packages()
    workdir = Path(args.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scale = Scale(workdir, args.runs, args.count)
    emulated = any(CASES[k].emulated for k in args.cases)
    try:
        if emulated:
            scale.start()
            scale.make_cloud_data(args.cases)
        scale.write_storages()
        measurements = run_cases(scale, args.cases)
    finally:
        scale.stop()
    report = {"date": date, "command": bench.command_line(argv), "load_at_start": load_at_start,
              "code": {"start": code_at_start, "end": bench.code_version()}, "runs": args.runs,
              "count": args.count, "total_seconds": time.perf_counter() - started, "machine": machine_facts(emulated),
              "cases": {m.case: title(m.case, args.count) for m in measurements},
              "targets": evaluate(measurements),
              "measurements": [m.as_dict() for m in measurements], "failures": scale.failures}
    text = markdown(report, measurements_table(measurements), targets_table(report["targets"]))
    print("\n" + text)
    (bench.HERE / "results-scale.md").write_text(text)
    (bench.HERE / "results-scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {bench.HERE / 'results-scale.md'} and results-scale.json", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; emulators stopped", file=sys.stderr)
        sys.exit(130)
