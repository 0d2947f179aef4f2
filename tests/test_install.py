"""The package as a user installs it: `cms` scripts run against a regular `pip install .` and a
default `pip install -e .` in a fresh venv, never against this checkout's own development install.

cmd5's shell (and so a script fed to `cms` on stdin) finds plugins only by walking the `cloudmesh`
namespace's real folders; setuptools' import-finder editable mode hides the package from that walk,
and the shell then answers "this command does not exist: 'transfer'". setup.py maps the package so
that setuptools uses a plain path entry instead. The fresh venv borrows this venv's dependencies
through a folder of links, which leaves out this project's own install (its dist-info, and the
editable `.pth` that puts the checkout on sys.path), so that only the package installed here is seen.
"""
import importlib.metadata
import shutil
import subprocess
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# What `pip install .` needs of the project: setup.py reads README.md and requirements.txt.
PROJECT = ("setup.py", "README.md", "LICENSE", "requirements.txt", "requirements-dev.txt", "cloudmesh")
# This project's own install in the development venv, which the fresh venv must not see.
OWN = ("cloudmesh_transfer-*", "cloudmesh_transfer.*", "__editable__*", "*.pth", "__pycache__")
LAUNCHER = """#!{python}
import sys
from cloudmesh.shell.shell import main
if __name__ == "__main__":
    sys.exit(main())
"""


def requirements(path: Path) -> list[Requirement]:
    """The requirements a requirements file names, following its `-r` includes."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            found += requirements(path.parent / line[2:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version}."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, version = line.split(";", 1)[0].split("==")
            pinned[canonicalize_name(name)] = Version(version.strip())
    return pinned


def test_constraints_pin_every_requirement_inside_its_range():
    """requirements*.txt keep ranges (setup.py installs from them); constraints.txt pins each one within it."""
    pinned = pins()
    for requirement in requirements(ROOT / "requirements-dev.txt"):
        assert not any(s.operator in ("==", "===") for s in requirement.specifier), requirement
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in constraints.txt; run 'make upgrade-deps'"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (requirement, pinned[name])


def test_the_development_venv_holds_the_pinned_versions():
    """`make install` (and so CI) installs with constraints.txt: every pinned package, at its pin."""
    wrong = {}
    for name, version in pins().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (str(installed), str(version))
    assert not wrong, (f"installed vs pinned: {wrong}; "
                       "run .venv/bin/pip install -r requirements-dev.txt -c constraints.txt")


def matches_own(path: Path) -> bool:
    return any(path.match(pattern) for pattern in OWN)


def link_dependencies(into: Path) -> Path:
    """A folder of links to every package installed in this venv, except this project's own install."""
    into.mkdir()
    for site in dict.fromkeys([Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])]):
        for entry in site.iterdir():
            if matches_own(entry) or (into / entry.name).exists():
                continue
            if entry.name == "cloudmesh":  # a namespace shared with cmd5 and common: all but transfer
                (into / "cloudmesh").mkdir()
                for part in entry.iterdir():
                    if part.name not in ("transfer", "__pycache__"):
                        (into / "cloudmesh" / part.name).symlink_to(part)
            else:
                (into / entry.name).symlink_to(entry)
    return into


@dataclass
class Installed:
    """A fresh venv with cloudmesh-transfer installed in it one way, and its own `cms`."""

    how: str
    prefix: Path
    project: Path
    cms: Path
    python: Path

    def run(self, env, *args, input=None) -> subprocess.CompletedProcess:
        environ = env.environ()
        environ.pop("PYTHONPATH", None)
        environ["PATH"] = f"{self.prefix / 'bin'}:{environ['PATH']}"
        return subprocess.run([str(self.cms), *args], input=input, capture_output=True, text=True,
                              timeout=120, env=environ, cwd=env.config_dir)


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory) -> Path:
    return link_dependencies(tmp_path_factory.mktemp("deps") / "site")


