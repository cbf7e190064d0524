"""Scale benchmark: long pipelines at a flat cost per step.

`python -m benchmarks scale` runs, each on a dev server of its own with an in-process
worker, sequential pipelines of trivial steps (about 12 bytes of output each; L1 rules
only) and of 20 KB outputs, and reports for each:
- wall time, and the time per step in the first and in the last tenth of the run (the
  time between consecutive commits): target, the last within 1.3x of the first;
- how many runs the continue-as-new chain took, the carried input of the last run
  (inline bytes, and in all when part of it went to external storage), and the slowest
  first workflow task of any run of the chain (decoding the carry): targets under
  256 KiB inline, 2 MB in all, 200 ms;
- the same server's own pace (`--baseline N`): a plain Temporal workflow of N sequential
  no-op activities. On the dev server a sequential activity takes ~25 ms for the first
  few dozen and then a steady ~50 ms, with or without raftline, so "vs plain" (the last
  tenth against plain Temporal's last tenth) is the figure that isolates raftline;
- the bytes stored: histories of every run of the chain plus the payload store (external
  payloads and committed outputs), against the committed content: target at most 3x.

`--steps 100,1000,5000` and `--big 50x20,200x20` (steps x KB) choose the sizes; `--quick` runs
100 and 50x20 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType as HistoryEvent

from benchmarks.common import emit_json, machine, note, start_server, stop_server, table
from benchmarks.overhead import plain_worker
from benchmarks.plain import PLAIN_WORKFLOW, PlainInput, PlainResult
from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.history import chain_histories
from raftline.models import PipelineSpec, RunResult, RunStatus, Task
from raftline.worker import build_worker

TEXT_ACTIVITY = "bench.text"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", default="100,1000,5000", help="trivial pipelines: step counts")
    p.add_argument("--big", default="200x20", help="STEPSxKB[,...]: pipelines of larger outputs")
    p.add_argument("--quick", action="store_true", help="100 trivial steps and 50x20 only")
    p.add_argument(
        "--baseline",
        type=int,
        default=400,
        help="plain Temporal: this many sequential no-op activities (0: none)",
    )


def trivial(n: int) -> PipelineSpec:
    steps = [
        {"name": f"s{i}", "goal": "step", "params": {"text": f"Step {i} ok."}} for i in range(n)
    ]
    return PipelineSpec.model_validate({"name": f"scale-{n}", "steps": steps})


def big(n: int, kb: int) -> PipelineSpec:
    steps = [
        {"name": f"s{i}", "goal": "step", "activity": TEXT_ACTIVITY, "params": {"kb": kb}}
        for i in range(n)
    ]
    return PipelineSpec.model_validate({"name": f"scale-{n}x{kb}k", "steps": steps})


def first_task_ms(history: Any) -> float:
    """How long the run's first workflow task took (it decodes the carried input)."""
    started = completed = None
    for e in history.events:
        if e.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_TASK_STARTED and started is None:
            started = e.event_time.ToNanoseconds()
        elif e.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            completed = e.event_time.ToNanoseconds()
            break
    return (completed - started) / 1e6 if started and completed else 0.0


def carried(history: Any) -> tuple[int, int]:
    """(inline bytes, bytes in all) of a run's input: external claims count their size."""
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    inline = sum(p.ByteSize() for p in payloads)
    total = inline
    for p in payloads:
        for ref in p.external_payloads:
            total += ref.size_bytes
    return inline, total


