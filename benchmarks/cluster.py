"""Cluster benchmark (issue 12): one transfer on this host alone, on 1 and on 2 Dask workers, the
scheduler's cost per task and per object, and a model of N hosts built from those figures.

Cases, S3 -> Azure on moto and Azurite (Azure told it has no Put Block From URL, as Azurite lacks it):
  big-object   one object of --big MiB (256), written by boto3 in 5 MiB parts: spread over the workers
  files-1k     1,000 x 64 KiB
Each runs on this host alone (no cluster), then with a `dask scheduler` and 1, then 2 `dask worker`
processes (2 threads each, no nanny), each started before the clock starts. Reported: wall time,
throughput, CPU seconds of the client, the scheduler, the workers and the emulators, and the time
from the command's start to the first byte recorded at the target.

Coordination: --tasks (2,000) tasks each, empty, carrying one object (as a part task does) and carrying
a batch of objects, through a scheduler and one worker: the scheduler's CPU per task, per object,
and a task's round trip.

The model: N hosts, each limited by its NIC (--nic Gb/s), and the scheduler by the tasks per second
its measured CPU per task allows: aggregate throughput min(N x NIC, tasks/s x bytes per task), and
the N at which the scheduler saturates, for each task size; it picks the smallest task sizes that
keep the scheduler from saturating below --hosts x 2 hosts (limits.py holds the sizes in use).

    .venv/bin/python benchmarks/cluster.py            # or: make bench-cluster
    .venv/bin/python benchmarks/cluster.py --big 64 --runs 1

Writes benchmarks/results-cluster.md, results-cluster.json and results-cluster.png.
"""
import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "deploy"))
import bench  # noqa: E402
import emulators as emu  # noqa: E402

from cloudmesh.transfer import limits  # noqa: E402

MiB = 1024 * 1024
PART = 5 * MiB
CMS = str(Path(sys.executable).with_name("cms"))
DASK = str(Path(sys.executable).with_name("dask"))
THREADS = 2  # per worker
MODES = ("host", "1 worker", "2 workers")


class Scheduler:
    """A scheduler and `workers` worker processes with the benchmark's config, stopped by PID."""

    def __init__(self, workdir: Path, environ: dict, workers: int):
        self.file = workdir / f"scheduler-{time.monotonic_ns()}.json"
        log = open(workdir / "dask.log", "ab")
        self.processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                            "--scheduler-file", str(self.file)], stdout=log, stderr=log, env=environ)]
        while not self.file.exists() or not self.file.read_text().strip():
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]
        for n in range(workers):
            self.processes.append(subprocess.Popen(
                [DASK, "worker", "--scheduler-file", str(self.file), "--nthreads", str(THREADS), "--no-nanny",
                 "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{n}"], stdout=log, stderr=log, env=environ))
        from distributed import Client
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        """Workers first (a worker whose scheduler is gone waits to reconnect), then the scheduler."""
        emu.stop(self.pids[1:])
        emu.stop(self.pids[:1])


def first_byte(records, transfer_id: str, started: float, found: list) -> None:
    """Poll the records until the transfer has a byte done; the seconds since `started` into `found`."""
    deadline = time.time() + 600
    while time.time() < deadline:
        status = records.status(transfer_id)
        if status and (status["bytes_done"] or status["state"] != "running"):
            found.append(time.time() - started)
            return
        time.sleep(0.02)


