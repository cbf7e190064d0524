"""Human review as a verifier tier, on the real dev server: each `when` mode, approve /
reject with a hint / edit, durable timeouts, exactly-once decisions, parallel reviews."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, Refused, RunHandle
from raftline.models import EventType, PendingReview, RunResult, RunStatus, Task
from raftline.worker import build_worker
from tests.conftest import spec

TASK = Task(goal="Pay the Oslo vendor", inputs={"amount": "4,200 EUR"})


@pytest_asyncio.fixture
async def reviewer(client: RaftlineClient, queue: str) -> AsyncIterator[RaftlineClient]:
    """A worker with the test steps and the fake judge."""
    async with build_worker(client.client, queue, collect(["tests.steps", "tests.judges"])):
        yield RaftlineClient(client.client, queue)


async def pending(handle: RunHandle, count: int = 1) -> list[PendingReview]:
    """Wait (up to 20 s) until the run has `count` pending reviews."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        found = await handle.reviews()
        if len(found) >= count:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"no review pending: {found}"
        await asyncio.sleep(0.1)


def started(result: RunResult, step: str) -> list[Any]:
    return [e for e in result.trace if e.type is EventType.STEP_STARTED and e.step == step]


def review(step: dict[str, Any], when: str, **extra: Any) -> dict[str, Any]:
    return {**step, "review": {"when": when, "reviewers": ["finance"], **extra}}


async def test_before_waits_for_approval_then_runs(reviewer: RaftlineClient) -> None:
    steps = [review({"name": "payout", "goal": "pay", "activity": "echo_context"}, "before")]
    handle = await reviewer.start(spec(steps), TASK)
    [waiting] = await pending(handle)
    assert (waiting.step, waiting.attempt, waiting.why) == ("payout", 0, "before")
    assert waiting.reviewers == ["finance"] and waiting.deadline > waiting.since
    status = await handle.status()
    assert status.status is RunStatus.AWAITING_REVIEW and status.verified == 0
    assert [s.state for s in status.steps] == ["awaiting_review"]
    outcome = await handle.approve("payout", note="invoice checked", by="ana")
    assert outcome.decision == "approve" and outcome.by == "ana"
    result = await handle.result()
    assert result.success
    decided = next(e for e in result.trace if e.type is EventType.REVIEW_DECIDED)
    assert decided.by == "ana" and "invoice checked" in decided.message


async def test_before_rejected_never_runs_the_step(reviewer: RaftlineClient) -> None:
    steps = [
        {"name": "quote", "goal": "quote"},
        review({"name": "payout", "goal": "pay", "activity": "echo_context"}, "before"),
    ]
    handle = await reviewer.start(spec(steps), TASK)
    await pending(handle)
    await handle.reject("payout", by="ana")  # no hint: the run ends
    result = await handle.result()
    assert not result.success and result.failed_step == "payout"
    assert started(result, "payout") == []
    assert "rejected before it ran" in (result.error or "")


async def test_before_rejection_with_a_hint_reaches_the_step_after_approval(
    reviewer: RaftlineClient,
) -> None:
    steps = [review({"name": "payout", "goal": "pay", "activity": "echo_context"}, "before")]
    handle = await reviewer.start(spec(steps), TASK)
    await pending(handle)
    await handle.reject("payout", "Pay the net amount, not the gross.", by="ana")
    await pending(handle)  # still waiting: a hint is not a refusal
    await handle.approve("payout", by="ben")
    result = await handle.result()
    assert result.success
    assert json.loads(result.output or "{}")["hint"] == "Pay the net amount, not the gross."


