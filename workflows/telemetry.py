"""Decision records and replay-safe counters of the commit loop, one per protocol event.

Runs inside the workflow (deterministic code only). `decision_record` is the structured
part of each worker log line; `count` turns events into Prometheus counters through
`workflow.metric_meter()`, which records nothing while the worker replays history, so
a worker restart or a cache eviction never counts a decision twice. Both are pure
functions of a TraceEvent: the workflow's state stays the single source of truth.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from raftline.models import EventType, TraceEvent, Verdict, VerifyInput

# The worker wires spans (raftline/observability.py): it hands the workflow this function
# through Temporal's extern functions, so workflow code never imports worker plumbing.
SPAN_HOOK = "raftline_verification_span"

# Counter names (Prometheus). Latency, tokens and cost come from the worker's activity
# interceptor (activities/observability.py): wall-clock time is not workflow state.
VERDICTS = "raftline_verdicts_total"
ROLLBACKS = "raftline_rollbacks_total"
RETRIES = "raftline_retries_total"
COMMITS = "raftline_commits_total"
STEP_ERRORS = "raftline_step_errors_total"
BREAKER_TRIPS = "raftline_breaker_trips_total"
BUDGET_STOPS = "raftline_budget_exceeded_total"
COMPENSATIONS = "raftline_compensations_total"
RUNS = "raftline_runs_total"

_RUN_END = {
    EventType.RUN_COMPLETED: "completed",
    EventType.RUN_FAILED: "failed",
    EventType.RUN_CANCELED: "canceled",
}


def decision_record(event: TraceEvent, pipeline: str | None) -> dict[str, Any]:
    """The fields of one protocol event's log line (None values are dropped by the logger).

    The worker adds workflow_id and run_id from the workflow's log context.
    """
    record: dict[str, Any] = {
        "event": event.type.value,
        "pipeline": pipeline,
        "seq": event.seq,
        "step": event.step,
        "attempt": event.attempt,
        "checkpoint_seq": event.checkpoint_seq,
        "sha256": event.sha256,
        "hint": event.hint,
        # The causal chain: exactly which committed outputs this step or judge saw.
        "inputs": [f"#{r.seq} {r.step} {r.sha256[:12]}" for r in event.inputs] or None,
        # ...and, through them, everything upstream: one id for the whole causal past.
        "seen": event.seen,
        "message": event.message or (event.verdict.reason if event.verdict else ""),
    }
    v = event.verdict
    if v is not None:
        record.update(
            passed=v.passed,
            error_class=v.error_class.value if v.error_class else None,
            tier=v.tier,
            verifier=v.verifier,
            model=v.model,
            prompt_version=v.prompt_version,
            confidence=v.confidence,
            degraded=v.degraded or None,
            input_tokens=v.usage.input_tokens,
            output_tokens=v.usage.output_tokens,
            cost_usd=v.usage.cost_usd,
            latency_ms=v.latency_ms,
            verdict_hint=v.hint if not v.passed else None,
        )
    return record


def count(event: TraceEvent, pipeline: str | None) -> None:
    """Add the event to raftline's counters. A no-op while replaying history."""
    name, labels = _counter(event)
    if name is None:
        return
    meter = workflow.metric_meter()
    meter.create_counter(name, _HELP[name]).add(1, {"pipeline": pipeline or "", **labels})


def _counter(event: TraceEvent) -> tuple[str | None, dict[str, str]]:
    step = {"step": event.step or ""}
    v = event.verdict
    match event.type:
        case EventType.VERDICT if v is not None:
            return VERDICTS, {
                **step,
                "tier": v.tier,
                "result": "pass" if v.passed else "fail",
                "error_class": v.error_class.value if v.error_class else "none",
                "degraded": str(v.degraded).lower(),
            }
        case EventType.STEP_ERROR:
            # A step that raised after its Temporal retries: a verdict of tier L0.
            return STEP_ERRORS, {**step, "retryable": str(v is not None).lower()}
        case EventType.ROLLED_BACK:
            cls = v.error_class.value if v is not None and v.error_class else "STEP_ERROR"
            return ROLLBACKS, {**step, "error_class": cls}
        case EventType.RETRY:
            return RETRIES, step
        case EventType.COMMITTED:
            return COMMITS, step
        case EventType.BREAKER_OPEN:
            return BREAKER_TRIPS, step
        case EventType.BUDGET_EXCEEDED:
            return BUDGET_STOPS, step
        case EventType.COMPENSATED:
            return COMPENSATIONS, {**step, "result": "ok"}
        case EventType.COMPENSATION_FAILED:
            return COMPENSATIONS, {**step, "result": "failed"}
        case t if t in _RUN_END:
            return RUNS, {"outcome": _RUN_END[t]}
    return None, {}


_HELP = {
    VERDICTS: "Verdicts on step outputs, by tier, result and error class",
    ROLLBACKS: "Step outputs discarded after a failed verdict or a step error",
    RETRIES: "Step attempts retried with a correction hint",
    COMMITS: "Verified step outputs committed to the checkpoint log",
    STEP_ERRORS: "Step attempts that raised after their Temporal retries",
    BREAKER_TRIPS: "Circuit breaker trips (consecutive failures reached the threshold)",
    BUDGET_STOPS: "Runs stopped by their token or cost budget",
    COMPENSATIONS: "Saga compensations of committed steps, by result",
    RUNS: "Pipeline runs that ended, by outcome",
}


def verification_span(base: VerifyInput, verdict: Verdict) -> None:
    """The span of a verdict computed in the workflow (L1), which has no activity span.

    Only when the worker traces workflows; it records nothing while history replays.
    """
    hook = workflow.extern_functions().get(SPAN_HOOK)
    if hook is not None and not workflow.unsafe.is_replaying():
        hook(workflow.info(), base, verdict)


# Generation 2 (workflows/legacy.py) calls it by its old name.
rules_span = verification_span
