"""Start and stop the local stand-ins for the clouds: moto's S3 server and Azurite's blob service.

Both listen on free ports on 127.0.0.1. The tests import this module; the Makefile uses its
command line:

    python deploy/emulators.py start DIR   # writes DIR/cloudmesh.yaml and DIR/emulators.json
    python deploy/emulators.py stop DIR    # stops exactly the processes `start` began
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
# Azurite's well-known development account (public, documented by Microsoft; not a real secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY_ID = "cmtransfer-test-key-id"
S3_SECRET = "cmtransfer-test-secret-key"
BUCKET = "cmtransfer"
CONTAINER = "cmtransfer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before it answered")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url} within {seconds} s")


def azurite_binary() -> str:
    local = HERE / "node_modules" / ".bin" / "azurite-blob"
    found = str(local) if local.exists() else shutil.which("azurite-blob")
    if not found:
        raise RuntimeError("azurite-blob is not installed; run: npm install --prefix deploy")
    return found


def start_moto(port: int, log) -> subprocess.Popen:
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(moto), "-H", HOST, "-p", str(port)], stdout=log, stderr=log,
                               start_new_session=True)
    wait_for(f"http://{HOST}:{port}/moto-api/", process)
    return process


def start_azurite(port: int, location: Path, log) -> subprocess.Popen:
    location.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [azurite_binary(), "--blobHost", HOST, "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
        stdout=log, stderr=log, start_new_session=True)
    wait_for(f"http://{HOST}:{port}/{AZURITE_ACCOUNT}?comp=list", process)
    return process


def stop(pids: list[int]) -> None:
    """Stop the given processes (and nothing else): TERM, then KILL after a grace period."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    for pid in pids:
        while time.time() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid if not alive(pid) else 0
            if done:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def storages(s3_endpoint: str, azure_endpoint: str, local_dir: Path) -> dict:
    """The cloudmesh.yaml `cloudmesh.storage` section for the emulators and a local folder."""
    return {
        "awss3": {"cm": {"kind": "awss3", "name": "awss3"},
                  "credentials": {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
                                  "bucket": BUCKET, "region": "us-east-1", "endpoint_url": s3_endpoint}},
        "azure": {"cm": {"kind": "azureblob", "name": "azure"},
                  "credentials": {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                                  "container": CONTAINER, "endpoint": azure_endpoint}},
        "local": {"cm": {"kind": "local", "name": "local"}, "default": {"directory": str(local_dir)}},
    }


def write_config(config_dir: Path, storage_section: dict) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "cloudmesh.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"cloudmesh": {"storage": storage_section}}, f, sort_keys=False)
    return path


class Emulators:
    """moto and Azurite on free loopback ports, with the bucket and container created."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.processes: list[subprocess.Popen] = []

    def start(self) -> "Emulators":
        import boto3
        from azure.storage.blob import BlobServiceClient
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "emulators.log", "ab")
        try:
            self.s3_port, self.azure_port = free_port(), free_port()
            self.processes.append(start_moto(self.s3_port, log))
            self.processes.append(start_azurite(self.azure_port, self.workdir / "azurite", log))
        except BaseException:
            self.stop()
            raise
        finally:
            log.close()
        self.s3_endpoint = f"http://{HOST}:{self.s3_port}"
        self.azure_endpoint = f"http://{HOST}:{self.azure_port}/{AZURITE_ACCOUNT}"
        boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=S3_KEY_ID,
                     aws_secret_access_key=S3_SECRET, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        BlobServiceClient(self.azure_endpoint, credential={"account_name": AZURITE_ACCOUNT,
                                                           "account_key": AZURITE_KEY}).create_container(CONTAINER)
        return self

    def storages(self, local_dir: Path) -> dict:
        return storages(self.s3_endpoint, self.azure_endpoint, local_dir)

    def stop(self) -> None:
        stop([p.pid for p in self.processes])
        self.processes = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    workdir = Path(argv[2]).resolve()
    state = workdir / "emulators.json"
    if argv[1] == "start":
        emulators = Emulators(workdir).start()
        write_config(workdir, emulators.storages(workdir / "local"))
        state.write_text(json.dumps({"pids": [p.pid for p in emulators.processes],
                                     "s3": emulators.s3_endpoint, "azure": emulators.azure_endpoint}))
        print(f"moto S3 at {emulators.s3_endpoint}, Azurite at {emulators.azure_endpoint}; "
              f"config in {workdir / 'cloudmesh.yaml'}")
    else:
        if state.exists():
            stop(json.loads(state.read_text())["pids"])
            state.unlink()
            print("emulators stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