async def test_always_commits_only_after_a_human_and_edit_commits_as_human(
    reviewer: RaftlineClient,
) -> None:
    steps = [
        review(
            {"name": "memo", "goal": "memo", "params": {"text": "Recommendation: pay."},
             "checks": {"required": ["Recommendation"]}},
            "always",
        )
    ]  # fmt: skip
    handle = await reviewer.start(spec(steps), TASK)
    [waiting] = await pending(handle)
    assert waiting.output == "Recommendation: pay." and waiting.verdict is not None
    assert (await handle.status()).verified == 0  # nothing committed while it waits
    # An edit must pass the step's L1 rules: the validator refuses it otherwise.
    with pytest.raises(Refused) as err:
        await handle.edit("memo", "Pay.", by="ana")
    assert "L1 rules" in str(err.value) and "Recommendation" in str(err.value)
    outcome = await handle.edit("memo", "Recommendation: pay 4,200 EUR.", by="ana")
    assert outcome.decision == "edit" and outcome.output_sha256
    result = await handle.result()
    assert result.success and result.output == "Recommendation: pay 4,200 EUR."
    [cp] = result.checkpoints
    assert cp.verdict.tier == "HUMAN" and cp.verdict.reviewer == "ana"


async def test_on_fail_lets_a_human_approve_what_the_verifiers_failed(
    reviewer: RaftlineClient,
) -> None:
    step = {
        "name": "facts",
        "goal": "facts",
        "retries": 1,
        "params": {"text": "Oslo facts.", "faults": {0: "GOAL_DRIFT", 1: "GOAL_DRIFT"}},
        "checks": {"topic": ["Oslo"]},
    }
    handle = await reviewer.start(spec([review(step, "on_fail")]), TASK)
    [waiting] = await pending(handle)
    assert waiting.why == "on_fail" and waiting.attempt == 1
    assert waiting.verdict is not None and waiting.verdict.error_class == "GOAL_DRIFT"
    await handle.approve("facts", note="history is in scope here", by="ana")
    result = await handle.result()
    assert result.success
    assert result.checkpoints[0].verdict.tier == "HUMAN"


async def test_on_fail_rejection_with_a_hint_grants_one_more_attempt(
    reviewer: RaftlineClient,
) -> None:
    step = {
        "name": "facts",
        "goal": "facts",
        "retries": 0,
        "params": {"text": "Oslo facts.", "faults": {0: "GOAL_DRIFT"}},
        "checks": {"topic": ["Oslo"]},
    }
    handle = await reviewer.start(spec([review(step, "on_fail")]), TASK)
    await pending(handle)
    await handle.reject("facts", "Stick to Oslo.", error_class="GOAL_DRIFT", by="ana")
    result = await handle.result()
    assert result.success and [s.attempt for s in started(result, "facts")] == [0, 1]
    retry = next(e for e in result.trace if e.type is EventType.RETRY)
    assert "Stick to Oslo." in (retry.hint or "")


async def test_on_disagreement_asks_a_human_when_the_quorum_splits(
    reviewer: RaftlineClient,
) -> None:
    judges = [
        {"activity": "fake_judge", "params": {"name": "a"}},
        {"activity": "fake_judge", "params": {"name": "b", "fail_attempts": [0]}},
        {"activity": "fake_judge", "params": {"name": "c"}},
    ]
    step = review(
        {"name": "memo", "goal": "memo", "criticality": "HIGH",
         "verifier": {"quorum": {"judges": judges, "require": 2}}},
        "on_disagreement",
    )  # fmt: skip
    handle = await reviewer.start(spec([step]), TASK)
    [waiting] = await pending(handle)
    assert waiting.why == "on_disagreement" and waiting.verdict is not None
    assert waiting.verdict.passed  # 2 of 3 passed, 1 failed: a human looks first
    await handle.approve("memo", by="ana")
    result = await handle.result()
    assert result.success and result.checkpoints[0].verdict.reviewer == "ana"


async def test_on_low_confidence_asks_a_human_when_the_top_judge_stays_unsure(
    reviewer: RaftlineClient,
) -> None:
    judge = {"activity": "fake_judge", "params": {"confidence": {"L2": 0.3, "L3": 0.5}}}
    step = review(
        {"name": "memo", "goal": "memo", "criticality": "MEDIUM", "verifier": {"judge": judge}},
        "on_low_confidence",
    )
    handle = await reviewer.start(spec([step]), TASK)
    [waiting] = await pending(handle)
    assert waiting.why == "on_low_confidence"
    assert waiting.verdict is not None and waiting.verdict.tier == "L3"  # escalated first
    await handle.reject("memo", "Cite the invoice.", by="ana")
    [again] = await pending(handle)  # the retry is still unsure
    assert again.attempt == 1
    await handle.approve("memo", by="ana")
    assert (await handle.result()).success


