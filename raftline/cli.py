"""raftline: start, follow and inspect verified pipeline runs.

Exit codes: 0 the run completed verified; 1 it ended without success; 2 bad input, usage
or configuration; 3 Temporal unreachable or infrastructure; 130/143 interrupted by
SIGINT/SIGTERM (a run the command started is canceled and compensated first).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.exceptions import CancelledError as TemporalCancelled
from temporalio.service import RPCError
from temporalio.worker import Replayer

from raftline import cli_runs
from raftline.activities.registry import ModuleError, activity_name, check_spec, collect
from raftline.client import (
    ConfigError,
    RaftlineError,
    Refused,
    RunExists,
    RunHandle,
    RunNotFound,
    TemporalUnreachable,
    run_rpc_error,
)
from raftline.codec import DecryptionError
from raftline.embedded import LOCAL_HOSTS, embedded_for, port_open, split_address
from raftline.history import (
    has_pollers,
    no_worker_message,
    status_from_history,
    unpolled_task_queues,
    workflow_task_problem,
)
from raftline.models import (
    EventType,
    PipelineSpec,
    RunResult,
    RunStatus,
    SpecError,
    StatusView,
    Task,
    TraceEvent,
)
from raftline.sessions import CANCEL_WAIT_S, Session, connect_settings
from raftline.settings import raftline_home
from raftline.workflows.pipeline import VerifiedPipeline

# Shipped as package data (raftline.examples is the repository's examples/ folder).
DEMO_PIPELINE = Path(str(files("raftline.examples") / "board_memo.yaml"))
DEMO_GOAL = "Recommend whether Acme should expand its bike-sharing service into Oslo in 2027"
DEMO_INPUTS = {
    "market": "Oslo has 720,000 residents and 41 km of new bike lanes since 2022.",
    "finance": "Expansion needs 4.2 million EUR; the board's payback limit is 3 years.",
}
# A running run's status query: a live worker answers in milliseconds.
STATUS_QUERY_TIMEOUT = timedelta(seconds=1)
# How often the live view asks whether the run waits on a task queue nobody polls.
QUEUE_CHECK_S = 3.0


# Another way to start a run than client.start (a fork): given the session and whether
# to run an in-process worker, the coroutine that starts it and the line that names it.
Starter = Callable[["Session", bool], tuple[Awaitable["RunHandle"], str]]


class UsageError(Exception):
    """Bad input or usage: exit 2 with this one-line message."""


# ---------------------------------------------------------------- signals


class Interrupts:
    """SIGINT and SIGTERM while a command runs.

    The first cancels the command's task: the command cleans up on the way out (a run it
    started is canceled and its compensations waited for; the worker and the embedded
    server stop). The second leaves at once, saying in one line what is left.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.task: asyncio.Task[Any] | None = None
        self.session: Session | None = None
        self.run_id: str | None = None  # a run being canceled: left behind if we leave now

    def install(self) -> None:
        """Route both signals to the running task (the command), from a clean slate."""
        self.signum, self.session, self.run_id = None, None, None
        self.task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # Windows; not the main thread
                return

    @property
    def code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the task usable again) when a signal
        caused it, so the command can clean up and return `code`."""
        if self.signum is None:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def _on_signal(self, sig: int) -> None:
        if self.signum is None:
            self.signum = sig
            if self.task is not None:
                self.task.cancel()
            return
        self.leave_now()

    def leave_now(self) -> NoReturn:
        left: list[str] = []
        address = self.session.address if self.session is not None else ""
        if self.run_id:
            left.append(
                f"run {self.run_id} is left canceling on Temporal at {address} (a worker "
                f"finishes its compensations; see `raftline status {self.run_id}`)"
            )
        stopping = self.session.abandon() if self.session is not None else None
        if stopping:
            left.append(f"the embedded server at {stopping} is stopping")
        sys.stdout.flush()
        after_countdown = "\n" if sys.stderr.isatty() else ""
        progress(
            f"{after_countdown}raftline: leaving at once" + (": " + "; ".join(left) if left else "")
        )
        os._exit(self.code)


INTERRUPTS = Interrupts()


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (also in the background, where SIGINT is ignored by
    default); the caller then shuts down as usual."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not INTERRUPTS.absorb():
            raise


# ---------------------------------------------------------------- session


def open_session(
    args: argparse.Namespace,
    *,
    embed: bool,
    worker: bool | None,
    modules: Sequence[str] = (),
) -> Session:
    """The one Session (raftline/session.py) that raftline.run uses too. `worker` None:
    an in-process worker only when this command started the embedded server."""
    session = Session(
        getattr(args, "address", None),
        embed=embed,
        worker=worker,
        modules=modules,
        progress=progress,
    )
    INTERRUPTS.session = session
    return session


def embedded_db_exists() -> bool:
    return (raftline_home() / "temporal.db").exists()


async def run_handle(session: Session, workflow_id: str) -> RunHandle:
    """A run's handle; a canceled run's record is a query, which needs a worker."""
    handle = session.client.get(workflow_id)
    if await handle.execution_status() == WorkflowExecutionStatus.CANCELED:
        await session.start_worker()
    return handle


# ---------------------------------------------------------------- output


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


class OneLine(logging.Formatter):
    """Log records as one `raftline: warning: ...` line each: no tracebacks on stderr (the
    live view and `raftline trace` already tell what failed), secrets redacted. With
    RAFTLINE_LOG_LEVEL=10 (debug) the traceback follows the line."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        from raftline.redaction import Redactor

        self.redact = Redactor().text
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        act = getattr(record, "temporal_activity", None)
        if isinstance(act, dict) and record.exc_info:
            message = (
                f"activity {act.get('activity_type')} of {act.get('workflow_id')} failed "
                f"(attempt {act.get('attempt')})"
            )
        else:
            message = record.getMessage().split(" ({", 1)[0]  # the SDK appends a context dict
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            message += f": {type(err).__name__}: {str(err).strip()}"
        line = " ".join(self.redact(message).split())
        text = f"raftline: {record.levelname.lower()}: {short(line, 300)}"
        if self.tracebacks and record.exc_info:
            text += "\n" + self.redact(self.formatException(record.exc_info))
        return text


