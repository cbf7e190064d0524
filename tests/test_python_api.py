"""Pipelines in Python code, raftline.run, and RunHandle.events() on a real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus

import raftline
from raftline import CompensationInput, Pipeline, Step, StepInput
from raftline import client as client_module
from raftline.activities.registry import activity_name
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer, free_port, port_open
from raftline.models import (
    ErrorClass,
    EventType,
    PipelineSpec,
    RunStatus,
    SpecError,
    Task,
    TraceEvent,
)
from raftline.worker import build_worker
from tests.conftest import ROOT, cli_env

TASK = Task(goal="Should Acme expand its bike sharing to Oslo?")
FAST = {"activity_retry": {"max_attempts": 2, "initial_interval_s": 0.1}}


# ---------------------------------------------------------------- step functions


async def research(committed: dict[str, str]) -> str:
    """Collect the facts about Oslo."""
    return "Oslo has 720,000 residents and 41 km of new bike lanes."


class Analysis(BaseModel):
    city: str
    demand: str


async def analyse(inp: StepInput) -> Analysis:
    facts = inp.committed["research"]  # a StepInput step sees the committed outputs too
    return Analysis(city="Oslo", demand="strong" if "720,000" in facts else "unknown")


def recommend(committed):  # type: ignore[no-untyped-def] # sync, unannotated: a dict
    analysis = json.loads(committed["analyse"])
    return f"Recommendation: expand to {analysis['city']}; demand is {analysis['demand']}."


CALLS: list[tuple[int, str | None, ErrorClass | None]] = []
UNDONE: list[tuple[str, str]] = []


async def drifting(inp: StepInput) -> str:
    """Analyse the demand in Oslo."""
    CALLS.append((inp.attempt, inp.hint, inp.error_class))
    if inp.hint is None:
        return "A short history of the printing press, which spread from Mainz."
    return "Oslo analysis: demand is strong."


async def undo(comp: CompensationInput) -> None:
    UNDONE.append((comp.step, comp.output))


async def always_drifts() -> str:
    """Say something about Oslo."""
    return "Nothing to see here."


def plain_pipeline() -> Pipeline:
    return Pipeline(
        "plain",
        steps=[
            Step(research, checks={"topic": ["Oslo"]}),
            Step(analyse, "Judge the demand", checks={"json_schema": {"required": ["demand"]}}),
            Step(recommend, "Recommend go or no-go", checks={"required": ["Recommendation"]}),
        ],
        policy=FAST,
    )


@contextlib.asynccontextmanager
async def serving(client: RaftlineClient, queue: str, pipeline: Pipeline) -> Any:
    async with build_worker(client.client, queue, pipeline.worker_activities()):
        yield RaftlineClient(client.client, queue)


# ---------------------------------------------------------------- code pipelines run verified


async def test_plain_functions_run_verified(client: RaftlineClient, queue: str) -> None:
    pipeline = plain_pipeline()
    assert pipeline.spec.steps[0].goal == "Collect the facts about Oslo."  # the docstring
    assert pipeline.spec.steps[1].format == "json"  # it returns a pydantic model
    async with serving(client, queue, pipeline) as c:
        result = await c.run(pipeline, TASK)  # start() takes the Pipeline itself
    assert result.status is RunStatus.COMPLETED and result.success
    assert (result.verified, result.rollbacks) == (3, 0)
    assert [cp.step for cp in result.checkpoints] == ["research", "analyse", "recommend"]
    assert json.loads(result.checkpoints[1].output) == {"city": "Oslo", "demand": "strong"}
    assert result.output == "Recommendation: expand to Oslo; demand is strong."
    assert all(cp.verdict.passed for cp in result.checkpoints)


async def test_function_that_drifts_once_recovers_via_hint(
    client: RaftlineClient, queue: str
) -> None:
    CALLS.clear()
    pipeline = Pipeline(
        "drift",
        steps=[Step(research), Step(drifting, checks={"topic": ["Oslo"]})],
        policy=FAST,
    )
    async with serving(client, queue, pipeline) as c:
        result = await c.run(pipeline, TASK)
    assert result.success and result.rollbacks == 1 and result.retries == 1
    assert [(a, ec) for a, _, ec in CALLS] == [(0, None), (1, ErrorClass.GOAL_DRIFT)]
    assert "Refocus on the stated goal" in (CALLS[1][1] or "")
    failed = [e for e in result.trace if e.type is EventType.VERDICT and not e.verdict.passed]
    assert [e.verdict.error_class for e in failed] == [ErrorClass.GOAL_DRIFT]
    assert result.checkpoints[-1].output == "Oslo analysis: demand is strong."
    assert result.checkpoints[-1].attempt == 1


async def test_compensation_function_undoes_a_committed_step(
    client: RaftlineClient, queue: str
) -> None:
    UNDONE.clear()
    pipeline = Pipeline(
        "saga",
        steps=[
            Step(research, compensation=undo),
            Step(always_drifts, retries=1, checks={"topic": ["Oslo"]}),
        ],
        policy=FAST,
    )
    async with serving(client, queue, pipeline) as c:
        result = await c.run(pipeline, TASK)
    assert result.status is RunStatus.COMPENSATED and result.failed_step == "always_drifts"
    assert UNDONE == [("research", "Oslo has 720,000 residents and 41 km of new bike lanes.")]
    assert [(c.step, c.ok) for c in result.compensations] == [("research", True)]


# ---------------------------------------------------------------- one model, two front doors

YAML_TWIN = """
name: twin
description: the same pipeline, written as YAML
policy:
  retries: 3
  criticality: MEDIUM
  breaker: {failure_threshold: 2, cooldown_s: 1}
