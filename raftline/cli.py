"""raftline: start, follow and inspect verified pipeline runs.

Exit codes: 0 the run completed verified; 1 it ended without success; 2 bad input or
usage; 3 Temporal unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.worker import Replayer

from raftline.activities.registry import ModuleError, activity_name, check_spec, collect
from raftline.client import (
    ConfigError,
    RaftlineClient,
    RaftlineError,
    RunExists,
    RunHandle,
    RunNotFound,
    TemporalUnreachable,
    connect_config,
    temporal_client,
)
from raftline.codec import DecryptionError
from raftline.embedded import (
    EmbeddedServer,
    ServerError,
    embedded_for,
    is_local,
    port_open,
    split_address,
)
from raftline.models import (
    EventType,
    PipelineSpec,
    RunResult,
    SpecError,
    Task,
    TraceEvent,
)
from raftline.settings import raftline_home
from raftline.workflows.pipeline import VerifiedPipeline

# Shipped as package data (raftline.examples is the repository's examples/ folder).
DEMO_PIPELINE = Path(str(files("raftline.examples") / "board_memo.yaml"))
DEMO_GOAL = "Recommend whether Acme should expand its bike-sharing service into Oslo in 2027"
DEMO_INPUTS = {
    "market": "Oslo has 720,000 residents and 41 km of new bike lanes since 2022.",
    "finance": "Expansion needs 4.2 million EUR; the board's payback limit is 3 years.",
}


class UsageError(Exception):
    """Bad input or usage: exit 2 with this one-line message."""


# ---------------------------------------------------------------- session


class Session:
    """A client, plus the embedded server and an in-process worker when needed."""

    def __init__(self, args: argparse.Namespace, *, embed: bool, worker: bool | None) -> None:
        self.args = args
        self.embed = embed
        self.want_worker = worker
        self.server: EmbeddedServer | None = None
        self.client: RaftlineClient
        self.namespace = "default"
        self.address = ""
        self.worker_running = False
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Session:
        config = connect_config(getattr(self.args, "address", None))
        self.address, self.namespace = config["target_host"], config["namespace"]
        host, port = split_address(self.address)
        if is_local(self.address) and not port_open(host, port):
            if not self.embed:
                raise TemporalUnreachable(
                    f"Temporal is unreachable at {self.address}: start one with "
                    "`raftline server`, or set TEMPORAL_ADDRESS"
                )
            progress(f"starting the embedded Temporal server at {self.address} ...")
            self.server = await asyncio.to_thread(embedded_for(self.address).start)
        self.client = RaftlineClient(await temporal_client(self.address))
        # Nobody else can serve the embedded server we just started: be its worker.
        if self.want_worker or (self.want_worker is None and self.server is not None):
            await self.start_worker()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        if self.server is not None and not getattr(self.args, "keep_server", False):
            await asyncio.to_thread(self.server.stop)

    async def no_workers(self) -> bool:
        """No poller seen on the task queue (the server keeps dead pollers a few minutes)."""
        try:
            resp = await self.client.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.client.namespace,
                    task_queue=TaskQueue(name=self.client.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except RPCError:
            return True
        return not resp.pollers

    async def start_worker(self) -> None:
        if self.worker_running:
            return
        from raftline.worker import build_worker

        modules = list(getattr(self.args, "activities", None) or [])
        modules += getattr(self.args, "spec_modules", [])
        worker = build_worker(self.client.client, activities=collect(modules))
        await self._stack.enter_async_context(worker)
        self.worker_running = True

    async def run_handle(self, workflow_id: str) -> RunHandle:
        """A run's handle; a canceled run's record is a query, which needs a worker."""
        handle = self.client.get(workflow_id)
        if await handle.execution_status() == WorkflowExecutionStatus.CANCELED:
            await self.start_worker()
        return handle

    def ui_url(self, workflow_id: str | None = None) -> str | None:
        base = os.environ.get("RAFTLINE_UI_URL")
        if not base and self.server is not None:
            base = self.server.ui_url
        if not base and is_local(self.address):
            base = f"http://localhost:{split_address(self.address)[1] + 1000}"
        if not base:
            return None
        base = base.rstrip("/")
        return (
            f"{base}/namespaces/{self.namespace}/workflows/{workflow_id}" if workflow_id else base
        )


def embedded_db_exists() -> bool:
    return (raftline_home() / "temporal.db").exists()


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (also when started in the background, where SIGINT is
    ignored by default), so the caller can shut the worker and server down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------- output


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def short(text: str | None, width: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def describe_event(e: TraceEvent) -> str:
    """One line per protocol event, for the live view and the trace."""
    step = f"{e.step:<14}" if e.step else " " * 14
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
            seen = ",".join(f"#{r.seq}" for r in e.inputs) or "none"
            return f"{step} attempt {e.attempt}: started (sees checkpoints {seen})"
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
            return f"{step} attempt {e.attempt}: committed checkpoint #{e.checkpoint_seq}"
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
            return f"{step} compensating checkpoint #{e.checkpoint_seq} with {e.message}"
        case EventType.COMPENSATED:
            return f"{step} compensated ({e.message})"
        case EventType.COMPENSATION_FAILED:
            return f"{step} COMPENSATION FAILED: {short(e.message, 80)}"
        case EventType.RUN_COMPLETED | EventType.RUN_FAILED | EventType.RUN_CANCELED:
            return f"run {e.type.value.removeprefix('run_')}: {e.message}"
    return f"{step} {e.type.value} {e.message}"


def print_summary(result: RunResult, ui: str | None) -> None:
    s = result.summary(ui)
    print(
        f"\n{result.status.value}: {s['verified']} steps verified, {s['rollbacks']} rollbacks, "
        f"{s['retries']} retries, {s['compensations']} compensations, "
        f"{s['breaker_trips']} breaker trips, reliability {s['reliability']:.2f}"
    )
    u = result.usage
    print(f"usage: {u.input_tokens} in / {u.output_tokens} out tokens, ${u.cost_usd:.4f}")
    if result.error:
        print(f"reason: {result.error}")
    if result.output:
        print("output:\n" + textwrap.indent(textwrap.shorten(result.output, 600), "  "))
    if ui:
        print(f"Web UI: {ui}")


# ---------------------------------------------------------------- spec loading


def parse_inputs(pairs: Sequence[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {pair!r}: expected KEY=VALUE")
        inputs[key.strip()] = value
    return inputs


def load_spec(path: str, extra_modules: Sequence[str]) -> PipelineSpec:
    """Parse and check a pipeline before anything starts: every activity must exist."""
    spec = PipelineSpec.from_yaml(path)
    try:
        known = {activity_name(fn) for fn in collect([*spec.modules, *extra_modules])}
    except ModuleError as exc:
        raise UsageError(f"{path}: {exc}") from None
    check_spec(spec, known, path, "add its module under `modules:` or pass --activities MODULE")
    return spec


# ---------------------------------------------------------------- commands


async def follow(handle: RunHandle, live: bool) -> RunResult:
    if live:
        async for event in handle.events():
            if event.type is not EventType.OUTPUT:  # the hash is for `trace`, not the live view
                print(describe_event(event), flush=True)
    return await handle.result()


async def start_and_follow(
    args: argparse.Namespace, spec: PipelineSpec, task: Task, embed: bool = True
) -> int:
    args.spec_modules = spec.modules
    # An in-process worker unless detached or told not to: extra workers on a queue are
    # harmless, and asking the server whether one polls is unreliable after a crash.
    want_worker = not (args.detach or args.no_worker)
    async with Session(args, embed=not args.detach and embed, worker=want_worker) as session:
        if args.detach and await session.no_workers():
            progress(
                f"note: no worker polls task queue {session.client.task_queue!r}; "
                "start one with `raftline-worker` or the run will wait"
            )
        handle = await session.client.start(spec, task, id=args.id)
        ui = session.ui_url(handle.id)
        if args.detach:
            if args.json:
                emit_json({"workflow_id": handle.id, "status": "running", "ui_url": ui})
            else:
                print(f"started {handle.id}\nWeb UI: {ui}")
            return 0
        if not args.json:
            print(f"run {handle.id} of {spec.name}: {task.goal}")
        result = await follow(handle, live=not args.json)
        if args.json:
            emit_json(result.summary(ui))
        else:
            print_summary(result, ui)
        if getattr(args, "wait", False) and session.server is not None:
            progress(
                f"The Web UI stays up at {session.ui_url()} until you press Ctrl-C "
                "(use --no-wait to exit at once)."
            )
            await until_stopped()
        return 0 if result.success else 1


async def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.pipeline, args.activities)
    if not args.goal or not args.goal.strip():
        raise UsageError("--goal must not be empty")
    task = Task(goal=args.goal, inputs=parse_inputs(args.input))
    return await start_and_follow(args, spec, task)


async def cmd_demo(args: argparse.Namespace) -> int:
    spec = load_spec(str(DEMO_PIPELINE), [])
    args.detach, args.no_worker, args.id, args.activities = False, False, None, []
    args.wait = not args.no_wait
    return await start_and_follow(args, spec, Task(goal=DEMO_GOAL, inputs=DEMO_INPUTS))


async def cmd_status(args: argparse.Namespace) -> int:
    async with Session(args, embed=embedded_db_exists(), worker=None) as session:
        handle = await session.run_handle(args.id)
        if not await handle.is_running():
            result = await handle.result()
            view: dict[str, Any] = {
                "workflow_id": result.workflow_id,
                "pipeline": result.pipeline,
                "status": result.status.value,
                "current_step": result.failed_step,
                "verified": f"{result.verified}/{result.steps_total}",
                "breaker": {"trips": result.breaker_trips},
                "checkpoints": [
                    {"seq": c.seq, "step": c.step, "sha256": c.sha256, "attempt": c.attempt}
                    for c in result.checkpoints
                ],
            }
        else:
            st = await handle.status()
            view = {
                "workflow_id": st.workflow_id,
                "pipeline": st.pipeline,
                "status": st.status.value,
                "current_step": st.current_step,
                "attempt": st.attempt,
                "verified": f"{st.verified}/{st.steps_total}",
                "breaker": st.breaker.model_dump(),
                "checkpoints": [r.model_dump() for r in st.checkpoints],
            }
        view["ui_url"] = session.ui_url(args.id)
        if args.json:
            emit_json(view)
            return 0
        print(
            f"{view['workflow_id']} ({view['pipeline']}): {view['status']}, "
            f"{view['verified']} verified"
        )
        if view.get("current_step"):
            print(f"current step: {view['current_step']} attempt {view.get('attempt', '-')}")
        breaker = view["breaker"]
        print("breaker: " + ", ".join(f"{k} {v}" for k, v in breaker.items()))
        for c in view["checkpoints"]:
            print(f"  checkpoint #{c['seq']} {c['step']} sha256 {c['sha256'][:12]}")
        print(f"Web UI: {view['ui_url']}")
        return 0


async def cmd_result(args: argparse.Namespace) -> int:
    async with Session(args, embed=embedded_db_exists(), worker=None) as session:
        result = await (await session.run_handle(args.id)).result()
        ui = session.ui_url(args.id)
        if args.json:
            emit_json(result.summary(ui))
        else:
            print_summary(result, ui)
        return 0 if result.success else 1


async def cmd_trace(args: argparse.Namespace) -> int:
    async with Session(args, embed=embedded_db_exists(), worker=None) as session:
        events = await (await session.run_handle(args.id)).trace()
        if args.json:
            emit_json(
                {"workflow_id": args.id, "events": [e.model_dump(mode="json") for e in events]}
            )
            return 0
        for e in events:
            print(f"{e.seq:>3} {e.at:%H:%M:%S}  {describe_event(e)}")
        return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with Session(args, embed=embedded_db_exists(), worker=None) as session:
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
    async with Session(args, embed=embedded_db_exists(), worker=False) as session:
        rows = await session.client.list(args.status, limit=args.limit)
        if args.json:
            emit_json({"runs": rows})
            return 0
        if not rows:
            print("no runs" + (f" with status {args.status}" if args.status else ""))
        for r in rows:
            print(
                f"{r['workflow_id']:<40} {r['status']:<13} {r['pipeline'] or '':<20} "
                f"step={r['step'] or '-'} rollbacks={r['rollbacks']} {r['started']}"
            )
        return 0


async def cmd_replay(args: argparse.Namespace) -> int:
    async with Session(args, embed=embedded_db_exists(), worker=False) as session:
        handle = session.client.client.get_workflow_handle(args.id)
        try:
            history = await handle.fetch_history()
        except RPCError as err:
            raise RunNotFound(f"no run with id {args.id!r}") from err
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
    config = connect_config(args.address)
    address = config["target_host"]
    host, port = split_address(address)
    if not is_local(address):
        raise UsageError(f"TEMPORAL_ADDRESS {address} is not local: the embedded server is local")
    if port_open(host, port):
        raise UsageError(f"something already answers at {address}")
    server = await asyncio.to_thread(embedded_for(address, headless=args.headless).start)
    print(f"Temporal server at {server.address}, data in {server.db_file}")
    if server.ui_url:
        print(f"Web UI: {server.ui_url}")
    print("Ctrl-C to stop.")
    try:
        if server.process is not None:
            exited = asyncio.create_task(asyncio.to_thread(server.process.wait))
            stopped = asyncio.create_task(until_stopped())
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
    finally:
        await asyncio.to_thread(server.stop)
    return 0


# ---------------------------------------------------------------- argument parsing


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"raftline: {message} (see {self.prog} --help)\n")


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
    run.add_argument("--id", default=None, help="workflow id (default: PIPELINE-RANDOM)")
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
        c.add_argument("id")
        c.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="replay a run's history against today's code")
    replay.add_argument("id")
    cancel = sub.add_parser("cancel", help="cancel a run (its commits are compensated)")
    cancel.add_argument("id")

    lst = sub.add_parser("list", help="list runs")
    lst.add_argument(
        "--status",
        default=None,
        choices=[
            "running",
            "breaker_open",
            "compensating",
            "completed",
            "compensated",
            "failed",
            "canceled",
        ],
    )
    lst.add_argument("--limit", type=int, default=50)
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


def main(argv: Sequence[str] | None = None) -> int:
    from raftline.worker import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(json_logs=True, level=int(os.environ.get("RAFTLINE_LOG_LEVEL", "30")))
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except (
        SpecError,
        UsageError,
        RunNotFound,
        RunExists,
        ModuleError,
        ConfigError,
        DecryptionError,
    ) as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 2
    except (TemporalUnreachable, ServerError) as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 3
    except RaftlineError as exc:
        print(f"raftline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
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
