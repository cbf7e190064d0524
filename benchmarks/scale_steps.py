"""Activities of the scale benchmark: `bench.text` returns KB of distinct text per step."""

from __future__ import annotations

import hashlib

from temporalio import activity

from raftline.models import StepInput, StepOutput


@activity.defn(name="bench.text")
async def text(inp: StepInput) -> StepOutput:
    """params.kb kilobytes of sentences that differ per step (no two outputs alike)."""
    size = int(inp.params.get("kb", 20)) * 1024
    seed = hashlib.sha256(f"{inp.workflow_id}/{inp.step}".encode()).hexdigest()
    sentence = f"Step {inp.step} records observation {seed[:16]} of the survey. "
    body = (sentence * (size // len(sentence) + 1))[:size]
    return StepOutput(text=body.rstrip() + ".")
