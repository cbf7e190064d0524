"""The commit loop on a real Temporal dev server: commit, rollback, retry, saga, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from raftline.client import RaftlineClient
from raftline.models import ErrorClass, EventType, RunStatus, Task
from raftline.verifiers.taxonomy import HINTS
from raftline.workflows.pipeline import VerifiedPipeline
from tests.conftest import spec

TASK = Task(goal="Plan the Oslo launch", inputs={"budget": "4.2 million EUR"})


def marker_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_clean_run_commits_every_step_once(worker: RaftlineClient, tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    steps = [
        {"name": n, "goal": f"do {n}", "params": {"text": f"{n} done.", "marker": str(marker)}}
        for n in ("a", "b", "c")
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPLETED and result.success
    assert [c.step for c in result.checkpoints] == ["a", "b", "c"]
    assert [c.seq for c in result.checkpoints] == [1, 2, 3]
    assert all(c.attempt == 0 and c.verdict.passed for c in result.checkpoints)
    assert (result.verified, result.rollbacks, result.retries) == (3, 0, 0)
    assert marker_lines(marker) == ["a 0 1", "b 0 1", "c 0 1"]
    assert result.output == "c done."
    committed = [e for e in result.trace if e.type is EventType.COMMITTED]
    assert [e.checkpoint_seq for e in committed] == [1, 2, 3]


async def test_drift_is_rolled_back_and_retried_with_hint(worker: RaftlineClient) -> None:
    steps = [
        {"name": "facts", "goal": "state the facts", "params": {"text": "Oslo facts."}},
        {
            "name": "analysis",
            "goal": "analyse Oslo",
            "params": {"text": "Oslo analysis.", "faults": {0: "GOAL_DRIFT"}},
            "checks": {"topic": ["Oslo"]},
        },
        {"name": "echo", "goal": "see what was committed", "activity": "echo_context"},
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.success and result.rollbacks == 1 and result.retries == 1
    failed = [e for e in result.trace if e.type is EventType.VERDICT and not e.verdict.passed]
    assert len(failed) == 1 and failed[0].verdict.error_class is ErrorClass.GOAL_DRIFT
    retry = next(e for e in result.trace if e.type is EventType.RETRY)
    assert retry.step == "analysis" and "Refocus on the stated goal" in (retry.hint or "")
    # The next step saw only committed outputs: the good analysis, never the drift.
    seen = json.loads(result.checkpoints[-1].output)
    assert seen["committed"] == {"facts": "Oslo facts.", "analysis": "Oslo analysis."}
    assert "printing press" not in json.dumps(seen)
    analysis = result.checkpoints[1]
    assert analysis.step == "analysis" and analysis.attempt == 1
    # The retried step itself got the typed hint.
    echo_steps = [
        {
            "name": "x",
            "goal": "echo",
            "activity": "echo_context",
            "checks": {"forbidden": ['"attempt": 0']},
        }
    ]
    echoed = await worker.run(spec(echo_steps), TASK)
    got = json.loads(echoed.output or "")
    assert got["attempt"] == 1 and got["error_class"] == "UNSAFE"
    assert got["hint"].startswith(HINTS[ErrorClass.UNSAFE].split(" (")[0])
    assert got["key"].endswith("/x/1")


async def test_retry_budget_ends_run_and_compensates_in_reverse(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    undo = {"compensation": "record_undo", "compensation_params": {"log": str(log)}}
    steps = [
        {"name": "a", "goal": "a", "params": {"text": "a done."}, **undo},
        {"name": "b", "goal": "b", "params": {"text": "b done."}, **undo},
        {"name": "nocomp", "goal": "c", "params": {"text": "c done."}},
        {
            "name": "bad",
            "goal": "Oslo",
            "retries": 1,
            "params": {"text": "x", "faults": {0: "GOAL_DRIFT", 1: "GOAL_DRIFT"}},
            "checks": {"topic": ["Oslo"]},
        },
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED and not result.success
    assert "retry budget" in (result.error or "") and result.failed_step == "bad"
    assert marker_lines(log) == ["b", "a"]
    assert [(c.step, c.ok) for c in result.compensations] == [("b", True), ("a", True)]
    assert result.verified == 3 and result.rollbacks == 2


async def test_failed_compensation_is_reported(worker: RaftlineClient, tmp_path: Path) -> None:
    log = tmp_path / "undo.log"
    steps = [
        {
            "name": "a",
            "goal": "a",
            "compensation": "record_undo",
            "compensation_params": {"log": str(log)},
        },
        {
            "name": "b",
            "goal": "b",
            "compensation": "record_undo",
            "compensation_params": {"log": str(log), "fail": True},
        },
        {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    # Nobody answers the needs_attention state: it closes as failed after its timeout.
    result = await worker.run(spec(steps, attention_timeout_s=1), TASK)
    assert result.status is RunStatus.FAILED
    assert "non-retryable" in (result.error or "")
    assert [(c.step, c.ok) for c in result.compensations] == [("b", False), ("a", True)]
    assert EventType.ATTENTION_NEEDED in [e.type for e in result.trace]
    assert "failed" in (result.compensations[0].error or "")
    kinds = [e.type for e in result.trace if e.step == "b"]
    assert EventType.COMPENSATION_FAILED in kinds
    assert marker_lines(log) == ["b", "a"]


async def test_nothing_to_compensate_is_failed(worker: RaftlineClient) -> None:
    steps = [{"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}}]
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.FAILED and result.compensations == []


async def test_step_error_is_retried_with_its_message(worker: RaftlineClient) -> None:
    steps = [{"name": "s", "goal": "s", "params": {"text": "ok.", "faults": {0: "RAISE"}}}]
    result = await worker.run(spec(steps), TASK)
    assert result.success and result.retries == 1
    err = next(e for e in result.trace if e.type is EventType.STEP_ERROR)
    assert err.verdict is not None and err.verdict.error_class is ErrorClass.STEP_ERROR
    retry = next(e for e in result.trace if e.type is EventType.RETRY)
    assert "scripted failure on attempt 0" in (retry.hint or "")


async def test_transient_errors_are_temporal_retries_not_failures(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    marker = tmp_path / "calls"
    steps = [{"name": "s", "goal": "s", "params": {"flaky_attempts": 2, "marker": str(marker)}}]
    result = await worker.run(
        spec(steps, activity_retry={"max_attempts": 3, "initial_interval_s": 0.1}), TASK
    )
    assert result.success and result.rollbacks == 0 and result.retries == 0
    assert marker_lines(marker) == ["s 0 1", "s 0 2", "s 0 3"]


async def test_cancel_mid_run_compensates(worker: RaftlineClient, tmp_path: Path) -> None:
    log = tmp_path / "undo.log"
    steps = [
        {
            "name": "a",
            "goal": "a",
            "compensation": "record_undo",
            "compensation_params": {"log": str(log)},
        },
        {"name": "slow", "goal": "slow", "params": {"sleep_s": 30}, "timeout_s": 60},
    ]
    handle = await worker.start(spec(steps), TASK)
    for _ in range(100):
        status = await handle.status()
        if status.current_step == "slow":
            break
        await asyncio.sleep(0.1)
    assert status.verified == 1
    await handle.cancel()
    result = await handle.result()
    assert result.status is RunStatus.CANCELED and not result.success
    assert [(c.step, c.ok) for c in result.compensations] == [("a", True)]
    assert marker_lines(log) == ["a"]
    assert result.trace[-1].type is EventType.RUN_CANCELED


async def test_finished_run_replays_deterministically(worker: RaftlineClient) -> None:
    steps = [
        {"name": "a", "goal": "a", "params": {"faults": {0: "INCOMPLETE"}}},
        {"name": "b", "goal": "b"},
    ]
    handle = await worker.start(spec(steps), TASK)
    assert (await handle.result()).success
    history = await worker.client.get_workflow_handle(handle.id).fetch_history()
    replayer = Replayer(workflows=[VerifiedPipeline], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)  # raises on nondeterminism


async def test_custom_step_returning_plain_text(worker: RaftlineClient) -> None:
    steps = [{"name": "p", "goal": "the weather", "activity": "plain_text"}]
    result = await worker.run(spec(steps), TASK)
    assert result.output == "Plain answer about the weather."


# Each class of the scripted step meets the rule that should catch it.
CAUGHT_BY = {
    "INCOMPLETE": ("text", {"min_length": 20}),
    "FORMAT": ("json", {}),
    "GOAL_DRIFT": ("text", {"topic": ["Oslo"]}),
    "HALLUCINATION": ("text", {"grounded_numbers": True}),
    "CONTRADICTION": ("json", {"consistent_keys": ["budget"]}),
    "SCOPE_CREEP": ("text", {"out_of_scope": [r"\bemailed\b"]}),
    "UNSAFE": ("text", {}),
}


@pytest.mark.parametrize("fault", list(CAUGHT_BY))
async def test_each_error_class_is_caught_by_its_rule(worker: RaftlineClient, fault: str) -> None:
    fmt, checks = CAUGHT_BY[fault]
    text = '{"budget": 4, "city": "Oslo"}' if fmt == "json" else "The Oslo plan is ready."
    steps = [
        {"name": "base", "goal": "budget", "format": "json", "params": {"text": '{"budget": 4}'}},
        {
            "name": "s",
            "goal": "Oslo plan",
            "format": fmt,
            "params": {"text": text, "faults": {0: fault}},
            "checks": checks,
        },
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.success, result.error
    verdicts = [e.verdict for e in result.trace if e.type is EventType.VERDICT and e.step == "s"]
    assert [v.passed for v in verdicts] == [False, True]
    assert verdicts[0].error_class == ErrorClass(fault), verdicts[0].reason
    assert result.checkpoints[-1].output == text
