"""Multi-agent shapes on the real dev server: parallel branches, map fan-out, `when`
routing, sub-pipelines; each branch verified and rolled back alone, and a run that cannot
finish stops its branches and compensates the whole DAG in reverse commit order."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from raftline.client import RaftlineClient
from raftline.models import EventType, PipelineSpec, RunResult, RunStatus, SpecError, Task
from tests.conftest import spec

TASK = Task(goal="Plan the Oslo expansion", inputs={"market": "Oslo has 720,000 residents"})


def events(result: RunResult, type_: EventType, step: str | None = None) -> list[Any]:
    return [e for e in result.trace if e.type is type_ and (step is None or e.step == step)]


def undo(log: Path) -> dict[str, Any]:
    return {"compensation": "record_undo", "compensation_params": {"log": str(log)}}


async def test_independent_branches_run_in_parallel_and_join(worker: RaftlineClient) -> None:
    steps = [
        {"name": "market", "goal": "market", "needs": [], "params": {"sleep_s": 1.5}},
        {"name": "finance", "goal": "finance", "needs": [], "params": {"sleep_s": 1.5}},
        {"name": "analysis", "goal": "analysis", "needs": ["market", "finance"]},
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.success and result.verified == 3
    started = {e.step: e.at for e in events(result, EventType.STEP_STARTED)}
    committed = {e.step: e.at for e in events(result, EventType.COMMITTED)}
    # Both branches were in flight at once: each started before the other committed.
    assert started["finance"] < committed["market"] and started["market"] < committed["finance"]
    assert started["analysis"] >= max(committed["market"], committed["finance"])
    # The join saw both branches: its trace names both checkpoints.
    join = events(result, EventType.STEP_STARTED, "analysis")[0]
    assert sorted(r.step for r in join.inputs) == ["finance", "market"]
    assert sorted(result.checkpoints[2].parents) == [1, 2]


async def test_a_failing_branch_retries_alone_while_its_sibling_keeps_its_checkpoint(
    worker: RaftlineClient,
) -> None:
    steps = [
        {"name": "a", "goal": "a", "needs": [], "params": {"faults": {0: "GOAL_DRIFT"},
         "text": "Oslo facts."}, "checks": {"topic": ["Oslo"]}},
        {"name": "b", "goal": "b", "needs": [], "params": {"sleep_s": 0.5}},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.success and result.rollbacks == 1
    assert [e.step for e in events(result, EventType.ROLLED_BACK)] == ["a"]
    assert len(events(result, EventType.COMMITTED, "b")) == 1
    assert len(events(result, EventType.STEP_STARTED, "b")) == 1  # b never ran again


async def test_a_step_sees_only_its_ancestors(worker: RaftlineClient) -> None:
    steps = [
        {"name": "a", "goal": "a", "needs": [], "params": {"text": "A."}},
        {"name": "b", "goal": "b", "needs": [], "params": {"text": "B."}},
        {"name": "c", "goal": "c", "needs": ["a"], "params": {"text": "C."}},
        {"name": "echo", "goal": "echo", "needs": ["c"], "activity": "echo_context"},
    ]
    result = await worker.run(spec(steps), TASK)
    assert result.success, result.error
    seen = json.loads(result.output or "{}")["committed"]
    assert seen == {"a": "A.", "c": "C."}  # b is not upstream of echo


async def test_one_branch_ending_the_run_cancels_and_compensates_the_others_in_reverse(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    steps = [
        {"name": "first", "goal": "first", "needs": [], **undo(log)},
        {"name": "slow", "goal": "slow", "needs": ["first"], "params": {"sleep_s": 30},
         "heartbeat_timeout_s": 5, **undo(log)},
        {"name": "quick", "goal": "quick", "needs": ["first"], **undo(log)},
        {"name": "doomed", "goal": "doomed", "needs": ["quick"],
         "params": {"sleep_s": 1, "faults": {0: "RAISE_FATAL"}}},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED and result.failed_step == "doomed"
    # `slow` was cut short (it never committed): its attempt is undone first, then the
    # commits newest first.
    assert [(c.step, c.committed) for c in result.compensations] == [
        ("slow", False),
        ("quick", True),
        ("first", True),
    ]
    assert log.read_text().split() == ["slow", "quick", "first"]
    assert not events(result, EventType.COMMITTED, "slow")
    cancel_seen = events(result, EventType.COMPENSATION_STARTED, "slow")[0].at
    # Nothing of `slow` lands after its compensation started.
    assert all(e.at <= cancel_seen for e in result.trace if e.step == "slow" and e.type in (
        EventType.OUTPUT, EventType.VERDICT))  # fmt: skip


def after_failure(result: RunResult) -> list[Any]:
    """Trace events of work started or judged after the run's fatal step error."""
    fatal = next(e for e in result.trace if e.type is EventType.STEP_ERROR and e.verdict is None)
    kinds = (EventType.STEP_STARTED, EventType.RETRY, EventType.OUTPUT, EventType.VERDICT)
    return [e for e in result.trace if e.seq > fatal.seq and e.type in kinds]


