"""No secret ever leaves the tool: not in output, errors, the transfer records, any file it
writes or any log (-vv, --log-file, the service's), whatever happens (successes, wrong credentials,
outages, broken downloads, cancel and resume); and the files it writes are readable by their owner
only."""
import stat

import pytest

from emulators import AZURITE_KEY, S3_KEY_ID, S3_SECRET
from faultproxy import FaultProxy
from test_logging import TOKEN, call, finished, serving

from cloudmesh.transfer import Transfer
from cloudmesh.transfer.errors import TransferError

WRONG_AZURE_KEY = "d3Jvbmcga2V5IGZvciB0ZXN0cw=="
WRONG_S3_SECRET = "cmtransfer-wrong-secret-value"
# The secrets themselves, and what signed URLs carry: S3 presigned query strings, Azure SAS signatures.
SECRETS = (AZURITE_KEY, S3_KEY_ID, S3_SECRET, WRONG_AZURE_KEY, WRONG_S3_SECRET, "X-Amz-Signature",
           "X-Amz-Credential", "sig=", "AccountKey=")


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
def flaky(env):
    """S3 and Azure behind proxies that fail every data request, so errors name signed URLs' hosts."""
    with FaultProxy(env.emulators.s3_endpoint, flavor="s3") as s3, \
            FaultProxy(f"http://127.0.0.1:{env.emulators.azure_port}", flavor="azure") as azure:
        env.add_storage("down-s3", "awss3", endpoint_url=s3.url)
        env.add_storage("down-azure", "azure", endpoint=f"{azure.url}/devstoreaccount1")
        env.add_storage("cut-s3", "awss3", endpoint_url=s3.url)
        yield s3, azure


def seed(env) -> None:
    """Files to copy (one in parts), an S3 object, and storages with a wrong key and secret."""
    p = env.prefix
    env.put("local", f"{p}/src/a.txt", b"a" * 5000)
    env.put("local", f"{p}/src/big.bin", b"b" * (6 * 1024 * 1024))
    env.put("awss3", f"{p}/s3/a.txt", b"a" * 5000)
    env.add_storage("badkey", "azure", account_key=WRONG_AZURE_KEY)
    env.add_storage("badsecret", "awss3", secret_access_key=WRONG_S3_SECRET)


def test_no_secret_in_any_output_record_or_written_file(env, flaky):
    s3_proxy, azure_proxy = flaky
    p = env.prefix
    seed(env)
    defaults = env.config_dir / "defaults.yaml"
    defaults.write_text(f"source: local:{p}/src\ntarget: awss3:{p}/run\n")
    runs = [
        ("config", str(defaults)), ("config",),
        ("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/ok", "-r", "--id=ok", "--output=json"),
        ("copy", f"--source=awss3:{p}/ok", f"--target=azure:{p}/ok", "-r", "--output=json"),
        ("copy", f"--source=azure:{p}/ok", f"--target=local:{p}/back", "-r"),
        ("run", "--id=run", "--data=a.txt"),
        ("copy", f"--source=local:{p}/src", f"--target=badkey:{p}/x", "-r", "--id=badkey"),
        ("copy", f"--source=local:{p}/src", f"--target=badsecret:{p}/x", "-r", "--id=badsecret"),
        ("list", "--target=badkey:x"), ("list", "--target=badsecret:x"),
        ("copy", f"--source=local:{p}/src", f"--target=down-s3:{p}/x", "-r", "--id=down-s3", "--retries=0"),
        ("copy", f"--source=local:{p}/src", f"--target=down-azure:{p}/x", "-r", "--id=down-azure", "--retries=0"),
        ("copy", f"--source=cut-s3:{p}/s3", f"--target=local:{p}/cut", "-r", "--id=cut", "--retries=0"),
        ("resume", "--id=down-azure", "--retries=0"), ("cleanup", "--id=down-azure"), ("cancel", "--id=down-s3"),
        ("status",), ("status", "--id=badkey", "--output=json"), ("status", "--id=cut", "--output=json"),
        ("statistic", "--output=json"),
    ]
    outputs = []
    for args in runs:
        if args[0] == "copy" and args[1].startswith("--source=cut-s3"):
            s3_proxy.configure(error_rate=0, cut_rate=1, cut_min_size=100, match=("GET", r"/s3/a\.txt"))
        elif "--target=down-s3" in " ".join(args) or "--id=down-azure" in args:
            s3_proxy.configure(error_rate=1, cut_rate=0, match=None)
            azure_proxy.configure(error_rate=1)
        result = env.transfer(*args)
        outputs.append((args, result.stdout + result.stderr))
    failed = [args for args, text in outputs if "ERROR" in text]
    assert len(failed) >= 7, outputs  # the failures really happened, so their messages were checked
    for args, text in outputs:
        assert leaked(text) == [], (args, text)

    errors = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
        for call in (lambda api: api.list("badkey:x"), lambda api: api.list("badsecret:x"),
                     lambda api: api.copy(f"local:{p}/src", f"down-azure:{p}/y", recursive=True)):
            try:
                status = call(Transfer(retries=0))
                errors.append(str(status))
            except TransferError as e:
                errors.append(f"{e!s} {e!r}")
    assert len(errors) == 3 and all(leaked(text) == [] for text in errors), errors

    for path in env.config_dir.iterdir():
        if path.name != "cloudmesh.yaml" and path.is_file():
            assert leaked(path.read_bytes().decode("latin-1")) == [], path.name


