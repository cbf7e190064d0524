"""Fan-out benchmark: parallel branches and a map really run at once.

`python -m benchmarks fanout`, on a dev server of its own with an in-process worker:
- 8 independent branches of one 2 s step each (`needs: []`), joined by a final step,
  against one such branch alone: target, the 8 finish within 1.5x of the one;
- a 100-item map of 0.5 s items at max_concurrency 20: target, within 1.5x of
  100 / 20 x 0.5 s = 2.5 s.
Every step is verified (L1) and committed; each item is its own attempt chain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

from benchmarks.common import emit_json, machine, note, start_server, stop_server, table
from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.models import PipelineSpec, RunStatus, Task
from raftline.worker import build_worker


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--branches", type=int, default=8)
    p.add_argument("--branch-s", type=float, default=2.0, help="each branch's step time")
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--item-s", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=20)


def branches(n: int, seconds: float) -> PipelineSpec:
    steps: list[dict[str, Any]] = [
        {"name": f"b{i}", "goal": "branch", "needs": [], "params": {"sleep_s": seconds}}
        for i in range(n)
    ]
    steps.append({"name": "join", "goal": "join", "needs": [f"b{i}" for i in range(n)]})
    return PipelineSpec.model_validate(
        {"name": f"fanout-{n}", "policy": {"max_parallel": max(n, 1)}, "steps": steps}
    )


def mapped(items: int, seconds: float, concurrency: int) -> PipelineSpec:
    listing = "[" + ",".join(str(i) for i in range(items)) + "]"
    steps = [
        {"name": "list", "goal": "list", "format": "json", "params": {"text": listing}},
        {
            "name": "items",
            "goal": "item",
            "map": {"over": "list", "max_concurrency": concurrency},
            "params": {"text": "Item {item} done.", "sleep_s": seconds},
        },
    ]
    return PipelineSpec.model_validate({"name": f"map-{items}", "steps": steps})


def span(result: Any, steps: set[str]) -> float:
    """Seconds from the first start to the last commit among `steps`."""
    starts = [e.at for e in result.trace if e.type == "step_started" and e.step in steps]
    ends = [e.at for e in result.trace if e.type == "committed" and e.step in steps]
    return (max(ends) - min(starts)).total_seconds()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("RAFTLINE_HOME", tempfile.mkdtemp(prefix="raftline-fanout-"))
    server = start_server()
    try:
        client = await temporal_client(server.address, tracing=False)
        queue = f"fanout-{uuid.uuid4().hex[:8]}"
        limit = max(args.branches, args.concurrency) + 8
        async with build_worker(client, queue, collect(), max_activities=limit):
            rc = RaftlineClient(client, queue)
            rows = []
            for label, pipeline, names, ideal in [
                ("1 branch", branches(1, args.branch_s), {"b0"}, args.branch_s),
                (
                    f"{args.branches} branches",
                    branches(args.branches, args.branch_s),
                    {f"b{i}" for i in range(args.branches)},
                    args.branch_s,
                ),
                (
                    f"{args.items}-item map at {args.concurrency}",
                    mapped(args.items, args.item_s, args.concurrency),
                    {"items"},
                    args.items / args.concurrency * args.item_s,
                ),
            ]:
                note(f"fanout: {label} ...")
                t0 = time.monotonic()
                result = await rc.run(pipeline, Task(goal="fan out"))
                wall = time.monotonic() - t0
                assert result.status is RunStatus.COMPLETED, result.error
                took = span(result, names)
                rows.append(
                    {
                        "case": label,
                        "seconds": round(took, 2),
                        "ideal_s": round(ideal, 2),
                        "over_ideal": round(took / ideal, 2),
                        "wall_s": round(wall, 2),
                    }
                )
        one, many = rows[0]["seconds"], rows[1]["seconds"]
        return {
            "benchmark": "fanout",
            "conditions": machine(),
            "params": {k: v for k, v in vars(args).items() if k != "main"},
            "results": rows,
            "branches_over_one": round(many / one, 2),
        }
    finally:
        stop_server(server)


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run(args))
    if args.json:
        emit_json(res)
        return 0
    print(
        table(
            ["case", "seconds", "ideal s", "/ ideal", "wall s"],
            [
                [r["case"], r["seconds"], r["ideal_s"], r["over_ideal"], r["wall_s"]]
                for r in res["results"]
            ],
        )
    )
    print(f"\n{args.branches} branches take {res['branches_over_one']}x one branch (target 1.5)")
    return 0
