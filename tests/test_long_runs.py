"""Long runs: the state a continue-as-new chain carries stays small, every surface still
shows the whole run once and in order, and a run whose workflow task keeps failing is
never silent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio import workflow

from raftline.activities.registry import collect
from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer
from raftline.history import chain_histories, workflow_task_problem
from raftline.models import EventType, RunInput, RunResult, RunStatus, Task
from raftline.workflows.pipeline import VerifiedPipeline
from tests.conftest import PYTHON, ROOT, cli_env, spec

STEPS, EVERY = 24, 4


def pipeline() -> Any:
    steps = [
        {"name": f"s{i}", "goal": f"step {i}", "params": {"text": f"Result of step {i}."}}
        for i in range(STEPS)
    ]
    steps[9]["params"]["faults"] = {0: "INCOMPLETE"}
    return spec(steps, continue_as_new_after_steps=EVERY)


def carry_bytes(history: Any) -> int:
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    return sum(p.ByteSize() for p in payloads)


async def test_the_carry_grows_with_the_steps_not_their_square(worker: RaftlineClient) -> None:
    handle = await worker.start(pipeline(), Task(goal="a long plan"))
    followed = [e async for e in handle.events()]
    result = await handle.result()
    assert result.status is RunStatus.COMPLETED, result.error
    histories = await chain_histories(worker.client, handle.id)
    assert len(histories) == STEPS // EVERY
    sizes = [carry_bytes(h) for h in histories]
    # Each hand-over adds EVERY checkpoints' worth (a few hundred bytes each), nothing more:
    # the trace and the outputs are not copied forward.
    growth = [b - a for a, b in zip(sizes[1:], sizes[2:], strict=False)]
    assert max(growth) < EVERY * 400, (sizes, growth)
    assert max(growth) - min(growth) < 600, (sizes, growth)  # linear, not accelerating
    first = json.loads(
        histories[-1].events[0].workflow_execution_started_event_attributes.input.payloads[0].data
    )
    assert (
        "trace" not in first["ledger"]
        and len(first["ledger"]["trace_archive"]) == len(histories) - 1
    )

    # Every surface shows the whole run, once, in order.
    trace = result.trace
    assert [e.seq for e in trace] == list(range(1, len(trace) + 1))
    assert [e.seq for e in followed] == [e.seq for e in trace]
    assert [e.type for e in trace].count(EventType.RUN_STARTED) == 1
    assert [c.step for c in result.checkpoints] == [f"s{i}" for i in range(STEPS)]
    assert all(c.output == f"Result of step {i}." for i, c in enumerate(result.checkpoints))
    assert result.rollbacks == 1 and result.verified == STEPS
    assert (await handle.trace()) == trace
    status = await handle.status() if await handle.is_running() else None
    assert status is None  # ended; `raftline status` reads the result


@workflow.defn(name="VerifiedPipeline")
class BrokenPipeline(VerifiedPipeline):
    """The workflow with a bug that fails every workflow task (e.g. a bad deploy)."""

    @workflow.run
    async def run(self, inp: RunInput) -> RunResult:
        raise RuntimeError("KeyError 'budget' in the commit loop (simulated bad deploy)")


@pytest_asyncio.fixture
async def broken(client: RaftlineClient, queue: str) -> AsyncIterator[RaftlineClient]:
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    async with Worker(
        client.client,
        task_queue=queue,
        workflows=[BrokenPipeline],
        activities=collect(),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield RaftlineClient(client.client, queue)


async def test_a_failing_workflow_task_is_reported_within_seconds(
    broken: RaftlineClient, temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    handle = await broken.start(spec([{"name": "a", "goal": "a"}]), Task(goal="g"))
    started = time.monotonic()
    problem = None
    while problem is None and time.monotonic() - started < 10:
        problem = await workflow_task_problem(broken.client, handle.id)
        await asyncio.sleep(0.3)
    assert problem is not None, "not reported within 10 s"
    assert problem.startswith("workflow task failing") and "simulated bad deploy" in problem
    out = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, str(ROOT / "starter.py"), "status", handle.id],
        env=cli_env(temporal_server, tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "workflow task failing" in out.stdout and "simulated bad deploy" in out.stdout
    await handle.cancel()
    await broken.client.get_workflow_handle(handle.id).terminate("test over")
