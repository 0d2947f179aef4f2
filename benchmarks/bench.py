"""Benchmark `cms transfer` against rclone and AzCopy on the local emulators (moto S3, Azurite).

What it measures, in one run, on the same emulators and the same data for every tool:

  (a) one 1 GiB object S3 -> Azure           cms vs rclone, and the emulators' own limit
  (b) one 1 GiB object Azure -> S3           cms vs rclone (--s3-no-head), and the emulators' limit
  (c) 1,000 files of 64 KiB S3 -> Azure      cms vs rclone
  (d) 1,000 files of 64 KiB Azure -> S3      cms vs rclone
  (e) a local folder -> Azure                cms vs AzCopy (rclone for information)
                                             64 files of 8 MiB + 200 files of 64 KiB (524.5 MiB)
  (f) a --sync rerun of a finished 1,000-file S3 -> Azure copy: cms --sync vs rclone's own rerun
                                             (rclone --checksum for information)

For each case and tool: the median wall time of --runs runs (after one warm-up run that is not
counted; the tools take turns, round by round), MiB/s, the client's peak RSS (GNU time's %M) and
the CPU seconds spent by the client, moto, Azurite and any other process during the run (a run
that other processes disturbed is repeated). Each run copies to a fresh target prefix, which is
checked (object count and bytes) and then deleted. The emulators' limit for a large case is
min(raw SDK read rate of the source, raw SDK write rate of the target), measured in the same run.
The results are checked against the targets of the performance issue.

    .venv/bin/python benchmarks/bench.py                  # everything, 3 runs each (or: make bench)
    .venv/bin/python benchmarks/bench.py --only a,c       # a subset of the cases
    .venv/bin/python benchmarks/bench.py --big            # + one 4 GiB object S3 -> Azure (cms RSS)
    .venv/bin/python benchmarks/bench.py --sweep --runs 1 # + cms at --parallel 4..32 x --chunksize 8/16MiB

It installs what it needs when missing: rclone, GNU time and libsecret-1-0 (apt-get), AzCopy
(npm, into ~/.cache/cmtransfer-bench) and matplotlib (pip, into this Python's environment). It writes
benchmarks/results.md, results.json and results.png, and always stops the emulators it started.
"""
import argparse
import ctypes.util
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
sys.path.insert(0, str(REPO / "deploy"))
import emulators  # noqa: E402

KiB, MiB, GiB = 1024, 1024**2, 1024**3
PART = 8 * MiB                      # part size of the raw SDK measurements and of the data upload
SDK_THREADS = 8                     # threads of the raw SDK writes (the emulator limit)
SMALL_FILES, SMALL_SIZE = 1000, 64 * KiB
FOLDER = [("large", 64, 8 * MiB), ("small", 200, 64 * KiB)]   # local folder of case (e)
AZCOPY_VERSION = "10.32.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmtransfer-bench"
AZCOPY = CACHE / "node_modules" / "@azure-tools" / "azcopy-linux" / "dist" / "bin" / "azcopy_linux_amd64"
RUN_TIMEOUT = 1800                  # seconds before a hung tool is killed
CMS_RETRIES = 3                     # the engine may be under change: a failed cms run is retried
DISTURBED = 0.25                    # other processes' CPU per wall second that makes a run disturbed
SWEEP_PARALLEL = [4, 8, 16, 32]
SWEEP_CHUNKSIZE = ["8MiB", "16MiB"]
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Installing what the benchmark needs
# ---------------------------------------------------------------------------------------------