steps:
  - name: research
    goal: Collect the facts about Oslo.
    activity: tests.test_python_api.research
    checks: {topic: [Oslo], grounded_numbers: true}
    compensation: tests.test_python_api.undo
  - name: analyse
    goal: Judge the demand
    activity: tests.test_python_api.analyse
    format: json
    criticality: HIGH
  - name: publish
    goal: Publish the memo
    activity: publish
    params: {from: analyse}
    retries: 0
    compensation: unpublish
"""


def test_code_pipeline_and_yaml_twin_are_the_same_spec() -> None:
    code = Pipeline(
        "twin",
        description="the same pipeline, written as YAML",
        policy={"retries": 3, "criticality": "MEDIUM", "breaker": {"failure_threshold": 2,
                                                                   "cooldown_s": 1}},
        steps=[
            Step(research, checks={"topic": ["Oslo"], "grounded_numbers": True}, compensation=undo),
            Step(analyse, "Judge the demand", criticality="HIGH"),
            Step("publish", "Publish the memo", activity="publish", params={"from": "analyse"},
                 retries=0, compensation="unpublish"),
        ],
    )  # fmt: skip
    yaml = PipelineSpec.from_yaml_text(YAML_TWIN, "twin.yaml")
    assert isinstance(code.spec, PipelineSpec)
    assert code.spec == yaml
    assert code.spec.model_dump() == yaml.model_dump()
    # The YAML names the activities the code made of its functions (module.qualname),
    # so a worker importing this module serves the YAML as well.
    names = {activity_name(a) for a in code.activities}
    assert names == {f"tests.test_python_api.{n}" for n in ("research", "analyse", "undo")}
    assert names <= {activity_name(a) for a in raftline.registered("tests.test_python_api")}


# ---------------------------------------------------------------- events()

SLOW_STEPS = [
    {"name": "a", "goal": "a", "params": {"text": "a done.", "sleep_s": 0.3}},
    {
        "name": "b",
        "goal": "Oslo",
        "params": {"text": "Oslo b.", "sleep_s": 0.3, "faults": {0: "GOAL_DRIFT"}},
        "checks": {"topic": ["Oslo"]},
    },
    {"name": "c", "goal": "c", "params": {"text": "c done.", "sleep_s": 0.3}},
]


def slow_spec() -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "slow", "policy": FAST, "steps": SLOW_STEPS})


async def take(events: Any, until_seq: int) -> list[TraceEvent]:
    got: list[TraceEvent] = []
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            got.append(event)
            if event.seq >= until_seq:
                break
    return got


async def test_events_exactly_once_in_order_across_a_reconnect(
    temporal_server: EmbeddedServer, worker: RaftlineClient, queue: str
) -> None:
    handle = await worker.start(slow_spec(), TASK)
    first = await take(handle.events(), until_seq=6)
    assert await handle.is_running()  # the consumer left mid-run
    # A new connection (another process, after a restart) resumes from the last seq.
    other = RaftlineClient(await temporal_client(temporal_server.address), queue)
    rest = [e async for e in other.get(handle.id).events(after=first[-1].seq)]
    result = await handle.result()
    seen = first + rest
    assert [e.seq for e in seen] == list(range(1, len(result.trace) + 1))
    assert seen == result.trace
    assert seen[-1].type is EventType.RUN_COMPLETED
    assert EventType.ROLLED_BACK in {e.type for e in seen}
    # Resuming a finished run yields what is left, and nothing from a seq at its end.
    assert [e.seq for e in await take(handle.events(after=len(seen) - 2), 10**6)] == [
        len(seen) - 1,
        len(seen),
    ]
    assert [e async for e in handle.events(after=len(seen))] == []


async def test_events_keep_following_across_a_worker_restart(
    client: RaftlineClient, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While no worker answers the trace query (a deploy), events() waits, then goes on."""
    from raftline.activities.registry import collect

    monkeypatch.setattr(client_module, "QUERY_TIMEOUT", timedelta(seconds=0.3))
    c = RaftlineClient(client.client, queue)
    first = build_worker(client.client, queue, collect())
    await first.__aenter__()
    handle = await c.start(slow_spec(), TASK)
    got: list[TraceEvent] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for event in handle.events(poll_s=0.1):
            got.append(event)
            if event.seq >= 3:
                started.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    await first.__aexit__(None, None, None)
    await asyncio.sleep(1.5)  # several queries time out meanwhile
    assert not consumer.done() and await handle.is_running()
    async with build_worker(client.client, queue, collect()):
        await asyncio.wait_for(consumer, 60)
    result = await handle.result()
    assert result.success
    assert [e.seq for e in got] == list(range(1, len(result.trace) + 1))
    assert got == result.trace


