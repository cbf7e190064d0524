"""Test-only activities for the deployment tests: who ran a step, and a 10 MB output."""

from __future__ import annotations

import asyncio
import hashlib
import os

from temporalio import activity

from raftline.models import StepInput, StepOutput, Verdict, VerifyInput


@activity.defn(name="whoami")
async def whoami(inp: StepInput) -> StepOutput:
    """Appends `pid workflow_id step attempt temporal_attempt` to params.log, then sleeps."""
    info = activity.info()
    with open(inp.params["log"], "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {inp.workflow_id} {inp.step} {inp.attempt} {info.attempt}\n")
    loop = asyncio.get_running_loop()
    end = loop.time() + float(inp.params.get("sleep_s", 0))
    while (left := end - loop.time()) > 0:
        activity.heartbeat()
        await asyncio.sleep(min(left, 0.5))
    return StepOutput(text=f"Step {inp.step} done by worker {os.getpid()}.")


def big_text(size: int, seed: str = "raftline") -> str:
    """Deterministic prose of about `size` characters that passes the default L1 rules."""
    lines = []
    total = i = 0
    while total < size:
        tag = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:16]
        line = f"Paragraph {i} records observation {tag} for the archive.\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)


@activity.defn(name="big_output")
async def big_output(inp: StepInput) -> StepOutput:
    """An agent that writes `params.mb` megabytes of text."""
    size = int(float(inp.params.get("mb", 10)) * 1024 * 1024)
    return StepOutput(text=big_text(size, inp.params.get("seed", "raftline")))


@activity.defn(name="measure_committed")
async def measure_committed(inp: StepInput) -> StepOutput:
    """Proves a later step saw the earlier big output in full: its length and sha256."""
    parts = [
        f"{step} has {len(text)} characters, sha256 {hashlib.sha256(text.encode()).hexdigest()}."
        for step, text in inp.committed.items()
    ]
    return StepOutput(text=" ".join(parts) or "Nothing committed.")


@activity.defn(name="leaky")
async def leaky(inp: StepInput) -> StepOutput:
    """Fails its first attempt with an error that quotes an API key, like many SDKs do."""
    if inp.attempt == 0:
        raise RuntimeError(f"upstream rejected the request: invalid api key {inp.params['key']}")
    return StepOutput(text="The summary is ready.")


@activity.defn(name="leaky_judge")
async def leaky_judge(inp: VerifyInput) -> Verdict:
    """A judge whose reason quotes a credential it saw."""
    return Verdict(
        passed=True,
        tier=inp.tier,
        verifier="leaky_judge",
        reason=f"looks fine; the request used Authorization: Bearer {inp.params['token']}",
    )


@activity.defn(name="approve_judge")
async def approve_judge(inp: VerifyInput) -> Verdict:
    """A judge that passes everything and says which worker process judged."""
    return Verdict(
        passed=True, tier=inp.tier, verifier="approve_judge", reason=f"pid {os.getpid()}"
    )
