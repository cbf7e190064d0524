"""Fork a run from one of its steps and compare two runs, on the real dev server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType as HistoryEvent

from raftline.client import RaftlineClient, Refused
from raftline.models import EventType, RunResult, Task, Usage
from tests.conftest import spec

TASK = Task(goal="Board memo on Oslo", inputs={"market": "Oslo has 720,000 residents"})


def steps() -> list[dict[str, Any]]:
    return [
        {"name": "research", "goal": "research", "params": {"text": "Oslo: {market}."}},
        {"name": "analysis", "goal": "analysis", "params": {"text": "Demand looks strong."}},
        {"name": "draft", "goal": "draft", "activity": "echo_context"},
        {"name": "memo", "goal": "memo", "params": {"text": "Recommendation: go."}},
    ]


async def scheduled(client: RaftlineClient, workflow_id: str) -> list[str]:
    """The activity ids the run scheduled (its own history)."""
    history = await client.client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.event_type == HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def source(worker: RaftlineClient, pipeline: Any = None) -> RunResult:
    result = await worker.run(pipeline or spec(steps()), TASK)
    assert result.success, result.error
    return result


async def test_a_fork_reruns_only_the_step_and_its_descendants(worker: RaftlineClient) -> None:
    old = await source(worker)
    handle = await worker.fork(old.workflow_id, "draft", hint="Lead with the payback period.")
    new = await handle.result()
    assert new.success and new.fork_of == old.workflow_id
    # research and analysis were not run again: no activity of theirs in the fork's history.
    ids = await scheduled(worker, new.workflow_id)
    assert ids == ["draft-0", "memo-0"]
    reused = [e for e in new.trace if e.type is EventType.REUSED]
    assert [e.step for e in reused] == ["research", "analysis"]
    assert all(old.workflow_id in e.message for e in reused)
    # The reused checkpoints are the source's, verbatim, and cost nothing here.
    assert [c.sha256 for c in new.checkpoints[:2]] == [c.sha256 for c in old.checkpoints[:2]]
    assert all(c.reused_from for c in new.checkpoints[:2])
    assert new.usage == sum((c.usage for c in new.checkpoints[2:]), Usage())
    # The hint reached draft's first attempt; draft saw the reused outputs.
    draft = json.loads(new.checkpoints[2].output or "{}")
    assert draft["hint"] == "Lead with the payback period." and draft["attempt"] == 0
    assert draft["committed"] == {
        "research": "Oslo: Oslo has 720,000 residents.",
        "analysis": "Demand looks strong.",
    }
    # New idempotency keys for what ran again.
    assert draft["key"] != json.loads(old.checkpoints[2].output or "{}")["key"]
    listed = await worker.list()
    assert any(r["workflow_id"] == new.workflow_id for r in listed)
    desc = await worker.client.get_workflow_handle(new.workflow_id).describe()
    assert (await desc.memo())["fork_of"] == old.workflow_id


async def test_a_fork_can_commit_a_humans_output_in_place_of_the_step(
    worker: RaftlineClient,
) -> None:
    pipeline = spec(steps())
    pipeline.steps[3].checks.required = ["Recommendation"]
    old = await source(worker, pipeline)
    with pytest.raises(Refused) as err:
        await worker.fork(old.workflow_id, "memo", output="Go.", by="ana")
    assert "L1 rules" in str(err.value) and "Recommendation" in str(err.value)
    handle = await worker.fork(old.workflow_id, "memo", output="Recommendation: wait.", by="ana")
    new = await handle.result()
    assert new.success and new.output == "Recommendation: wait."
    memo = new.checkpoints[-1]
    assert memo.verdict.tier == "HUMAN" and memo.verdict.reviewer == "ana"
    assert await scheduled(worker, new.workflow_id) == []  # nothing ran at all


async def test_a_fork_of_a_dag_reuses_the_sibling_branch(worker: RaftlineClient) -> None:
    dag = spec(
        [
            {"name": "market", "goal": "market", "needs": []},
            {"name": "finance", "goal": "finance", "needs": []},
            {"name": "join", "goal": "join", "needs": ["market", "finance"]},
        ]
    )
    old = await source(worker, dag)
    new = await (await worker.fork(old.workflow_id, "finance")).result()
    assert new.success
    assert sorted(await scheduled(worker, new.workflow_id)) == ["finance-0", "join-0"]
    assert [c.step for c in new.checkpoints if c.reused_from] == ["market"]


async def test_forks_that_cannot_be_made_are_refused(worker: RaftlineClient) -> None:
    old = await source(worker)
    with pytest.raises(Refused) as err:
        await worker.fork(old.workflow_id, "nope")
    assert "'nope' is not a step" in str(err.value)
    changed = spec(steps())
    changed.steps[0].goal = "different research"
    with pytest.raises(Refused) as err:
        await worker.fork(old.workflow_id, "draft", pipeline=changed)
    assert "changes step 'research' (goal)" in str(err.value)

    broken = spec(steps())
    broken.steps[1].params = {"faults": {0: "RAISE_FATAL"}}
    failed = await worker.run(broken, TASK)
    assert not failed.success
    with pytest.raises(Refused) as err:
        await worker.fork(failed.workflow_id, "draft")
    assert "'analysis' was never committed" in str(err.value)

    slow = spec([{"name": "wait", "goal": "wait", "params": {"sleep_s": 5}}])
    running = await worker.start(slow, TASK)
    await asyncio.sleep(0.5)
    with pytest.raises(Refused) as err:
        await worker.fork(running.id, "wait")
    assert "still running" in str(err.value)
    await running.cancel()


async def test_diff_shows_what_changed_and_what_the_fork_saved(worker: RaftlineClient) -> None:
    old = await source(worker)
    new = await (await worker.fork(old.workflow_id, "draft", hint="Shorter.")).result()
    diff = await worker.diff(old.workflow_id, new.workflow_id)
    rows = {r["step"]: r for r in diff["steps"]}
    assert rows["research"]["same"] and rows["analysis"]["same"]
    assert not rows["draft"]["same"] and "Shorter." in rows["draft"]["diff"]
    assert rows["memo"]["same"]  # its text did not depend on draft
    assert diff["changed"] == ["draft"]
    assert rows["research"]["b"]["reused_from"] == f"{old.workflow_id}#1"
    assert diff["saved_tokens"] == sum(c.usage.tokens for c in old.checkpoints[:2]) > 0
    assert diff["saved_usd"] == pytest.approx(sum(c.usage.cost_usd for c in old.checkpoints[:2]))


async def test_a_drifted_step_is_fixed_by_forking_it_with_a_hint(worker: RaftlineClient) -> None:
    """The README's story: the demo's analysis drifts on attempt 0; a fork from it with a
    hint commits on its first attempt, and the diff shows it beside what reuse saved."""
    drifting = steps()
    drifting[1]["params"] = {"text": "Demand looks strong.", "faults": {0: "GOAL_DRIFT"}}
    drifting[1]["checks"] = {"topic": ["Demand"]}
    old = await source(worker, spec(drifting))
    assert old.rollbacks == 1 and old.checkpoints[1].attempt == 1
    fork = worker.fork(old.workflow_id, "analysis", hint="Stay on Oslo demand.")
    new = await (await fork).result()
    assert new.success and new.rollbacks == 0 and new.checkpoints[1].attempt == 0
    started = [e for e in new.trace if e.type is EventType.STEP_STARTED and e.step == "analysis"]
    assert [e.hint for e in started] == ["Stay on Oslo demand."]
    diff = await worker.diff(old.workflow_id, new.workflow_id)
    analysis = next(r for r in diff["steps"] if r["step"] == "analysis")
    assert analysis["same"] and (analysis["a"]["attempt"], analysis["b"]["attempt"]) == (1, 0)
    assert diff["saved_tokens"] == old.checkpoints[0].usage.tokens > 0
