"""The circuit breaker's durable cooldown, on Temporal's time-skipping test server.

A 10-minute cooldown passes in well under a second of wall time, and it is a real
durable timer in the history, not a patched clock.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from raftline.activities.registry import collect
from raftline.client import RaftlineClient
from raftline.models import EventType, RunStatus, Task
from raftline.worker import build_worker
from tests.conftest import spec

TASK = Task(goal="breaker test")
COOLDOWN_S = 600


def time_skipping_binary() -> str:
    return str(Path(sys.executable).parent / "temporal-test-server")


@pytest_asyncio.fixture(scope="module")
async def skipping() -> AsyncIterator[RaftlineClient]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=time_skipping_binary(),
    )
    async with env:
        async with build_worker(env.client, "breaker", collect()):
            yield RaftlineClient(env.client, "breaker")


def breaker_spec(faults: dict[int, str]) -> object:
    return spec(
        [
            {"name": "ok", "goal": "ok"},
            {
                "name": "flaky",
                "goal": "Oslo",
                "retries": 5,
                "params": {"text": "Oslo.", "faults": faults},
                "checks": {"topic": ["Oslo"]},
            },
        ],
        breaker={"failure_threshold": 2, "cooldown_s": COOLDOWN_S, "max_trips": 1},
    )


async def test_breaker_opens_waits_and_half_opens(skipping: RaftlineClient) -> None:
    result = await skipping.run(breaker_spec({0: "GOAL_DRIFT", 1: "GOAL_DRIFT"}), TASK)
    assert result.success and result.breaker_trips == 1
    kinds = [e.type for e in result.trace]
    opened = kinds.index(EventType.BREAKER_OPEN)
    half = kinds.index(EventType.BREAKER_HALF_OPEN)
    closed = kinds.index(EventType.BREAKER_CLOSED)
    assert opened < half < closed
    # The cooldown is a durable timer: workflow time moved by the full cooldown.
    waited = (result.trace[half].at - result.trace[opened].at).total_seconds()
    assert waited >= COOLDOWN_S
    assert result.checkpoints[-1].attempt == 2


async def test_failed_half_open_trial_ends_the_run(skipping: RaftlineClient) -> None:
    faults = {0: "GOAL_DRIFT", 1: "GOAL_DRIFT", 2: "GOAL_DRIFT"}
    result = await skipping.run(breaker_spec(faults), TASK)
    assert result.status is RunStatus.FAILED and "half-open trial" in (result.error or "")
    assert result.breaker_trips == 1 and result.verified == 1


async def test_too_many_trips_end_the_run(skipping: RaftlineClient) -> None:
    pipeline = spec(
        [
            {
                "name": "flaky",
                "goal": "Oslo",
                "retries": 5,
                "params": {"text": "Oslo.", "faults": {0: "GOAL_DRIFT", 1: "GOAL_DRIFT"}},
                "checks": {"topic": ["Oslo"]},
            }
        ],
        breaker={"failure_threshold": 2, "cooldown_s": 5, "max_trips": 0},
    )
    result = await skipping.run(pipeline, TASK)
    assert result.status is RunStatus.FAILED and "tripped 1 times" in (result.error or "")
    assert EventType.BREAKER_HALF_OPEN not in [e.type for e in result.trace]