def run_case(environ: dict, workdir: Path, mode: str, source: str, run: int, emulated: list[int], records) -> dict:
    """One copy; its figures."""
    workers = {"host": 0, "1 worker": 1, "2 workers": 2}[mode]
    cluster = Scheduler(workdir, environ, workers) if workers else None
    transfer_id = f"bench-{time.monotonic_ns()}"
    args = [CMS, "transfer", "copy", f"--source=awss3:{source}", f"--target=az:run-{transfer_id}", "-r",
            f"--id={transfer_id}", "--output=json"] + ([f"--cluster={cluster.address}"] if cluster else [])
    watched = [*(cluster.pids if cluster else []), *emulated]
    before = {pid: bench.cpu_seconds(pid) for pid in watched}
    started, found = time.time(), []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, text=True)
    watcher = threading.Thread(target=first_byte, args=(records, transfer_id, started, found))
    watcher.start()
    out, err = process.communicate()
    seconds = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    watcher.join()
    cpu = {pid: bench.cpu_seconds(pid) - before[pid] for pid in watched}
    if cluster:
        cluster.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{mode}: {err.strip()}")
    status = json.loads(out)
    assert status["state"] == "completed", status
    return {"mode": mode, "run": run, "seconds": round(seconds, 3), "bytes": status["bytes_done"],
            "objects": status["objects_done"], "mib_per_second": round(status["bytes_done"] / MiB / seconds, 1),
            "first_byte": round(found[0], 3) if found else None, "cpu_client": round(client_cpu, 2),
            "cpu_scheduler": round(cpu[cluster.pids[0]], 2) if cluster else 0.0,
            "cpu_workers": round(sum(cpu[p] for p in cluster.pids[1:]), 2) if cluster else 0.0,
            "cpu_emulators": round(sum(cpu[p] for p in emulated), 2), "workers": len(status["workers"])}


def batch_payload(count: int = limits.CLUSTER_BATCH_OBJECTS) -> list:
    """A task's arguments as run_batch gets them: `count` planned objects."""
    from cloudmesh.transfer.planner import Item
    from cloudmesh.transfer.providers import ObjectInfo
    return [Item(f"folder/sub/object-{n:06d}.bin", ObjectInfo(f"data/folder/sub/object-{n:06d}.bin", 65536, 1.7e9,
                                                              etag=f'"{n:032x}"', content_type="application/octet-stream"),
                 f"backup/folder/sub/object-{n:06d}.bin") for n in range(count)]


def scheduler_cost(client, scheduler_pid: int, tasks: int, payload) -> tuple[float, float]:
    """The scheduler's CPU ms per task, and tasks per second, for `tasks` tasks with `payload`."""
    before = bench.cpu_seconds(scheduler_pid)
    started = time.perf_counter()
    futures = [client.submit(len, payload, pure=False) for _ in range(tasks)]
    client.gather(futures)
    wall = time.perf_counter() - started
    del futures
    return (bench.cpu_seconds(scheduler_pid) - before) / tasks * 1000, tasks / wall


def coordination(environ: dict, workdir: Path, tasks: int) -> dict:
    """The scheduler's CPU per task, empty and carrying a batch of objects, and a task's round trip."""
    from distributed import Client
    cluster = Scheduler(workdir, environ, 1)
    try:
        with Client(cluster.address, timeout=30) as client:
            client.submit(len, [], pure=False).result()
            empty, empty_rate = scheduler_cost(client, cluster.pids[0], tasks, [])
            part, part_rate = scheduler_cost(client, cluster.pids[0], tasks, batch_payload(1))
            batch, batch_rate = scheduler_cost(client, cluster.pids[0], tasks, batch_payload())
            trips = []
            for n in range(50):
                began = time.perf_counter()
                client.submit(len, [n], pure=False).result()
                trips.append(time.perf_counter() - began)
    finally:
        cluster.stop()
    return {"tasks": tasks, "scheduler_cpu_ms_per_empty_task": round(empty, 3),
            "scheduler_cpu_ms_per_part_task": round(part, 3), "part_tasks_per_second_wall": round(part_rate),
            "scheduler_cpu_ms_per_task": round(batch, 3), "tasks_per_second_wall": round(batch_rate),
            "empty_tasks_per_second_wall": round(empty_rate), "round_trip_ms": round(statistics.median(trips) * 1000, 2),
            "scheduler_cpu_ms_per_object": round(batch / limits.CLUSTER_BATCH_OBJECTS, 4)}


