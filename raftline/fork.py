"""Fork a run from one of its steps, and compare two runs (client side).

A fork is a new run of the same pipeline (or of a changed one that keeps the same steps
before the fork point) that takes over the source run's committed checkpoints of every
step that is not the fork point or downstream of it (verified facts: they are not run or
paid for again), and runs the fork point and its descendants: with a hint for its first
attempt, or with a human's replacement output committed in its place.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus

from raftline.ledger import Entry
from raftline.models import (
    ForkSpec,
    PipelineSpec,
    RunInput,
    RunResult,
    StepOutput,
    Task,
    VerifyInput,
)
from raftline.verifiers.rules import OutputFacts, check_rules, extract_facts

if TYPE_CHECKING:
    from raftline.client import RaftlineClient

# What a reused step must keep unchanged for its checkpoint to stand for it.
SAME = ("name", "activity", "goal", "params")


@dataclass
class ForkPlan:
    spec: PipelineSpec
    task: Task
    fork: ForkSpec


async def plan_fork(
    client: RaftlineClient,
    run_id: str,
    from_step: str,
    *,
    hint: str | None,
    output: str | None,
    by: str,
    pipeline: PipelineSpec | None,
    set_params: dict[str, Any],
    models: dict[str, str],
) -> ForkPlan:
    from raftline.client import Refused

    handle = client.get(run_id)
    status = await handle.execution_status()
    if status == WorkflowExecutionStatus.RUNNING:
        raise Refused(f"run {run_id} is still running: fork a run once it has ended")
    source_input = await _source_input(client, run_id)
    result = await handle.result()
    spec = (pipeline or source_input.spec).model_copy(deep=True)
    _apply(spec, set_params, models)
    names = [s.name for s in spec.steps]
    if from_step not in names:
        raise Refused(f"step {from_step!r} is not a step of pipeline {spec.name!r}: {names}")
    graph = spec.graph()
    rerun = graph.descendants([from_step])
    committed = {c.step: c for c in result.checkpoints}
    for name in graph.ancestors(from_step):
        if name not in committed and name not in result.skipped:
            raise Refused(
                f"step {name!r} was never committed in run {run_id}: the fork from "
                f"{from_step!r} needs it"
            )
    if pipeline is not None:
        _same_before(source_input.spec, spec, rerun, from_step)
    reused: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    for checkpoint in result.checkpoints:
        if checkpoint.step in rerun or checkpoint.step not in names:
            continue
        text = checkpoint.output or ""
        texts[checkpoint.step] = text
        keys = graph.fact_keys(checkpoint.step)
        entry = Entry(
            seq=checkpoint.seq,
            step=checkpoint.step,
            sha256=checkpoint.sha256,
            attempt=checkpoint.attempt,
            at=checkpoint.at,
            key=checkpoint.key or f"{run_id}/{checkpoint.step}/{checkpoint.attempt}",
            parents=checkpoint.parents,
            tier=checkpoint.verdict.tier,
            verifier=checkpoint.verdict.verifier,
            degraded=checkpoint.verdict.degraded,
            reviewer=checkpoint.verdict.reviewer,
            usage=checkpoint.usage,
            facts=(
                extract_facts(checkpoint.step, text, keys).model_dump()
                if keys is not None
                else None
            ),
        )
        reused.append(entry.model_dump(mode="json", exclude_defaults=True))
    if output is not None:
        _check_output(spec, source_input.task, from_step, output, texts, graph)
    return ForkPlan(
        spec=spec,
        task=source_input.task,
        fork=ForkSpec(
            source_workflow_id=run_id,
            from_step=from_step,
            hint=hint,
            output=output,
            by=by,
            reused=reused,
        ),
    )


async def _source_input(client: RaftlineClient, run_id: str) -> RunInput:
    """The source run's input (its last run, for a continue-as-new chain): spec and task."""
    from raftline.client import RunNotFound

    handle = client.client.get_workflow_handle(run_id)
    async for event in handle.fetch_history_events():
        attrs = event.workflow_execution_started_event_attributes
        payloads = list(attrs.input.payloads)
        values = await client.client.data_converter.decode(payloads, [RunInput])
        return RunInput.model_validate(values[0])
    raise RunNotFound(f"no run with id {run_id!r}")