# ---------------------------------------------------------------- raftline.run


async def test_arun_uses_the_server_that_answers(
    temporal_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_server.address)
    seen: list[TraceEvent] = []
    result = await raftline.arun(
        plain_pipeline(), "Should we expand to Oslo?", inputs={"k": "v"}, on_event=seen.append
    )
    assert result.status is RunStatus.COMPLETED and result.verified == 3
    assert seen == result.trace  # on_event saw every event once, in order


async def slow_step(committed: dict[str, str]) -> str:
    """Take a long time."""
    await asyncio.sleep(60)
    return "late"


async def test_cancelled_arun_cancels_the_run_and_compensates(
    temporal_server: EmbeddedServer, client: RaftlineClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_server.address)
    UNDONE.clear()
    pipeline = Pipeline(
        "interrupted",
        steps=[
            Step(research, compensation=undo),
            Step(slow_step, timeout_s=120, heartbeat_timeout_s=1),  # heartbeats: cancellable
        ],
        policy=FAST,
    )
    run_id = f"interrupted-{uuid.uuid4().hex[:8]}"
    in_slow = asyncio.Event()

    def on_event(event: TraceEvent) -> None:
        if event.type is EventType.STEP_STARTED and event.step == "slow_step":
            in_slow.set()

    running = asyncio.create_task(raftline.arun(pipeline, TASK, id=run_id, on_event=on_event))
    await asyncio.wait_for(in_slow.wait(), 30)
    t0 = asyncio.get_running_loop().time()
    running.cancel()  # what Ctrl-C does to asyncio.run's main task
    with pytest.raises(asyncio.CancelledError):
        await running
    assert asyncio.get_running_loop().time() - t0 < 8  # no wait for the 60 s step
    assert UNDONE == [("research", "Oslo has 720,000 residents and 41 km of new bike lanes.")]
    status = await client.get(run_id).execution_status()
    assert status == WorkflowExecutionStatus.CANCELED


