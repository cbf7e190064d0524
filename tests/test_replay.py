"""Runs in flight survive a deployment: saved histories replay against today's code.

tests/histories/<generation>/*.json were recorded once (tests/histories/make.py) from
representative runs: clean, rollback (drift + step error), judges (escalation + quorum),
compensation, breaker (durable cooldown) and cancel, under each generation of the commit
loop (1-local-rules: L1 as a local activity and RaftStep on every attempt; 2-lean-commit:
L1 in the workflow; 3-ledger: the DAG engine, with its own shapes: parallel branches, map,
`when`, sub-pipelines, human review, forks, a judge that is down, a compensation that
needs attention, continue-as-new, a refusal only rules-3 catches, a map stopped by the
history bound). A change to the commit loop that would break such a run in flight
makes its replay fail here: guard the change with `workflow.patched`.
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

from raftline.embedded import free_port
from raftline.models import RunInput, RunResult, Verdict
from raftline.observability import metrics_runtime
from raftline.worker import WORKFLOW_RUNNER
from raftline.workflows.attempts import Steps
from raftline.workflows.legacy import Generation2
from raftline.workflows.pipeline import VerifiedPipeline
from raftline.workflows.verify import Verifier

HISTORIES = Path(__file__).resolve().parent / "histories"
SCENARIOS = ["clean", "rollback", "judged", "compensation", "breaker", "cancel"]
# Each generation's representative runs. */continue_as_new is the middle run of a chain:
# it resumed from that generation's carry and handed one on.
BY_GENERATION = {
    "1-local-rules": SCENARIOS,
    "2-lean-commit": [*SCENARIOS, "continue_as_new"],
    # The ledger engine: the DAG, human review, forks, fail-closed judges, the saga's
    # needs_attention, sub-pipelines, and the lean continue-as-new carry.
    "3-ledger": [
        *SCENARIOS,
        "continue_as_new",
        "dag",
        "review",
        "judge_down",
        "attention",
        "fork",
        "subpipeline",
        "branch_ends",
        "rules_3",
        "history_bound",
    ],
}
GENERATIONS = list(BY_GENERATION)
SAVED = [f"{g}/{s}" for g, names in BY_GENERATION.items() for s in names]


def load(name: str) -> WorkflowHistory:
    """`name`: generation/scenario."""
    path = HISTORIES / f"{name}.json"
    scenario = name.rpartition("/")[2]
    return WorkflowHistory.from_json(f"history-{scenario}", path.read_text(encoding="utf-8"))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def replayer(**kw: Any) -> Replayer:
    kw.setdefault("workflow_runner", WORKFLOW_RUNNER)  # the worker's own sandbox settings
    return Replayer(workflows=[VerifiedPipeline], data_converter=pydantic_data_converter, **kw)


def test_every_representative_run_has_a_history_in_every_generation() -> None:
    assert sorted(f"{p.parent.name}/{p.stem}" for p in HISTORIES.glob("*/*.json")) == sorted(SAVED)


def markers(name: str) -> list[str]:
    """The patch ids and local activities the saved run recorded, in order."""
    return [
        event.marker_recorded_event_attributes.marker_name
        for event in load(name).events
        if event.HasField("marker_recorded_event_attributes")
    ]


def test_the_generations_differ_where_the_patch_says() -> None:
    """1-local-rules ran L1 as local activities; 2-lean-commit recorded the patch instead."""
    assert markers("1-local-rules/rollback").count("core_local_activity") == 4
    assert markers("2-lean-commit/rollback") == ["core_patch"]
    # The ledger engine is one patch (raftline-ledger); its L1 runs in the workflow too.
    assert markers("3-ledger/rollback") == ["core_patch"]
    patches = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in load("3-ledger/rollback").events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert b"raftline-ledger" in patches[0]
    # A run that ends while branches are in flight records the stop-on-end patch.
    ended = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in load("3-ledger/branch_ends").events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert any(b"raftline-stop-on-end" in p for p in ended)
    # L1 as rules-3 records its patch; runs saved before it did not, and decide as rules-2.
    assert any(b"raftline-rules-3" in p for p in patch_data("3-ledger/rules_3"))
    assert not any(b"raftline-rules-3" in p for p in patch_data("3-ledger/rollback"))
    # A map too big for one history ends the run with the history-bound patch.
    assert any(b"raftline-history-bound" in p for p in patch_data("3-ledger/history_bound"))
    # rules-3 is asked only where it and rules-2 disagree: a run whose verdicts they agree
    # on records no marker for it.
    assert not any(b"raftline-rules-3" in p for p in patch_data("3-ledger/history_bound"))


def patch_data(name: str) -> list[bytes]:
    return [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in load(name).events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


@pytest.mark.parametrize("name", SAVED)
async def test_saved_history_replays_against_todays_code(name: str) -> None:
    result = await replayer().replay_workflow(load(name), raise_on_replay_failure=False)
    assert result.replay_failure is None, (
        f"tests/histories/{name}.json no longer replays: this change breaks runs in flight. "
        f"Guard it with workflow.patched(...) (see README, Observability). "
        f"{result.replay_failure!r}"
    )


class SlowGeneration2(Generation2):
    """Generation 2 with an unguarded change: a pause before every attempt."""

    async def _attempt(self, *args: Any) -> Any:
        await workflow.sleep(timedelta(seconds=1))
        return await super()._attempt(*args)


class SlowSteps(Steps):
    """Today's loop with the same unguarded change."""

    async def attempt(self, *args: Any, **kwargs: Any) -> Any:
        await workflow.sleep(timedelta(seconds=1))
        return await super().attempt(*args, **kwargs)


