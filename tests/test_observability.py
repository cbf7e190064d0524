"""Decision records in the worker's logs, Prometheus metrics and OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import workflow
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.contrib.opentelemetry import TracingInterceptor

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import EventType, PipelineSpec, RunResult, Task
from raftline.observability import (
    ObservabilityError,
    RaftlineInterceptor,
    configure_tracing,
    metrics_runtime,
    tracing_requested,
)
from raftline.verifiers.rules import RULES_VERSION
from raftline.worker import _lift_raftline_fields, build_worker
from tests.conftest import PYTHON, ROOT, cli_env, spec

TASK = Task(goal="Plan the Oslo launch", inputs={"market": "Oslo has 720,000 residents"})
MODULES = ["tests.steps", "tests.judges"]


def drift_and_judge(name: str, **policy: Any) -> PipelineSpec:
    """facts; analysis drifts once (L1 GOAL_DRIFT → rollback → retry); memo is judged:
    an unsure L2 judge escalates to L3."""
    steps = [
        {"name": "facts", "goal": "state the facts", "params": {"text": "Oslo facts."}},
        {
            "name": "analysis",
            "goal": "analyse Oslo",
            "params": {"text": "Oslo analysis.", "faults": {0: "GOAL_DRIFT"}},
            "checks": {"topic": ["Oslo"]},
        },
        {
            "name": "memo",
            "goal": "write the memo",
            "criticality": "MEDIUM",
            "verifier": {
                "judge": {"activity": "fake_judge", "params": {"confidence": {"L2": 0.4}}}
            },
        },
    ]
    return spec(steps, **policy).model_copy(update={"name": name})


def compensated(name: str, undo_log: Path) -> PipelineSpec:
    steps = [
        {
            "name": "publish",
            "goal": "publish",
            "compensation": "record_undo",
            "compensation_params": {"log": str(undo_log)},
        },
        {"name": "notify", "goal": "notify", "params": {"faults": {0: "RAISE_FATAL"}}},
    ]
    return spec(steps).model_copy(update={"name": name})


# ---------------------------------------------------------------- decision records


def decision_records(caplog: pytest.LogCaptureFixture, workflow_id: str) -> list[dict[str, Any]]:
    """The worker's log lines for one run, as the JSON logger renders their fields."""
    return [
        _lift_raftline_fields(None, "info", {"_record": r})
        for r in caplog.records
        if hasattr(r, "raftline") and r.temporal_workflow["workflow_id"] == workflow_id
    ]