def commit_gaps(result: RunResult) -> list[float]:
    """Seconds between consecutive commits, in commit order."""
    times = [e.at.timestamp() for e in result.trace if e.type == "committed"]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def tenths(gaps: list[float]) -> list[float]:
    """Mean ms per step in each tenth of the run, first to last."""
    n = max(len(gaps) // 10, 1)
    return [round(1000 * statistics.mean(gaps[i : i + n]), 1) for i in range(0, n * 10, n)]


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def measure(pipeline: PipelineSpec, label: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="raftline-scale-"))
    os.environ["RAFTLINE_HOME"] = str(home)  # payload store and outputs: measured below
    server = start_server()
    try:
        client = await temporal_client(server.address, tracing=False)
        queue = f"scale-{uuid.uuid4().hex[:8]}"
        async with build_worker(client, queue, collect(["benchmarks.scale_steps"])):
            rc = RaftlineClient(client, queue)
            t0 = time.monotonic()
            handle = await rc.start(pipeline, Task(goal="scale"))
            note(f"scale: {label}: running {handle.id} ...")
            result = await handle.result()
            wall = time.monotonic() - t0
        assert result.status is RunStatus.COMPLETED, result.error
        histories = await chain_histories(client, handle.id)
        gaps = commit_gaps(result)
        deciles = tenths(gaps)
        first, last = deciles[0], deciles[-1]
        inline, total = carried(histories[-1])
        content = sum(len((c.output or "").encode()) for c in result.checkpoints)
        history_bytes = sum(sum(e.ByteSize() for e in h.events) for h in histories)
        stored = folder_bytes(home / "payloads") if (home / "payloads").exists() else 0
        return {
            "pipeline": label,
            "steps": len(pipeline.steps),
            "wall_s": round(wall, 1),
            "ms_per_step_first_tenth": round(first, 1),
            "ms_per_step_last_tenth": round(last, 1),
            "last_over_first": round(last / first, 2) if first else None,
            "ms_per_step_by_tenth": deciles,
            "runs_in_chain": len(histories),
            "carry_inline_bytes": inline,
            "carry_total_bytes": total,
            "first_task_ms_max": round(max(first_task_ms(h) for h in histories), 1),
            "committed_bytes": content,
            "history_bytes": history_bytes,
            "stored_payload_bytes": stored,
            "stored_over_content": round((history_bytes + stored) / content, 2)
            if content
            else None,
        }
    finally:
        stop_server(server)


async def baseline(n: int) -> dict[str, Any]:
    """The same server's own pace: a plain workflow of n sequential no-op activities."""
    home = Path(tempfile.mkdtemp(prefix="raftline-scale-"))
    os.environ["RAFTLINE_HOME"] = str(home)
    server = start_server()
    try:
        client = await temporal_client(server.address, tracing=False)
        queue = f"plain-{uuid.uuid4().hex[:8]}"
        note(f"scale: plain Temporal, {n} activities ...")
        async with plain_worker(client, queue, 50, 50):
            t0 = time.monotonic()
            res: PlainResult = await client.execute_workflow(
                PLAIN_WORKFLOW,
                PlainInput(steps=n, record_times=True),
                id=f"plain-{queue}",
                task_queue=queue,
                result_type=PlainResult,
            )
            wall = time.monotonic() - t0
        gaps = [b - a for a, b in zip(res.times, res.times[1:], strict=False)]
        deciles = tenths(gaps)
        return {
            "pipeline": f"plain Temporal, {n} activities",
            "steps": n,
            "wall_s": round(wall, 1),
            "ms_per_step_first_tenth": deciles[0],
            "ms_per_step_last_tenth": deciles[-1],
            "last_over_first": round(deciles[-1] / deciles[0], 2) if deciles[0] else None,
            "ms_per_step_by_tenth": deciles,
        }
    finally:
        stop_server(server)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100] if args.quick else [int(n) for n in args.steps.split(",") if n]
    cases = [(trivial(n), f"{n} trivial") for n in sizes]
    for size in ("50x20" if args.quick else args.big).split(","):
        big_n, _, big_kb = size.partition("x")
        if big_n:
            cases.append((big(int(big_n), int(big_kb)), f"{big_n} x {big_kb} KB"))
    plain = await baseline(args.baseline) if args.baseline and not args.quick else None
    rows = [await measure(p, label) for p, label in cases]
    for row in rows:
        if plain:  # the last tenth against the server's own steady pace
            row["last_tenth_over_plain"] = round(
                row["ms_per_step_last_tenth"] / plain["ms_per_step_last_tenth"], 2
            )
    return {"benchmark": "scale", "conditions": machine(), "baseline": plain, "results": rows}


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run(args))
    if args.json:
        emit_json(res)
        return 0
    rows = ([res["baseline"]] if res["baseline"] else []) + res["results"]
    print(
        table(
            [
                "pipeline",
                "wall s",
                "ms/step first 10%",
                "last 10%",
                "ratio",
                "vs plain",
                "runs",
                "carry inline",
                "carry all",
                "1st task ms",
                "stored/content",
            ],
            [
                [
                    r["pipeline"],
                    r["wall_s"],
                    r["ms_per_step_first_tenth"],
                    r["ms_per_step_last_tenth"],
                    r["last_over_first"],
                    r.get("last_tenth_over_plain", "-"),
                    r.get("runs_in_chain", "-"),
                    r.get("carry_inline_bytes", "-"),
                    r.get("carry_total_bytes", "-"),
                    r.get("first_task_ms_max", "-"),
                    r.get("stored_over_content") or "-",
                ]
                for r in rows
            ],
        )
    )
    print("ms per step, by tenth of the run:")
    for r in rows:
        print(f"  {r['pipeline']}: {r['ms_per_step_by_tenth']}")
    return 0
