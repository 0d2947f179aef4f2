"""The `cms transfer` command as a user meets it: its subcommands, output formats, exit status,
the cmd5 host's quirks, and one clear line on stderr for every kind of bad input."""
import json
import re

import pytest
import yaml

from emulators import AZURITE_KEY, S3_SECRET


def one_error_line(result, code=None):
    """The command failed with exactly one 'ERROR: ...' line on stderr and no traceback."""
    assert result.returncode != 0 if code is None else result.returncode == code, result
    assert result.stderr.startswith("ERROR: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr.strip()


def test_a_generated_id_is_printed_and_reusing_an_id_is_refused(env):
    env.put("local", f"{env.prefix}/f.txt", b"x")
    first = env.transfer("copy", f"--source=local:{env.prefix}/f.txt", f"--target=awss3:{env.prefix}/f.txt",
                         "--output=json")
    assert first.returncode == 0, first.stderr
    generated = json.loads(first.stdout)["id"]
    assert generated and generated in env.transfer("status").stdout
    again = env.transfer("copy", f"--source=local:{env.prefix}/f.txt", f"--target=azure:{env.prefix}/f.txt",
                         f"--id={generated}")
    assert f"transfer id '{generated}' is already used" in one_error_line(again, 2)


def test_status_and_statistic_report_a_folder_copy_in_table_and_json(env):
    p = env.prefix
    files = {"a": b"1" * 100, "b/c": b"2" * 50}
    for key, data in files.items():
        env.put("awss3", f"{p}/data/{key}", data)
    result = env.transfer("copy", f"--source=awss3:{p}/data", f"--target=azure:{p}/data", "-r", f"--id={p}")
    assert result.returncode == 0, result.stderr
    assert p in result.stdout and "completed" in result.stdout

    record = json.loads(env.transfer("status", f"--id={p}", "--output=json").stdout)
    assert {k: record[k] for k in ("id", "state", "source", "target", "copy", "objects_total", "objects_done",
                                   "objects_failed", "bytes_total", "bytes_done", "errors")} == {
        "id": p, "state": "completed", "source": f"awss3:{p}/data", "target": f"azure:{p}/data", "copy": True,
        "objects_total": 2, "objects_done": 2, "objects_failed": 0, "bytes_total": 150, "bytes_done": 150,
        "errors": []}
    assert record["started"] <= record["finished"] and record["seconds"] >= 0

    table = env.transfer("status", f"--id={p}").stdout
    assert re.search(r"\| objects_done +\| 2 ", table) and re.search(r"\| state +\| completed", table)
    listing = json.loads(env.transfer("status", "--output=json").stdout)
    assert [t["id"] for t in listing] == [p]

    stats = json.loads(env.transfer("statistic", "--output=json").stdout)
    assert stats["transfers"]["completed"] == 1 and stats["transfers"]["failed"] == 0
    assert stats["bytes_total"] == 150 and stats["objects_total"] == 2
    assert stats["by_route"] == {"awss3->azureblob": {"transfers": 1, "bytes": 150, "objects": 2}}
    assert stats["seconds_total"] > 0 and stats["throughput_bytes_per_second"] > 0
    assert "awss3->azureblob: 1 transfers, 150 bytes" in env.transfer("statistic").stdout


def test_a_failed_transfer_is_recorded_with_its_errors(env):
    p = env.prefix
    env.put("awss3", f"{p}/src/ok.txt", b"ok")
    env.put("awss3", f"{p}/src/x/../../escape", b"no")
    result = env.transfer("copy", f"--source=awss3:{p}/src", f"--target=local:{p}/dst", "-r", f"--id={p}")
    assert "1 of 2 objects failed" in one_error_line(result, 1)
    record = json.loads(env.transfer("status", f"--id={p}", "--output=json").stdout)
    assert record["state"] == "failed" and record["objects_failed"] == 1
    assert record["errors"][0]["path"] == "x/../../escape" and "cannot be stored" in record["errors"][0]["message"]
    stats = json.loads(env.transfer("statistic", "--output=json").stdout)
    assert stats["transfers"]["failed"] == 1 and stats["by_route"]["awss3->local"]["bytes"] == 2


def test_list_and_delete(env):
    p = env.prefix
    for key in ("top.txt", "sub/a.txt", "sub/deeper/b.txt"):
        env.put("azure", f"{p}/{key}", b"data")
    shallow = json.loads(env.transfer("list", f"--target=azure:{p}", "--output=json").stdout)
    assert [row["name"] for row in shallow] == ["sub/", "top.txt"] or \
        sorted(row["name"] for row in shallow) == ["sub/", "top.txt"]
    deep = json.loads(env.transfer("list", f"--target=azure:{p}", "-r", "--output=json").stdout)
    assert sorted(row["name"] for row in deep) == ["sub/a.txt", "sub/deeper/b.txt", "top.txt"]
    assert all(row["size"] == 4 and row["md5"] for row in deep)

    assert "add -r" in one_error_line(env.transfer("delete", f"--target=azure:{p}/sub"), 2)
    result = env.transfer("delete", f"--target=azure:{p}/sub", "-r")
    assert result.returncode == 0 and result.stdout.count("deleted ") == 2
    assert env.tree("azure", p) == {"top.txt": b"data"}
    assert env.transfer("delete", f"--target=azure:{p}/top.txt").returncode == 0
    assert "does not exist" in one_error_line(env.transfer("list", f"--target=azure:{p}"), 1)


def write_defaults(env, name="defaults.yaml", **data) -> str:
    path = env.config_dir / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_config_file_then_run_and_the_bare_id_data_form(env):
    p = env.prefix
    env.put("awss3", f"{p}/in/pics/one.png", b"png1")
    env.put("awss3", f"{p}/in/pics/two/two.png", b"png2")
    env.put("awss3", f"{p}/in/notes.txt", b"notes")
    env.put("awss3", f"{p}/in/gone.txt", b"gone")
    config = env.transfer("config", write_defaults(env, source=f"awss3:{p}/in", target=f"azure:{p}/out"))
    assert config.returncode == 0, config.stderr
    shown = yaml.safe_load(config.stdout)
    assert shown["defaults"] == {"source": f"awss3:{p}/in", "target": f"azure:{p}/out"}

    assert env.transfer("run", "--id=r1", "--data=pics").returncode == 0
    assert env.tree("azure", f"{p}/out/pics") == {"one.png": b"png1", "two/two.png": b"png2"}
    assert env.transfer("--id=r2", "--data=notes.txt").returncode == 0
    assert env.get("azure", f"{p}/out/notes.txt") == b"notes"
    assert env.transfer("--id=r3", "--data=gone.txt", "--copy=False").returncode == 0
    assert env.get("azure", f"{p}/out/gone.txt") == b"gone"
    assert "gone.txt" not in env.tree("awss3", f"{p}/in")
    assert json.loads(env.transfer("status", "--id=r3", "--output=json").stdout)["copy"] is False


def test_config_with_file_option_reaches_the_plugin_only_inside_the_cms_shell(env):
    """cmd5's `cms` runs any command line containing --file= as a script, so from a terminal the
    plugin never sees it; typed inside the cms shell it works, as does the positional form."""
    path = write_defaults(env, source="awss3:a", target="azure:b")
    from_terminal = env.cms("transfer", "config", f"--file={path}")
    assert "this command does not exist: 'source'" in from_terminal.stdout
    assert not (env.config_dir / "transfer.yaml").exists()

    in_shell = env.cms(input=f"transfer config --file={path}\n")
    assert in_shell.returncode == 0, in_shell.stderr
    assert yaml.safe_load((env.config_dir / "transfer.yaml").read_text())["target"] == "azure:b"


def test_a_failure_inside_the_interactive_shell_does_not_end_it(env):
    result = env.cms(input="transfer copy --source=nosuch:x --target=local:y\ntransfer statistic --output=json\n")
    assert result.returncode == 0
    assert "ERROR: unknown storage 'nosuch'" in result.stderr
    assert '"by_route"' in result.stdout


def test_help_shows_the_usage(env):
    result = env.transfer("-h")
    assert result.returncode == 0
    assert "transfer copy --source=SOURCE --target=TARGET" in result.stdout


def test_config_and_outputs_never_print_secrets(env):
    p = env.prefix
    env.put("awss3", f"{p}/s.txt", b"s")
    outputs = [env.transfer("config"),
               env.transfer("copy", f"--source=awss3:{p}/s.txt", f"--target=azure:{p}/s.txt", "--output=json"),
               env.transfer("status"), env.transfer("statistic")]
    env.add_storage("badkey", "azure", account_key="d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    outputs.append(env.transfer("copy", f"--source=awss3:{p}/s.txt", "--target=badkey:s.txt"))
    for result in outputs:
        for secret in (S3_SECRET, AZURITE_KEY, "d3Jvbmcga2V5IGZvciB0ZXN0cw=="):
            assert secret not in result.stdout + result.stderr
    assert "'********'" in outputs[0].stdout


BAD_INPUT = {
    "unknown storage": (["copy", "--source=nosuch:a", "--target=local:b"], "unknown storage 'nosuch'"),
    "not STORAGE:PATH": (["copy", "--source=plainpath", "--target=local:b"], "is not STORAGE:PATH"),
    "dot-dot in path": (["copy", "--source=local:a/../../etc", "--target=local:b"], "must not contain '..'"),
    "missing source": (["copy", "--source=awss3:no/such/object", "--target=local:b"], "does not exist"),
    "folder without -r": (["copy", "--source=local:folder", "--target=awss3:x"], "add -r"),
    "bad output format": (["status", "--output=xml"], "--output must be table or json"),
    "parallel zero": (["copy", "--source=local:folder", "--target=awss3:x", "-r", "--parallel=0"],
                      "--parallel must be between 1 and"),
    "parallel negative": (["copy", "--source=local:folder", "--target=awss3:x", "-r", "--parallel=-3"],
                          "--parallel must be between 1 and"),
    "parallel huge": (["copy", "--source=local:folder", "--target=awss3:x", "-r", "--parallel=100000"],
                      "--parallel must be between 1 and"),
    "parallel not a number": (["copy", "--source=local:f", "--target=awss3:x", "--parallel=many"],
                              "--parallel must be a whole number"),
    "chunksize not a size": (["copy", "--source=local:f", "--target=awss3:x", "--chunksize=big"], "is not a size"),
    "chunksize too small": (["copy", "--source=local:f", "--target=awss3:x", "--chunksize=4k"],
                            "--chunksize must be at least"),
    "bad transfer id": (["copy", "--source=local:folder/a", "--target=awss3:x", "--id=bad id!"],
                        "must be letters, digits"),
    "unknown status id": (["status", "--id=never-ran"], "no transfer with id 'never-ran'"),
    "copy onto itself": (["copy", "--source=local:folder", "--target=local:folder/inside", "-r"],
                         "lies inside it"),
    "run without config": (["run", "--id=x", "--data=a"], "no transfer config yet"),
    "copy flag not boolean": (["--id=x", "--data=a", "--copy=maybe"], None),
    "unknown option": (["copy", "--sauce=local:a", "--target=local:b"], "invalid arguments"),
    "config file missing": (["config", "/nonexistent/transfer.yaml"], "transfer config file not found"),
}


@pytest.mark.parametrize("args,message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(env, args, message):
    env.put("local", "folder/a", b"a")
    if "--copy=maybe" in args:
        env.transfer("config", write_defaults(env, source="local:folder", target="awss3:x"))
        message = "--copy must be True or False"
    line = one_error_line(env.transfer(*args))
    assert message in line
    assert env.tree("local", "folder") == {"a": b"a"}


def test_a_malformed_config_file_is_refused(env):
    bad = env.config_dir / "bad.yaml"
    bad.write_text("source: [unclosed\n")
    assert "is not valid YAML at line" in one_error_line(env.transfer("config", str(bad)), 2)
    bad.write_text("source: awss3:x\n")
    assert "has no 'target: STORAGE:PATH'" in one_error_line(env.transfer("config", str(bad)), 2)


@pytest.mark.parametrize("content,message", [
    (None, "cloudmesh.yaml not found"),
    ("cloudmesh: [storage\n", "is not valid YAML at line"),
    ("cloudmesh:\n  other: {}\n", "has no 'cloudmesh.storage' section"),
    ("cloudmesh:\n  storage:\n    s:\n      credentials: {}\n", "storage 's' has no 'cm.kind'"),
    ("cloudmesh:\n  storage:\n    s:\n      cm: {kind: ftp}\n", "unknown storage kind 'ftp'"),
    ("cloudmesh:\n  storage:\n    s:\n      cm: {kind: awss3}\n      credentials: {access_key_id: a, secret_access_key: b}\n",
     "storage 's' has no 'bucket'"),
    ("cloudmesh:\n  storage:\n    s:\n      cm: {kind: awss3}\n      credentials: {access_key_id: a, bucket: b}\n",
     "storage 's' has no 'secret_access_key' in cloudmesh.yaml (or set AWS_SECRET_ACCESS_KEY)"),
    ("cloudmesh:\n  storage:\n    s:\n      cm: {kind: azureblob}\n      credentials: {account_name: a, container: c}\n",
     "storage 's' has no 'account_key'"),
    ("cloudmesh:\n  storage:\n    s:\n      cm: {kind: local}\n", "storage 's' has no 'directory'"),
])
def test_a_broken_cloudmesh_yaml_names_the_storage_and_the_problem(env, content, message):
    path = env.config_dir / "cloudmesh.yaml"
    path.unlink()
    if content is not None:
        path.write_text(content)
    assert message in one_error_line(env.transfer("list", "--target=s:x"), 2)


def test_wrong_credentials_and_missing_containers_are_clear(env):
    env.add_storage("wrongkey", "azure", account_key="d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    env.add_storage("nocontainer", "azure", container="no-such-container")
    assert "storage 'wrongkey' rejected its credentials" in one_error_line(env.transfer("list", "--target=wrongkey:x"), 2)
    assert "container 'no-such-container' of storage 'nocontainer' does not exist" in \
        one_error_line(env.transfer("list", "--target=nocontainer:x"), 1)


def test_the_python_api_is_what_the_command_calls(env, monkeypatch):
    from cloudmesh.transfer import Transfer
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    env.put("local", f"{env.prefix}/api/x.bin", b"\x00\x01" * 1000)
    api = Transfer()
    status = api.copy(f"local:{env.prefix}/api", f"awss3:{env.prefix}/api", recursive=True, id="api-1")
    assert status["state"] == "completed" and status["bytes_done"] == 2000
    assert env.get("awss3", f"{env.prefix}/api/x.bin") == b"\x00\x01" * 1000
    assert json.loads(env.transfer("status", "--id=api-1", "--output=json").stdout)["bytes_done"] == 2000


def test_the_readme_shows_the_usage_that_cms_transfer_h_prints(env):
    from pathlib import Path
    usage = [line.strip() for line in env.transfer("-h").stdout.split("Usage:")[1].split("\n\n")[0].splitlines()]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "\n".join(usage) in readme
