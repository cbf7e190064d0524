"""The deployment files agree with the code: docker-compose.yml, Dockerfile, envconfig.

No Docker engine here: the compose file is parsed, its worker commands are parsed by
raftline.worker's own argument parser, the schema job's script runs with a stand-in
`temporal-sql-tool` that records its calls, and the script that creates the namespace and
registers the search attributes runs for real against a bare Temporal dev server.
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

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
WORKERS = ("worker", "judge-worker")
ONE_SHOT = ("temporal-schema", "raftline-setup")  # jobs that exit 0 when done
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return DEFAULT.sub(lambda m: m.group(2), value)


def environment(service: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in SERVICES[service]["environment"].items()}


def image(service: str) -> tuple[str, str]:
    name, _, tag = interpolate(SERVICES[service]["image"]).partition(":")
    return name, tag


def python_sources() -> str:
    files = [p for p in ROOT.rglob("*.py") if "tests" not in p.parts and ".venv" not in p.parts]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_services_images_and_ports() -> None:
    assert set(SERVICES) == {
        "postgresql", "temporal-schema", "temporal", "raftline-setup", "temporal-ui",
        "worker", "judge-worker", "codec-server",
    }  # fmt: skip
    # Temporal's maintained images; auto-setup is no longer maintained.
    assert "auto-setup" not in COMPOSE_TEXT
    assert image("postgresql")[0] == "postgres"
    assert image("temporal")[0] == "temporalio/server"
    assert image("temporal-ui")[0] == "temporalio/ui"
    for job in ONE_SHOT:
        assert image(job)[0] == "temporalio/admin-tools"
    # The schema job's schema must be the server's own version.
    assert image("temporal-schema")[1] == image("temporal")[1]
    for name in ("postgresql", "temporal", *ONE_SHOT, "temporal-ui"):
        raw = SERVICES[name]["image"]  # pinned, and the pin can be moved with a variable
        assert re.fullmatch(r"[\w./-]+:\$\{\w+_VERSION:-[\w.-]+\}", raw), raw
        assert image(name)[1] not in ("", "latest"), name
    for name in (*WORKERS, "codec-server"):
        assert SERVICES[name]["build"] == "."  # built from this repository's Dockerfile
    ports = {name: [interpolate(p) for p in s.get("ports", [])] for name, s in SERVICES.items()}
    assert ports["temporal"] == ["7233:7233"]
    assert ports["temporal-ui"] == ["8080:8080"]
    assert ports["codec-server"] == ["8081:8081"]
    for name in ("postgresql", *ONE_SHOT):  # the database stays inside the compose network
        assert not ports[name], name
    for name in WORKERS:  # `--scale worker=N` needs no fixed name and no host port
        assert not ports[name] and "container_name" not in SERVICES[name]
    assert SERVICES["codec-server"]["profiles"] == ["encryption"]


def test_health_checks_and_start_order() -> None:
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no" and "healthcheck" not in service, name
        else:
            assert service["healthcheck"]["test"], name
        # A one-shot job is done when it exits 0; anything else when its check passes.
        for dep, how in service.get("depends_on", {}).items():
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert how["condition"] == want, (name, dep)

    def deps(name: str) -> set[str]:
        return set(SERVICES[name].get("depends_on", {}))

    assert deps("temporal-schema") == {"postgresql"}
    assert "temporal-schema" in deps("temporal")  # the schema is in place before the server
    assert deps("raftline-setup") == {"temporal"}
    assert deps("temporal-ui") == {"temporal"}
    for name in WORKERS:
        assert deps(name) == {"temporal", "raftline-setup"}
        # Longer than raftline-worker's 10 s graceful shutdown, so in-flight tasks finish.
        assert int(SERVICES[name]["stop_grace_period"].rstrip("s")) > 10

    order: list[str] = []  # every dependency exists and there is no cycle

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name in SERVICES and name not in path, (*path, name)
        for dep in sorted(deps(name)):
            visit(dep, (*path, name))
        if name not in order:
            order.append(name)

    for name in SERVICES:
        visit(name)
    assert order.index("temporal-schema") < order.index("temporal") < order.index("worker")


def test_the_server_reads_the_schema_jobs_database_and_its_dynamic_config() -> None:
    server, schema = environment("temporal"), environment("temporal-schema")
    db_keys = ("DB", "DB_PORT", "POSTGRES_SEEDS", "POSTGRES_USER", "POSTGRES_PWD")
    assert {k: server[k] for k in db_keys} == {k: schema[k] for k in db_keys}
    assert server["DB"] == "postgres12" and server["POSTGRES_SEEDS"] == "postgresql"
    postgres = environment("postgresql")
    assert server["POSTGRES_USER"] == postgres["POSTGRES_USER"]
    # One password variable for the database, the server and the schema tool.
    raw = SERVICES["temporal"]["environment"]["POSTGRES_PWD"]
    assert raw == SERVICES["postgresql"]["environment"]["POSTGRES_PASSWORD"]
    assert raw == SERVICES["temporal-schema"]["environment"]["SQL_PASSWORD"]
    assert server["BIND_ON_IP"] == "0.0.0.0"  # reachable from the other containers

    [mount] = SERVICES["temporal"]["configs"]
    assert server["DYNAMIC_CONFIG_FILE_PATH"] == mount["target"]
    dynamic = yaml.safe_load(COMPOSE["configs"][mount["source"]]["content"])
    for key, values in dynamic.items():
        assert "." in key and values and all("value" in v for v in values), key
    # SQL visibility stores workflow ids as VARCHAR(255).
    assert dynamic["limit.maxIDLength"][0]["value"] == 255


def test_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    assert declared == {"postgresql-data", "raftline-data"}
    assert SERVICES["postgresql"]["volumes"] == ["postgresql-data:/var/lib/postgresql/data"]
    for name in ("temporal", *ONE_SHOT, "temporal-ui"):
        assert "volumes" not in SERVICES[name], name  # state lives in PostgreSQL only
    for name in WORKERS:
        [mount] = SERVICES[name]["volumes"]
        volume, path = mount.split(":")
        assert volume == "raftline-data"
        # The payload store (RAFTLINE_HOME/payloads) is on the volume every worker shares.
        assert SERVICES[name]["environment"]["RAFTLINE_HOME"] == path


def test_worker_commands_parse_with_raftline_worker() -> None:
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
    for name in ("temporal-ui", "raftline-setup"):
        assert environment(name)["TEMPORAL_ADDRESS"] == "temporal:7233"
    # The namespace the setup job creates is the one the workers use.
    assert SERVICES["raftline-setup"]["environment"]["NAMESPACE"] == env["TEMPORAL_NAMESPACE"]


def job_script(service: str) -> str:
    """A one-shot job's shell script, as the container's `sh -c` receives it."""
    assert SERVICES[service]["entrypoint"] == ["sh", "-c"]
    [script] = SERVICES[service]["command"]
    # Every $ meant for the shell is doubled: a single one would be compose's to fill in.
    assert not re.search(r"\$(?!\$)", script.replace("$$", "")), service
    return script.replace("$$", "$")


def job_env(service: str, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")} | {
        **environment(service),
        **extra,
    }


def test_schema_job_sets_up_both_databases_in_order(tmp_path: Path) -> None:
    """The script's calls, recorded by a stand-in tool (no PostgreSQL or sql tool here)."""
    calls = tmp_path / "calls"
    tool = tmp_path / "bin" / "temporal-sql-tool"
    tool.parent.mkdir()
    tool.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    tool.chmod(0o755)
    env = job_env("temporal-schema")
    env["PATH"] = f"{tool.parent}{os.pathsep}{env['PATH']}"
    out = subprocess.run(
        ["sh", "-c", job_script("temporal-schema")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    connect = "--plugin postgres12 --ep postgresql -p 5432 -u temporal"
    expected = []
    for db, folder in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        schema = f"/etc/temporal/schema/postgresql/v12/{folder}/versioned"
        expected += [
            f"{connect} --db {db} create",
            f"{connect} --db {db} setup-schema -v 0.0",
            f"{connect} --db {db} update-schema -d {schema}",
        ]
    assert calls.read_text().splitlines() == expected
    assert out.stdout.count("schema up to date") == 2
    # The password reaches the tool through its environment (SQL_PASSWORD), not argv.
    assert "SQL_PASSWORD" in environment("temporal-schema")


def test_setup_job_registers_exactly_raftlines_search_attributes() -> None:
    names = dict(re.findall(r"(Raft\w+)=(\w+)", job_script("raftline-setup")))
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


def test_setup_job_runs_against_a_fresh_server(bare_server: str) -> None:
    """A namespace the server does not have yet: the job creates it, then registers."""
    namespace = "raftline-compose"
    env = job_env("raftline-setup", TEMPORAL_ADDRESS=bare_server, NAMESPACE=namespace)
    env["PATH"] = f"{Path(temporal_binary()).parent}{os.pathsep}{env['PATH']}"
    rounds = (("created", "registered"), ("exists", "already registered"))
    for namespace_word, attribute_word in rounds:  # idempotent: a re-run is fine
        out = subprocess.run(
            ["sh", "-c", job_script("raftline-setup")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert f"namespace {namespace}: {namespace_word}" in out.stdout, out.stdout
        assert out.stdout.count(f": {attribute_word}") == len(SEARCH_ATTRIBUTES), out.stdout
    cli = [temporal_binary(), "operator", "--address", bare_server]
    listed = subprocess.run(
        [*cli, "search-attribute", "list", "--namespace", namespace],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
        assert re.search(rf"{name}\s+{kind}", listed), listed
    described = subprocess.run(
        [*cli, "namespace", "describe", "--namespace", namespace, "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    retention = environment("raftline-setup")["RETENTION"]
    assert retention.endswith("h") and f"{int(retention[:-1]) * 3600}s" in described


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
