"""Overhead benchmark: raftline's commit loop against a plain Temporal workflow.

In one process, on one dev server of its own, the same N-step pipeline of no-op steps
(`bench.noop`) runs as
  (a) plain:    `bench.PlainPipeline`, N `execute_activity` calls in a row;
  (b) raftline: VerifiedPipeline, criticality LOW: every step checked by the L1 rules
                (default checks: refusal, error signatures, truncation, secrets) inside
                the workflow, committed to the checkpoint log, traced, with its search
                attributes set at start and end.
Each arm has its own worker on its own task queue: raftline's is `worker.build_worker`
(with its metrics/spans and redaction interceptors), the plain one a bare Temporal
worker with the same sandboxed runner and limits. Rounds alternate the order so drift
in machine load hits every arm alike; an arm's throughput is all its steps over all its
time. Target: raftline ≥ 0.85 of plain. CPU per step (this process: client + worker;
and the server) is printed too: on a busy machine it says where the time goes better
than wall time does.

`--breakdown` adds variants that each remove one cost: raftline without search
attributes (RunInput.search_attributes=False), raftline on a worker without the
interceptors, raftline and plain with Temporal's workflow sandbox off, and plain on a
worker with raftline's interceptors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker, WorkflowRunner

from benchmarks.common import (
    bench_client,
    bench_worker,
    emit_json,
    machine,
    note,
    start_server,
    stop_server,
    table,
)
from benchmarks.plain import NOOP, PLAIN_WORKFLOW, PlainInput, PlainPipeline, PlainResult, noop
from raftline.activities.registry import collect
from raftline.client import temporal_client
from raftline.embedded import EmbeddedServer
from raftline.models import PipelineSpec, RunStatus, Task
from raftline.worker import WORKFLOW_RUNNER, cache_bytecode
from raftline.workflows.pipeline import VerifiedPipeline

TARGET = 0.85
RUN_TIMEOUT_S = 300.0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(server: EmbeddedServer | None) -> dict[str, float]:
    """CPU seconds so far of this process (client + worker) and of our server."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    proc = server.process if server is not None else None
    return {
        "worker": usage.ru_utime + usage.ru_stime,
        "server": process_cpu_s(proc.pid) if proc is not None else 0.0,
    }


def raftline_spec(steps: int) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "overhead",
            "policy": {"criticality": "LOW"},
            "steps": [
                {"name": f"s{i + 1:02d}", "goal": f"no-op step {i + 1}", "activity": NOOP}
                for i in range(steps)
            ],
        }
    )


def plain_worker(
    client: Client,
    queue: str,
    max_activities: int,
    max_wf_tasks: int,
    runner: WorkflowRunner = WORKFLOW_RUNNER,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """The runner, limits and bytecode cache of worker.build_worker, for the plain workflow."""
    cache_bytecode(sys.modules[PlainPipeline.__module__])
    return Worker(
        client,
        task_queue=queue,
        workflows=[PlainPipeline],
        workflow_runner=runner,
        interceptors=interceptors,
        activities=[noop],
        max_concurrent_activities=max_activities,
        max_concurrent_workflow_tasks=max_wf_tasks,
        graceful_shutdown_timeout=timedelta(seconds=10),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )


async def timed(runs: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Wall time of `runs` runs, at most `concurrency` in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with sem:
            # A run stuck on a failing workflow task must not hang the benchmark.
            await asyncio.wait_for(one(i), timeout=RUN_TIMEOUT_S)

    t0 = time.monotonic()
    await asyncio.gather(*(guarded(i) for i in range(runs)))
    return time.monotonic() - t0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=10, help="no-op steps per run")
    p.add_argument("--runs", type=int, default=100, help="runs per arm per round")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    p.add_argument("--concurrency", type=int, default=50, help="runs in flight")
    p.add_argument("--quick", action="store_true", help="2 rounds of 30 runs")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also run variants (no search attributes, no interceptors, unsandboxed)",
    )
    p.add_argument("--max-activities", type=int, default=100)
    p.add_argument("--max-workflow-tasks", type=int, default=100)
    p.add_argument("--address", default=None, help="use this server instead of starting one")


@dataclass
class Arm:
    """One way to run the N no-op steps: its own worker on its own task queue."""

    name: str
    worker: Worker
    run: Callable[[int, str], Awaitable[bool]]  # (index, round) -> completed?


