"""raftline worker: the pipeline workflow, the built-in activities and user modules.

python worker.py [--task-queue Q] [--activities MODULE ...] [--max-activities N]
                 [--activities-only] [--metrics-port N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import py_compile
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.util import MAGIC_NUMBER, cache_from_source
from types import ModuleType
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from raftline.activities.registry import ModuleError, activity_name, collect
from raftline.client import ConfigError, TemporalUnreachable, temporal_client
from raftline.observability import (
    ObservabilityError,
    RaftlineInterceptor,
    configure_tracing,
    metrics_runtime,
)
from raftline.redaction import RedactingInterceptor, Redactor
from raftline.references import ReferencesInterceptor
from raftline.settings import task_queue
from raftline.workflows.pipeline import VerifiedPipeline

log = structlog.get_logger("raftline.worker")


def configure_logging(json_logs: bool = True, level: int = logging.INFO) -> None:
    """structlog for our own logs and the SDK's stdlib logs alike, JSON by default."""
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso"),
        _lift_raftline_fields,
        Redactor(),  # last: secrets never reach a log line (redaction.py)
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _lift_raftline_fields(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Workflow logs carry their fields in `extra={"raftline": {...}}`: make them top-level."""
    record = event.get("_record")
    fields = getattr(record, "raftline", None)
    if isinstance(fields, dict):
        event.update({k: v for k, v in fields.items() if v is not None})
        wf = getattr(record, "temporal_workflow", None)
        if isinstance(wf, dict):
            event["workflow_id"] = wf.get("workflow_id")
            event["run_id"] = wf.get("run_id")
    return event


# Workflow logs go through structlog's stdlib formatter, which imports lazily: let the
# sandbox reuse the already-loaded modules instead of re-importing them restricted.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "structlog", "rich", "pydantic", "yaml", "raftline.workflows.pipeline"
    )
)


def build_worker(
    client: Client,
    queue: str | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
    max_activities: int = 100,
    max_workflow_tasks: int = 100,
    workflows: bool = True,
    interceptors: Sequence[Any] | None = None,
    **options: Any,
) -> Worker:
    """A worker for the pipeline workflow and the given activities.

    `interceptors` replace the default RaftlineInterceptor (metrics, spans: observability.py);
    the client's interceptors (e.g. OpenTelemetry's TracingInterceptor) always apply first.
    `options` go to temporalio's Worker as they are (e.g. max_cached_workflows).
    """
    acts = list(activities) if activities is not None else collect()
    if workflows:
        cache_bytecode(sys.modules[VerifiedPipeline.__module__])
    # Outermost first: the observability spans see errors after redaction.
    ours = [RaftlineInterceptor()] if interceptors is None else list(interceptors)
    return Worker(
        client,
        task_queue=queue or task_queue(),
        workflows=[VerifiedPipeline] if workflows else [],
        workflow_runner=options.pop("workflow_runner", WORKFLOW_RUNNER),
        activities=acts,
        # Innermost: committed outputs by reference, and heartbeats for compensations.
        interceptors=[*ours, RedactingInterceptor(), ReferencesInterceptor()],
        max_concurrent_activities=max_activities,
        max_concurrent_workflow_tasks=max_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=10),
        # A SIGKILLed worker's sticky workflow tasks move to another worker after this.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
        **options,
    )


def cache_bytecode(module: ModuleType) -> None:
    """Write the module's .pyc if it is missing or stale, even under PYTHONDONTWRITEBYTECODE.

    The sandbox imports a workflow's module afresh for every run it starts; without a
    .pyc (a fresh clone, or containers that set PYTHONDONTWRITEBYTECODE) each import
    compiles the source again: ~10 ms of worker CPU per run for workflows/pipeline.py.
    A read-only install simply keeps paying it.
    """
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return
    try:
        cached = cache_from_source(source)
        if _bytecode_fresh(source, cached):
            return
        py_compile.compile(source, cfile=cached, doraise=True)
    except (OSError, py_compile.PyCompileError) as err:
        log.debug("bytecode not cached", module=module.__name__, error=str(err))


def _bytecode_fresh(source: str, cached: str) -> bool:
    """The import system's own test: the .pyc header records the source's mtime and size."""
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
    except OSError:
        return False
    st = os.stat(source)
    return (
        len(header) == 16
        and header[:4] == MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0  # timestamp-based, not hash-based
        and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="raftline-worker", description=__doc__.splitlines()[0])
    p.add_argument("--task-queue", default=None, help="default: $RAFTLINE_TASK_QUEUE or raftline")
    p.add_argument(
        "--activities",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="Python modules whose @activity.defn functions to register",
    )
    p.add_argument("--max-activities", type=int, default=100, help="concurrent activities")
    p.add_argument("--max-workflow-tasks", type=int, default=100, help="concurrent workflow tasks")
    p.add_argument(
        "--activities-only",
        action="store_true",
        help="serve only activities (a bulkhead queue for one step or judge type), no workflows",
    )
    p.add_argument("--address", default=None, help="default: $TEMPORAL_ADDRESS or localhost:7233")
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs, not JSON")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("RAFTLINE_METRICS_PORT") or None,  # argparse applies type=int
        metavar="N",
        help="serve Prometheus metrics at :N/metrics (default: $RAFTLINE_METRICS_PORT, off)",
    )
    p.add_argument(
        "--metrics-host",
        default=os.environ.get("RAFTLINE_METRICS_HOST", "0.0.0.0"),
        help="interface of the metrics endpoint (default: $RAFTLINE_METRICS_HOST or 0.0.0.0)",
    )
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    try:
        acts = collect(args.activities)
    except ModuleError as exc:
        print(f"raftline-worker: {exc}", file=sys.stderr)
        return 2
    if args.max_activities < 1 or args.max_workflow_tasks < 1:
        print("raftline-worker: concurrency limits must be at least 1", file=sys.stderr)
        return 2
    try:
        # Tracing (OTEL_* variables) before connecting: temporal_client() then adds Temporal's
        # TracingInterceptor, which this client's workers inherit.
        tracer_provider = configure_tracing("raftline-worker")
        runtime = (
            metrics_runtime(f"{args.metrics_host}:{args.metrics_port}")
            if args.metrics_port
            else None
        )
    except ObservabilityError as exc:
        print(f"raftline-worker: {exc}", file=sys.stderr)
        return 2
    try:
        # The settings, the address and the namespace first: each is one line, not a
        # traceback from the first poll (raftline/session.py).
        from raftline.embedded import split_address
        from raftline.sessions import check_namespace, connect_settings

        address = str(connect_settings(args.address)["target_host"])
        split_address(address)
        client = await temporal_client(args.address, **({"runtime": runtime} if runtime else {}))
        await check_namespace(client, address)
    except TemporalUnreachable as exc:
        print(f"raftline-worker: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"raftline-worker: {exc}", file=sys.stderr)
        return 2
    worker = build_worker(
        client,
        args.task_queue,
        acts,
        args.max_activities,
        args.max_workflow_tasks,
        workflows=not args.activities_only,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        task_queue=args.task_queue or task_queue(),
        namespace=client.namespace,
        workflows=not args.activities_only,
        max_activities=args.max_activities,
        activities=sorted(activity_name(a) for a in acts),
        metrics=f"http://{args.metrics_host}:{args.metrics_port}/metrics"
        if args.metrics_port
        else None,
        tracing=tracer_provider is not None,
    )
    async with worker:
        await stop.wait()
        log.info("worker stopping: finishing in-flight tasks")
    if tracer_provider is not None:
        tracer_provider.shutdown()  # flush the spans still in the batch
    log.info("worker stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(json_logs=not args.plain_logs)
    code = asyncio.run(serve(args))
    gc.collect()  # free the client and worker before interpreter exit (sdk-python#300)
    return code


if __name__ == "__main__":
    sys.exit(main())
