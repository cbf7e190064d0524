"""Long pipelines continue as new: the log, trace and counters carry over; clients follow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from temporalio.worker import Replayer

from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer
from raftline.history import chain_histories
from raftline.models import EventType, RunStatus, Task
from raftline.workflows.pipeline import VerifiedPipeline
from tests.conftest import PYTHON, ROOT, cli_env, spec

STEPS = 7


def long_pipeline(**extra: Any) -> Any:
    steps: list[dict[str, Any]] = [
        {"name": f"s{i}", "goal": f"step {i}", "params": {"text": f"Result of step {i}."}}
        for i in range(STEPS)
    ]
    steps[3]["params"]["faults"] = {0: "INCOMPLETE"}  # one rollback, carried as a counter
    return spec(steps, continue_as_new_after_steps=2, **extra)


def cli_result(workflow_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), "result", workflow_id, "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_long_pipeline_continues_as_new_and_carries_everything(
    worker: RaftlineClient, temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    handle = await worker.start(long_pipeline(), Task(goal="a long plan"))
    followed = [e async for e in handle.events()]  # live, across every run of the chain
    result = await handle.result()  # from the first run's handle: follows the chain

    assert result.status is RunStatus.COMPLETED, result.error
    assert [c.seq for c in result.checkpoints] == list(range(1, STEPS + 1))
    assert [c.step for c in result.checkpoints] == [f"s{i}" for i in range(STEPS)]
    assert result.output == f"Result of step {STEPS - 1}."
    assert result.rollbacks == 1 and result.retries == 1 and result.verdicts == STEPS + 1
    # The same pipeline in one run: continuing as new changes nothing a reader can see.
    single = long_pipeline()
    single.policy.continue_as_new_after_steps = None
    one = await worker.run(single, Task(goal="a long plan"))
    assert result.usage == one.usage and result.verified == one.verified
    assert [c.sha256 for c in result.checkpoints] == [c.sha256 for c in one.checkpoints]
    assert [(e.type, e.step, e.attempt) for e in result.trace] == [
        (e.type, e.step, e.attempt) for e in one.trace
    ]

    trace = result.trace
    assert [e.seq for e in trace] == list(range(1, len(trace) + 1))
    assert [e.type for e in trace].count(EventType.RUN_STARTED) == 1
    assert [e.seq for e in followed] == [e.seq for e in trace]
    # Each step saw every earlier checkpoint, including those committed by earlier runs:
    # its trace names its direct need, and one content-addressed id for the whole past.
    last_start = [e for e in trace if e.type is EventType.STEP_STARTED][-1]
    assert [r.seq for r in last_start.inputs] == [STEPS - 1]
    assert last_start.seen == [e for e in one.trace if e.type is EventType.STEP_STARTED][-1].seen

    # A handle names no run (it follows the chain); its first run is where the chain starts.
    assert handle._handle.run_id is None and handle._handle.first_execution_run_id
    chain = await chain_histories(worker.client, handle.id)
    assert len(chain) == 4  # steps 0-1, 2-3, 4-5, 6
    replayer = Replayer(workflows=[VerifiedPipeline], data_converter=worker.client.data_converter)
    for history in chain:  # every run of the chain replays deterministically
        replay = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replay.replay_failure is None, replay.replay_failure

    # The CLI, by workflow id, reads the end of the chain.
    out = cli_result(handle.id, cli_env(temporal_server, tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verified"] == f"{STEPS}/{STEPS}"


async def test_saga_compensates_steps_committed_by_earlier_runs(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    undo = tmp_path / "undo.log"
    pipeline = long_pipeline()
    for step in pipeline.steps:
        step.compensation = "record_undo"
        step.compensation_params = {"log": str(undo)}
    pipeline.steps[5].params["faults"] = {0: "RAISE_FATAL"}
    result = await (await worker.start(pipeline, Task(goal="doomed"))).result()

    assert result.status is RunStatus.COMPENSATED
    # s3's truncated attempt at its rollback; at the end s5's own attempt (it raised),
    # then every commit newest first, across the runs of the chain.
    assert undo.read_text().split() == ["s3", "s5", "s4", "s3", "s2", "s1", "s0"]
    assert [(c.step, c.committed) for c in result.compensations] == [
        ("s3", False),
        ("s5", False),
        *((f"s{i}", True) for i in (4, 3, 2, 1, 0)),
    ]