def build_arms(client: Client, args: argparse.Namespace, tag: str) -> list[Arm]:
    """plain and raftline; with --breakdown, the variants that say where raftline's time goes."""
    spec = raftline_spec(args.steps)
    limits = (args.max_activities, args.max_workflow_tasks)

    def plain(name: str, **worker_options: Any) -> Arm:
        queue = f"{name}-{tag}"

        async def one(i: int, rnd: str) -> bool:
            res: PlainResult = await client.execute_workflow(
                PLAIN_WORKFLOW,
                PlainInput(steps=args.steps),
                id=f"{queue}-{rnd}-{i}",
                task_queue=queue,
                result_type=PlainResult,
            )
            return res.steps == args.steps

        return Arm(name, plain_worker(client, queue, *limits, **worker_options), one)

    def raftline(name: str, worker: Worker | None = None, sa: bool = True, **kw: Any) -> Arm:
        queue = f"{name}-{tag}"
        rc = bench_client(client, queue, search_attributes=sa)
        w = worker or bench_worker(client, queue, [*collect(), noop], *limits, **kw)

        async def one(i: int, rnd: str) -> bool:
            res = await rc.run(spec, Task(goal="no-op"), id=f"{queue}-{rnd}-{i}")
            return res.status is RunStatus.COMPLETED

        return Arm(name, w, one)

    arms = [plain("plain"), raftline("raftline")]
    if not args.breakdown:
        return arms
    bare_queue = f"raftline-no-interceptors-{tag}"
    bare = Worker(  # build_worker's settings without its interceptors
        client,
        task_queue=bare_queue,
        workflows=[VerifiedPipeline],
        workflow_runner=WORKFLOW_RUNNER,
        activities=[*collect(), noop],
        max_concurrent_activities=args.max_activities,
        max_concurrent_workflow_tasks=args.max_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=10),
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )
    arms += [
        raftline("raftline-no-search-attributes", sa=False),
        raftline("raftline-no-interceptors", worker=bare),
        raftline("raftline-unsandboxed", unsandboxed=True),
        plain("plain-unsandboxed", runner=UnsandboxedWorkflowRunner()),
    ]
    try:  # the worker's interceptors, on the plain workflow
        from raftline.observability import RaftlineInterceptor
        from raftline.redaction import RedactingInterceptor
    except ImportError:
        return arms
    return [
        *arms,
        plain(
            "plain-with-interceptors", interceptors=[RaftlineInterceptor(), RedactingInterceptor()]
        ),
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs, rounds = (30, 2) if args.quick else (args.runs, args.rounds)
    cond = machine()
    server = None if args.address else start_server()
    address = args.address or server.address  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:6]
    try:
        client = await temporal_client(address)
        arms = build_arms(client, args, tag)
        times = {a.name: 0.0 for a in arms}
        failures = {a.name: 0 for a in arms}
        cpu = {a.name: {"worker": 0.0, "server": 0.0} for a in arms}

        def counted(arm: Arm, rnd: str) -> Callable[[int], Awaitable[None]]:
            async def one(i: int) -> None:
                failures[arm.name] += not await arm.run(i, rnd)

            return one

        async with contextlib.AsyncExitStack() as stack:
            for arm in arms:
                await stack.enter_async_context(arm.worker)
            # Warm-up: imports, sandbox, server caches; not measured.
            for arm in arms:
                await timed(min(10, runs), args.concurrency, counted(arm, "warm"))
            for rnd in range(rounds):
                for arm in arms if rnd % 2 == 0 else list(reversed(arms)):
                    before = cpu_now(server)
                    t = await timed(runs, args.concurrency, counted(arm, str(rnd)))
                    after = cpu_now(server)
                    times[arm.name] += t
                    for k in cpu[arm.name]:
                        cpu[arm.name][k] += after[k] - before[k]
                    note(
                        f"overhead: round {rnd + 1}/{rounds} {arm.name}: {runs} runs × "
                        f"{args.steps} steps in {t:.1f}s ({runs * args.steps / t:.0f} steps/s)"
                    )
    finally:
        stop_server(server)
    total_runs = runs * rounds
    steps = total_runs * args.steps
    arms_out = {
        name: {
            "runs": total_runs,
            "steps": steps,
            "seconds": round(t, 2),
            "runs_per_s": round(total_runs / t, 2),
            "steps_per_s": round(steps / t, 1),
            "failures": failures[name],
            # CPU per step is what a busy machine cannot distort much: where the time goes.
            "worker_cpu_ms_per_step": round(1000 * cpu[name]["worker"] / steps, 2),
            "server_cpu_ms_per_step": (
                round(1000 * cpu[name]["server"] / steps, 2) if server is not None else None
            ),
        }
        for name, t in times.items()
    }
    ratio = arms_out["raftline"]["steps_per_s"] / arms_out["plain"]["steps_per_s"]
    cpu_total = {
        name: a["worker_cpu_ms_per_step"] + (a["server_cpu_ms_per_step"] or 0.0)
        for name, a in arms_out.items()
    }
    return {
        "benchmark": "overhead",
        "params": {
            "steps": args.steps,
            "runs_per_round": runs,
            "rounds": rounds,
            "concurrency": args.concurrency,
        },
        "conditions": cond,
        "arms": arms_out,
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_total["plain"] / cpu_total["raftline"], 3),
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }


COLUMNS = {
    "runs": "runs",
    "steps": "steps",
    "seconds": "seconds",
    "runs_per_s": "runs/s",
    "steps_per_s": "steps/s",
    "worker_cpu_ms_per_step": "worker CPU ms/step",
    "server_cpu_ms_per_step": "server CPU ms/step",
    "failures": "failures",
}


def render_text(res: dict[str, Any]) -> str:
    rows = [[name, *(a[k] for k in COLUMNS)] for name, a in res["arms"].items()]
    prm = res["params"]
    return "\n".join(
        [
            f"overhead: {prm['steps']}-step no-op pipeline, {prm['rounds']} rounds × "
            f"{prm['runs_per_round']} runs per arm, {prm['concurrency']} in flight",
            table(["arm", *COLUMNS.values()], rows),
            f"raftline / plain throughput: {res['ratio']:.3f} (target ≥ {res['target']}: "
            f"{'met' if res['meets_target'] else 'NOT met'}); by CPU per step "
            f"(worker + server): {res['cpu_ratio']:.3f}",
        ]
    )


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run(args))
    print(render_text(res) if not args.json else "", end="" if args.json else "\n")
    if args.json:
        emit_json(res)
    failed = sum(a["failures"] for a in res["arms"].values())
    return 0 if not failed else 1