@pytest.mark.parametrize(
    ("on_timeout", "status"),
    [("approve", RunStatus.COMPLETED), ("reject", RunStatus.FAILED), ("fail", RunStatus.FAILED)],
)
async def test_timeouts_are_durable_and_do_what_on_timeout_says(
    reviewer: RaftlineClient, on_timeout: str, status: RunStatus
) -> None:
    step = review({"name": "payout", "goal": "pay"}, "before", timeout_s=1, on_timeout=on_timeout)
    result = await reviewer.run(spec([step]), TASK)
    assert result.status is status
    decided = next(e for e in result.trace if e.type is EventType.REVIEW_DECIDED)
    assert decided.by == "timeout" and on_timeout in decided.message
    if on_timeout == "fail":
        assert "timed out" in (result.error or "")


async def test_a_decision_is_applied_once(reviewer: RaftlineClient) -> None:
    steps = [
        review({"name": "payout", "goal": "pay"}, "before"),
        review({"name": "confirm", "goal": "confirm"}, "before"),  # keeps the run open
    ]
    handle = await reviewer.start(spec(steps), TASK)
    await pending(handle)
    first = await handle.approve("payout", note="ok", by="ana", update_id="decision-1")
    again = await handle.approve("payout", note="ok", by="ana", update_id="decision-1")
    assert again == first  # the same update id: Temporal's own deduplication
    await pending(handle)  # now `confirm` waits; payout was decided once
    repeat = await handle.approve("payout", note="ok", by="ana")  # the same decision again
    assert repeat.repeated and repeat.at == first.at
    with pytest.raises(Refused) as err:  # a different decision on a decided review
        await handle.reject("payout", "no", by="ben")
    assert "already decided" in str(err.value)
    await handle.approve("confirm", by="ana")
    result = await handle.result()
    assert result.success
    decided = [e for e in result.trace if e.type is EventType.REVIEW_DECIDED]
    assert [e.step for e in decided] == ["payout", "confirm"]
    # After the run ended, a resend still answers with what was recorded.
    late = await handle.approve("confirm", by="ana")
    assert late.repeated and late.decision == "approve"
    with pytest.raises(Refused):
        await handle.reject("confirm", "too late", by="ben")


async def test_decisions_for_what_is_not_pending_are_refused(reviewer: RaftlineClient) -> None:
    steps = [
        {"name": "quote", "goal": "quote"},
        review({"name": "payout", "goal": "pay"}, "before"),
    ]
    handle = await reviewer.start(spec(steps), TASK)
    await pending(handle)
    with pytest.raises(Refused) as err:
        await handle.approve("quote", by="ana")
    assert "has no pending review" in str(err.value) and "payout" in str(err.value)
    with pytest.raises(Refused) as err:
        await handle.approve("payout", attempt=3, by="ana")
    assert "attempt 3 is not pending" in str(err.value)
    with pytest.raises(Refused) as err:
        await handle.edit("payout", "Paid.", by="ana")
    assert "has not run yet" in str(err.value)
    await handle.approve("payout", by="ana")
    assert (await handle.result()).success


async def test_two_branches_awaiting_review_are_decided_in_either_order(
    reviewer: RaftlineClient, tmp_path: Path
) -> None:
    steps = [
        review({"name": "left", "goal": "left", "needs": []}, "before"),
        review({"name": "right", "goal": "right", "needs": []}, "before"),
        {"name": "join", "goal": "join", "needs": ["left", "right"]},
    ]
    handle = await reviewer.start(spec(steps), TASK)
    found = await pending(handle, 2)
    assert sorted(r.step for r in found) == ["left", "right"]
    await handle.approve("right", by="ana")
    await handle.approve("left", by="ben")
    result = await handle.result()
    assert result.success and [c.step for c in result.checkpoints][-1] == "join"
    everything = await reviewer.pending_reviews()
    assert all(r.workflow_id != handle.id for r in everything)
