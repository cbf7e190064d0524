"""Runs in flight survive a deployment: saved histories replay against today's code.

tests/histories/*.json were recorded once (tests/histories/make.py) from representative
runs: clean, rollback (drift + step error), judges (escalation + quorum), compensation,
breaker (durable cooldown) and cancel. A change to the commit loop that would break such
a run in flight makes its replay fail here: guard the change with `workflow.patched`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from embedded import free_port
from observability import metrics_runtime
from worker import WORKFLOW_RUNNER
from workflows.models import RunInput, RunResult
from workflows.pipeline import VerifiedPipeline

HISTORIES = Path(__file__).resolve().parent / "histories"
SCENARIOS = ["clean", "rollback", "judged", "compensation", "breaker", "cancel"]


def load(name: str) -> WorkflowHistory:
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json(f"history-{name}", path.read_text(encoding="utf-8"))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def replayer(**kw: Any) -> Replayer:
    kw.setdefault("workflow_runner", WORKFLOW_RUNNER)  # the worker's own sandbox settings
    return Replayer(workflows=[VerifiedPipeline], data_converter=pydantic_data_converter, **kw)


def test_every_representative_run_has_a_history() -> None:
    assert sorted(p.stem for p in HISTORIES.glob("*.json")) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
async def test_saved_history_replays_against_todays_code(name: str) -> None:
    result = await replayer().replay_workflow(load(name), raise_on_replay_failure=False)
    assert result.replay_failure is None, (
        f"tests/histories/{name}.json no longer replays: this change breaks runs in flight. "
        f"Guard it with workflow.patched(...) (see README, Observability). "
        f"{result.replay_failure!r}"
    )


@workflow.defn(name="VerifiedPipeline")
class ChangedLoop(VerifiedPipeline):
    """The commit loop with an unguarded change: a pause before every attempt."""

    @workflow.run
    async def run(self, inp: RunInput) -> RunResult:
        return await super().run(inp)

    async def _attempt(self, *args: Any) -> Any:
        await workflow.sleep(timedelta(seconds=1))
        return await super()._attempt(*args)


async def test_an_unguarded_change_to_the_loop_fails_replay() -> None:
    """The guard itself works: the same histories reject a loop that schedules differently."""
    changed = Replayer(
        workflows=[ChangedLoop],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    result = await changed.replay_workflow(load("rollback"), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError)


async def test_replay_writes_no_decision_logs_and_counts_no_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker replaying history (restart, cache eviction) must not repeat what it logged
    or counted the first time: workflow.logger and workflow.metric_meter() stay silent."""
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    caplog.set_level(logging.INFO, logger="temporalio.workflow")

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for name in SCENARIOS:
            yield load(name)

    results = await replayer(runtime=runtime).replay_workflows(
        histories(), raise_on_replay_failure=False
    )
    assert results.replay_failures == {}
    decisions = [r for r in caplog.records if hasattr(r, "raftline")]
    assert decisions == []
    body = await asyncio.to_thread(scrape, port)
    assert [line for line in body.splitlines() if line.startswith("raftline_")] == []
