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
- the bytes stored: histories of every run of the chain plus the payload store (external
  payloads and committed outputs), against the committed content: target at most 3x.

`--steps 100,1000,5000` and `--big 200x20` (steps x KB) choose the sizes; `--quick` runs
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
from temporalio.client import Client

from benchmarks.common import emit_json, machine, note, start_server, stop_server, table
from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.models import PipelineSpec, RunResult, RunStatus, Task
from raftline.worker import build_worker

TEXT_ACTIVITY = "bench.text"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", default="100,1000,5000", help="trivial pipelines: step counts")
    p.add_argument("--big", default="200x20", help="STEPSxKB: a pipeline of larger outputs")
    p.add_argument("--quick", action="store_true", help="100 trivial steps and 50x20 only")


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


async def chain(client: Client, workflow_id: str) -> list[Any]:
    """The histories of every run of a continue-as-new chain, first to last."""
    handle = client.get_workflow_handle(workflow_id)
    first = (await handle.describe()).raw_description.workflow_execution_info
    run_id = first.first_run_id or first.execution.run_id
    histories = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = ""
        if last.event_type == HistoryEvent.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


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


def per_step(result: RunResult) -> tuple[float, float]:
    """Mean ms between consecutive commits in the first and in the last tenth."""
    times = [e.at.timestamp() for e in result.trace if e.type == "committed"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    tenth = max(len(gaps) // 10, 1)
    return 1000 * statistics.mean(gaps[:tenth]), 1000 * statistics.mean(gaps[-tenth:])


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
        histories = await chain(client, handle.id)
        first, last = per_step(result)
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100] if args.quick else [int(n) for n in args.steps.split(",") if n]
    big_n, _, big_kb = ("50x20" if args.quick else args.big).partition("x")
    cases = [(trivial(n), f"{n} trivial") for n in sizes]
    if big_n:
        cases.append((big(int(big_n), int(big_kb)), f"{big_n} x {big_kb} KB"))
    rows = [await measure(p, label) for p, label in cases]
    return {"benchmark": "scale", "conditions": machine(), "results": rows}


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run(args))
    if args.json:
        emit_json(res)
        return 0
    print(
        table(
            [
                "pipeline",
                "wall s",
                "ms/step first 10%",
                "last 10%",
                "ratio",
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
                    r["runs_in_chain"],
                    r["carry_inline_bytes"],
                    r["carry_total_bytes"],
                    r["first_task_ms_max"],
                    r["stored_over_content"] if r["stored_over_content"] is not None else "-",
                ]
                for r in res["results"]
            ],
        )
    )
    return 0