def model(part_task_ms: float, batch_task_ms: float, nic_gbps: float, hosts: int, host_objects: float) -> dict:
    """Aggregate throughput against N hosts, and where the scheduler saturates, per task size:
    large objects are bound by each host's NIC, small ones by the objects a host moves per second."""
    tasks_per_second, batches_per_second = 1000 / part_task_ms, 1000 / batch_task_ms
    nic = nic_gbps * 1e9 / 8  # bytes/s each host moves (a worker reads and writes at this rate)
    part = limits.DEFAULT_CHUNK
    sizes = {}
    for parts in (1, 2, 4, 8, 16, 32):
        sizes[parts] = {"bytes_per_task": parts * part,
                        "saturates_at_hosts": round(tasks_per_second * parts * part / nic, 1)}
    wanted = 2 * hosts
    chosen = next(p for p, s in sizes.items() if s["saturates_at_hosts"] >= wanted)
    batches = {}
    for objects in (10, 50, 100, 500):
        batches[objects] = {"objects_per_second": round(batches_per_second * objects),
                            "saturates_at_hosts": round(batches_per_second * objects / host_objects, 1)}
    chosen_batch = next(o for o, s in batches.items() if s["saturates_at_hosts"] >= wanted)
    curve = [(n, min(n * nic, tasks_per_second * limits.CLUSTER_TASK_PARTS * part) / 1e9) for n in range(1, 4 * hosts + 1)]
    return {"tasks_per_second": round(tasks_per_second), "batches_per_second": round(batches_per_second),
            "nic_bytes_per_second": nic, "part_size": part,
            "task_parts": sizes, "chosen_task_parts": chosen, "in_use_task_parts": limits.CLUSTER_TASK_PARTS,
            "host_objects_per_second": round(host_objects), "small_batches": batches,
            "chosen_batch_objects": chosen_batch, "in_use_batch_objects": limits.CLUSTER_BATCH_OBJECTS, "curve": curve,
            "linear_to_hosts": sizes[limits.CLUSTER_TASK_PARTS]["saturates_at_hosts"],
            "small_linear_to_hosts": batches[limits.CLUSTER_BATCH_OBJECTS]["saturates_at_hosts"]}