def readme_script() -> str:
    """The first Python block of the README's "Use it from Python": the docs are the test."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


README_SCRIPT = readme_script()


def test_readme_script_runs_on_a_fresh_machine(tmp_path: Path) -> None:
    """Nothing answers at TEMPORAL_ADDRESS and RAFTLINE_HOME is empty: run() starts the
    embedded server, runs the pipeline with an in-process worker, and stops it all."""
    script = tmp_path / "oslo.py"
    script.write_text(README_SCRIPT)
    port = free_port()
    env = cli_env(None, tmp_path / "home", TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
    out = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "completed 3/3 Recommendation: expand to Oslo in 2027."
    assert out.stderr == ""  # no log noise in a script
    assert (tmp_path / "home" / "temporal.db").exists()  # the embedded server's database
    assert not port_open("127.0.0.1", port)  # and it was shut down


# ---------------------------------------------------------------- bad specs fail first


async def two_args(a: str, b: str) -> str:
    return a + b


async def no_doc(ctx: dict[str, str]) -> str:
    return "x"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pipeline("p", steps=[]), "pipeline 'p': steps: List should have at least 1"),
        (
            lambda: Pipeline("p", steps=[Step(research, checks={"min_lenght": 3})]),
            "pipeline 'p': steps[0](research).checks.min_lenght: unknown field",
        ),
        (
            lambda: Pipeline("p", steps=[Step(research), Step(research)]),
            "pipeline 'p': steps: duplicate step name 'research'",
        ),
        (
            lambda: Pipeline("p", steps=[Step(research, criticality="URGENT")]),  # type: ignore[arg-type]
            "pipeline 'p': steps[0](research).criticality: Input should be 'LOW', 'MEDIUM'",
        ),
        (
            lambda: Pipeline("p", steps=[Step(research)], policy={"retries": -1}),
            "pipeline 'p': policy.retries: Input should be greater than or equal to 0",
        ),
        (
            lambda: Pipeline("p", steps=[no_doc]),
            "pipeline 'p': steps[0](no_doc).goal: field required (pass Step(no_doc, goal=...)",
        ),
        (lambda: Step(two_args, "g"), "step function two_args takes 2 arguments"),
        (lambda: Pipeline("p", steps=["research"]), "steps[0]: expected a Step or a function"),
        (lambda: Step("bad name", "g"), "must be letters, digits"),
    ],
)
def test_bad_specs_raise_one_clear_line(build: Any, message: str) -> None:
    with pytest.raises(SpecError) as err:
        pipe = build()
        if isinstance(pipe, Step):
            Pipeline("p", steps=[pipe])
    text = str(err.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize(
    ("pipeline", "task", "message"),
    [
        (
            Pipeline("p", steps=[Step("x", "g", activity="no_such_step")]),
            "goal",
            "pipeline 'p': step 'x': unknown activity 'no_such_step'; known: ",
        ),
        (
            Pipeline("p", steps=[Step("x", "g", params={"txet": "typo"})]),
            "goal",
            "pipeline 'p': steps[x].params.txet: unknown field",
        ),
        (plain_pipeline(), "", "task: goal: String should have at least 1 character"),
    ],
)
def test_run_rejects_bad_input_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, task: str, message: str
) -> None:
    port = free_port()
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        raftline.run(pipeline, task)
    assert not port_open("127.0.0.1", port) and not (tmp_path / "temporal.db").exists()


def test_unreachable_remote_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "192.0.2.1:7233")  # TEST-NET-1: never answers
    with pytest.raises(raftline.TemporalUnreachable, match="nothing answers there"):
        raftline.run(plain_pipeline(), "goal")