@workflow.defn(name="VerifiedPipeline")
class ChangedLoop(VerifiedPipeline):
    generation2 = SlowGeneration2
    steps = SlowSteps

    @workflow.run
    async def run(self, inp: RunInput) -> RunResult:
        return await super().run(inp)


async def test_an_unguarded_change_to_the_loop_fails_replay() -> None:
    """The guard itself works: the same histories reject a loop that schedules differently."""
    changed = Replayer(
        workflows=[ChangedLoop],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    for generation in GENERATIONS:
        result = await changed.replay_workflow(
            load(f"{generation}/rollback"), raise_on_replay_failure=False
        )
        assert isinstance(result.replay_failure, workflow.NondeterminismError), generation


class LaxGeneration2(Generation2):
    """Generation 2 with its L1 rules changed, unguarded: they pass every output."""

    async def _rules(self, base: Any) -> Any:
        if self._lean:  # what check_rules decides in the workflow
            return Verdict(passed=True, tier="L1", verifier="rules")
        return await super()._rules(base)  # a local activity: its result is in history


class LaxVerifier(Verifier):
    async def _rules(self, base: Any) -> Any:
        return Verdict(passed=True, tier="L1", verifier="rules")


class LaxSteps(Steps):
    verifier_class = LaxVerifier


@workflow.defn(name="VerifiedPipeline")
class LaxRules(VerifiedPipeline):
    generation2 = LaxGeneration2
    steps = LaxSteps

    @workflow.run
    async def run(self, inp: RunInput) -> RunResult:
        return await super().run(inp)


async def test_a_rules_change_that_flips_a_verdict_fails_replay() -> None:
    """L1 runs in the workflow, so what it decides is history: a rule change that lets the
    drift through would make runs in flight diverge, and the saved histories say so."""
    lax = Replayer(
        workflows=[LaxRules],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    for generation in GENERATIONS[1:]:  # since 2-lean-commit the rules run in the workflow
        lean = await lax.replay_workflow(
            load(f"{generation}/rollback"), raise_on_replay_failure=False
        )
        assert isinstance(lean.replay_failure, workflow.NondeterminismError), generation
    # Runs from before the patch recorded their rules' verdicts: the change cannot touch them.
    old = await lax.replay_workflow(load("1-local-rules/rollback"), raise_on_replay_failure=False)
    assert old.replay_failure is None


async def test_replay_writes_no_decision_logs_and_counts_no_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker replaying history (restart, cache eviction) must not repeat what it logged
    or counted the first time: workflow.logger and workflow.metric_meter() stay silent."""
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    caplog.set_level(logging.INFO, logger="temporalio.workflow")

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for name in SAVED:
            yield load(name)

    results = await replayer(runtime=runtime).replay_workflows(
        histories(), raise_on_replay_failure=False
    )
    assert results.replay_failures == {}
    decisions = [r for r in caplog.records if hasattr(r, "raftline")]
    assert decisions == []
    body = await asyncio.to_thread(scrape, port)
    assert [line for line in body.splitlines() if line.startswith("raftline_")] == []
