"""A/B: the same benchmark case with two checkouts' `cms`, alternating, on one pair of emulators.

bench.py compares cms with rclone and AzCopy within one run; across runs the emulators drift by
20-40%, so "no regression" is measured here instead: both checkouts copy the same data, taking
turns, against the same moto and Azurite, and each run prints wall time and the client's CPU.

    .venv/bin/python benchmarks/ab.py --before ../before --case a --rounds 3
    git worktree add ../before HEAD~3 && (cd ../before && make install)   # one way to get a "before"

Cases as in bench.py: a (1 GiB S3 multipart, 8 MiB parts -> Azure), b (1 GiB Azure blocks without
Content-MD5 -> S3), c (1,000 x 64 KiB S3 -> Azure), d (the same Azure -> S3), e (local folder of
64 x 8 MiB + 200 x 64 KiB -> Azure), f (a --sync rerun of c).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from azure.storage.blob import BlobServiceClient
from boto3.s3.transfer import TransferConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "deploy"))
import emulators as emu  # noqa: E402

MiB = 1024 * 1024


def seed(case: str, e, work: Path) -> tuple[list[str], str]:
    """Create the case's data; returns the `copy` options but the target, and the target storage."""
    s3 = boto3.client("s3", endpoint_url=e.s3_endpoint, aws_access_key_id=emu.S3_KEY_ID,
                      aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1")
    azure = BlobServiceClient(e.azure_endpoint, credential={"account_name": emu.AZURITE_ACCOUNT,
                                                            "account_key": emu.AZURITE_KEY}).get_container_client(emu.CONTAINER)
    if case in ("a", "b"):
        big = work / "big.bin"
        with open(big, "wb") as f:
            for _ in range(128):
                f.write(os.urandom(8 * MiB))
        if case == "a":
            s3.upload_file(str(big), emu.BUCKET, "big.bin", Config=TransferConfig(multipart_chunksize=8 * MiB))
            return ["--source=awss3:big.bin"], "azure"
        with open(big, "rb") as f:
            azure.upload_blob("big.bin", f, length=1024 * MiB, max_concurrency=8)
        return ["--source=azure:big.bin"], "awss3"
    if case in ("c", "d", "f"):
        files = [(f"small/{i:04d}.bin", os.urandom(64 * 1024)) for i in range(1000)]
        with ThreadPoolExecutor(16) as pool:
            if case == "d":
                list(pool.map(lambda f: azure.upload_blob(f[0], f[1]), files))
            else:
                list(pool.map(lambda f: s3.put_object(Bucket=emu.BUCKET, Key=f[0], Body=f[1]), files))
        return (["--source=azure:small", "-r"], "awss3") if case == "d" else (["--source=awss3:small", "-r"], "azure")
    folder = work / "local" / "e"
    folder.mkdir(parents=True)
    for i in range(64):
        (folder / f"big{i}.bin").write_bytes(os.urandom(8 * MiB))
    for i in range(200):
        (folder / f"small{i}.bin").write_bytes(os.urandom(64 * 1024))
    return ["--source=local:e", "-r"], "azure"


def run(cms: str, args: list[str], env: dict) -> tuple[float, str, dict]:
    start = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%U %S", cms, "transfer", "copy", *args, "--output=json"],
                            capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    if not result.stdout:
        raise SystemExit(f"{cms} failed: {result.stderr.strip()}")
    user, system = result.stderr.strip().splitlines()[-1].split()
    return wall, f"{float(user) + float(system):.2f}", json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the other checkout, with its .venv installed")
    parser.add_argument("--case", choices="abcdef", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3-checksum", choices=("md5", "crc64nvme"),
                        help="what S3 parts carry (the storage's `checksum`); by default md5, as for any endpoint_url")
    options = parser.parse_args()
    checkouts = {"before": Path(options.before).resolve(), "after": HERE.parent}
    with tempfile.TemporaryDirectory(prefix="cmtransfer-ab-") as tmp, emu.Emulators(Path(tmp) / "emulators") as e:
        work = Path(tmp)
        storages = e.storages(work / "local")
        if options.s3_checksum:
            storages["awss3"]["credentials"]["checksum"] = options.s3_checksum
        emu.write_config(work / "config", storages)
        env = dict(os.environ, CLOUDMESH_CONFIG_DIR=str(work / "config"))
        source, target = seed(options.case, e, work)
        for round in range(options.rounds):
            for name, checkout in checkouts.items():
                args = [*source, f"--target={target}:{name}{round}"]
                if options.case == "f":
                    run(str(checkout / ".venv/bin/cms"), args, env)
                    args.append("--sync")
                wall, cpu, status = run(str(checkout / ".venv/bin/cms"), args, env)
                print(f"({options.case}) {name:6} round {round}: {status['state']:9} {wall:6.2f} s wall, {cpu} CPU s, "
                      f"{status['bytes_done'] / MiB / wall:7.1f} MiB/s, proofs {status.get('proofs')}", flush=True)


if __name__ == "__main__":
    main()
