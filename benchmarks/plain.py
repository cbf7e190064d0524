"""The yardstick: a plain Temporal workflow that calls a no-op activity N times in a row.

No verification, no checkpoints, no trace, no search attributes: what Temporal itself
costs for N activities. The overhead benchmark runs it beside raftline's pipeline of
the same N no-op steps (the same `bench.noop` activity, the same worker settings).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from raftline.models import StepInput, StepOutput, Task

PLAIN_WORKFLOW = "bench.PlainPipeline"
NOOP = "bench.noop"


class PlainInput(BaseModel):
    steps: int
    goal: str = "no-op"
    record_times: bool = False  # the scale benchmark's baseline: when each step ended


class PlainResult(BaseModel):
    steps: int
    output: str
    times: list[float] = []


@activity.defn(name=NOOP)
async def noop(inp: StepInput) -> StepOutput:
    """Does nothing but answer: the step costs only what Temporal (and raftline) add."""
    return StepOutput(text=f"Done: {inp.goal}.")


@workflow.defn(name=PLAIN_WORKFLOW)
class PlainPipeline:
    @workflow.run
    async def run(self, inp: PlainInput) -> PlainResult:
        wid = workflow.info().workflow_id
        out = StepOutput(text="")
        times: list[float] = []
        for i in range(inp.steps):
            name = f"s{i + 1:02d}"
            out = await workflow.execute_activity(
                NOOP,
                StepInput(
                    workflow_id=wid,
                    pipeline="plain",
                    step=name,
                    goal=f"no-op step {i + 1}",
                    task=Task(goal=inp.goal),
                    idempotency_key=f"{wid}/{name}/0",
                ),
                result_type=StepOutput,
                start_to_close_timeout=timedelta(seconds=60),
            )
            if inp.record_times:
                times.append(workflow.now().timestamp())
        return PlainResult(steps=inp.steps, output=out.text, times=times)
