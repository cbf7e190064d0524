"""The deployment files agree with the code: docker-compose.yml, Dockerfile, envconfig.

No Docker engine here: the compose file is parsed, its worker commands are parsed by
worker.py's own argument parser, and the admin-tools script that registers the search
attributes runs for real against a bare Temporal dev server.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raftline import worker
from raftline.cli import build_parser
from raftline.client import connect_config
from raftline.embedded import free_port, port_open, temporal_binary
from raftline.settings import SEARCH_ATTRIBUTES
from tests.conftest import ROOT

SEARCH_ATTRIBUTE_TYPES = {name: kind for name, (_, kind) in SEARCH_ATTRIBUTES.items()}

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
WORKERS = ("worker", "judge-worker")
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return DEFAULT.sub(lambda m: m.group(2), value)


def python_sources() -> str:
    files = [p for p in ROOT.rglob("*.py") if "tests" not in p.parts and ".venv" not in p.parts]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_services_images_and_ports() -> None:
    assert set(SERVICES) == {
        "postgresql", "temporal", "temporal-admin-tools", "temporal-ui",
        "worker", "judge-worker", "codec-server",
    }  # fmt: skip
    image = {name: interpolate(s.get("image", "")) for name, s in SERVICES.items()}
    assert image["postgresql"].startswith("postgres:")
    assert image["temporal"].startswith("temporalio/auto-setup:")
    assert image["temporal-admin-tools"].startswith("temporalio/admin-tools:")
    assert image["temporal-ui"].startswith("temporalio/ui:")
    for name in (*WORKERS, "codec-server"):
        assert SERVICES[name]["build"] == "."  # built from this repository's Dockerfile
    ports = {name: [interpolate(p) for p in s.get("ports", [])] for name, s in SERVICES.items()}
    assert ports["temporal"] == ["7233:7233"]
    assert ports["temporal-ui"] == ["8080:8080"]
    assert ports["codec-server"] == ["8081:8081"]
    assert not ports["postgresql"]  # the database stays inside the compose network
    for name in WORKERS:  # `--scale worker=N` needs no fixed name and no host port
        assert not ports[name] and "container_name" not in SERVICES[name]
    assert SERVICES["codec-server"]["profiles"] == ["encryption"]


def test_health_checks_and_start_order() -> None:
    for name, service in SERVICES.items():
        if name != "temporal-admin-tools":  # a one-shot job: it exits 0 when done
            assert service["healthcheck"]["test"], name
    assert SERVICES["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    for name in WORKERS:
        deps = SERVICES[name]["depends_on"]
        assert deps["temporal"]["condition"] == "service_healthy"
        assert deps["temporal-admin-tools"]["condition"] == "service_completed_successfully"
        # Longer than worker.py's 10 s graceful shutdown, so in-flight tasks finish.
        assert int(SERVICES[name]["stop_grace_period"].rstrip("s")) > 10
    assert SERVICES["temporal-admin-tools"]["restart"] == "no"


def test_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    assert declared == {"postgresql-data", "raftline-data"}
    assert SERVICES["postgresql"]["volumes"] == ["postgresql-data:/var/lib/postgresql/data"]
    for name in WORKERS:
        [mount] = SERVICES[name]["volumes"]
        volume, path = mount.split(":")
        assert volume == "raftline-data"
        # The payload store (RAFTLINE_HOME/payloads) is on the volume every worker shares.
        assert SERVICES[name]["environment"]["RAFTLINE_HOME"] == path


def test_worker_commands_parse_with_worker_py() -> None:
    main = SERVICES["worker"]["command"]
    assert main[0] == "raftline-worker"
    args = worker.parse_args([interpolate(a) for a in main[1:]])
    assert args.max_activities >= 1 and not args.activities_only
    assert args.task_queue is None  # the main queue comes from RAFTLINE_TASK_QUEUE

    judges = SERVICES["judge-worker"]["command"]
    assert judges[0] == "raftline-worker"
    args = worker.parse_args(judges[1:])
    assert args.task_queue == "raftline-judges" and args.activities_only
    assert args.max_activities >= 1

    codec = SERVICES["codec-server"]["command"]
    assert codec[:2] == ["raftline", "codec-server"]
    args = build_parser().parse_args(codec[1:])
    assert args.command == "codec-server" and args.host == "0.0.0.0" and args.port == 8081
    assert args.cors_origin == ["http://localhost:8080"]  # the UI's origin


def test_worker_environment_is_what_the_code_reads() -> None:
    sources = python_sources()
    for name in (*WORKERS, "codec-server"):
        env = SERVICES[name]["environment"]
        for key in env:
            assert key.startswith(("TEMPORAL_", "RAFTLINE_")), key
            if key.startswith("RAFTLINE_"):
                assert f'"{key}"' in sources, f"{name}: nothing reads {key}"
    env = SERVICES["worker"]["environment"]
    host, port = env["TEMPORAL_ADDRESS"].split(":")
    assert host in SERVICES and port == "7233"
    assert interpolate(env["RAFTLINE_TASK_QUEUE"]) == "raftline"
    # An empty setting means "off": the codec, the store and the redactor accept "".
    assert interpolate(env["RAFTLINE_ENCRYPTION_KEY"]) == ""
    assert env["RAFTLINE_HOME"] == "/data"
    # Provider keys stay out of the compose file: an optional env file, workers only.
    assert SERVICES["worker"]["env_file"] == [{"path": "./raftline.env", "required": False}]
    assert SERVICES["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def admin_script() -> str:
    command = SERVICES["temporal-admin-tools"]["command"]
    assert SERVICES["temporal-admin-tools"]["entrypoint"] == ["sh", "-c"]
    return command[0].replace("$$", "$")  # compose's escape for a literal $


def test_admin_tools_register_exactly_raftlines_search_attributes() -> None:
    names = dict(re.findall(r"(Raft\w+)=(\w+)", admin_script()))
    assert names == SEARCH_ATTRIBUTE_TYPES
    assert set(names) == set(SEARCH_ATTRIBUTES)


@pytest.fixture
def bare_server(tmp_path: Path) -> Iterator[str]:
    """A dev server without raftline's search attributes, like a fresh cluster."""
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--log-level", "error"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_admin_tools_script_runs_against_a_fresh_server(bare_server: str) -> None:
    env = {
        "PATH": f"{Path(temporal_binary()).parent}{os.pathsep}{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": bare_server,
        "NAMESPACE": "default",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    for round_ in ("registered", "already registered"):  # idempotent: a re-run is fine
        out = subprocess.run(
            ["sh", "-c", admin_script()], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count(f": {round_}") == len(SEARCH_ATTRIBUTES), out.stdout
    listed = subprocess.run(
        [temporal_binary(), "operator", "search-attribute", "list", "--address", bare_server],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
        assert re.search(rf"{name}\s+{kind}", listed), listed


def test_dockerfile_ships_the_whole_distribution() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, re.M))
    assert "py-modules" not in project  # one import name: everything is inside raftline
    for package, folder in project["package-dir"].items():
        assert package in project["packages"]
        assert folder in copied, f"Dockerfile does not COPY {folder} ({package})"
    assert "pip install ." in dockerfile
    assert re.search(r'^CMD \["raftline-worker"\]', dockerfile, re.M)
    assert re.search(r"^USER (?!root)", dockerfile, re.M)  # not as root
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "raftline.env", ".env"} <= set(ignored)


