"""Nothing unverified is ever committed: the edges of the commit loop, on the real dev
server. Each test stands for one observation of issue 11 (the number in its docstring)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.sdk.v1 import WorkflowMetadata

from raftline.activities.registry import collect
from raftline.cli import describe_event, print_summary
from raftline.client import RaftlineClient, Refused
from raftline.models import EventType, RunResult, RunStatus, Task
from raftline.worker import build_worker
from raftline.workflows.errors import evicting
from tests.conftest import spec

TASK = Task(goal="Pay the Oslo vendor", inputs={"amount": "4,200 EUR"})
MODULES = ["tests.steps", "tests.judges"]


@pytest_asyncio.fixture
async def worker(client: RaftlineClient, queue: str) -> AsyncIterator[RaftlineClient]:
    async with build_worker(client.client, queue, collect(MODULES)):
        yield RaftlineClient(client.client, queue)


def kinds(result: RunResult, step: str | None = None) -> list[EventType]:
    return [e.type for e in result.trace if step is None or e.step == step]


def charging(ledger: Path, **params: Any) -> dict[str, Any]:
    """A step that charges (one ledger line per attempt) and refunds as compensation."""
    return {
        "activity": "charge",
        "params": {"ledger": str(ledger), **params},
        "checks": {"required": ["charged"]},
        "compensation": "refund",
        "compensation_params": {"ledger": str(ledger)},
    }


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


# ---------------------------------------------------------------- 1. judges fail closed


async def test_a_judge_that_is_down_never_lets_a_step_commit(worker: RaftlineClient) -> None:
    """1: no verdict is not a pass; the run waits judge_wait_s for one, then ends."""
    judge = {"judge": {"activity": "down_judge"}}
    steps = [
        {"name": "facts", "goal": "facts"},
        {"name": "memo", "goal": "memo", "criticality": "MEDIUM", "verifier": judge},
    ]
    result = await worker.run(spec(steps, judge_wait_s=3), TASK)
    assert not result.success and result.status is RunStatus.FAILED
    assert [c.step for c in result.checkpoints] == ["facts"]
    assert result.summary()["verified"] == "1/2"
    assert "judge unavailable" in (result.error or "") and "waited 3 s" in (result.error or "")
    waits = [e for e in result.trace if e.type is EventType.JUDGE_UNAVAILABLE]
    assert len(waits) >= 2  # it asked again after a durable pause
    assert (waits[-1].at - waits[0].at).total_seconds() >= 1.5


async def test_degrade_is_an_opt_in_and_every_surface_says_so(
    worker: RaftlineClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """1: on_judge_unavailable: degrade commits on the rules alone, flagged degraded."""
    judge = {"judge": {"activity": "down_judge"}}
    steps = [
        {"name": "facts", "goal": "facts"},
        {"name": "memo", "goal": "memo", "criticality": "MEDIUM", "verifier": judge,
         "on_judge_unavailable": "degrade", "judge_wait_s": 0},
    ]  # fmt: skip
    handle = await worker.start(spec(steps), TASK)
    result = await handle.result()
    assert result.success
    summary = result.summary()
    assert summary["verified"] == "1/2" and summary["degraded"] == 1
    memo = result.checkpoints[1]
    assert memo.verdict.degraded
    status = await handle.status()
    assert status.degraded == 1 and status.verified == 1
    assert [s.degraded for s in status.steps] == [False, True]
    # The CLI's summary and live line, and the Web UI's current details, say it too.
    print_summary(result, None)
    assert "1/2 steps verified (1 more DEGRADED: no judge verdict)" in capsys.readouterr().out
    verdict = next(e for e in result.trace if e.verdict and e.verdict.degraded)
    assert "degraded" in describe_event(verdict)
    raw = worker.client.get_workflow_handle(result.workflow_id)
    meta = await raw.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert meta.current_details == "**completed** · 1/2 verified · 1 degraded"


async def test_a_quorum_commits_only_on_real_pass_votes(worker: RaftlineClient) -> None:
    """1: require 2, one judge down: one vote is not a quorum."""
    judges = [{"activity": "fake_judge"}, {"activity": "down_judge"}]
    steps = [
        {"name": "memo", "goal": "memo", "criticality": "HIGH",
         "verifier": {"quorum": {"judges": judges, "require": 2}}},
    ]  # fmt: skip
    result = await worker.run(spec(steps, judge_wait_s=1), TASK)
    assert not result.success and result.checkpoints == []
    assert "judge unavailable" in (result.error or "")
    assert "1 of 2 judges gave no vote" in (result.error or "")


async def test_a_failed_escalation_leaves_the_step_unverified(worker: RaftlineClient) -> None:
    """1: an unsure L2 pass is not good enough; without the L3 verdict nothing commits."""
    judge = {"activity": "fake_judge", "params": {"confidence": {"L2": 0.3}, "down": ["L3"]}}
    steps = [
        {"name": "memo", "goal": "memo", "criticality": "MEDIUM", "verifier": {"judge": judge}}
    ]
    result = await worker.run(spec(steps, judge_wait_s=0), TASK)
    assert not result.success and result.checkpoints == []
    assert "no L3 verdict" in (result.error or "")


# ---------------------------------------------------------------- 4, 5. the saga


async def test_a_cancel_during_a_compensation_changes_nothing(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """4: the compensation runs to completion, in strict reverse order, recorded as done."""
    ledger, journal = tmp_path / "ledger", tmp_path / "journal"
    slow_refund = {"ledger": str(ledger), "journal": str(journal), "sleep_s": 2}
    steps = [
        {"name": "s1", "goal": "s1", **charging(ledger)},
        {"name": "s2", "goal": "s2", **charging(ledger), "compensation_params": slow_refund},
        {"name": "s3", "goal": "s3", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    steps[0]["compensation_params"] = {"ledger": str(ledger), "journal": str(journal)}
    handle = await worker.start(spec(steps), TASK)
    for _ in range(200):  # wait until s2's compensation is under way
        if journal.exists() and "start\ts2" in journal.read_text():
            break
        await asyncio.sleep(0.05)
    await handle.cancel()
    await asyncio.sleep(0.3)
    await handle.cancel()  # a second cancel changes nothing either
    result = await handle.result()
    assert [(c.step, c.ok) for c in result.compensations] == [("s2", True), ("s1", True)]
    events = [line.split("\t") for line in journal.read_text().splitlines()]
    order = [(kind, step) for _, kind, step, *_ in events]
    assert order == [("start", "s2"), ("end", "s2"), ("start", "s1"), ("end", "s1")]
    assert lines(ledger) == []


async def test_rolled_back_attempts_are_compensated_before_the_retry(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """5: a charge that failed verification is refunded at rollback, with its own key."""
    ledger = tmp_path / "ledger"
    steps = [{"name": "pay", "goal": "pay", **charging(ledger, bad_attempts=[0])}]
    result = await worker.run(spec(steps), TASK)
    assert result.success and result.rollbacks == 1
    [kept] = lines(ledger)
    assert kept.endswith("/pay/1")  # attempt 0 was undone, attempt 1 committed
    [undo] = result.compensations
    assert (undo.step, undo.attempt, undo.committed) == ("pay", 0, False)
    assert undo.idempotency_key is not None and undo.idempotency_key.endswith("/pay/0")
    i = kinds(result)
    assert (
        i.index(EventType.ROLLED_BACK) < i.index(EventType.COMPENSATED) < i.index(EventType.RETRY)
    )


async def test_a_compensated_run_undoes_every_attempt(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """5: attempt 0 rolled back and attempt 1 committed are two charges: both refunded."""
    ledger = tmp_path / "ledger"
    steps = [
        {"name": "pay", "goal": "pay", **charging(ledger, bad_attempts=[0])},
        {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED
    assert lines(ledger) == []
    assert [(c.attempt, c.committed) for c in result.compensations] == [(0, False), (1, True)]


async def test_a_step_running_at_cancel_is_waited_for_then_compensated(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """5: the saga runs after the step really stopped, so nothing it did survives."""
    ledger, journal = tmp_path / "ledger", tmp_path / "journal"
    steps = [
        {"name": "pay", "goal": "pay", **charging(ledger, sleep_s=3),
         "compensation_params": {"ledger": str(ledger), "journal": str(journal)}},
    ]  # fmt: skip
    handle = await worker.start(spec(steps), TASK)
    for _ in range(200):
        if lines(ledger):
            break
        await asyncio.sleep(0.05)
    await handle.cancel()
    result = await handle.result()
    assert result.status is RunStatus.CANCELED and result.checkpoints == []
    assert lines(ledger) == []  # the attempt cut short was undone
    [undo] = result.compensations
    assert (undo.step, undo.attempt, undo.committed, undo.ok) == ("pay", 0, False, True)


# ---------------------------------------------------------------- 6. wrong shapes


async def test_a_result_of_the_wrong_shape_is_a_step_error_not_a_stuck_run(
    worker: RaftlineClient,
) -> None:
    """6: the decode failure names the field; the run retries, then ends."""
    steps = [{"name": "odd", "goal": "odd", "activity": "bad_shape", "retries": 1}]
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.FAILED
    errors = [e for e in result.trace if e.type is EventType.STEP_ERROR]
    assert len(errors) == 2
    assert "text" in errors[0].message and "StepOutput" in errors[0].message


# ---------------------------------------------------------------- 8. idempotency keys


async def test_keys_are_unique_per_run_and_compensations_name_the_attempt(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """8: a new run that reuses a closed workflow id gets new keys."""
    steps = [{"name": "echo", "goal": "echo", "activity": "echo_context"}]
    first = await worker.run(spec(steps), TASK, id="reused-id")
    second = await worker.run(spec(steps), TASK, id="reused-id")
    key1 = json.loads(first.output or "{}")["key"]
    key2 = json.loads(second.output or "{}")["key"]
    assert key1 != key2 and key1.startswith("reused-id/") and key1.endswith("/echo/0")
    ledger = tmp_path / "ledger"
    paid = await worker.run(
        spec(
            [
                {"name": "pay", "goal": "pay", **charging(ledger)},
                {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
            ]
        ),
        TASK,
    )
    [undo] = paid.compensations
    [committed] = paid.checkpoints
    assert f"{undo.idempotency_key}" == committed.key


# ---------------------------------------------------------------- 9. needs attention


async def test_a_failed_compensation_waits_for_an_operator(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """9: needs_attention until retried (and then it succeeds) or resolved with a note."""
    ledger, gate = tmp_path / "ledger", tmp_path / "bank-is-up"
    failing = {"ledger": str(ledger), "fail_until_file": str(gate)}
    steps = [
        {"name": "pay", "goal": "pay", **charging(ledger), "compensation_params": failing},
        {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    handle = await worker.start(spec(steps), TASK)
    for _ in range(200):
        status = await handle.status()
        if status.status is RunStatus.NEEDS_ATTENTION:
            break
        await asyncio.sleep(0.1)
    assert status.status is RunStatus.NEEDS_ATTENTION
    assert [c.ok for c in status.compensations] == [False]
    listed = await worker.list(status="needs_attention")
    assert handle.id in [r["workflow_id"] for r in listed] or not listed  # index lag
    with pytest.raises(Refused) as err:
        await handle.compensations(retry=True, resolve="both")
    assert "either retry or resolve" in str(err.value)
    still = await handle.compensations(retry=True)  # the bank is still down
    assert still.status is RunStatus.NEEDS_ATTENTION
    gate.write_text("up")
    await handle.compensations(retry=True, by="ops")
    result = await handle.result()
    assert result.status is RunStatus.COMPENSATED and lines(ledger) == []
    assert [c.ok for c in result.compensations] == [True]
    with pytest.raises(Refused):  # nothing is failed any more
        await handle.compensations(retry=True)


async def test_an_operator_can_resolve_a_failed_compensation_by_hand(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    failing = {"ledger": str(ledger), "fail_until_file": str(tmp_path / "never")}
    steps = [
        {"name": "pay", "goal": "pay", **charging(ledger), "compensation_params": failing},
        {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    handle = await worker.start(spec(steps), TASK)
    for _ in range(200):
        if (await handle.status()).status is RunStatus.NEEDS_ATTENTION:
            break
        await asyncio.sleep(0.1)
    await handle.compensations(resolve="refunded by hand, ticket OPS-12", by="ops")
    result = await handle.result()
    assert result.status is RunStatus.COMPENSATED
    [undo] = result.compensations
    assert not undo.ok and "OPS-12" in (undo.resolved or "") and "ops" in (undo.resolved or "")
    resolved = [e for e in result.trace if e.type is EventType.ATTENTION_RESOLVED]
    assert resolved and resolved[0].by == "ops"


# ---------------------------------------------------------------- 11. secrets stay out


async def test_a_leaked_key_is_unsafe_and_never_quoted(worker: RaftlineClient) -> None:
    """11: secrets run first, and no reason quotes the output."""
    key = "sk-proj-4fQ9xT2mLw8ZpR7vNc3KbY6hJd1SgE5aUo0iWq"
    steps = [{"name": "memo", "goal": "memo", "retries": 0,
              "params": {"text": f"Use the key {key} to pay"}}]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert not result.success
    verdict = next(e.verdict for e in result.trace if e.type is EventType.VERDICT)
    assert verdict is not None and verdict.error_class == "UNSAFE"
    assert key not in json.dumps(result.model_dump(mode="json", exclude={"checkpoints"}))
    assert "Remove it" in (verdict.hint or "")


# ---------------------------------------------------------------- the SDK seam


def test_the_eviction_probe_reads_the_sdk_instance() -> None:
    """workflows.errors.evicting reads a private SDK flag: pin it (STYLE lesson 7)."""
    from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

    assert "_deleting" in _WorkflowInstanceImpl.__init__.__code__.co_names
    # Outside a run's event loop (a cached run's coroutine closed at worker shutdown) it
    # says "being torn down", so the code that asks stops instead of raising.
    assert evicting() is True


def test_a_coroutine_closed_by_the_collector_is_torn_down_wherever_it_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The garbage collector may close a dropped run's coroutine while another run's
    activation is on the thread (workflow.in_workflow() is then true, for the other run):
    the GeneratorExit being handled says "torn down" all the same."""
    import types

    seen: list[bool] = []

    @types.coroutine
    def suspend():  # type: ignore[no-untyped-def]
        yield

    async def branch() -> None:
        try:
            await suspend()
        except BaseException:
            seen.append(evicting())
            raise

    from raftline.workflows import errors

    # As if another run's activation were on this thread when the collector runs.
    monkeypatch.setattr(errors.workflow, "in_workflow", lambda: True)
    coro = branch()
    coro.send(None)
    coro.close()  # what the collector does: GeneratorExit at the await
    assert seen == [True]