def configure_cli_logging(level: int) -> None:
    """stdlib and structlog records alike to stderr, one line each; stdout is the CLI's."""
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _structlog_line,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine(tracebacks=level <= logging.DEBUG))
    handler.addFilter(_not_benign)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Temporal's Rust core logs through Python too (else it prints colored lines itself).
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    core = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"), append_log_fields_to_message=False
        ),
    )
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(logging=core)), error_if_already_set=False
    )


# A step still running when its canceled run has ended completes into the void; the
# core says so. Nothing is wrong.
BENIGN = ("Activity not found on completion",)


def _not_benign(record: logging.LogRecord) -> bool:
    err = record.exc_info[1] if record.exc_info else None
    if isinstance(err, asyncio.CancelledError | TemporalCancelled):
        return False  # a step canceled with its run: the live view says so
    message = record.getMessage()
    return not any(b in message for b in BENIGN)


def _structlog_line(_: Any, __: str, event: dict[str, Any]) -> str:
    """A structlog event as one line of `event key=value ...` (OneLine adds the prefix)."""
    text = str(event.pop("event", ""))
    event.pop("level", None)
    extras = " ".join(f"{k}={v}" for k, v in event.items() if k != "exc_info")
    return f"{text} {extras}".strip()


def short(text: str | None, width: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def describe_event(e: TraceEvent) -> str:
    """One line per protocol event, for the live view and the trace."""
    name = f"{e.step}[{e.item}]" if e.step and e.item is not None else e.step
    step = f"{name:<14}" if name else " " * 14
    v = e.verdict
    by = ""
    if v is not None:
        extras = [v.model, v.prompt_version]
        if v.usage.tokens:
            extras.append(f"{v.usage.tokens} tok")
        if v.latency_ms is not None:
            extras.append(f"{v.latency_ms:.0f} ms")
        detail = " · ".join(x for x in extras if x)
        by = f"[{v.tier} {v.verifier}{' · ' + detail if detail else ''}"
        by += ", degraded]" if v.degraded else "]"
    match e.type:
        case EventType.RUN_STARTED:
            return f"run started: {e.message}"
        case EventType.STEP_STARTED:
            # Its direct needs' checkpoints (and, through them, everything upstream).
            seen = ",".join(f"#{r.seq}" for r in e.inputs) or "none"
            hinted = f", with hint: {e.hint}" if e.hint else ""
            return f"{step} attempt {e.attempt}: started (sees checkpoints {seen}){hinted}"
        case EventType.OUTPUT:
            return f"{step} attempt {e.attempt}: output sha256 {e.sha256[:12] if e.sha256 else ''}"
        case EventType.VERDICT:
            assert v is not None
            if v.passed:
                return f"{step} attempt {e.attempt}: PASS {by} {short(e.message or v.reason, 70)}"
            return f"{step} attempt {e.attempt}: FAIL {v.error_class} {by} {short(v.reason, 70)}"
        case EventType.STEP_ERROR:
            return f"{step} attempt {e.attempt}: STEP_ERROR {short(e.message, 80)}"
        case EventType.COMMITTED:
            line = f"{step} attempt {e.attempt}: committed checkpoint #{e.checkpoint_seq}"
            if e.verdict is not None and e.verdict.degraded:
                line += " DEGRADED (no judge verdict: on_judge_unavailable: degrade)"
            return line
        case EventType.JUDGE_UNAVAILABLE:
            return f"{step} attempt {e.attempt}: NO VERDICT: {short(e.message, 120)}"
        case EventType.REUSED:
            return f"{step} reused: {e.message}"
        case EventType.SKIPPED:
            return f"{step} skipped: {e.message}"
        case EventType.REVIEW_PENDING:
            return f"{step} attempt {e.attempt}: REVIEW PENDING: {e.message}"
        case EventType.REVIEW_DECIDED:
            return f"{step} attempt {e.attempt}: review {e.message}"
        case EventType.ATTENTION_NEEDED:
            return f"NEEDS ATTENTION: {e.message}"
        case EventType.ATTENTION_RESOLVED:
            return f"attention: {e.message}"
        case EventType.ROLLED_BACK:
            return f"{step} attempt {e.attempt}: rolled back to checkpoint #{e.checkpoint_seq}"
        case EventType.RETRY:
            # The hint is the "why" of the retry: print it whole.
            return f"{step} attempt {e.attempt}: retry with hint: {short(e.hint, 1000)}"
        case EventType.BREAKER_OPEN:
            return f"{step} circuit breaker OPEN: {e.message}"
        case EventType.BREAKER_HALF_OPEN:
            return f"{step} circuit breaker half-open: {e.message}"
        case EventType.BREAKER_CLOSED:
            return f"{step} circuit breaker closed: {e.message}"
        case EventType.BUDGET_EXCEEDED:
            return f"{step} budget exceeded: {e.message}"
        case EventType.COMPENSATION_STARTED:
            if e.checkpoint_seq is None:
                return f"{step} compensating rolled-back attempt {e.attempt} with {e.message}"
            return f"{step} compensating checkpoint #{e.checkpoint_seq} with {e.message}"
        case EventType.COMPENSATED:
            return f"{step} compensated ({e.message})"
        case EventType.COMPENSATION_FAILED:
            return f"{step} COMPENSATION FAILED: {short(e.message, 80)}"
        case EventType.RUN_COMPLETED | EventType.RUN_FAILED | EventType.RUN_CANCELED:
            return f"run {e.type.value.removeprefix('run_')}: {e.message}"
    return f"{step} {e.type.value} {e.message}"


def summary(result: RunResult, ui: str | None) -> dict[str, Any]:
    """The `--json` summary; a run that did not complete has no output to show (its
    committed steps were compensated, or it failed)."""
    s = result.summary(ui)
    if result.status is not RunStatus.COMPLETED:
        s["output"] = None
    return s


def print_summary(result: RunResult, ui: str | None) -> None:
    s = result.summary(ui)
    degraded = f" ({s['degraded']} more DEGRADED: no judge verdict)" if s["degraded"] else ""
    print(
        f"\n{result.status.value}: {s['verified']} steps verified{degraded}, "
        f"{s['rollbacks']} rollbacks, "
        f"{s['retries']} retries, {s['compensations']} compensations, "
        f"{s['breaker_trips']} breaker trips, reliability {s['reliability']:.2f}"
    )
    u = result.usage
    print(f"usage: {u.input_tokens} in / {u.output_tokens} out tokens, ${u.cost_usd:.4f}")
    if result.error:
        print(f"reason: {result.error}")
    if result.status is RunStatus.COMPLETED:
        if result.output:
            print("output:\n" + textwrap.indent(textwrap.shorten(result.output, 600), "  "))
    elif result.compensations:
        failed = sum(1 for c in result.compensations if not c.ok)
        total = len(result.compensations)
        if failed:
            print(
                f"output: withheld; {failed} of {total} compensations failed, so committed "
                "side effects may remain"
            )
        else:
            undid = f"{total} compensation{'s' if total > 1 else ''} undid"
            print(f"output: retracted ({undid} the committed steps)")
    elif result.verified:
        print("output: none (the run did not complete)")
    if ui:
        print(f"Web UI: {ui}")


def report(result: RunResult, args: argparse.Namespace, ui: str | None) -> None:
    if args.json:
        emit_json(summary(result, ui))
    else:
        print_summary(result, ui)


# ---------------------------------------------------------------- spec loading


def parse_inputs(pairs: Sequence[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r}: expected KEY=VALUE")
        inputs[key.strip()] = value
    return inputs


def load_spec(
    path: str, extra_modules: Sequence[str], inputs: dict[str, str] | None = None
) -> PipelineSpec:
    """Parse and check a pipeline before anything starts: every activity must exist, the
    built-in steps' params make sense, and every {placeholder} has a value."""
    spec = PipelineSpec.from_yaml(path)
    try:
        known = {activity_name(fn) for fn in collect([*spec.modules, *extra_modules])}
    except ModuleError as exc:
        raise UsageError(f"{path}: {exc}") from None
    check_spec(
        spec,
        known,
        path,
        "add its module under `modules:` or pass --activities MODULE",
        inputs=inputs,
    )
    return spec


# ---------------------------------------------------------------- following a run


class Follower:
    """Prints a run's events as they happen (resumable: it remembers the last seq), and
    says when the run waits on a task queue no worker polls."""

    def __init__(self, session: Session, handle: RunHandle, live: bool) -> None:
        self.session = session
        self.handle = handle
        self.live = live
        self.seen = 0
        self.reported: set[str] = set()

    async def run(self) -> RunResult:
        watch = asyncio.create_task(self._watch_queues())
        try:
            async for event in self.handle.events(after=self.seen):
                self.seen = event.seq
                if self.live and event.type is not EventType.OUTPUT:  # the hash is for trace
                    print(describe_event(event), flush=True)
            return await self.handle.result()
        finally:
            watch.cancel()

    async def _watch_queues(self) -> None:
        problem: str | None = None
        while True:
            await asyncio.sleep(QUEUE_CHECK_S)
            try:
                queues = await unpolled_task_queues(self.session.client.client, self.handle.id)
                now = await workflow_task_problem(self.session.client.client, self.handle.id)
            except (RPCError, RaftlineError):
                continue
            if now and now != problem:
                self.say(now)
            problem = now
            for queue in queues:
                if queue not in self.reported:
                    self.say(no_worker_message(queue))
            self.reported = set(queues)  # said again if it recurs later

    def say(self, message: str) -> None:
        if self.live:
            print(f"{'':14} waiting: {message}", flush=True)
        else:
            progress(f"raftline: warning: {message}")


async def show_countdown(run_id: str, seconds: float) -> None:
    """The time left for an interrupted run's compensations, on stderr."""
    tty = sys.stderr.isatty()
    left = int(seconds)
    try:
        while left > 0:
            if tty:
                print(
                    f"\rraftline: waiting for run {run_id} to compensate: {left:>2} s left "
                    f"({INTERRUPTS.name} again to leave now) ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            elif left % 10 == 0 and left != int(seconds):
                progress(f"raftline: waiting for run {run_id} to compensate: {left} s left")
            await asyncio.sleep(1)
            left -= 1
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


async def cancel_interrupted(
    handle: RunHandle, follower: Follower, args: argparse.Namespace, ui: str | None
) -> int:
    """Ctrl-C or SIGTERM during a run this command started: cancel it, follow its
    compensations for up to CANCEL_WAIT_S (the in-process worker runs them), report."""
    INTERRUPTS.run_id = handle.id
    progress(
        f"raftline: {INTERRUPTS.name}: canceling run {handle.id}; its committed steps are "
        f"compensated (waiting up to {CANCEL_WAIT_S:.0f} s; {INTERRUPTS.name} again leaves now)"
    )
    try:
        await handle.cancel()
    except RunNotFound:
        pass  # it ended in the meantime: its result says how
    countdown = asyncio.create_task(show_countdown(handle.id, CANCEL_WAIT_S))
    try:
        result = await asyncio.wait_for(follower.run(), CANCEL_WAIT_S)
    except TimeoutError:
        progress(
            f"raftline: run {handle.id} did not finish canceling in {CANCEL_WAIT_S:.0f} s: "
            f"a worker finishes its compensations (see `raftline status {handle.id}`)"
        )
        return INTERRUPTS.code
    except RaftlineError as exc:
        progress(f"raftline: run {handle.id} canceled; its record cannot be read: {exc}")
        return INTERRUPTS.code
    finally:
        countdown.cancel()
        await asyncio.gather(countdown, return_exceptions=True)
    INTERRUPTS.run_id = None
    report(result, args, ui)
    done = sum(1 for c in result.compensations if c.ok)
    progress(
        f"raftline: interrupted: run {handle.id} ended {result.status.value} "
        f"({done} compensation{'s' if done != 1 else ''} done)"
    )
    return INTERRUPTS.code


# ---------------------------------------------------------------- commands


async def start_and_follow(
    args: argparse.Namespace,
    spec: PipelineSpec | None,
    task: Task | None,
    embed: bool = True,
    starter: Starter | None = None,
) -> int:
    """Start a run (`starter`: another way to start one, e.g. a fork, given the session;
    it starts the worker itself once it knows the pipeline) and follow it to its end."""
    # An in-process worker unless detached or told not to: extra workers on a queue are
    # harmless, and asking the server whether one polls is unreliable after a crash.
    want_worker = not (args.detach or args.no_worker)
    async with open_session(
        args,
        embed=not args.detach and embed,
        worker=want_worker and starter is None,
        modules=[*args.activities, *(spec.modules if spec else [])],
    ) as session:
        if starter is None:
            assert spec is not None and task is not None
            workflow_id = args.id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
            start = session.client.start(spec, task, id=workflow_id)
            title = f"run {{id}} of {spec.name}: {task.goal}"
        else:
            start, title = starter(session, want_worker)
        if args.detach and await session.no_workers():
            progress(f"note: {no_worker_message(session.client.task_queue)}, or the run waits")
        # Started whatever happens next: a signal during the call waits for it, so the
        # run it may have created is known (and canceled).
        starting = asyncio.ensure_future(start)
        try:
            handle = await asyncio.shield(starting)
            interrupted = False
        except asyncio.CancelledError:
            if not INTERRUPTS.absorb():
                starting.cancel()
                raise
            handle, interrupted = await starting, True
        ui = session.ui_url(handle.id)
        if args.detach:  # a detached run is never touched: not even by a signal
            if args.json:
                emit_json({"workflow_id": handle.id, "status": "running", "ui_url": ui})
            else:
                print(f"started {handle.id}" + (f"\nWeb UI: {ui}" if ui else ""))
            return INTERRUPTS.code if interrupted else 0
        follower = Follower(session, handle, live=not args.json)
        if interrupted:
            return await cancel_interrupted(handle, follower, args, ui)
        if not args.json:
            print(title.format(id=handle.id))
        try:
            result = await follower.run()
        except asyncio.CancelledError:
            if not INTERRUPTS.absorb():
                raise
            return await cancel_interrupted(handle, follower, args, ui)
        report(result, args, ui)
        if getattr(args, "wait", False) and session.server is not None and session.ui_url():
            progress(
                f"The Web UI stays up at {session.ui_url()} until you press Ctrl-C "
                "(use --no-wait to exit at once)."
            )
            await until_stopped()
        return 0 if result.success else 1


async def cmd_run(args: argparse.Namespace) -> int:
    if not args.goal or not args.goal.strip():
        raise UsageError("--goal must not be empty")
    inputs = parse_inputs(args.input)
    spec = load_spec(args.pipeline, args.activities, inputs)
    return await start_and_follow(args, spec, Task(goal=args.goal, inputs=inputs))


async def cmd_demo(args: argparse.Namespace) -> int:
    spec = load_spec(str(DEMO_PIPELINE), [], DEMO_INPUTS)
    args.detach, args.no_worker, args.id, args.activities = False, False, None, []
    args.wait = not args.no_wait
    return await start_and_follow(args, spec, Task(goal=DEMO_GOAL, inputs=DEMO_INPUTS))


def status_of_result(result: RunResult) -> dict[str, Any]:
    return {
        "workflow_id": result.workflow_id,
        "pipeline": result.pipeline,
        "status": result.status.value,
        "current_step": result.failed_step,
        "reason": result.error,  # why a run that did not complete ended
        "verified": f"{result.verified}/{result.steps_total}",
        "degraded": result.degraded,
        "skipped": result.skipped,
        "breaker": {"trips": result.breaker_trips},
        "checkpoints": [
            {"seq": c.seq, "step": c.step, "sha256": c.sha256, "attempt": c.attempt}
            for c in result.checkpoints
        ],
    }


def status_of_view(st: StatusView) -> dict[str, Any]:
    return {
        "workflow_id": st.workflow_id,
        "pipeline": st.pipeline,
        "status": st.status.value,
        "current_step": st.current_step,
        "attempt": st.attempt,
        "verified": f"{st.verified}/{st.steps_total}",
        "degraded": st.degraded,
        "breaker": st.breaker.model_dump(),
        "checkpoints": [r.model_dump() for r in st.checkpoints],
        "steps": [v.model_dump(exclude_none=True) for v in st.steps],
        "reviews": [r.model_dump(mode="json", exclude={"output"}) for r in st.reviews],
        "waiting": st.waiting,
    }


def status_of_attributes(workflow_id: str, desc: Any) -> dict[str, Any]:
    """What the index says, when neither a query nor a replay can tell more."""
    attrs = {p.key.name: p.value for p in desc.typed_search_attributes}
    return {
        "workflow_id": workflow_id,
        "pipeline": attrs.get("RaftPipeline") or "",
        "status": attrs.get("RaftStatus") or "running",
        "current_step": attrs.get("RaftStep"),
        "verified": "?",
        "breaker": {},
        "checkpoints": [],
        "source": "from the index: the workflow task is failing",
    }


async def live_status(session: Session, workflow_id: str, queue: str) -> dict[str, Any]:
    """A running run's status: its own answer when a worker serves it, else rebuilt from
    its history here (within a second, not after the query's long timeout)."""
    client = session.client.client
    reason = "no worker is running"
    if await has_pollers(client, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW):
        try:
            st: StatusView = await client.get_workflow_handle(workflow_id).query(
                VerifiedPipeline.status, rpc_timeout=STATUS_QUERY_TIMEOUT
            )
            return {**status_of_view(st), "source": "query"}
        except (WorkflowQueryFailedError, RPCError):
            reason = "no worker answered"
    view = status_of_view(await status_from_history(client, workflow_id))
    return {**view, "source": f"from history: {reason}"}


async def cmd_status(args: argparse.Namespace) -> int:
    # No worker: status only reads (a worker here would resume the run as a side effect).
    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        raw = session.client.client.get_workflow_handle(args.id)
        try:
            desc = await raw.describe()
        except RPCError as err:
            raise run_rpc_error(args.id, err) from None
        queues: list[str] = []
        problem: str | None = None
        if desc.status == WorkflowExecutionStatus.RUNNING:
            queue = desc.raw_description.execution_config.task_queue.name or desc.task_queue
            problem = await workflow_task_problem(session.client.client, args.id)
            try:
                view = await live_status(session, args.id, queue)
            except Exception:  # noqa: BLE001 - the code that fails the task fails a replay too
                if problem is None:
                    raise
                view = status_of_attributes(args.id, desc)
            queues = await unpolled_task_queues(session.client.client, args.id)
            view["unpolled_task_queues"] = queues
            view["problem"] = problem
        elif desc.status == WorkflowExecutionStatus.CANCELED:  # no result: its history tells
            view = status_of_view(await status_from_history(session.client.client, args.id))
            view["reason"] = "run canceled"
        else:
            view = status_of_result(await session.client.get(args.id).result())
            try:  # each step's final state (skipped, failed, compensated), from the history
                replayed = await status_from_history(session.client.client, args.id)
                view["steps"] = [v.model_dump(exclude_none=True) for v in replayed.steps]
            except RaftlineError:
                pass  # the result above says what matters
        view["ui_url"] = session.ui_url(args.id)
        if args.json:
            emit_json(view)
            return 0
        source = view.get("source", "")
        mark = f" ({source})" if source.startswith("from history") else ""
        degraded = (
            f", {view['degraded']} DEGRADED (no judge verdict)" if view.get("degraded") else ""
        )
        print(
            f"{view['workflow_id']} ({view['pipeline']}): {view['status']}, "
            f"{view['verified']} verified{degraded}{mark}"
        )
        if problem:
            print(problem)
        if view.get("reason"):
            print(f"reason: {view['reason']}")
        if view.get("current_step") and "reason" in view:
            print(f"ended at step: {view['current_step']}")
        elif view.get("current_step"):
            print(f"current step: {view['current_step']} attempt {view.get('attempt', '-')}")
        steps = view.get("steps") or []
        if len(steps) > 1 and any(s["state"] not in ("verified", "waiting") for s in steps):
            for st in steps:
                extra = f" items {st['items']}" if st.get("items") else ""
                flag = " DEGRADED" if st.get("degraded") else ""
                print(f"  {st['name']:<20} {st['state']}{extra}{flag}")
        from raftline.cli_runs import decide_commands

        for review in view.get("reviews") or []:
            item = review.get("item_index")
            print(
                f"review pending: {review['step']}"
                + (f"[{item}]" if item is not None else "")
                + f" attempt {review['attempt']} ({review['why']}), deadline "
                f"{review['deadline']}: "
                + decide_commands(view["workflow_id"], review["step"], item, review["why"])
            )
        if view.get("waiting"):
            print(f"waiting: {view['waiting']}")
        breaker = view["breaker"]
        print("breaker: " + ", ".join(f"{k} {v}" for k, v in breaker.items()))
        for c in view["checkpoints"]:
            print(f"  checkpoint #{c['seq']} {c['step']} sha256 {c['sha256'][:12]}")
        for queue in queues:
            print(f"waiting: {no_worker_message(queue)}")
        if view["ui_url"]:
            print(f"Web UI: {view['ui_url']}")
        return 0


async def cmd_result(args: argparse.Namespace) -> int:
    async with open_session(args, embed=embedded_db_exists(), worker=None) as session:
        result = await (await run_handle(session, args.id)).result()
        report(result, args, session.ui_url(args.id))
        return 0 if result.success else 1


async def cmd_trace(args: argparse.Namespace) -> int:
    async with open_session(args, embed=embedded_db_exists(), worker=None) as session:
        events = await (await run_handle(session, args.id)).trace()
        if args.json:
            emit_json(
                {"workflow_id": args.id, "events": [e.model_dump(mode="json") for e in events]}
            )
            return 0
        for e in events:
            print(f"{e.seq:>3} {e.at:%H:%M:%S}  {describe_event(e)}")
        return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with open_session(args, embed=embedded_db_exists(), worker=None) as session:
        handle = session.client.get(args.id)
        if not await handle.is_running():
            raise UsageError(f"run {args.id} is not running")
        await handle.cancel()
        print(
            f"cancel requested for {args.id}: committed steps will be compensated "
            "(by the run's worker, when one serves it)"
        )
        if session.worker_running:  # we are its worker: see the compensation through
            result = await handle.result()
            print(f"{result.status.value}: {len(result.compensations)} compensations")
        return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        rows = await session.client.list(args.status, limit=args.limit)
        if args.json:
            emit_json({"runs": rows})
            return 0
        if not rows:
            print("no runs" + (f" with status {args.status}" if args.status else ""))
        for r in rows:
            problem = "  WORKFLOW TASK FAILING" if r["problems"] else ""
            print(
                f"{r['workflow_id']:<40} {r['status']:<15} {r['pipeline'] or '':<20} "
                f"step={r['step'] or '-'} rollbacks={r['rollbacks']} {r['started']}{problem}"
            )
        return 0


async def cmd_replay(args: argparse.Namespace) -> int:
    async with open_session(args, embed=embedded_db_exists(), worker=False) as session:
        handle = session.client.client.get_workflow_handle(args.id)
        try:
            history = await handle.fetch_history()
        except RPCError as err:  # not found, or the server refused: say which
            raise run_rpc_error(args.id, err) from None
        replayer = Replayer(
            workflows=[VerifiedPipeline], data_converter=session.client.client.data_converter
        )
        outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if outcome.replay_failure is not None:
            print(
                f"NOT deterministic: {args.id} diverges from today's workflow code: "
                f"{short(str(outcome.replay_failure), 300)}"
            )
            return 1
        print(
            f"deterministic: {len(history.events)} history events of {args.id} replay "
            "against today's workflow code"
        )
        return 0


async def cmd_codec_server(args: argparse.Namespace) -> int:
    """Temporal's codec server protocol, so the Web UI shows encrypted runs decrypted."""
    from raftline.codec import KeyConfigError, codec_from_env, codec_server, serve_in_thread

    try:
        codec = codec_from_env()
    except KeyConfigError as exc:
        raise UsageError(str(exc)) from None
    if not codec.key_ids:
        raise UsageError("codec-server: set RAFTLINE_ENCRYPTION_KEY (and RAFTLINE_ENCRYPTION_KEYS)")
    origins = args.cors_origin or os.environ.get(
        "RAFTLINE_CODEC_CORS", "http://localhost:8233,http://localhost:8080"
    ).split(",")
    token = os.environ.get("RAFTLINE_CODEC_TOKEN") or None
    try:
        server = codec_server(codec, args.host, args.port, origins, token)
    except OSError as exc:
        raise UsageError(f"codec-server: cannot listen on {args.host}:{args.port}: {exc}") from None
    serve_in_thread(server)
    host, port = server.server_address[:2]
    print(
        f"codec server at http://{host}:{port} (keys {', '.join(codec.key_ids)}; "
        f"CORS {', '.join(origins)}{'; bearer token required' if token else ''})",
        flush=True,
    )
    print("In the Web UI: Settings (the data encoder icon) → Codec Server endpoint.", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0


async def cmd_server(args: argparse.Namespace) -> int:
    address = str(connect_settings(args.address)["target_host"])
    host, port = split_address(address)
    if host not in LOCAL_HOSTS:
        raise UsageError(f"TEMPORAL_ADDRESS {address} is not local: the embedded server is local")
    if port_open(host, port):
        raise UsageError(f"something already answers at {address}")
    server = embedded_for(address, headless=args.headless)
    server.spawn()  # from the main thread: the server dies with this process
    try:
        while not server.ready():  # noqa: ASYNC110 - polls a child process and a port
            await asyncio.sleep(0.1)
        print(f"Temporal server at {server.address}, data in {server.db_file}")
        if server.ui_url:
            print(f"Web UI: {server.ui_url}")
        print("Ctrl-C to stop.", flush=True)
        assert server.process is not None
        exited = asyncio.ensure_future(asyncio.to_thread(server.process.wait))
        try:
            code = await asyncio.shield(exited)
        except asyncio.CancelledError:
            if not INTERRUPTS.absorb():
                raise
            return 0  # Ctrl-C is how this command ends
        raise TemporalUnreachable(
            f"the embedded Temporal server exited ({code}); see {server.log_file}"
        )
    finally:
        await asyncio.to_thread(server.stop)


# ---------------------------------------------------------------- argument parsing


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"raftline: {message} (see {self.prog} --help)\n")


def run_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a run id must not be empty")
    return text


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="raftline", description="Verified, durable agent pipelines on Temporal.")
    p.add_argument("--address", default=None, help="default: $TEMPORAL_ADDRESS or localhost:7233")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser("demo", help="run examples/board_memo.yaml on the embedded server")
    demo.add_argument("--no-wait", action="store_true", help="exit when the run ends")
    demo.add_argument("--json", action="store_true")

    run = sub.add_parser("run", help="run a pipeline")
    run.add_argument("pipeline", help="pipeline YAML file")
    run.add_argument("--goal", required=True, help="the task's goal")
    run.add_argument("--input", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--id", default=None, type=run_id, help="workflow id (default: NAME-RANDOM)")
    run.add_argument("--detach", action="store_true", help="start and return at once")
    run.add_argument("--json", action="store_true")
    run.add_argument("--activities", nargs="*", default=[], metavar="MODULE")
    run.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run an in-process worker: your workers serve the run",
    )

    for name, help_ in (
        ("status", "show a run's state"),
        ("result", "wait for a run's result"),
        ("trace", "show a run's decision trace"),
    ):
        c = sub.add_parser(name, help=help_)
        c.add_argument("id", type=run_id)
        c.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="replay a run's history against today's code")
    replay.add_argument("id", type=run_id)
    cancel = sub.add_parser("cancel", help="cancel a run (its commits are compensated)")
    cancel.add_argument("id", type=run_id)

    lst = sub.add_parser("list", help="list runs")
    lst.add_argument("--status", default=None, choices=[s.value for s in RunStatus])
    lst.add_argument("--limit", type=positive, default=50, help="at most N runs (default 50)")
    lst.add_argument("--json", action="store_true")

    server = sub.add_parser("server", help="the embedded Temporal server, in the foreground")
    server.add_argument("--headless", action="store_true", help="without the Web UI")

    cs = sub.add_parser("codec-server", help="decrypt payloads for the Web UI (encryption on)")
    cs.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    cs.add_argument("--port", type=int, default=8081, help="default 8081")
    cs.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="Web UI origin allowed to call (repeatable; default $RAFTLINE_CODEC_CORS or "
        "http://localhost:8233 and http://localhost:8080)",
    )
    # Commands that act on runs already started: reviews, operators, forks (cli_runs.py).
    COMMANDS.update(cli_runs.add_parsers(sub, run_id))
    return p


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "status": cmd_status,
    "result": cmd_result,
    "trace": cmd_trace,
    "replay": cmd_replay,
    "cancel": cmd_cancel,
    "list": cmd_list,
    "server": cmd_server,
    "codec-server": cmd_codec_server,
}


async def run_command(args: argparse.Namespace) -> int:
    """The command, with SIGINT/SIGTERM turned into a clean way out (see Interrupts)."""
    INTERRUPTS.install()
    try:
        return await COMMANDS[args.command](args)
    except asyncio.CancelledError:
        if not INTERRUPTS.absorb():
            raise
        progress(f"raftline: interrupted ({INTERRUPTS.name})")
        return INTERRUPTS.code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(int(os.environ.get("RAFTLINE_LOG_LEVEL", logging.WARNING)))
    try:
        return asyncio.run(run_command(args))
    except (
        SpecError,
        UsageError,
        RunNotFound,
        RunExists,
        Refused,
        ModuleError,
        ConfigError,
        DecryptionError,
    ) as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 2
    except TemporalUnreachable as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 3
    except RaftlineError as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the command's signal handlers were in place
        print("raftline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `raftline trace ID | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        # An error's traceback cycle keeps the Temporal client alive until interpreter
        # finalization, where freeing its Rust core aborts the process (PyGILState_Release,
        # temporalio/sdk-python#300) and turns exit 1/2/3 into 134: free it now.
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