# ---------------------------------------------------------------- connection settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("TEMPORAL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    return monkeypatch


def test_connection_settings_self_hosted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TEMPORAL_ADDRESS", "temporal:7233")
    clean_env.setenv("TEMPORAL_API_KEY", "")  # compose's ${TEMPORAL_API_KEY:-}: no key
    config = connect_config()
    assert config["target_host"] == "temporal:7233" and config["namespace"] == "default"
    assert "api_key" not in config and "tls" not in config


def test_connection_settings_temporal_cloud_api_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TEMPORAL_ADDRESS", "us-east-1.aws.api.temporal.io:7233")
    clean_env.setenv("TEMPORAL_NAMESPACE", "raftline-prod.a1b2c")
    clean_env.setenv("TEMPORAL_API_KEY", "eyJhbGciOi-test-key")
    config = connect_config()
    assert config["namespace"] == "raftline-prod.a1b2c"
    assert config["api_key"] == "eyJhbGciOi-test-key" and config["tls"] is True


def test_connection_settings_mtls(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    clean_env.setenv("TEMPORAL_ADDRESS", "raftline-prod.a1b2c.tmprl.cloud:7233")
    clean_env.setenv("TEMPORAL_NAMESPACE", "raftline-prod.a1b2c")
    clean_env.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(cert))
    clean_env.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(key))
    tls = connect_config()["tls"]
    assert tls.client_cert == cert.read_bytes() and tls.client_private_key == key.read_bytes()


def test_connection_settings_from_a_profile_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text(
        '[profile.prod]\naddress = "prod.example:7233"\nnamespace = "agents"\napi_key = "k-1"\n'
    )
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(toml))
    clean_env.setenv("TEMPORAL_PROFILE", "prod")
    config = connect_config()
    assert (config["target_host"], config["namespace"], config["api_key"]) == (
        "prod.example:7233",
        "agents",
        "k-1",
    )


# ---------------------------------------------------------------- workflow bytecode


def test_the_worker_caches_the_workflow_modules_bytecode_and_refreshes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox imports the workflow module for every run: a worker writes its .pyc even
    under PYTHONDONTWRITEBYTECODE, rewrites it when the source changes, and keeps a fresh one."""
    import importlib.util
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    source = tmp_path / "flow_mod.py"
    source.write_text("STEPS = 1\n")
    spec = importlib.util.spec_from_file_location("flow_mod", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert not cached.exists()  # the import itself wrote nothing

    worker.cache_bytecode(module)
    first = cached.read_bytes()
    assert worker._bytecode_fresh(str(source), str(cached))
    worker.cache_bytecode(module)
    assert cached.read_bytes() == first  # fresh: left alone

    source.write_text("STEPS = 22\n")  # a deployment changed the code
    os.utime(source, (time.time() + 5, time.time() + 5))
    assert not worker._bytecode_fresh(str(source), str(cached))
    worker.cache_bytecode(module)
    assert worker._bytecode_fresh(str(source), str(cached)) and cached.read_bytes() != first


def test_a_read_only_install_keeps_running_without_cached_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nowhere to write the .pyc: the worker starts anyway (and pays the compile per run)."""
    import sys
    import types

    source = tmp_path / "flow_ro.py"
    source.write_text("STEPS = 1\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    # Bytecode goes under the prefix, and nothing can be created under a file (as root too).
    monkeypatch.setattr(sys, "pycache_prefix", str(blocked / "cache"))
    module = types.ModuleType("flow_ro")
    module.__file__ = str(source)
    worker.cache_bytecode(module)  # no exception
    assert not any(p.suffix == ".pyc" for p in tmp_path.rglob("*"))
