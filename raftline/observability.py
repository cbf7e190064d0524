"""Worker-side observability: Prometheus metrics and OpenTelemetry spans per step and verdict.

- `metrics_runtime(address)`: a Temporal Runtime whose Prometheus endpoint serves the SDK's
  own metrics and raftline's (`python worker.py --metrics-port N`).
- `RaftlineInterceptor`: wraps every activity the worker runs. For steps, judges and
  compensations it records wall-clock latency, tokens and cost by provider, and opens a
  span carrying the ids of the trace (workflow id, run id, step, attempt, checkpoints
  seen, sha256 of the output). A verification span links to the span of the step attempt
  it judged (W3C `traceparent` in StepOutput.meta, set only while tracing). It stamps
  `latency_ms` on verdicts and step outputs that lack it, so every activity's decision
  record says how long it took. L1 verdicts are computed in the workflow: their span
  comes from workflows/telemetry.py, when the worker traces workflows. Activities never
  replay, so nothing here is counted twice; the commit loop's decision counters live in
  workflows/telemetry.py.
- `configure_tracing()`: an OpenTelemetry SDK tracer provider from the standard OTEL_*
  variables, when they ask for an exporter and opentelemetry-sdk is installed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from raftline.models import CompensationInput, StepInput, StepOutput, Verdict, VerifyInput
from raftline.workflows.telemetry import SPAN_HOOK

STEP_LATENCY = "raftline_step_latency_seconds"
VERIFY_LATENCY = "raftline_verification_latency_seconds"
COMPENSATION_LATENCY = "raftline_compensation_latency_seconds"
TOKENS = "raftline_tokens_total"
COST = "raftline_cost_usd"

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
COST_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]
BUCKETS: dict[str, list[float]] = {
    STEP_LATENCY: LATENCY_BUCKETS,
    VERIFY_LATENCY: LATENCY_BUCKETS,
    COMPENSATION_LATENCY: LATENCY_BUCKETS,
    COST: COST_BUCKETS,
}


class ObservabilityError(RuntimeError):
    """Metrics or tracing asked for but not possible; the message says what to do."""


# ---------------------------------------------------------------- metrics


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal Runtime serving Prometheus metrics at http://{bind_address}/metrics.

    Pass it to `connect(..., runtime=...)`: the client's workers then report the SDK's
    metrics (temporal_*) and raftline's (raftline_*) on that endpoint.
    """
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=bind_address, histogram_bucket_overrides=BUCKETS
                ),
            )
        )
    except Exception as exc:  # noqa: BLE001 - the core reports a bind failure as a plain error
        raise ObservabilityError(
            f"cannot serve metrics on {bind_address}: {str(exc).splitlines()[0]}"
        ) from None


# ---------------------------------------------------------------- tracing


