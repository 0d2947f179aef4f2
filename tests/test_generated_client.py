"""The contract is usable by the tools REST users reach for: openapi-python-client generates a
Python client from openapi.yaml, named by its short operationIds, and that client drives one
transfer through the real service (create, get, list, statistics, and a 400 with its Problem)."""
import importlib
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_service import Service

SPEC = Path(__file__).resolve().parents[1] / "cloudmesh" / "transfer" / "service" / "openapi.yaml"
BIN = Path(sys.executable).parent


@pytest.fixture
def generated(tmp_path):
    """The package openapi-python-client generates from the contract, importable for the test."""
    out = tmp_path / "client"
    result = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(SPEC), "--output-path",
                             str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("cloudmesh_transfer_client")
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.split(".")[0] == "cloudmesh_transfer_client"]:
            del sys.modules[name]


def test_a_generated_client_drives_a_transfer_through_the_service(env, generated):
    package = "cloudmesh_transfer_client.api.default"
    names = sorted(m.name for m in pkgutil.iter_modules(importlib.import_module(package).__path__))
    assert names == ["cancel_transfer", "check", "cleanup_transfer", "create_transfer", "get_metrics", "get_samples",
                     "get_statistics", "get_transfer", "health", "list_objects", "list_storages", "list_transfers",
                     "preview_transfer", "resume_transfer"]
    api = SimpleNamespace(**{name: importlib.import_module(f"{package}.{name}") for name in names})
    models = importlib.import_module("cloudmesh_transfer_client.models")
    files = {f"f{i}.txt": os.urandom(1000 + i) for i in range(5)}
    for path, data in files.items():
        env.put("awss3", f"{env.prefix}/src/{path}", data)
    service = Service(env.environ(), env.config_dir)
    try:
        client = generated.AuthenticatedClient(base_url=service.url, token=service.token)
        with client:
            created = api.create_transfer.sync_detailed(client=client, body=models.TransferRequest(
                source=f"awss3:{env.prefix}/src", target=f"azure:{env.prefix}/dst", recursive=True, id=env.prefix))
            assert created.status_code == 202 and isinstance(created.parsed, models.Status), created.content
            deadline = time.monotonic() + 120
            while (status := api.get_transfer.sync(env.prefix, client=client)).state.value == "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert isinstance(status, models.Status)
            assert (status.state.value, status.objects_done, status.bytes_done) == \
                ("completed", 5, sum(map(len, files.values())))
            page = api.list_transfers.sync(client=client, state=models.State("completed"))
            assert isinstance(page, models.TransferPage) and [s.id for s in page.items] == [env.prefix]
            statistic = api.get_statistics.sync(client=client)
            assert isinstance(statistic, models.Statistic) and statistic.objects_total == 5
            bad = api.create_transfer.sync_detailed(client=client, body=models.TransferRequest(
                source=f"awss3:{env.prefix}/src", target=f"azure:{env.prefix}/x", chunksize="1KiB"))
            assert bad.status_code == 400 and isinstance(bad.parsed, models.Problem), bad.content
            assert bad.parsed.status == 400 and "chunksize" in bad.parsed.detail
        assert env.tree("azure", f"{env.prefix}/dst") == files
    finally:
        service.stop()