def _apply(spec: PipelineSpec, set_params: dict[str, Any], models: dict[str, str]) -> None:
    """--set STEP.params.KEY=VALUE and --model STEP=MODEL on the fork's copy of the spec."""
    from raftline.client import Refused

    by_name = {s.name: s for s in spec.steps}
    for path, value in set_params.items():
        step, _, rest = path.partition(".params.")
        if step not in by_name or not rest:
            raise Refused(f"--set {path}: expected STEP.params.KEY with a step of the pipeline")
        by_name[step].params[rest] = value
    for step, model in models.items():
        if step not in by_name:
            raise Refused(f"--model {step}={model}: no step {step!r} in the pipeline")
        by_name[step].params["model"] = model


def _same_before(source: PipelineSpec, new: PipelineSpec, rerun: set[str], from_step: str) -> None:
    from raftline.client import Refused

    old = {s.name: s for s in source.steps}
    for step in new.steps:
        if step.name in rerun:
            continue
        before = old.get(step.name)
        if before is None:
            raise Refused(
                f"--pipeline adds step {step.name!r} before {from_step!r}: a fork keeps the "
                "steps it reuses unchanged"
            )
        for field in SAME:
            if getattr(before, field) != getattr(step, field):
                raise Refused(
                    f"--pipeline changes step {step.name!r} ({field}) before {from_step!r}: "
                    "its reused checkpoint would not stand for it"
                )


def _check_output(
    spec: PipelineSpec,
    task: Task,
    step_name: str,
    output: str,
    texts: dict[str, str],
    graph: Any,
) -> None:
    from raftline.client import Refused

    step = spec.step(step_name)
    facts = [
        extract_facts(n, texts[n], spec.fact_keys(n) or [])
        for n in graph.ancestors(step_name)
        if n in texts
    ]
    verdict = check_rules(
        VerifyInput(workflow_id="fork", step=step, task=task, output=StepOutput(text=output)),
        [OutputFacts.model_validate(f) for f in facts],
    )
    if not verdict.passed:
        raise Refused(
            f"the output file fails step {step_name!r}'s L1 rules: "
            f"{verdict.error_class}: {verdict.reason}"
        )


def diff_runs(a: RunResult, b: RunResult) -> dict[str, Any]:
    """Step by step: the same output (sha256) or not, the verdicts, attempts, tokens and
    cost of each side, and a unified diff of the outputs that differ."""
    left = {c.step: c for c in a.checkpoints}
    right = {c.step: c for c in b.checkpoints}
    order = list(dict.fromkeys([*left, *right]))
    rows: list[dict[str, Any]] = []
    saved, saved_tokens = 0.0, 0
    for step in order:
        ca, cb = left.get(step), right.get(step)
        row: dict[str, Any] = {
            "step": step,
            "same": bool(ca and cb and ca.sha256 == cb.sha256),
            "a": _side(ca),
            "b": _side(cb),
        }
        if ca and cb and ca.sha256 != cb.sha256:
            row["diff"] = "".join(
                difflib.unified_diff(
                    [line + "\n" for line in (ca.output or "").splitlines()],
                    [line + "\n" for line in (cb.output or "").splitlines()],
                    fromfile=f"{a.workflow_id}/{step}",
                    tofile=f"{b.workflow_id}/{step}",
                )
            )
        if cb and cb.reused_from and ca:  # b took a's checkpoint over: a paid for it
            saved += ca.usage.cost_usd
            saved_tokens += ca.usage.tokens
        rows.append(row)
    return {
        "run_a": a.workflow_id,
        "run_b": b.workflow_id,
        "steps": rows,
        "changed": [r["step"] for r in rows if not r["same"]],
        "usage": {"a": a.usage.model_dump(), "b": b.usage.model_dump()},
        "saved_usd": round(saved, 8),
        "saved_tokens": saved_tokens,
    }


def _side(c: Any) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "sha256": c.sha256,
        "attempt": c.attempt,
        "verdict": {
            "tier": c.verdict.tier,
            "verifier": c.verdict.verifier,
            "degraded": c.verdict.degraded,
        },
        "tokens": c.usage.tokens,
        "cost_usd": c.usage.cost_usd,
        "reused_from": c.reused_from,
    }