@pytest.fixture(scope="module", params=["regular", "editable"])
def installed(request, dependencies, tmp_path_factory) -> Installed:
    """`pip install .` (regular) or `pip install -e .` (setuptools' default editable mode) of a copy."""
    base = tmp_path_factory.mktemp(request.param)
    prefix, project = base / "venv", base / "project"
    venv.create(prefix, with_pip=False, symlinks=True)
    python = prefix / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(f"{dependencies}\n")
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            project.mkdir(exist_ok=True)
            shutil.copy2(source, project / name)
    editable = ["-e"] if request.param == "editable" else []
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", *editable, str(project)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    cms = prefix / "bin" / "cms"
    cms.write_text(LAUNCHER.format(python=python))
    cms.chmod(0o755)
    return Installed(request.param, prefix, project, cms, python)


def test_the_venv_sees_only_the_package_installed_there(installed):
    """Guards the other tests: the checkout and its development install are out of the fresh venv's sight."""
    found = subprocess.run(
        [installed.python, "-c", "import sys, cloudmesh.transfer as t; print(t.__file__); print(*sys.path, sep='\\n')"],
        capture_output=True, text=True, check=True, cwd=installed.prefix).stdout.splitlines()
    where, path = Path(found[0]).resolve(), [Path(p).resolve() for p in found[1:] if p]
    assert ROOT not in path and ROOT not in where.parents, found
    assert (installed.project if installed.how == "editable" else installed.prefix) in where.parents, found


def test_the_package_holds_the_contract_and_the_dashboard(installed):
    """The files the service serves are package data: the OpenAPI document and every file of /ui."""
    where = subprocess.run([installed.python, "-c", "import cloudmesh.transfer.service as s; print(s.__path__[0])"],
                           capture_output=True, text=True, check=True, cwd=installed.prefix).stdout.strip()
    shipped = {p.relative_to(where).as_posix() for p in Path(where).rglob("*") if p.is_file()}
    ui = ROOT / "cloudmesh" / "transfer" / "service" / "ui"
    wanted = {"openapi.yaml", *(f"ui/{p.relative_to(ui).as_posix()}" for p in ui.rglob("*") if p.is_file())}
    assert {"ui/index.html", "ui/app.js", "ui/vendor/uPlot.LICENSE"} <= wanted <= shipped, wanted - shipped


def test_a_cms_script_finds_transfer_and_does_its_work(installed, env):
    """`cms < script`: the shell finds `transfer`, copies local -> S3 -> Azure and lists the result."""
    data = f"script {installed.how}\n".encode()
    env.put("local", f"{env.prefix}/a.txt", data)
    script = (f"transfer copy --source=local:{env.prefix}/a.txt --target=awss3:{env.prefix}/a.txt\n"
              f"transfer copy --source=awss3:{env.prefix}/a.txt --target=azure:{env.prefix}/in/a.txt\n"
              f"transfer list --target=azure:{env.prefix} -r\n")
    result = installed.run(env, input=script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this command does not exist" not in result.stdout + result.stderr, result.stdout
    assert result.stderr.count("ERROR") == 0, result.stderr
    assert env.get("awss3", f"{env.prefix}/a.txt") == data
    assert env.get("azure", f"{env.prefix}/in/a.txt") == data
    assert f"{env.prefix}/in/a.txt" in result.stdout, result.stdout


def test_a_script_goes_on_after_a_failed_line_and_exits_0_while_one_shot_exits_1(installed, env):
    """README "Scripts and CI": a script reports a failed line and goes on; a one-shot command exits 1."""
    env.put("local", f"{env.prefix}/b.txt", b"after the failure")
    script = (f"transfer copy --source=local:{env.prefix}/missing.txt --target=awss3:{env.prefix}/missing.txt\n"
              f"transfer copy --source=local:{env.prefix}/b.txt --target=awss3:{env.prefix}/b.txt\n")
    result = installed.run(env, input=script)
    assert result.returncode == 0, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "missing.txt" in errors[0], result.stderr
    assert env.get("awss3", f"{env.prefix}/b.txt") == b"after the failure"
    one_shot = installed.run(env, "transfer", "copy", f"--source=local:{env.prefix}/missing.txt",
                             f"--target=awss3:{env.prefix}/missing.txt")
    assert one_shot.returncode == 1, one_shot.stdout + one_shot.stderr
    assert one_shot.stderr.startswith("ERROR: ") and one_shot.stderr.count("\n") == 1, one_shot.stderr