def _otel_trace() -> Any:
    """opentelemetry.trace, or None when the API is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def tracing_requested(env: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the standard OTEL_* variables ask for (none unless asked)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        # An endpoint alone means OTLP; otherwise raftline exports nothing by default.
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else ""
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]


def _exporter_entry_point(name: str, env: Mapping[str, str]) -> str:
    if name != "otlp":
        return name
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    return "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"


def configure_tracing(
    service_name: str = "raftline", env: Mapping[str, str] | None = None, install: bool = True
) -> Any:
    """An SDK tracer provider with the exporters OTEL_TRACES_EXPORTER names, installed as
    the global one unless `install` is False.

    Returns the provider (call `.shutdown()` to flush at exit), or None when the
    environment asks for no tracing. Exporters are found by their standard entry
    point names: `otlp` (http/protobuf unless OTEL_EXPORTER_OTLP_PROTOCOL=grpc),
    `console`, `zipkin`, ... Sampler, batching and resource come from OTEL_* too.
    """
    env = os.environ if env is None else env
    names = tracing_requested(env)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ObservabilityError(
            f"OTEL_TRACES_EXPORTER={','.join(names)} needs the OpenTelemetry SDK: "
            "pip install 'raftline[otel]'"
        ) from None
    resource = Resource.create()
    if resource.attributes.get(SERVICE_NAME, "").startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for name in names:
        point = _exporter_entry_point(name, env)
        found = entry_points(group="opentelemetry_traces_exporter", name=point)
        if not found:
            raise ObservabilityError(
                f"no OpenTelemetry span exporter {name!r} is installed (entry point {point!r}): "
                "pip install 'raftline[otel]' for OTLP over HTTP"
            )
        exporter_class = next(iter(found)).load()
        provider.add_span_processor(BatchSpanProcessor(exporter_class()))
    if install:
        trace.set_tracer_provider(provider)
    return provider


# ---------------------------------------------------------------- the interceptor


class RaftlineInterceptor(Interceptor):
    """Metrics and spans for every step, verification and compensation a worker runs.

    `tracer`: an OpenTelemetry tracer; default the global provider's (a no-op until
    one is configured). Add `temporalio.contrib.opentelemetry.TracingInterceptor` on the
    client (workflows.client.connect does when tracing is configured) to link these
    spans under the workflow's.
    """

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer
        self._default: Any = None

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next, self)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        # The workflow computes L1 verdicts itself; it reports them through this hook
        # (raftline.workflows.telemetry.verification_span), so it imports no plumbing.
        input.unsafe_extern_functions[SPAN_HOOK] = verification_span
        return None

    def _tracer(self) -> Any:
        if self.tracer is not None:
            return self.tracer
        if self._default is None:
            # A proxy: it follows a tracer provider configured later, so one is enough.
            trace = _otel_trace()
            self._default = trace.get_tracer("raftline") if trace is not None else False
        return self._default or None


class _ActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, root: RaftlineInterceptor) -> None:
        super().__init__(next)
        self.root = root

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        if isinstance(arg, StepInput):
            kind, name = "step", f"step {arg.step}"
        elif isinstance(arg, VerifyInput):
            kind, name = "verify", f"verify {arg.step.name} {arg.tier}"
        elif isinstance(arg, CompensationInput):
            kind, name = "compensate", f"compensate {arg.step}"
        else:  # not one of raftline's contracts: leave it alone
            return await self.next.execute_activity(input)
        info = activity.info()
        attrs = _input_attributes(arg, info)
        started = time.perf_counter()
        outcome = "error"
        # A verification links to the span of the step attempt whose output it judges.
        judged = arg.output.meta.get(TRACEPARENT) if isinstance(arg, VerifyInput) else None
        with _span(self.root._tracer(), name, attrs, judged) as span:
            try:
                result = await self.next.execute_activity(input)
                outcome = "ok"
            finally:
                seconds = time.perf_counter() - started
                _record_latency(kind, arg, info.activity_type, outcome, seconds)
            _stamp_latency(result, seconds)
            _record_usage(kind, result, info.activity_type)
            if span is not None and span.is_recording():
                for key, value in result_attributes(result).items():
                    span.set_attribute(key, value)
                if isinstance(result, StepOutput):
                    result.meta.setdefault(TRACEPARENT, _traceparent(span))
        return result


TRACEPARENT = "traceparent"  # StepOutput.meta key: the W3C id of the step attempt's span


def verification_span(info: Any, base: VerifyInput, verdict: Verdict) -> None:
    """The span of a verdict the workflow computed (L1): beside the run's activity spans,
    linked like a judge's span to the step attempt it checked.

    Called from workflow code through an extern function. Only when the worker traces
    workflows (OpenTelemetry's TracingInterceptor, which records nothing on replay). Uses
    the interceptor's span hook, which can take a link (the public completed_span cannot);
    tests/test_observability.py pins it.
    """
    try:
        from temporalio.contrib.opentelemetry import TracingWorkflowInboundInterceptor
    except ImportError:
        return
    tracing = TracingWorkflowInboundInterceptor._from_context()
    if tracing is None:
        return
    attrs: dict[str, Any] = {
        "raftline.workflow_id": info.workflow_id,
        "raftline.run_id": info.run_id,
        **verify_attributes(base),
        **result_attributes(verdict),
    }
    judged = base.output.meta.get(TRACEPARENT)
    tracing._completed_span(
        f"verify {base.step.name} {verdict.tier}",
        link_context_carrier={TRACEPARENT: judged} if isinstance(judged, str) and judged else None,
        additional_attributes=attrs,
    )


def _traceparent(span: Any) -> str:
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


def _links(traceparent: Any) -> list[Any]:
    if not isinstance(traceparent, str) or not traceparent:
        return []
    from opentelemetry.trace import Link, get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ctx = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    linked = get_current_span(ctx).get_span_context()
    return [Link(linked, {"raftline.link": "judged step"})] if linked.is_valid else []


@contextmanager
def _span(
    tracer: Any, name: str, attrs: dict[str, Any], judged: str | None = None
) -> Iterator[Any]:
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span(
        name,
        attributes=attrs,
        links=_links(judged),
        record_exception=True,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def _input_attributes(arg: Any, info: activity.Info) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "raftline.workflow_id": info.workflow_id or "",
        "raftline.run_id": info.workflow_run_id or "",
        "raftline.activity": info.activity_type,
        "raftline.activity_attempt": info.attempt,  # Temporal's retry, not the step's
    }
    if isinstance(arg, StepInput):
        attrs.update(
            {
                "raftline.pipeline": arg.pipeline,
                "raftline.step": arg.step,
                "raftline.attempt": arg.attempt,
                "raftline.idempotency_key": arg.idempotency_key,
                "raftline.inputs": ref_labels(arg.committed_refs),
            }
        )
        if arg.error_class is not None:
            attrs["raftline.retry_of"] = arg.error_class.value
    elif isinstance(arg, VerifyInput):
        attrs.update(verify_attributes(arg))
    elif isinstance(arg, CompensationInput):
        attrs.update({"raftline.step": arg.step, "raftline.idempotency_key": arg.idempotency_key})
    return attrs


def verify_attributes(arg: VerifyInput) -> dict[str, Any]:
    """What a verification looked at: shared by judge activities and the in-workflow L1."""
    return {
        "raftline.step": arg.step.name,
        "raftline.attempt": arg.attempt,
        "raftline.tier": arg.tier,
        "raftline.inputs": ref_labels(arg.committed_refs),
        "raftline.output_sha256": _sha256(arg.output.text),  # the output judged
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ref_labels(refs: list[Any]) -> list[str]:
    """Committed checkpoints seen, as in the trace: '#seq step sha256-prefix'."""
    return [f"#{r.seq} {r.step} {r.sha256[:12]}" for r in refs]


def result_attributes(result: Any) -> dict[str, Any]:
    if isinstance(result, Verdict):
        attrs: dict[str, Any] = {
            "raftline.passed": result.passed,
            "raftline.tier": result.tier,
            "raftline.verifier": result.verifier,
            "raftline.confidence": result.confidence,
            "raftline.degraded": result.degraded,
        }
        if result.error_class is not None:
            attrs["raftline.error_class"] = result.error_class.value
        for key in ("model", "prompt_version", "latency_ms"):
            if getattr(result, key) is not None:
                attrs[f"raftline.{key}"] = getattr(result, key)
        usage = result.usage
    elif isinstance(result, StepOutput):
        # The same hash as the trace's `output` event: spans and trace line up.
        attrs = {"raftline.output_sha256": _sha256(result.text)}
        if result.model:
            attrs["raftline.model"] = result.model
        usage = result.usage
    else:
        return {}
    attrs.update(
        {
            "raftline.input_tokens": usage.input_tokens,
            "raftline.output_tokens": usage.output_tokens,
            "raftline.cost_usd": usage.cost_usd,
        }
    )
    return attrs


def _meter() -> MetricMeter | None:
    try:
        return activity.metric_meter()
    except RuntimeError:  # a non-threaded sync activity has no meter
        return None


def _record_latency(kind: str, arg: Any, activity_type: str, outcome: str, seconds: float) -> None:
    meter = _meter()
    if meter is None:
        return
    if kind == "step":
        meter.create_histogram_float(
            STEP_LATENCY, "Wall time of one step attempt (Temporal retries included)", "s"
        ).record(seconds, {"pipeline": arg.pipeline, "step": arg.step, "outcome": outcome})
    elif kind == "verify":
        meter.create_histogram_float(
            VERIFY_LATENCY, "Wall time of one judge call (L1 rules run in the workflow)", "s"
        ).record(seconds, {"tier": arg.tier, "verifier": activity_type, "outcome": outcome})
    else:
        meter.create_histogram_float(
            COMPENSATION_LATENCY, "Wall time of one compensation attempt", "s"
        ).record(seconds, {"step": arg.step, "outcome": outcome})


def _stamp_latency(result: Any, seconds: float) -> None:
    """Every verdict and step output says how long it took, if it did not say already."""
    ms = round(seconds * 1000, 2)
    if isinstance(result, Verdict) and result.latency_ms is None:
        result.latency_ms = ms
    elif isinstance(result, StepOutput):
        result.meta.setdefault("latency_ms", ms)


def provider_of(result: Any, activity_type: str) -> str:
    """The LLM provider behind a step output or verdict; the activity name otherwise."""
    if isinstance(result, StepOutput):
        return str(result.meta.get("provider") or activity_type)
    if isinstance(result, Verdict):
        prefix, sep, rest = result.verifier.partition(":")
        return rest if sep and prefix == "llm" else result.verifier
    return activity_type


def _record_usage(kind: str, result: Any, activity_type: str) -> None:
    if not isinstance(result, (StepOutput, Verdict)):
        return
    usage = result.usage
    if not usage.input_tokens and not usage.output_tokens and not usage.cost_usd:
        return
    meter = _meter()
    if meter is None:
        return
    labels = {
        "provider": provider_of(result, activity_type),
        "model": result.model or "",
        "role": "judge" if kind == "verify" else "step",
    }
    tokens = meter.create_counter(TOKENS, "LLM tokens, by provider, model and direction")
    tokens.add(usage.input_tokens, {**labels, "direction": "input"})
    tokens.add(usage.output_tokens, {**labels, "direction": "output"})
    meter.create_histogram_float(
        COST, "Cost of one LLM call in USD (the _sum is the spend)", "USD"
    ).record(usage.cost_usd, labels)
