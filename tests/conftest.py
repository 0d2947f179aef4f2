"""Shared fixtures: moto's S3 server and Azurite started once per test session on free loopback
ports, and for each test a fresh cloudmesh config directory whose storages point at them."""
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
import emulators as emu  # noqa: E402

CMS = str(Path(sys.executable).with_name("cms"))
# Variables that would let a test lean on this machine's own settings instead of its config.
ISOLATED = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY", "CMS_TRANSFER_DEBUG"}


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    with emu.Emulators(tmp_path_factory.mktemp("emulators")) as running:
        yield running


@dataclass
class Env:
    """One test's world: its config dir, local storage root, a unique key prefix and SDK clients."""

    config_dir: Path
    local: Path
    prefix: str
    s3: object
    azure: object
    emulators: object
    storages: dict

    def environ(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ISOLATED}
        path = os.pathsep.join([str(Path(CMS).parent), env.get("PATH", "")])
        return dict(env, CLOUDMESH_CONFIG_DIR=str(self.config_dir), PATH=path, **extra)

    def kind(self, storage: str) -> str:
        return {"awss3": "awss3", "azure": "azureblob", "local": "local"}.get(storage, storage)

    def add_storage(self, name: str, like: str, **settings) -> None:
        """Add a storage to this test's cloudmesh.yaml: a copy of `like` with some settings changed."""
        section = self.emulators.storages(self.local)
        entry = section[like]
        entry.setdefault("credentials", {}).update(settings)
        emu.write_config(self.config_dir, {**self.storages, name: entry})
        self.storages[name] = entry

    def cms(self, *args, input=None, timeout=120, **extra_env) -> subprocess.CompletedProcess:
        """Run the real `cms` command in a subprocess."""
        return subprocess.run([CMS, *args], capture_output=True, text=True, input=input, timeout=timeout,
                              env=self.environ(**extra_env), cwd=self.config_dir)

    def transfer(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return self.cms("transfer", *args, **kwargs)

    # Reading and writing each kind of storage directly, to seed sources and check targets.

    def put(self, storage: str, key: str, data: bytes) -> None:
        if storage == "awss3":
            self.s3.put_object(Bucket=emu.BUCKET, Key=key, Body=data)
        elif storage == "azure":
            self.azure.upload_blob(key, data, overwrite=True)
        else:
            path = self.local / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def get(self, storage: str, key: str) -> bytes:
        if storage == "awss3":
            return self.s3.get_object(Bucket=emu.BUCKET, Key=key)["Body"].read()
        if storage == "azure":
            return self.azure.download_blob(key).readall()
        return (self.local / key).read_bytes()

    def tree(self, storage: str, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix/`, by its key relative to the prefix, with its bytes."""
        start = prefix.rstrip("/") + "/"
        if storage == "awss3":
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=emu.BUCKET, Prefix=start)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        elif storage == "azure":
            keys = [b.name for b in self.azure.list_blobs(name_starts_with=start)]
        else:
            root = self.local / prefix
            keys = [p.relative_to(self.local).as_posix() for p in root.rglob("*") if p.is_file()] \
                if root.exists() else []
        return {key[len(start):]: self.get(storage, key) for key in keys}


@pytest.fixture
def env(emulators, tmp_path) -> Env:
    config_dir, local = tmp_path / "config", tmp_path / "local"
    local.mkdir()
    storages = emulators.storages(local)
    emu.write_config(config_dir, storages)
    s3 = boto3.client("s3", endpoint_url=emulators.s3_endpoint, aws_access_key_id=emu.S3_KEY_ID,
                      aws_secret_access_key=emu.S3_SECRET, region_name="us-east-1")
    azure = BlobServiceClient(emulators.azure_endpoint, credential={
        "account_name": emu.AZURITE_ACCOUNT, "account_key": emu.AZURITE_KEY}).get_container_client(emu.CONTAINER)
    return Env(config_dir, local, f"t{uuid.uuid4().hex[:10]}", s3, azure, emulators, storages)
