"""A benchmark worker process: raftline's worker (worker.build_worker) with the
built-in activities and the benchmarks' own (`bench.sim_judge`, `bench.noop`), logging
warnings only, stopping cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from benchmarks.common import bench_worker
from benchmarks.plain import noop
from benchmarks.sim_judge import sim_judge
from raftline.activities.registry import collect
from raftline.client import temporal_client


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", required=True)
    p.add_argument("--task-queue", required=True)
    p.add_argument("--max-activities", type=int, default=200)
    p.add_argument("--max-workflow-tasks", type=int, default=100)
    p.add_argument("--unsandboxed", action="store_true", help="workflow sandbox off (--fast)")


def activities() -> list[Any]:
    return [*collect(), sim_judge, noop]


async def serve(args: argparse.Namespace) -> int:
    client = await temporal_client(args.address)
    worker = bench_worker(
        client,
        args.task_queue,
        activities(),
        args.max_activities,
        args.max_workflow_tasks,
        unsandboxed=args.unsandboxed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))