def refund(tmp_path: Path, sleep_s: float = 0) -> dict[str, Any]:
    params = {"ledger": str(tmp_path / "ledger"), "journal": str(tmp_path / "journal")}
    return {"compensation": "refund", "compensation_params": {**params, "sleep_s": sleep_s}}


def deliveries(tmp_path: Path) -> list[str]:
    """The compensation keys the refund activity was started with, one per delivery."""
    lines = (tmp_path / "journal").read_text().splitlines()
    return [line.split("\t")[3] for line in lines if line.split("\t")[1] == "start"]


async def test_a_branch_whose_cancel_is_lost_does_not_retry_after_the_run_failed(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """`slow` never heartbeats, so it never hears the cancel; it then fails retryably. The
    run is ending: it is rolled back and compensated, never retried."""
    steps = [
        {"name": "doomed", "goal": "doomed", "needs": [],
         "params": {"sleep_s": 0.3, "faults": {0: "RAISE_FATAL"}}},
        {"name": "slow", "goal": "slow", "needs": [], "activity": "deaf",
         "params": {"sleep_s": 1.5, "fail0": True}, **refund(tmp_path)},
        {"name": "join", "goal": "join", "needs": ["doomed", "slow"]},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED and result.failed_step == "doomed"
    assert after_failure(result) == []
    assert [(c.step, c.attempt) for c in result.compensations] == [("slow", 0)]
    assert len(deliveries(tmp_path)) == 1


async def test_a_rollback_compensation_the_failure_interrupts_runs_once(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """`slow` fails first; while its rollback compensation runs (1 s), `doomed` ends the
    run. The compensation finishes, is recorded once, and the saga does not run it again."""
    steps = [
        {"name": "doomed", "goal": "doomed", "needs": [],
         "params": {"sleep_s": 0.5, "faults": {0: "RAISE_FATAL"}}},
        {"name": "slow", "goal": "slow", "needs": [], "activity": "deaf",
         "params": {"sleep_s": 0.1, "fail0": True}, **refund(tmp_path, sleep_s=1.0)},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED
    keys = deliveries(tmp_path)
    assert len(keys) == len(set(keys)) == 1 and "/slow/0/compensate" in keys[0]
    assert len(events(result, EventType.COMPENSATION_STARTED, "slow")) == 1


async def test_a_fatal_map_item_stops_its_siblings_at_once(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """Item 1 fails for good; items 0 and 2 (deaf: they return after it) are neither judged
    nor retried, and item 3 never starts; every attempt that ran is compensated once."""
    steps = [
        {"name": "outline", "goal": "outline", "format": "json",
         "params": {"text": '["a", "b", "c", "d"]'}},
        {"name": "sections", "goal": "sections", "activity": "deaf",
         "map": {"over": "outline", "max_concurrency": 3},
         "params": {"sleep_s": 1.5, "fail0": [2], "fatal": [1], "fatal_s": 0.2},
         **refund(tmp_path)},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.status is RunStatus.COMPENSATED and result.failed_step == "sections"
    assert after_failure(result) == []
    started = {e.item for e in events(result, EventType.STEP_STARTED, "sections")}
    assert started == {0, 1, 2}
    undone = sorted(c.idempotency_key or "" for c in result.compensations)
    assert [re.search(r"/item-(\d+)/", k)[1] for k in undone] == ["0", "1", "2"]
    keys = deliveries(tmp_path)
    assert len(keys) == len(set(keys)) == 3


async def test_map_runs_one_verified_item_per_element_and_retries_items_alone(
    worker: RaftlineClient,
) -> None:
    steps = [
        {"name": "outline", "goal": "outline", "format": "json",
         "params": {"text": '["intro", "market", "risks"]'}},
        {"name": "sections", "goal": "write a section", "needs": ["outline"],
         "map": {"over": "outline", "max_concurrency": 2}, "checks": {"topic": ["Section"]},
         "params": {"text": "Section {item_index}: {item}.",
                    "item_faults": {1: {0: "GOAL_DRIFT"}}}},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.success, result.error
    assert json.loads(result.output or "[]") == [
        "Section 0: intro.",
        "Section 1: market.",
        "Section 2: risks.",
    ]
    rolled = events(result, EventType.ROLLED_BACK, "sections")
    assert [e.item for e in rolled] == [1]  # only item 1 was rolled back and retried
    started = events(result, EventType.STEP_STARTED, "sections")
    assert sorted(e.item for e in started) == [0, 1, 1, 2]
    assert [c.step for c in result.checkpoints] == ["outline", "sections"]


async def test_a_map_too_big_for_one_history_ends_the_run_and_compensates(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    """Temporal terminates a run whose history passes its hard limits, undoing nothing; a
    map cannot continue as new halfway, so it ends the run first and the saga runs."""
    log = tmp_path / "undo.log"
    listing = json.dumps(list(range(200)))
    steps = [
        {"name": "prepare", "goal": "prepare", "params": {"text": "Prepared."}, **undo(log)},
        {"name": "outline", "goal": "outline", "format": "json", "params": {"text": listing}},
        {"name": "items", "goal": "item", "needs": ["outline"],
         "map": {"over": "outline", "max_concurrency": 4},
         "params": {"text": "Item {item} done."}},
    ]  # fmt: skip
    result = await worker.run(spec(steps, history_max_events=150), TASK)

    assert result.status is RunStatus.COMPENSATED and result.failed_step == "items"
    assert "history is near Temporal's limits" in (result.error or "")
    assert "history_max_events 150" in (result.error or "")
    started = events(result, EventType.STEP_STARTED, "items")
    assert 0 < len(started) < 200  # it stopped starting items, it did not run them all
    assert "prepare" in log.read_text()  # the saga ran: nothing was left behind


async def test_map_over_something_that_is_not_a_list_is_a_format_verdict(
    worker: RaftlineClient,
) -> None:
    steps = [
        {"name": "outline", "goal": "outline", "params": {"text": "not a list at all."}},
        {"name": "sections", "goal": "s", "needs": ["outline"], "map": {"over": "outline"}},
    ]
    result = await worker.run(spec(steps), TASK)
    assert not result.success and result.failed_step == "sections"
    verdict = events(result, EventType.VERDICT, "sections")[0].verdict
    assert verdict is not None and verdict.error_class == "FORMAT"
    assert "not JSON" in verdict.reason


async def test_when_skips_and_routes(worker: RaftlineClient) -> None:
    steps = [
        {"name": "analysis", "goal": "analysis", "format": "json",
         "params": {"text": '{"risk": "high"}'}},
        {"name": "escalate", "goal": "escalate", "needs": ["analysis"],
         "when": "analysis.risk == 'high'"},
        {"name": "proceed", "goal": "proceed", "needs": ["analysis"],
         "when": "analysis.risk == 'low'"},
        {"name": "report", "goal": "report", "needs": ["escalate", "proceed"]},
    ]  # fmt: skip
    result = await worker.run(spec(steps), TASK)
    assert result.success, result.error
    assert [c.step for c in result.checkpoints] == ["analysis", "escalate", "report"]
    assert result.skipped == ["proceed"]
    assert events(result, EventType.SKIPPED, "proceed")[0].message.startswith("when:")


async def test_sub_pipeline_runs_as_a_child_and_its_failure_compensates_the_parent(
    worker: RaftlineClient, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    child_ok = PipelineSpec.model_validate(
        {"name": "legal", "steps": [
            {"name": "review", "goal": "review", "params": {"text": "Legal: fine."}, **undo(log)},
        ]}
    )  # fmt: skip
    steps = [
        {"name": "draft", "goal": "draft", **undo(log)},
        {
            "name": "legal",
            "goal": "legal review",
            "pipeline": "legal.yaml",
            "pipeline_spec": child_ok.model_dump(),
        },
    ]
    ok = await worker.run(spec(steps), TASK)
    assert ok.success, ok.error
    assert ok.output == "Legal: fine."
    assert [c.step for c in ok.checkpoints] == ["draft", "legal"]

    child_bad = child_ok.model_copy(deep=True)
    child_bad.steps.append(
        child_bad.steps[0].model_copy(
            update={"name": "sign", "params": {"faults": {0: "RAISE_FATAL"}}, "compensation": None}
        )
    )
    steps[1]["pipeline_spec"] = child_bad.model_dump()
    log.write_text("")
    bad = await worker.run(spec(steps), TASK)
    assert bad.status is RunStatus.COMPENSATED and bad.failed_step == "legal"
    # The child undid its own commit; then the parent undid its own.
    assert log.read_text().split() == ["review", "draft"]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"name": "a", "goal": "a", "needs": ["nope"]}], "unknown step 'nope'"),
        (
            [
                {"name": "a", "goal": "a", "needs": ["b"]},
                {"name": "b", "goal": "b", "needs": ["a"]},
            ],
            "cyclic needs",
        ),
        (
            [
                {"name": "a", "goal": "a", "needs": []},
                {"name": "b", "goal": "b", "needs": [], "map": {"over": "a"}},
            ],
            "'a' is not an ancestor",
        ),
    ],
)
def test_graph_errors_are_refused_before_anything_starts(
    steps: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(SpecError) as err:
        PipelineSpec.parse({"name": "p", "steps": steps})
    assert expected in str(err.value)