def test_files_the_tool_writes_are_readable_by_their_owner_only(env):
    defaults = env.config_dir / "defaults.yaml"
    defaults.write_text("source: local:a\ntarget: awss3:b\n")
    assert env.transfer("config", str(defaults)).returncode == 0
    assert env.transfer("status").returncode == 0
    for name in ("transfer.yaml", "transfer.db"):
        assert stat.S_IMODE((env.config_dir / name).stat().st_mode) == 0o600, name


def test_no_secret_in_any_log_of_the_command_or_the_service(env, flaky):
    """The runs that meet secrets most (signed URLs between S3 and Azure, wrong credentials, retried
    outages, a cut download) with -vv and --log-file, and the service with both: every SDK logs at
    DEBUG into the files."""
    s3_proxy, azure_proxy = flaky
    p = env.prefix
    seed(env)
    log = env.config_dir / "transfer.log"
    runs = [
        ("copy", f"--source=local:{p}/src", f"--target=awss3:{p}/ok", "-r", "--id=ok"),
        ("copy", f"--source=awss3:{p}/ok", f"--target=azure:{p}/ok", "-r", "--id=s3-azure"),
        ("copy", f"--source=azure:{p}/ok", f"--target=awss3:{p}/back", "-r", "--id=azure-s3"),
        ("copy", f"--source=azure:{p}/ok", f"--target=azure:{p}/again", "-r", "--id=azure-azure"),
        ("copy", f"--source=local:{p}/src", f"--target=badkey:{p}/x", "-r", "--id=badkey"),
        ("copy", f"--source=local:{p}/src", f"--target=badsecret:{p}/x", "-r", "--id=badsecret"),
        ("list", "--target=badkey:x"), ("list", "--target=badsecret:x"),
        ("copy", f"--source=local:{p}/src", f"--target=down-s3:{p}/x", "-r", "--id=down-s3", "--retries=1"),
        ("copy", f"--source=local:{p}/src", f"--target=down-azure:{p}/x", "-r", "--id=down-azure", "--retries=1"),
        ("copy", f"--source=cut-s3:{p}/s3", f"--target=local:{p}/cut", "-r", "--id=cut", "--retries=0"),
    ]
    outputs = []
    for args in runs:
        s3_proxy.configure(error_rate=0, cut_rate=1, cut_min_size=100, match=("GET", r"/s3/a\.txt")) \
            if args[-2] == "--id=cut" else s3_proxy.configure(error_rate=1, cut_rate=0, match=None)
        azure_proxy.configure(error_rate=1)
        result = env.transfer(*args, "-vv", f"--log-file={log}")
        outputs.append((args, result.stderr))
    assert sum("ERROR" in text for _, text in outputs) >= 6, outputs  # the failures really happened

    service_log = env.config_dir / "service.log"
    bodies = [{"source": source, "target": f"{target}:{p}/rest", "recursive": True, "id": f"rest-{target}"}
              for source, target in ((f"awss3:{p}/ok", "azure"), (f"azure:{p}/ok", "awss3"), (f"local:{p}/src", "badkey"))]
    with serving(env, "-vv", f"--log-file={service_log}") as (url, stderr):
        assert [call(url, "POST", "/transfers", body).status for body in bodies] == [202, 202, 400]
        assert [finished(url, body["id"])["state"] for body in bodies[:2]] == ["completed", "completed"]
        assert call(url, "GET", f"/transfers?state={TOKEN}&sig={AZURITE_KEY}").status == 400
    outputs.append(("serve", stderr.read_text()))

    text = log.read_text()
    assert "?********" in text and '" 503 ' in text  # signed URLs and failed requests were logged, masked
    assert "/devstoreaccount1/cmtransfer/" in text  # what is no secret stays, in storages named badkey too
    for name, logged in [*outputs, ("log file", text), ("service log", service_log.read_text())]:
        assert leaked(logged) == [] and TOKEN not in logged, (name, logged)