def ensure_debian_packages() -> None:
    """rclone, GNU time (peak RSS) and libsecret (which AzCopy links against), from apt when missing."""
    missing = [] if shutil.which("rclone") else ["rclone"]
    if not os.access("/usr/bin/time", os.X_OK):
        missing.append("time")
    if not ctypes.util.find_library("secret-1"):
        missing.append("libsecret-1-0")
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        subprocess.run(sudo + ["apt-get", "update"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", *missing], check=True)


def ensure_azcopy() -> Path:
    """AzCopy from npm (@azure-tools/azcopy-linux) into ~/.cache/cmtransfer-bench, executable."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit("AzCopy from @azure-tools/azcopy-linux is amd64 only")
    if not AZCOPY.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"installing AzCopy {AZCOPY_VERSION} into {CACHE}", flush=True)
        subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--loglevel=error",
                        f"@azure-tools/azcopy-linux@{AZCOPY_VERSION}"], check=True)
    AZCOPY.chmod(0o755)
    return AZCOPY


def ensure_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        print("installing matplotlib into this environment", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)


# ---------------------------------------------------------------------------------------------
# Measuring one command
# ---------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One run of one tool."""
    seconds: float
    rss_mib: float
    cpu_client: float
    cpu_moto: float
    cpu_azurite: float
    cpu_other: float = 0.0                   # CPU of everything else on the machine meanwhile
    disturbed: bool = False                  # other processes competed for the CPUs in every attempt
    engine_seconds: float | None = None      # cms's own `seconds` (without process start-up)
    bytes_done: int | None = None            # cms's `bytes_done`


@dataclass
class Measurement:
    """All counted runs of one tool in one case (or one raw SDK measurement)."""
    case: str
    tool: str
    nbytes: int
    nobjects: int
    samples: list[Sample] = field(default_factory=list)
    warmup: Sample | None = None
    failures: list[str] = field(default_factory=list)
    note: str = ""
    knobs: dict = field(default_factory=dict)   # cms --parallel / --chunksize of a sweep run

    @property
    def seconds(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    @property
    def mib_s(self) -> float | None:
        return self.nbytes / MiB / self.seconds if self.samples and self.seconds else None

    @property
    def rss_mib(self) -> float | None:
        rss = [s.rss_mib for s in self.samples if s.rss_mib]
        return max(rss) if rss else None

    def median(self, name: str) -> float | None:
        values = [getattr(s, name) for s in self.samples if getattr(s, name) is not None]
        return statistics.median(values) if values else None

    def as_dict(self) -> dict:
        return {**asdict(self), "median_seconds": self.seconds, "mib_per_second": self.mib_s,
                "peak_rss_mib": self.rss_mib}


class ToolFailed(Exception):
    pass


def busy_seconds() -> float:
    """CPU seconds all CPUs have been busy since boot (user, nice, system, irq, softirq, steal)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


class CpuMeter:
    """CPU used by the client, moto, Azurite and everything else on the machine during a run.
    `other` shows when something outside the benchmark competed for the CPUs."""

    def __init__(self, moto_pid: int, azurite_pid: int):
        self.pids = (moto_pid, azurite_pid)
        self.start = (busy_seconds(), *map(cpu_seconds, self.pids))

    def sample(self, seconds: float, rss_mib: float, cpu_client: float) -> Sample:
        busy, moto, azurite = (now - then for now, then in
                               zip((busy_seconds(), *map(cpu_seconds, self.pids)), self.start))
        return Sample(seconds=seconds, rss_mib=rss_mib, cpu_client=cpu_client, cpu_moto=moto,
                      cpu_azurite=azurite, cpu_other=max(0.0, busy - cpu_client - moto - azurite))


def wait_for_quiet(limit: float = 0.3, seconds: float = 120) -> None:
    """Wait (at most `seconds`) until the machine's CPUs are idle but for `limit` of one CPU:
    the emulators are idle between runs, so anything busier is another job."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = busy_seconds()
        time.sleep(0.5)
        if busy_seconds() - before < limit * 0.5:
            return


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_command(command: list[str], env: dict, log: Path, moto_pid: int, azurite_pid: int) -> tuple[Sample, str]:
    """Run a command to its end; its wall time, peak RSS and CPU, and its stdout.

    Peak RSS and CPU come from GNU time (%M, %U, %S), not from os.wait4 on our own child: a child
    that Python starts (vfork/fork, then exec) inherits this process's RSS high-water mark in
    ru_maxrss, so every tool would show at least the benchmark's own ~90 MiB. GNU time is small
    and forks the tool itself. The emulators' CPU comes from /proc. The tool runs in its own
    process group, which is killed if it hangs or if we are interrupted, so none is left behind."""
    meter = CpuMeter(moto_pid, azurite_pid)
    usage = log.with_suffix(".time")
    timed = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(usage), *command]
    with open(log.with_suffix(".out"), "w+") as out, open(log.with_suffix(".err"), "w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(timed, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        timer = threading.Timer(RUN_TIMEOUT, kill_group, [process])
        timer.start()
        try:
            process.wait()
        except BaseException:
            kill_group(process)
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        tail = " | ".join((stderr.strip() or stdout.strip()).splitlines()[-3:])
        raise ToolFailed(f"exit {process.returncode}: {tail[:400]}")
    rss_kib, user, system = usage.read_text().split("\n")[-2].split()
    return meter.sample(seconds, int(rss_kib) / KiB, float(user) + float(system)), stdout


def kill_group(process: subprocess.Popen) -> None:
    """Kill GNU time and the tool under it (their own process group), and reap time."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def cms_status(stdout: str) -> dict:
    """The JSON status `cms transfer copy --output=json` prints."""
    try:
        return json.loads(stdout[stdout.index("{"):])
    except ValueError:
        raise ToolFailed(f"no JSON status in the output: {stdout.strip()[:200]}") from None


# ---------------------------------------------------------------------------------------------
# Where data lives: one name for every tool
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loc:
    store: str          # "s3", "azure" or "local"
    path: str

    def cms(self) -> str:
        return {"s3": "awss3", "azure": "azure", "local": "local"}[self.store] + ":" + self.path

    def rclone(self, local_root: Path) -> str:
        return {"s3": f"s3:{emulators.BUCKET}/{self.path}", "azure": f"az:{emulators.CONTAINER}/{self.path}",
                "local": str(local_root / self.path)}[self.store]

    def child(self, name: str) -> "Loc":
        return Loc(self.store, f"{self.path}/{name}")


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    kind: str           # "large", "small", "folder" or "sync"
    source: Loc
    target_store: str
    peer: str = "rclone"

    @property
    def single(self) -> bool:
        return self.kind == "large"


CASES = {
    "a": Case("a", "1 GiB object S3 -> Azure", "large", Loc("s3", "big/file.bin"), "azure"),
    "b": Case("b", "1 GiB object Azure -> S3", "large", Loc("azure", "big/file.bin"), "s3"),
    "c": Case("c", "1,000 x 64 KiB S3 -> Azure", "small", Loc("s3", "small"), "azure"),
    "d": Case("d", "1,000 x 64 KiB Azure -> S3", "small", Loc("azure", "small"), "s3"),
    "e": Case("e", "local folder -> Azure", "folder", Loc("local", "folder"), "azure", peer="azcopy"),
    "f": Case("f", "--sync rerun, 1,000 files S3 -> Azure", "sync", Loc("s3", "small"), "azure"),
}
BIG = Case("big", "4 GiB object S3 -> Azure (cms only)", "large", Loc("s3", "huge/file.bin"), "azure")


# ---------------------------------------------------------------------------------------------
# The benchmark: emulators, clients, data, tools
# ---------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, workdir: Path, runs: int, azcopy: Path):
        self.workdir, self.runs, self.azcopy = workdir, runs, azcopy
        self.local_root = workdir / "local"
        self.config_dir = workdir / "cloudmesh"
        self.logs = workdir / "logs"
        self.big_file = workdir / "big.bin"
        self.em = emulators.Emulators(workdir / "emulators")
        self.failures: list[str] = []
        self.cms_defaults: dict = {}
        self.sizes: dict[str, tuple[int, int]] = {}     # source path -> (bytes, objects)

    # -- emulators and clients ----------------------------------------------------------------

    def start(self) -> None:
        for folder in (self.local_root, self.config_dir, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.em.start()
        self.moto_pid, self.azurite_pid = (p.pid for p in self.em.processes)
        emulators.write_config(self.config_dir, self.em.storages(self.local_root))
        self.rclone_conf = self.write_rclone_conf()
        self.s3, self.container = self.sdk_clients()
        self.sas = self.container_sas()
        print(f"moto S3 at {self.em.s3_endpoint} (pid {self.moto_pid}), "
              f"Azurite at {self.em.azure_endpoint} (pid {self.azurite_pid})", flush=True)

    def stop(self) -> None:
        self.em.stop()

    def write_rclone_conf(self) -> Path:
        path = self.workdir / "rclone.conf"
        path.write_text(
            "[s3]\ntype = s3\nprovider = Other\n"
            f"access_key_id = {emulators.S3_KEY_ID}\nsecret_access_key = {emulators.S3_SECRET}\n"
            f"endpoint = {self.em.s3_endpoint}\nforce_path_style = true\nregion = us-east-1\n\n"
            f"[az]\ntype = azureblob\nuse_emulator = true\nendpoint = {self.em.azure_endpoint}\n")
        return path

    def sdk_clients(self):
        import boto3
        from azure.storage.blob import BlobServiceClient
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url=self.em.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=emulators.S3_KEY_ID, aws_secret_access_key=emulators.S3_SECRET,
                          config=Config(max_pool_connections=32, s3={"addressing_style": "path"},
                                        request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required"))
        service = BlobServiceClient(self.em.azure_endpoint,
                                    credential={"account_name": emulators.AZURITE_ACCOUNT,
                                                "account_key": emulators.AZURITE_KEY},
                                    max_single_get_size=PART, max_chunk_get_size=PART, max_block_size=PART,
                                    max_single_put_size=PART)
        return s3, service.get_container_client(emulators.CONTAINER)

    def container_sas(self) -> str:
        """A SAS for the container, signed with Azurite's well-known key, valid over http."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas
        return generate_container_sas(
            emulators.AZURITE_ACCOUNT, emulators.CONTAINER, account_key=emulators.AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2), protocol="https,http")

    # -- environments of the tools ------------------------------------------------------------

    def cms_env(self) -> dict:
        return {**os.environ, "CLOUDMESH_CONFIG_DIR": str(self.config_dir)}

    @staticmethod
    def rclone_env() -> dict:
        """rclone's S3 backend fails on AWS_CA_BUNDLE ('unsupported transport'): leave it out."""
        return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

    def azcopy_env(self) -> dict:
        return {**os.environ, "AZCOPY_LOG_LOCATION": str(self.workdir / "azcopy"),
                "AZCOPY_JOB_PLAN_LOCATION": str(self.workdir / "azcopy" / "plans")}

    # -- commands -----------------------------------------------------------------------------

    def cms_command(self, source: Loc, target: Loc, recursive: bool, *extra: str) -> list[str]:
        cms = Path(sys.executable).with_name("cms")
        return [str(cms), "transfer", "copy", f"--source={source.cms()}", f"--target={target.cms()}",
                *(["-r"] if recursive else []), "--output=json", *extra]

    def rclone_command(self, source: Loc, target: Loc, single: bool, *extra: str) -> list[str]:
        return ["rclone", "--config", str(self.rclone_conf), "copyto" if single else "copy",
                source.rclone(self.local_root), target.rclone(self.local_root), *extra]

    def azcopy_command(self, source: Loc, target: Loc) -> list[str]:
        url = f"{self.em.azure_endpoint}/{emulators.CONTAINER}/{target.path}?{self.sas}"
        return [str(self.azcopy), "copy", f"{self.local_root / source.path}/*", url,
                "--recursive", "--from-to=LocalBlob"]

    def command(self, tool: str, case: Case, target: Loc, extra: tuple = ()) -> tuple[list[str], dict]:
        """The command line and environment of one run; `extra` are options of that tool."""
        if tool == "cms":
            return self.cms_command(case.source, target, not case.single, *extra), self.cms_env()
        if tool == "rclone":
            no_head = ("--s3-no-head",) if case.key == "b" else ()
            return self.rclone_command(case.source, target, case.single, *no_head, *extra), self.rclone_env()
        return self.azcopy_command(case.source, target), self.azcopy_env()

    # -- objects in the emulators ---------------------------------------------------------------

    def listing(self, loc: Loc) -> list[tuple[str, int]]:
        """(key, size) of every object at or under a path."""
        if loc.store == "s3":
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=emulators.BUCKET, Prefix=loc.path)
            return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
        if loc.store == "azure":
            return [(b.name, b.size) for b in self.container.list_blobs(name_starts_with=loc.path)]
        root = self.local_root / loc.path
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        return [(str(p.relative_to(self.local_root)), p.stat().st_size) for p in files]

    def totals(self, loc: Loc) -> tuple[int, int]:
        rows = self.listing(loc)
        return sum(size for _, size in rows), len(rows)

    def delete(self, loc: Loc) -> None:
        keys = [key for key, _ in self.listing(loc)]
        if loc.store == "s3":
            for i in range(0, len(keys), 1000):
                self.s3.delete_objects(Bucket=emulators.BUCKET,
                                       Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        else:
            for i in range(0, len(keys), 256):
                self.container.delete_blobs(*keys[i:i + 256])

    def check_copied(self, case: Case, target: Loc) -> None:
        expected = self.sizes[case.source.path]
        landed = self.totals(target if case.single else Loc(target.store, target.path + "/"))
        if landed != expected:
            raise ToolFailed(f"target holds {landed[1]} objects / {landed[0]} bytes, "
                             f"expected {expected[1]} / {expected[0]}")

    # -- the data -----------------------------------------------------------------------------

    def make_data(self, cases: set[str], big: bool) -> None:
        started = time.perf_counter()
        if cases & {"a", "b", "e"} or big:
            self.make_big_file()
        if cases & {"a", "b"}:
            self.make_big_objects(cases)
        if cases & {"c", "d", "f"}:
            self.make_small_files(cases)
        if "e" in cases:
            self.make_local_folder()
        if big:
            self.make_huge_object()
        print(f"data ready in {time.perf_counter() - started:.0f} s", flush=True)

    def make_big_file(self) -> None:
        """A 1 GiB local random file: the source of the big objects and of the raw SDK writes."""
        with open(self.big_file, "wb") as f:
            for _ in range(GiB // PART):
                f.write(os.urandom(PART))

    def make_big_objects(self, cases: set[str]) -> None:
        """The 1 GiB file uploaded to S3 (multipart, 8 MiB parts) and to Azure (blocks) with the SDKs."""
        from boto3.s3.transfer import TransferConfig
        if "a" in cases:
            self.s3.upload_file(str(self.big_file), emulators.BUCKET, "big/file.bin",
                                Config=TransferConfig(multipart_chunksize=PART, max_concurrency=SDK_THREADS))
        if "b" in cases:
            with open(self.big_file, "rb") as f:
                self.container.upload_blob("big/file.bin", f, length=GiB, overwrite=True,
                                           max_concurrency=SDK_THREADS)
        self.sizes["big/file.bin"] = (GiB, 1)

    def make_small_files(self, cases: set[str]) -> None:
        """1,000 random files of 64 KiB in S3 and in Azure, uploaded 16 at a time."""
        names = [f"small/f{i:04d}.bin" for i in range(SMALL_FILES)]

        def put(name: str) -> None:
            data = os.urandom(SMALL_SIZE)
            if cases & {"c", "f"}:
                self.s3.put_object(Bucket=emulators.BUCKET, Key=name, Body=data)
            if "d" in cases:
                self.container.upload_blob(name, data, overwrite=True)

        parallel(put, names, 16)
        self.sizes["small"] = (SMALL_FILES * SMALL_SIZE, SMALL_FILES)

    def make_local_folder(self) -> None:
        total, count = 0, 0
        for sub, number, size in FOLDER:
            (self.local_root / "folder" / sub).mkdir(parents=True, exist_ok=True)
            for i in range(number):
                (self.local_root / "folder" / sub / f"{sub}{i:03d}.bin").write_bytes(os.urandom(size))
                total, count = total + size, count + 1
        self.sizes["folder"] = (total, count)

    def make_huge_object(self) -> None:
        """4 GiB in S3: the 1 GiB file's parts four times over, uploaded as 8 MiB parts."""
        self.s3_multipart_write("huge/file.bin", 4 * GiB)
        self.sizes["huge/file.bin"] = (4 * GiB, 1)

    # -- raw SDK rates: the emulators' own limit ----------------------------------------------

    def part_of_big_file(self, fd: int, number: int) -> bytes:
        return os.pread(fd, PART, (number * PART) % GiB)

    def s3_multipart_write(self, key: str, size: int) -> None:
        upload = self.s3.create_multipart_upload(Bucket=emulators.BUCKET, Key=key)["UploadId"]
        fd = os.open(self.big_file, os.O_RDONLY)
        try:
            def put(number: int) -> dict:
                response = self.s3.upload_part(Bucket=emulators.BUCKET, Key=key, UploadId=upload,
                                               PartNumber=number + 1, Body=self.part_of_big_file(fd, number))
                return {"PartNumber": number + 1, "ETag": response["ETag"]}
            parts = parallel(put, range(size // PART), SDK_THREADS)
        finally:
            os.close(fd)
        self.s3.complete_multipart_upload(Bucket=emulators.BUCKET, Key=key, UploadId=upload,
                                          MultipartUpload={"Parts": parts})

    def azure_block_write(self, key: str, size: int) -> None:
        from azure.storage.blob import BlobBlock
        blob = self.container.get_blob_client(key)
        fd = os.open(self.big_file, os.O_RDONLY)
        try:
            def stage(number: int) -> str:
                block = f"{number:08d}"
                blob.stage_block(block, self.part_of_big_file(fd, number), length=PART)
                return block
            blocks = parallel(stage, range(size // PART), SDK_THREADS)
        finally:
            os.close(fd)
        blob.commit_block_list([BlobBlock(b) for b in blocks])

    def s3_stream_read(self, key: str) -> int:
        body, total = self.s3.get_object(Bucket=emulators.BUCKET, Key=key)["Body"], 0
        while chunk := body.read(PART):
            total += len(chunk)
        return total

    def azure_stream_read(self, key: str) -> int:
        stream, total = self.container.get_blob_client(key).download_blob(max_concurrency=1), 0
        while chunk := stream.read(PART):
            total += len(chunk)
        return total

    def sdk_sample(self, action) -> Sample:
        """Time an SDK action in this process; its CPU and the emulators' CPU."""
        meter = CpuMeter(self.moto_pid, self.azurite_pid)
        cpu0, start = time.process_time(), time.perf_counter()
        action()
        return meter.sample(time.perf_counter() - start, 0, time.process_time() - cpu0)

    def sdk_read(self, source: Loc) -> Sample:
        reader = self.s3_stream_read if source.store == "s3" else self.azure_stream_read
        return self.sdk_sample(lambda: reader(source.path))

    def sdk_write(self, target: Loc) -> Sample:
        writer = self.s3_multipart_write if target.store == "s3" else self.azure_block_write
        try:
            return self.sdk_sample(lambda: writer(target.path, GiB))
        finally:
            self.delete(target)

    # -- running the tools --------------------------------------------------------------------

    def read_cms_defaults(self) -> dict:
        """cms's --parallel and --chunksize defaults, from `cms transfer -h` (they may change
        while the engine is being worked on)."""
        cms = str(Path(sys.executable).with_name("cms"))
        usage = subprocess.run([cms, "transfer", "-h"], env=self.cms_env(), capture_output=True, text=True).stdout
        self.cms_defaults = {name: default_of(usage, option) for name, option in
                             (("parallel", "--parallel=N"), ("chunksize", "--chunksize=SIZE"))}
        print(f"cms defaults: {self.cms_defaults}", flush=True)
        return self.cms_defaults

    def one_run(self, tool: str, case: Case, target: Loc, extra: tuple = (), keep: bool = False) -> Sample:
        """Copy the case's source to `target` with a tool, check what landed, delete it (unless keep)."""
        command, env = self.command(tool, case, target, extra)
        log = self.logs / f"{case.key}-{target.path.replace('/', '_')}"
        try:
            sample, stdout = run_command(command, env, log, self.moto_pid, self.azurite_pid)
            if tool == "cms":
                self.take_cms_status(sample, stdout)
            self.check_copied(case, target)
        finally:
            if not keep:
                self.delete(target if case.single else Loc(target.store, target.path + "/"))
        return sample

    @staticmethod
    def take_cms_status(sample: Sample, stdout: str) -> None:
        status = cms_status(stdout)
        if status.get("state") != "completed":
            raise ToolFailed(f"state {status.get('state')}: {status.get('message')} {status.get('errors', [])[:1]}")
        sample.engine_seconds, sample.bytes_done = status.get("seconds"), status.get("bytes_done")

    def target_for(self, case: Case, label: str, run: str) -> Loc:
        base = Loc(case.target_store, f"bench/{case.key}/{re.sub(r'[^A-Za-z0-9.-]+', '-', label)}/{run}")
        return base.child(Path(case.source.path).name) if case.single else base

    def with_retries(self, tool: str, what: str, action) -> Sample:
        """Run one measurement; a failed cms run is retried after a pause (the engine may be
        changing under us), and every failure is recorded."""
        attempts = CMS_RETRIES if tool == "cms" else 1
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except ToolFailed as e:
                message = f"{what}: attempt {attempt} of {attempts} failed: {e}"
                print("  " + message, flush=True)
                self.failures.append(message)
                if attempt == attempts:
                    raise
                time.sleep(20)

    def rounds(self, contenders: list["Contender"], warmup: bool = True) -> None:
        """Run every contender once per round: a warm-up round (not counted), then `runs` rounds.
        Interleaving the tools spreads the emulators' slow drift (Azurite's database saves and
        garbage collection) evenly over them."""
        for run in range(0 if warmup else 1, self.runs + 1):
            for c in contenders:
                m = c.measurement
                try:
                    sample = self.undisturbed(m, run, lambda: self.with_retries(
                        c.tool, f"({m.case}) {m.tool} run {run}", lambda: c.attempt(run)))
                except ToolFailed as e:
                    m.failures.append(f"run {run}: {e}")
                    continue
                if run:
                    m.samples.append(sample)
                else:
                    m.warmup = sample
                print_sample(m, run, sample)

    def undisturbed(self, m: Measurement, run: int, action) -> Sample:
        """Run once when the machine is quiet; a run during which processes outside the benchmark
        used more than DISTURBED of a CPU on average is repeated (at most twice) and, if it
        stays disturbed, kept with its `disturbed` mark: the least disturbed attempt counts."""
        attempts = []
        for _ in range(3):
            wait_for_quiet()
            sample = action()
            attempts.append(sample)
            if sample.cpu_other <= DISTURBED * sample.seconds:
                return sample
            print(f"  ({m.case}) {m.tool} run {run}: disturbed ({sample.cpu_other:.1f} CPU s of other "
                  f"processes in {sample.seconds:.1f} s); repeating", flush=True)
        best = min(attempts, key=lambda s: s.cpu_other / s.seconds)
        best.disturbed = True
        self.failures.append(f"({m.case}) {m.tool} run {run}: disturbed by other processes in every attempt "
                             f"({best.cpu_other:.1f} CPU s in {best.seconds:.1f} s kept)")
        return best

    def copy_contenders(self, case: Case, tools: list[tuple[str, str, tuple]]) -> list["Contender"]:
        """(label, tool, extra options) -> a contender copying the case's source afresh each run."""
        nbytes, nobjects = self.sizes[case.source.path]
        return [Contender(Measurement(case.key, label, nbytes, nobjects), tool,
                          lambda run, label=label, tool=tool, extra=extra:
                          self.one_run(tool, case, self.target_for(case, label, str(run)), extra))
                for label, tool, extra in tools]

    def limit_contenders(self, case: Case) -> list["Contender"]:
        """Raw SDK read of the source and raw SDK write of the target (1 GiB). A local source
        (case e) is no limit, being in the page cache: only the write is measured."""
        contenders = []
        if case.source.store != "local":
            contenders.append(Contender(Measurement(case.key, f"SDK read ({case.source.store})", GiB, 1,
                                                    note="one stream, 8 MiB reads"), "sdk",
                                        lambda run: self.sdk_read(Loc(case.source.store, "big/file.bin"))))
        contenders.append(Contender(Measurement(case.key, f"SDK write ({case.target_store})", GiB, 1,
                                                note=f"8 MiB parts, {SDK_THREADS} threads"), "sdk",
                                    lambda run: self.sdk_write(self.target_for(case, "sdk", str(run)))))
        return contenders

    def sync_contenders(self, case: Case, tools: list[tuple[str, str, tuple]]
                        ) -> tuple[list["Contender"], list[Measurement], list[Loc]]:
        """(label, tool, rerun options): copy the case's source once per contender (not timed);
        each run then reruns that copy with the options (cms: --sync; rclone skips what matches)."""
        nbytes, nobjects = self.sizes[case.source.path]
        contenders, failed, targets = [], [], []
        for label, tool, extra in tools:
            measurement = Measurement(case.key, label, nbytes, nobjects)
            target = self.target_for(case, label, "sync")
            targets.append(target)
            try:
                self.with_retries(tool, f"({case.key}) {tool} first copy",
                                  lambda: self.one_run(tool, case, target, keep=True))
            except ToolFailed as e:
                measurement.failures.append(f"first copy: {e}")
                failed.append(measurement)
                continue
            contenders.append(Contender(measurement, tool, lambda run, tool=tool, target=target, extra=extra:
                                        self.sync_rerun(tool, case, target, extra)))
        return contenders, failed, targets

    def sync_rerun(self, tool: str, case: Case, target: Loc, extra: tuple) -> Sample:
        command, env = self.command(tool, case, target, extra)
        sample, stdout = run_command(command, env, self.logs / f"{case.key}-{target.path.replace('/', '_')}-rerun",
                                     self.moto_pid, self.azurite_pid)
        if tool == "cms":
            self.take_cms_status(sample, stdout)
        self.check_copied(case, target)
        return sample


@dataclass
class Contender:
    """One line of a case's results: what is measured, by which tool, and how one run goes."""
    measurement: Measurement
    tool: str                   # "cms", "rclone", "azcopy" or "sdk" (decides the retries)
    attempt: object             # run number -> Sample


def default_of(usage: str, option: str) -> str | None:
    """The [default: X] that a docopt usage text gives an option."""
    match = re.search(re.escape(option) + r"[^\[]*\[default: ([^\]]+)\]", usage)
    return match.group(1) if match else None


def print_sample(m: Measurement, run: int, sample: Sample) -> None:
    extra = f"  bytes copied {sample.bytes_done}" if m.tool.startswith("cms rerun") else ""
    print(f"  ({m.case}) {m.tool:<24} run {run}{' (warm-up)' if run == 0 else '          '}: "
          f"{sample.seconds:7.2f} s {m.nbytes / MiB / max(sample.seconds, 1e-9):8.1f} MiB/s  "
          f"RSS {sample.rss_mib:4.0f} MiB  "
          f"CPU s client/moto/Azurite/other {sample.cpu_client:4.1f}/{sample.cpu_moto:4.1f}/"
          f"{sample.cpu_azurite:4.1f}/{sample.cpu_other:4.1f}{extra}",
          flush=True)


def parallel(function, items, threads: int) -> list:
    """function over items on `threads` threads, in order; on Ctrl-C the queue is dropped."""
    pool = ThreadPoolExecutor(threads)
    try:
        results = list(pool.map(function, items))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


# ---------------------------------------------------------------------------------------------
# Running the cases
# ---------------------------------------------------------------------------------------------

def run_cases(bench: Bench, cases: list[str]) -> tuple[list[Measurement], dict[str, dict]]:
    measurements, limits = [], {}
    for key in cases:
        case = CASES[key]
        print(f"\n({key}) {case.title}", flush=True)
        if case.kind == "sync":
            measurements += run_sync_case(bench, case)
            continue
        tools = ["cms", "azcopy", "rclone"] if case.kind == "folder" else ["cms", "rclone"]
        contenders = bench.copy_contenders(case, [(tool, tool, ()) for tool in tools])
        if case.kind in ("large", "folder"):
            contenders += bench.limit_contenders(case)
        bench.rounds(contenders)
        measurements += [c.measurement for c in contenders]
        if case.kind in ("large", "folder"):
            limits[key] = emulator_limit([c.measurement for c in contenders if c.tool == "sdk"])
    return measurements, limits


def emulator_limit(sdk: list[Measurement]) -> dict:
    """min(raw read rate of the source, raw write rate of the target), in MiB/s."""
    rate = {m.tool.split()[1]: m.mib_s for m in sdk}       # "SDK read (s3)" -> "read"
    known = [r for r in rate.values() if r]
    return {"read_mib_s": rate.get("read"), "write_mib_s": rate.get("write"),
            "limit_mib_s": min(known) if known else None}


def run_sync_case(bench: Bench, case: Case) -> list[Measurement]:
    contenders, failed, targets = bench.sync_contenders(case, [
        ("cms rerun", "cms", ("--sync",)), ("rclone rerun", "rclone", ()),
        ("rclone --checksum rerun", "rclone", ("--checksum",))])      # for information
    try:
        bench.rounds(contenders)
    finally:
        for target in targets:
            bench.delete(Loc(target.store, target.path + "/"))
    return [c.measurement for c in contenders] + failed


def run_big(bench: Bench) -> list[Measurement]:
    """The 4 GiB object with cms (defaults), `runs` runs without a warm-up: its peak RSS."""
    print(f"\n(big) {BIG.title}", flush=True)
    contenders = bench.copy_contenders(BIG, [("cms", "cms", ())])
    bench.rounds(contenders, warmup=False)
    return [c.measurement for c in contenders]


def run_sweep(bench: Bench, cases: list[str]) -> list[Measurement]:
    """cms on the copy cases at every --parallel x --chunksize, `runs` rounds, no warm-up."""
    results = []
    for key in [k for k in cases if CASES[k].kind in ("large", "small")]:
        case = CASES[key]
        print(f"\n(sweep {key}) {case.title}", flush=True)
        knobs = [(chunk, par) for chunk in SWEEP_CHUNKSIZE for par in SWEEP_PARALLEL]
        contenders = bench.copy_contenders(case, [(f"cms p={par} c={chunk}", "cms",
                                                   (f"--parallel={par}", f"--chunksize={chunk}"))
                                                  for chunk, par in knobs])
        for contender, (chunk, par) in zip(contenders, knobs):
            contender.measurement.knobs = {"parallel": par, "chunksize": chunk}
        bench.rounds(contenders, warmup=False)
        results += [c.measurement for c in contenders]
    return results


# ---------------------------------------------------------------------------------------------
# Targets of the issue
# ---------------------------------------------------------------------------------------------

def find(measurements: list[Measurement], case: str, tool: str) -> Measurement | None:
    return next((m for m in measurements if m.case == case and m.tool == tool and m.samples), None)


def evaluate(measurements: list[Measurement], limits: dict) -> list[dict]:
    targets = []
    for key in ("a", "b"):
        cms, rclone, limit = find(measurements, key, "cms"), find(measurements, key, "rclone"), limits.get(key, {})
        if cms and rclone and limit.get("limit_mib_s"):
            need = min(1.3 * rclone.mib_s, 0.9 * limit["limit_mib_s"])
            targets.append({"case": key, "target": "throughput >= min(1.3 x rclone, 0.9 x emulator limit)",
                            "cms": f"{cms.mib_s:.1f} MiB/s",
                            "reference": f"rclone {rclone.mib_s:.1f}, limit {limit['limit_mib_s']:.1f}; "
                                         f"needed {need:.1f} MiB/s",
                            "ratio": f"{cms.mib_s / rclone.mib_s:.2f} x rclone, "
                                     f"{cms.mib_s / limit['limit_mib_s']:.2f} x limit",
                            "met": cms.mib_s >= need})
        if cms:
            targets.append({"case": key, "target": "peak cms RSS < 200 MiB (defaults, 1 GiB object)",
                            "cms": f"{cms.rss_mib:.0f} MiB", "reference": "200 MiB",
                            "ratio": f"{cms.rss_mib / 200:.2f}", "met": cms.rss_mib < 200})
    for key in ("c", "d"):
        cms, rclone = find(measurements, key, "cms"), find(measurements, key, "rclone")
        if cms and rclone:
            targets.append({"case": key, "target": "wall time <= 0.7 x rclone",
                            "cms": f"{cms.seconds:.2f} s", "reference": f"rclone {rclone.seconds:.2f} s",
                            "ratio": f"{cms.seconds / rclone.seconds:.2f}",
                            "met": cms.seconds <= 0.7 * rclone.seconds})
    cms, azcopy = find(measurements, "e", "cms"), find(measurements, "e", "azcopy")
    if cms and azcopy:
        targets.append({"case": "e", "target": "throughput >= AzCopy",
                        "cms": f"{cms.mib_s:.1f} MiB/s", "reference": f"AzCopy {azcopy.mib_s:.1f} MiB/s",
                        "ratio": f"{cms.mib_s / azcopy.mib_s:.2f}", "met": cms.mib_s >= azcopy.mib_s})
    cms, rclone = find(measurements, "f", "cms rerun"), find(measurements, "f", "rclone rerun")
    if cms:
        copied = {s.bytes_done for s in cms.samples + ([cms.warmup] if cms.warmup else [])}
        targets.append({"case": "f", "target": "--sync rerun < 3 s and 0 bytes copied",
                        "cms": f"{cms.seconds:.2f} s, bytes_done {sorted(copied)}",
                        "reference": f"rclone rerun {rclone.seconds:.2f} s" if rclone else "",
                        "ratio": f"{cms.seconds / rclone.seconds:.2f} x rclone" if rclone else "",
                        "met": cms.seconds < 3 and copied == {0}})
    big, one = find(measurements, "big", "cms"), find(measurements, "a", "cms")
    if big and one:
        targets.append({"case": "big", "target": "4 GiB peak RSS within 10% of the 1 GiB run",
                        "cms": f"{big.rss_mib:.0f} MiB ({big.mib_s:.1f} MiB/s)",
                        "reference": f"1 GiB: {one.rss_mib:.0f} MiB",
                        "ratio": f"{big.rss_mib / one.rss_mib:.2f}", "met": big.rss_mib <= 1.1 * one.rss_mib})
    return targets


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def number(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def title(key: str) -> str:
    return BIG.title if key == "big" else CASES[key].title


def measurements_table(measurements: list[Measurement], limits: dict) -> str:
    lines = ["| case | tool | runs (s) | median s | MiB/s | peak RSS MiB | cms engine s | "
             "CPU s: client / moto / Azurite / other |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for m in measurements:
        runs = run_list(m)
        tool = m.tool + (f" ({m.note})" if m.note else "")
        rate = "" if m.tool.endswith("rerun") or not m.nbytes else number(m.mib_s)
        lines.append(f"| ({m.case}) {title(m.case)} | {tool} | {runs} | {number(m.seconds, 2)} | "
                     f"{rate} | "
                     f"{number(m.rss_mib, 0) if m.rss_mib else ''} | "
                     f"{number(m.median('engine_seconds'), 2)} | {cpu_columns(m)} |")
        if m.failures:
            lines.append(f"| | {m.tool}: {len(m.failures)} failed run(s) | {m.failures[0][:120]} | | | | | |")
    for key, limit in limits.items():
        if limit.get("limit_mib_s"):
            lines.append(f"| ({key}) {title(key)} | **emulator limit** = min(read, write) | | | "
                         f"{number(limit['limit_mib_s'])} | | | |")
    return "\n".join(lines)


def run_list(m: Measurement) -> str:
    """The counted runs' seconds; a run disturbed by other processes is marked with !."""
    return ", ".join(f"{s.seconds:.2f}{'!' if s.disturbed else ''}" for s in m.samples) or "failed"


def cpu_columns(m: Measurement) -> str:
    """Median CPU seconds of the client, moto, Azurite and everything else during a run."""
    names = ("cpu_client", "cpu_moto", "cpu_azurite", "cpu_other")
    return " / ".join(number(m.median(n)) for n in names) if m.samples else ""


def targets_table(targets: list[dict]) -> str:
    lines = ["| case | target | cms | reference | ratio | met |", "| --- | --- | --- | --- | --- | --- |"]
    for t in targets:
        lines.append(f"| ({t['case']}) | {t['target']} | {t['cms']} | {t['reference']} | {t['ratio']} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)


def sweep_table(sweep: list[Measurement]) -> str:
    lines = ["| case | --parallel | --chunksize | runs (s) | median s | MiB/s | peak RSS MiB | "
             "CPU s: cms / moto / Azurite / other |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for m in sweep:
        runs = run_list(m)
        lines.append(f"| ({m.case}) {title(m.case)} | {m.knobs['parallel']} | {m.knobs['chunksize']} | {runs} | "
                     f"{number(m.seconds, 2)} | {number(m.mib_s)} | {number(m.rss_mib, 0)} | {cpu_columns(m)} |")
    return "\n".join(lines)


def output(command: list[str], env: dict | None = None) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60).stdout.strip()
    except OSError:
        return "unknown"


def code_version() -> str:
    """The commit of the code under test (cms runs from this working tree), '-dirty' when
    cloudmesh/ has uncommitted changes."""
    head = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    changed = output(["git", "-C", str(REPO), "status", "--porcelain", "--", "cloudmesh"])
    return head + ("-dirty" if changed else "")


def machine_facts(azcopy: Path) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    azurite = json.loads((REPO / "deploy" / "node_modules" / "azurite" / "package.json").read_text())["version"]
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory / 1024**2, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "rclone": output(["rclone", "version"]).splitlines()[0] if shutil.which("rclone") else "missing",
        "azcopy": output([str(azcopy), "--version"], {**os.environ, "AZCOPY_LOG_LOCATION": tempfile.gettempdir()}),
        "azurite": azurite, "moto": importlib.metadata.version("moto"),
        "boto3": importlib.metadata.version("boto3"),
        "azure-storage-blob": importlib.metadata.version("azure-storage-blob"),
    }


def write_results(report: dict, text: str, measurements: list[Measurement], limits: dict,
                  sweep: list[Measurement]) -> None:
    (HERE / "results.md").write_text(text)
    (HERE / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    defaults = report.get("cms_defaults") or {}
    try:
        reference = (defaults["chunksize"], int(defaults["parallel"]))
    except (KeyError, TypeError, ValueError):
        reference = ("8MiB", 8)
    try:
        plot(measurements, limits, sweep, HERE / "results.png", reference)
    except Exception as e:          # a plot must not cost the measurements
        print(f"could not draw results.png: {e}", file=sys.stderr)


def markdown(report: dict, measurements_md: str, targets_md: str, sweep_md: str) -> str:
    facts = report["machine"]
    lines = [f"# cms transfer benchmark, {report['date']}", "",
             f"Command: `{report['command']}` (total {report['total_seconds'] / 60:.1f} min; "
             f"{report['runs']} counted runs per case and tool after one warm-up run; medians shown).", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + f"; load average at the start "
             f"{report['load_at_start']}", "",
             f"Code under test: cloudmesh-transfer {report['code']['start']} at the start, "
             f"{report['code']['end']} at the end" + (" (**it changed during the run**)"
                                                      if report['code']['start'] != report['code']['end'] else ""),
             "",
             "Data: 1 GiB random object in S3 (boto3 multipart, 8 MiB parts) and in Azure (SDK blocks); "
             f"{SMALL_FILES:,} random files of 64 KiB in each; local folder for (e): "
             + " + ".join(f"{n} files of {s // KiB} KiB" for _, n, s in FOLDER) + ". "
             "Every run copies to a fresh prefix, is checked (count, bytes) and deleted. Tools use their "
             f"defaults (cms: --parallel {report['cms_defaults'].get('parallel')} --chunksize "
             f"{report['cms_defaults'].get('chunksize')} as `cms transfer -h` says; rclone: --transfers 4; "
             "AzCopy: --from-to=LocalBlob). "
             "Wall time includes process start-up. The emulator limit is min(raw SDK read of the source, one "
             "stream of 8 MiB reads; raw SDK write of the target, 8 MiB parts on 8 threads). CPU columns are "
             "median CPU seconds during a run of the client (the tool, or this script for SDK rows), moto, "
             "Azurite, and everything else on the machine (`other`: non-zero means something outside the "
             "benchmark competed for the CPUs; a run where they used more than a quarter of a CPU was repeated, "
             "up to twice, and one that stayed disturbed is marked `!`). `cms engine s` is the `seconds` of cms's JSON status: the "
             "time after planning, without process start-up, opening the storages and listing.", "",
             "## Targets", "", targets_md, "", "## Measurements", "", measurements_md, ""]
    if sweep_md:
        lines += ["## Sweep (cms --parallel x --chunksize)", "", sweep_md, ""]
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in report["failures"]] + [""]
    return "\n".join(lines)


def wrap(key: str) -> str:
    return textwrap.fill(f"({key}) {title(key)}", 22)


def plot(measurements: list[Measurement], limits: dict, sweep: list[Measurement], path: Path,
         sweep_reference: tuple = ("8MiB", 8)) -> None:
    """Bars: MiB/s of the large cases (cms, peer, emulator limit); seconds of the small and sync
    cases (cms, rclone); with a sweep, cms's throughput per setting relative to the defaults."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes_needed = 3 if sweep else 2
    fig, axes = plt.subplots(1, axes_needed, figsize=(6 * axes_needed, 4.8))
    throughput_cases = [k for k in ("a", "b", "e") if find(measurements, k, "cms")]
    bars = {"cms": [], "peer (rclone; AzCopy for e)": [], "emulator limit": []}
    for key in throughput_cases:
        peer = find(measurements, key, CASES[key].peer)
        bars["cms"].append(find(measurements, key, "cms").mib_s)
        bars["peer (rclone; AzCopy for e)"].append(peer.mib_s if peer else 0)
        bars["emulator limit"].append((limits.get(key) or {}).get("limit_mib_s") or 0)
    grouped_bars(axes[0], [f"{wrap(k)}\npeer: {CASES[k].peer}" for k in throughput_cases], bars,
                 "MiB/s (higher is better)")
    time_cases = [(k, t) for k, t in (("c", "cms"), ("d", "cms"), ("f", "cms rerun")) if find(measurements, k, t)]
    bars = {"cms": [], "rclone": []}
    for key, tool in time_cases:
        bars["cms"].append(find(measurements, key, tool).seconds)
        peer = find(measurements, key, tool.replace("cms", "rclone"))
        bars["rclone"].append(peer.seconds if peer else 0)
    grouped_bars(axes[1], [wrap(k) for k, _ in time_cases], bars, "seconds (lower is better)")
    if sweep:
        configs = [(c, p) for c in SWEEP_CHUNKSIZE for p in SWEEP_PARALLEL]
        bars = {}
        for key in sorted({m.case for m in sweep}):
            by_config = {(m.knobs["chunksize"], m.knobs["parallel"]): m.mib_s or 0 for m in sweep if m.case == key}
            reference = by_config.get(sweep_reference) or max(by_config.values()) or 1
            bars[f"({key})"] = [by_config.get(c, 0) / reference for c in configs]
        labels = [f"p{p}\n{c}" for c, p in configs]
        grouped_bars(axes[2], labels, bars, f"cms throughput relative to --parallel {sweep_reference[1]} "
                                            f"--chunksize {sweep_reference[0]}", digits=2)
    fig.suptitle("cms transfer vs rclone / AzCopy on moto + Azurite")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grouped_bars(ax, labels: list[str], series: dict[str, list[float]], ylabel: str, digits: int = 1) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(positions, values, width, label=name)
        ax.bar_label(bars, fmt=f"%.{digits}f", fontsize=6)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="counted runs per case and tool (default 3)")
    parser.add_argument("--only", default="", help="cases to run, e.g. a,c,f (default: all of a-f)")
    parser.add_argument("--big", action="store_true", help="add a 4 GiB object S3 -> Azure with cms (RSS)")
    parser.add_argument("--sweep", action="store_true", help="cms on (a)-(d) at --parallel 4..32 x --chunksize")
    parser.add_argument("--workdir", help="where data and emulator files go (default: a new temp dir)")
    args = parser.parse_args(argv)
    args.cases = [c for c in CASES if c in set(args.only.replace(",", " ").split())] if args.only else list(CASES)
    unknown = set(args.only.replace(",", " ").split()) - set(CASES)
    if unknown or args.runs < 1:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}" if unknown
                     else "--runs must be at least 1")
    return args


def command_line(argv: list[str]) -> str:
    """This run's command, relative to the repository where it can be."""
    def shown(path: str) -> str:
        return os.path.relpath(path, REPO) if path.startswith(str(REPO)) else path
    return shlex.join([shown(sys.executable), shown(os.path.abspath(sys.argv[0]))] + argv)


def stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C, so the emulators are stopped on the way out."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str]) -> int:
    args = arguments(argv)
    started, date = time.perf_counter(), datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    code_at_start, load_at_start = code_version(), " ".join(Path("/proc/loadavg").read_text().split()[:3])
    stop_on_sigterm()
    ensure_debian_packages()
    azcopy = ensure_azcopy()
    ensure_matplotlib()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cmtransfer-bench-"))
    bench = Bench(workdir, args.runs, azcopy)
    sweep: list[Measurement] = []
    try:
        bench.start()
        bench.make_data(set(args.cases), args.big)
        bench.read_cms_defaults()
        measurements, limits = run_cases(bench, args.cases)
        if args.big:
            measurements += run_big(bench)
        if args.sweep:
            sweep = run_sweep(bench, args.cases)
    finally:
        bench.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    targets = evaluate(measurements, limits)
    report = {"date": date, "command": command_line(argv), "load_at_start": load_at_start,
              "cms_defaults": bench.cms_defaults,
              "code": {"start": code_at_start, "end": code_version()}, "runs": args.runs, "total_seconds": time.perf_counter() - started, "machine": machine_facts(azcopy),
              "cases": {k: title(k) for k in args.cases}, "limits": limits, "targets": targets,
              "measurements": [m.as_dict() for m in measurements], "sweep": [m.as_dict() for m in sweep],
              "failures": bench.failures}
    measurements_md, targets_md = measurements_table(measurements, limits), targets_table(targets)
    sweep_md = sweep_table(sweep) if sweep else ""
    text = markdown(report, measurements_md, targets_md, sweep_md)
    print("\n" + text)
    write_results(report, text, measurements, limits, sweep)
    print(f"wrote {HERE / 'results.md'}, results.json and results.png", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; emulators stopped", file=sys.stderr)
        sys.exit(130)