async def test_decision_records_carry_ids_and_are_logged_once_though_every_task_replays(
    client: RaftlineClient, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    # No workflow cache: every workflow task replays the run's history from the start.
    async with build_worker(client.client, queue, collect(MODULES), max_cached_workflows=0):
        result = await RaftlineClient(client.client, queue).run(drift_and_judge("records"), TASK)
    assert result.success and result.rollbacks == 1
    records = decision_records(caplog, result.workflow_id)
    # Every protocol event once, in order: replay repeated none of them.
    assert [r["seq"] for r in records] == [e.seq for e in result.trace]
    assert [r["event"] for r in records] == [e.type.value for e in result.trace]
    run_id = records[0]["run_id"]
    assert run_id and all(
        r["workflow_id"] == result.workflow_id and r["run_id"] == run_id for r in records
    )
    assert all(r["pipeline"] == "records" for r in records)
    by = {(r["event"], r.get("step"), r.get("attempt"), r.get("tier")): r for r in records}

    drift = by[("verdict", "analysis", 0, "L1")]
    assert drift["passed"] is False and drift["error_class"] == "GOAL_DRIFT"
    # L1 runs inside the workflow: it names its rules version and takes no measurable time.
    assert drift["verifier"] == "rules" and drift["prompt_version"] == RULES_VERSION
    assert "latency_ms" not in drift
    assert "Refocus" in drift["verdict_hint"]
    rolled = by[("rolled_back", "analysis", 0, "L1")]
    assert rolled["checkpoint_seq"] == 1  # back to the facts checkpoint
    retry = by[("retry", "analysis", 1, None)]
    assert "Refocus" in retry["hint"]

    judge = by[("verdict", "memo", 0, "L3")]
    assert judge["passed"] is True and judge["verifier"] == "llm:fakellm"
    assert judge["model"] == "judge-l3" and judge["prompt_version"] == "judge-v1"
    assert (judge["input_tokens"], judge["output_tokens"], judge["cost_usd"]) == (120, 30, 0.0015)
    assert judge["latency_ms"] > 0
    unsure = by[("verdict", "memo", 0, "L2")]
    assert "escalating to L3" in unsure["message"] and unsure["confidence"] == 0.4
    # The causal chain: the memo step and its judges saw the analysis checkpoint (its direct
    # need) and, through it, the facts: one content-addressed id names the whole past.
    facts, analysis = result.checkpoints[0], result.checkpoints[1]
    assert by[("step_started", "memo", 0, None)]["inputs"] == [
        f"#2 analysis {analysis.sha256[:12]}"
    ]
    assert judge["inputs"] == [f"#2 analysis {analysis.sha256[:12]}"]
    assert by[("step_started", "analysis", 0, None)]["inputs"] == [f"#1 facts {facts.sha256[:12]}"]
    seen = by[("step_started", "memo", 0, None)]["seen"]
    assert len(seen) == 64 and judge["seen"] == seen
    assert seen != by[("step_started", "analysis", 0, None)]["seen"]
    committed = [r for r in records if r["event"] == "committed"]
    assert [r["checkpoint_seq"] for r in committed] == [1, 2, 3]
    assert committed[1]["sha256"] == analysis.sha256


@contextmanager
def logging_during_replay() -> Iterator[None]:
    workflow.logger.log_during_replay = True
    try:
        yield
    finally:
        workflow.logger.log_during_replay = False


async def test_the_replay_check_above_would_catch_repeated_logs(
    client: RaftlineClient, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Control: with the SDK's replay suppression off, the same worker repeats lines."""
    caplog.set_level(logging.INFO, logger="temporalio.workflow")
    pipeline = spec([{"name": "a", "goal": "a"}, {"name": "b", "goal": "b"}])
    with logging_during_replay():
        async with build_worker(client.client, queue, collect(), max_cached_workflows=0):
            result = await RaftlineClient(client.client, queue).run(pipeline, TASK)
    seqs = [r["seq"] for r in decision_records(caplog, result.workflow_id)]
    assert len(seqs) > len(set(seqs)) == len(result.trace)


# ---------------------------------------------------------------- metrics


SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            pairs = LABEL.findall(m[2] or "")
            names = [k for k, _ in pairs]
            assert len(names) == len(set(names)), f"Prometheus rejects duplicate labels: {line}"
            samples.append((m[1], dict(pairs), float(m[3])))
    return samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == x for k, x in labels.items())
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def wait_for_metrics(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the worker's metrics endpoint did not come up")


def start_worker(
    server: EmbeddedServer, queue: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    """`python worker.py --metrics-port N`, its JSON logs into `log`."""
    cmd = [PYTHON, str(ROOT / "worker.py"), "--address", server.address]
    cmd += ["--task-queue", queue, "--activities", *MODULES]
    cmd += ["--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    with log.open("wb") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=cli_env(server, log.parent), stderr=err)


async def test_worker_serves_prometheus_metrics_of_the_commit_loop(
    temporal_server: EmbeddedServer, client: RaftlineClient, queue: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(temporal_server, queue, port, log)
    try:
        await asyncio.to_thread(wait_for_metrics, port, proc, log)
        rc = RaftlineClient(client.client, queue)
        # One failure opens the breaker: the drift trips it, the retry is its trial.
        breaker = {"failure_threshold": 1, "cooldown_s": 0.1, "max_trips": 1}
        ok = await rc.run(drift_and_judge("metrics", breaker=breaker), TASK)
        undone = await rc.run(compensated("metrics_saga", tmp_path / "undo.log"), TASK)
        assert ok.success and ok.breaker_trips == 1
        assert undone.status.value == "compensated"
        text = await asyncio.to_thread(scrape, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()[-2000:]
    m = parse_metrics(text)

    # The commit loop's decisions (workflow.metric_meter(): counted once, never on replay).
    drift = {"pipeline": "metrics", "step": "analysis"}
    assert value(m, "raftline_verdicts_total", **drift, tier="L1", result="fail",
                 error_class="GOAL_DRIFT") == 1  # fmt: skip
    assert value(m, "raftline_verdicts_total", pipeline="metrics", result="pass") == 4
    assert value(m, "raftline_verdicts_total", pipeline="metrics", tier="L3") == 1
    assert value(m, "raftline_rollbacks_total", **drift, error_class="GOAL_DRIFT") == 1
    assert value(m, "raftline_retries_total", **drift) == 1
    assert value(m, "raftline_breaker_trips_total", pipeline="metrics") == 1
    assert value(m, "raftline_commits_total", pipeline="metrics") == 3
    assert value(m, "raftline_runs_total", pipeline="metrics", outcome="completed") == 1
    saga = {"pipeline": "metrics_saga"}
    assert value(m, "raftline_compensations_total", **saga, step="publish", result="ok") == 1
    assert value(m, "raftline_step_errors_total", **saga, step="notify", retryable="false") == 1
    assert value(m, "raftline_runs_total", **saga, outcome="failed") == 1
    # Tokens and cost by provider, latency per step and per verifier (activity interceptor).
    judge = {"provider": "fakellm", "role": "judge"}
    assert value(m, "raftline_tokens_total", **judge, direction="input") == 240
    assert value(m, "raftline_tokens_total", **judge, direction="output") == 60
    assert value(m, "raftline_cost_usd_sum", **judge) == pytest.approx(0.003)
    assert value(m, "raftline_tokens_total", provider="scripted", role="step") > 0
    assert value(m, "raftline_step_latency_seconds_count", **drift) == 2
    assert value(m, "raftline_verification_latency_seconds_count", tier="L2") == 1
    assert value(m, "raftline_verification_latency_seconds_count", tier="L3") == 1
    # L1 runs inside the workflow: counted in verdicts_total, no latency of an activity.
    assert value(m, "raftline_verification_latency_seconds_count", tier="L1") == 0
    assert value(m, "raftline_compensation_latency_seconds_count", step="publish") == 1
    # Temporal's own SDK metrics on the same endpoint.
    assert value(m, "temporal_workflow_completed") >= 1

    # The same worker's JSON log lines are the decision records, with their ids.
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    verdicts = [x for x in lines if x.get("workflow_id") == ok.workflow_id and "tier" in x]
    assert {(x["event"], x["step"], x["tier"]) for x in verdicts} >= {
        ("verdict", "analysis", "L1"),
        ("verdict", "memo", "L3"),
    }
    assert all(x["run_id"] for x in verdicts)
    assert all(("latency_ms" in x) == (x["tier"] != "L1") for x in verdicts)  # judges timed


def test_metrics_port_in_use_is_a_clear_error() -> None:
    port = free_port()
    holder = metrics_runtime(f"127.0.0.1:{port}")
    with pytest.raises(ObservabilityError, match="Address already in use"):
        metrics_runtime(f"127.0.0.1:{port}")
    del holder


# ---------------------------------------------------------------- tracing


def span_tree(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    children: dict[int, list[ReadableSpan]] = {}
    for s in spans:
        if s.parent is not None:
            children.setdefault(s.parent.span_id, []).append(s)
    return children


async def test_spans_link_workflow_steps_and_verifications(
    temporal_server: EmbeddedServer, queue: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    temporal_tracing = TracingInterceptor(tracer, always_create_workflow_spans=True)
    traced = await temporal_client(
        temporal_server.address, tracing=False, interceptors=[temporal_tracing]
    )
    ours = [RaftlineInterceptor(tracer)]
    async with build_worker(traced, queue, collect(MODULES), interceptors=ours):
        result: RunResult = await RaftlineClient(traced, queue).run(drift_and_judge("traced"), TASK)
    assert result.success
    spans = exporter.get_finished_spans()
    children = span_tree(spans)
    named = {s.name: s for s in spans}

    def kids(span: ReadableSpan) -> list[ReadableSpan]:
        return children.get(span.context.span_id, [])

    def only(name: str, among: list[ReadableSpan]) -> ReadableSpan:
        found = [s for s in among if s.name == name]
        assert found, (name, [s.name for s in among])
        return found[0]

    # The workflow: the client's StartWorkflow span is the run's root, RunWorkflow under it.
    root = named["StartWorkflow:VerifiedPipeline"]
    assert root.parent is None
    only("RunWorkflow:VerifiedPipeline", kids(root))

    def under_workflow(*activities: str) -> list[ReadableSpan]:
        """workflow → StartActivity:X → RunActivity:X → raftline's span, in start order."""
        found = [
            ours
            for start_act in kids(root)
            if start_act.name in {f"StartActivity:{a}" for a in activities}
            for run_act in kids(start_act)
            if run_act.name == start_act.name.replace("Start", "Run", 1)
            for ours in kids(run_act)
        ]
        return sorted(found, key=lambda s: s.start_time or 0)

    # Step activities: one span per attempt, with the ids of the trace.
    steps = under_workflow("scripted")
    assert [(s.name, s.attributes["raftline.attempt"]) for s in steps] == [
        ("step facts", 0),
        ("step analysis", 0),
        ("step analysis", 1),
        ("step memo", 0),
    ]
    outputs = [e for e in result.trace if e.type is EventType.OUTPUT]
    for span, event in zip(steps, outputs, strict=True):
        a = span.attributes
        assert a["raftline.workflow_id"] == result.workflow_id and a["raftline.run_id"]
        assert a["raftline.pipeline"] == "traced" and a["raftline.step"] == event.step
        assert a["raftline.output_sha256"] == event.sha256  # the span is the trace's event
    assert list(steps[-1].attributes["raftline.inputs"]) == [
        f"#{c.seq} {c.step} {c.sha256[:12]}" for c in result.checkpoints[:2]
    ]

    # Verification: rules and judges, each linked to the step attempt whose output it judged.
    # L1 runs in the workflow: its span sits beside the StartActivity spans, a judge's
    # under its activity.
    rules = [s for s in kids(root) if s.name.endswith(" L1")]
    verify = sorted([*rules, *under_workflow("fake_judge")], key=lambda s: s.start_time or 0)
    assert [s.name for s in verify] == [
        "verify facts L1",
        "verify analysis L1",
        "verify analysis L1",
        "verify memo L1",
        "verify memo L2",
        "verify memo L3",
    ]
    judged_step = [steps[0], steps[1], steps[2], steps[3], steps[3], steps[3]]
    for span, step in zip(verify, judged_step, strict=True):
        assert [link.context.span_id for link in span.links] == [step.context.span_id]
        a = span.attributes
        assert a["raftline.output_sha256"] == step.attributes["raftline.output_sha256"]
        assert a["raftline.workflow_id"] == result.workflow_id
        assert a["raftline.attempt"] == step.attributes["raftline.attempt"]
    drift = verify[1].attributes
    assert drift["raftline.passed"] is False and drift["raftline.error_class"] == "GOAL_DRIFT"
    l3 = verify[-1].attributes
    assert l3["raftline.model"] == "judge-l3" and l3["raftline.prompt_version"] == "judge-v1"
    assert l3["raftline.input_tokens"] == 120 and l3["raftline.passed"] is True
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}


def test_tracing_is_chosen_by_the_standard_otel_variables() -> None:
    assert tracing_requested({}) == []
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}
    assert tracing_requested(disabled) == []
    assert configure_tracing(env={}, install=False) is None

    provider = configure_tracing("raftline-test", {"OTEL_TRACES_EXPORTER": "console"}, False)
    assert provider.resource.attributes["service.name"] == "raftline-test"
    provider.shutdown()
    # `otlp` is OTLP over HTTP (the spec's default protocol): the `otel` extra installs it.
    provider = configure_tracing(env={"OTEL_TRACES_EXPORTER": "otlp"}, install=False)
    provider.shutdown()

    with pytest.raises(ObservabilityError, match="no OpenTelemetry span exporter 'jaeger2'"):
        configure_tracing(env={"OTEL_TRACES_EXPORTER": "jaeger2"}, install=False)


# ---------------------------------------------------------------- index and current details


async def search_attributes(handle: Any) -> dict[str, Any]:
    attrs = (await handle.describe()).typed_search_attributes
    return {pair.key.name: pair.value for pair in attrs if pair.key.name.startswith("Raft")}


async def test_index_writes_follow_status_and_the_live_step_is_in_current_details(
    worker: RaftlineClient,
) -> None:
    """RaftStatus/RaftPipeline come with the start, RaftStep/RaftRollbacks with a rollback,
    the outcome with the end; the step running now is the UI's current details."""
    pipeline = spec(
        [
            {
                "name": "facts",
                "goal": "Oslo facts",
                "params": {"text": "Oslo facts.", "faults": {0: "GOAL_DRIFT"}},
                "checks": {"topic": ["Oslo"]},
            },
            {"name": "slow", "goal": "slow", "params": {"sleep_s": 2}},
        ]
    ).model_copy(update={"name": "indexed"})
    run = await worker.start(pipeline, TASK)
    handle = worker.client.get_workflow_handle(run.id)
    for _ in range(100):
        if (await run.status()).current_step == "slow":
            break
        await asyncio.sleep(0.05)
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert meta.current_details == "**running** · step 2/2 `slow` · 1/2 verified"
    assert await search_attributes(handle) == {
        "RaftStatus": "running",
        "RaftPipeline": "indexed",
        "RaftStep": "facts",  # where the rollback happened, not where the run is now
        "RaftRollbacks": 1,
    }
    result = await run.result()
    assert result.success
    for _ in range(50):  # visibility is eventually consistent
        if (attrs := await search_attributes(handle))["RaftStatus"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert attrs == {
        "RaftStatus": "completed",
        "RaftPipeline": "indexed",
        "RaftStep": "slow",
        "RaftRollbacks": 1,
    }
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert meta.current_details == "**completed** · 2/2 verified"