def plot(result: dict, path: Path) -> None:
    bench.ensure_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = result["model"]
    n = [x for x, _ in m["curve"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(n, [x * m["nic_bytes_per_second"] / 1e9 for x in n], "--", color="grey", label="N x NIC (linear)")
    for parts in sorted({1, m["in_use_task_parts"], m["chosen_task_parts"]}):
        ceiling = m["tasks_per_second"] * parts * m["part_size"] / 1e9
        ax.plot(n, [min(x * m["nic_bytes_per_second"] / 1e9, ceiling) for x in n],
                label=f"{parts} part(s) of {m['part_size'] // MiB} MiB per task")
    ax.set_xlabel("hosts (N)")
    ax.set_ylabel("aggregate GB/s")
    ax.set_title(f"model: {result['nic']:g} Gb/s per host, scheduler CPU "
                 f"{result['coordination']['scheduler_cpu_ms_per_part_task']} ms per part task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def table(result: dict) -> str:
    rows = ["| case | mode | seconds | MiB/s | first byte (s) | CPU client | CPU scheduler | CPU workers | CPU emulators "
            "| workers |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case, runs in result["cases"].items():
        for mode in MODES:
            best = min((r for r in runs if r["mode"] == mode), key=lambda r: r["seconds"])
            rows.append(f"| {case} | {mode} | {best['seconds']} | {best['mib_per_second']} | {best['first_byte']} | "
                        f"{best['cpu_client']} | {best['cpu_scheduler']} | {best['cpu_workers']} | {best['cpu_emulators']} | "
                        f"{best['workers']} |")
    c, m = result["coordination"], result["model"]
    rows += ["", f"Coordination ({c['tasks']} tasks each): the scheduler's CPU is {c['scheduler_cpu_ms_per_empty_task']} ms "
                 f"per empty task ({c['empty_tasks_per_second_wall']} tasks/s), {c['scheduler_cpu_ms_per_part_task']} ms per "
                 f"task carrying one object as a part task does ({c['part_tasks_per_second_wall']} tasks/s) and "
                 f"{c['scheduler_cpu_ms_per_task']} ms per "
                 f"task carrying a batch of {limits.CLUSTER_BATCH_OBJECTS} objects ({c['tasks_per_second_wall']} tasks/s), "
                 f"so {c['scheduler_cpu_ms_per_object']} ms per object; a task's round trip takes {c['round_trip_ms']} ms.",
             "",
             f"Model ({result['nic']:g} Gb/s per host; the scheduler takes {m['tasks_per_second']} part tasks/s or "
             f"{m['batches_per_second']} batch tasks/s on one core): for large objects it saturates at",
             "", "| parts of 8 MiB per task | bytes per task | saturates at hosts |", "| --- | --- | --- |"]
    rows += [f"| {p} | {s['bytes_per_task'] // MiB} MiB | {s['saturates_at_hosts']} |" for p, s in m["task_parts"].items()]
    rows += ["", f"The model chooses {m['chosen_task_parts']} parts per task at most (in use: {m['in_use_task_parts']}, "
                 f"linear to {m['linear_to_hosts']} hosts). Small files, 64 KiB each, each host moving "
                 f"{m['host_objects_per_second']} objects/s (this host alone, files case):", "",
             "| objects per task | objects/s the scheduler allows | saturates at hosts |", "| --- | --- | --- |"]
    rows += [f"| {o} | {s['objects_per_second']} | {s['saturates_at_hosts']} |" for o, s in m["small_batches"].items()]
    rows += ["", f"The model chooses {m['chosen_batch_objects']} objects per task at least (in use: "
                 f"{m['in_use_batch_objects']}, linear to {m['small_linear_to_hosts']} hosts)."]
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=256, help="MiB of the big object")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2, help="runs of each case and mode (the fastest is shown)")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks of each kind for the scheduler's cost")
    parser.add_argument("--nic", type=float, default=10.0, help="Gb/s per host in the model")
    parser.add_argument("--hosts", type=int, default=50, help="hosts the model must scale to linearly")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cms-bench-cluster")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)  # fresh emulators and records
    args.workdir.mkdir(parents=True)
    with emu.Emulators(args.workdir / "emulators") as running:
        storages = running.storages(args.workdir / "local")
        storages["az"] = {**storages["azure"], "credentials": {**storages["azure"]["credentials"],
                                                               "copy_from_url": False}}
        config = args.workdir / "config"
        emu.write_config(config, storages)
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
        environ.update(CLOUDMESH_CONFIG_DIR=str(config), PATH=f"{Path(CMS).parent}{os.pathsep}{os.environ['PATH']}")
        import boto3
        s3 = boto3.client("s3", endpoint_url=running.s3_endpoint, aws_access_key_id=emu.S3_KEY_ID,
                          aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1")
        s3.upload_fileobj(io.BytesIO(os.urandom(args.big * MiB)), emu.BUCKET, "big/object.bin",
                          Config=boto3.s3.transfer.TransferConfig(multipart_threshold=PART, multipart_chunksize=PART))
        for n in range(args.files):
            s3.put_object(Bucket=emu.BUCKET, Key=f"files/{n:05d}.bin", Body=os.urandom(64 * 1024))
        emulated = [p.pid for p in running.processes]
        os.environ["CLOUDMESH_CONFIG_DIR"] = str(config)
        from cloudmesh.transfer.records import open_records
        records = open_records()
        result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores, {platform.python_version()}",
                  "nic": args.nic, "cases": {}}
        for case, source in ((f"big-object {args.big} MiB", "big"), (f"files-{args.files}", "files")):
            runs = []
            for run in range(args.runs):
                for mode in MODES:
                    bench.wait_for_quiet()
                    runs.append(run_case(environ, args.workdir, mode, source, run, emulated, records))
                    print(case, runs[-1], flush=True)
            result["cases"][case] = runs
        result["coordination"] = coordination(environ, args.workdir, args.tasks)
    files = next(runs for case, runs in result["cases"].items() if case.startswith("files"))
    host_objects = max(r["objects"] / r["seconds"] for r in files if r["mode"] == "host")
    c = result["coordination"]
    result["model"] = model(c["scheduler_cpu_ms_per_part_task"], c["scheduler_cpu_ms_per_task"], args.nic, args.hosts,
                            host_objects)
    (HERE / "results-cluster.json").write_text(json.dumps(result, indent=1))
    (HERE / "results-cluster.md").write_text(f"# Cluster benchmark, {result['date']} ({result['machine']})\n\n"
                                             f"Command: `.venv/bin/python benchmarks/cluster.py`\n\n" + table(result))
    plot(result, HERE / "results-cluster.png")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
