"""Issue 3's figures: judge calls per step by tier, and the latency a judge adds per step.

    python -m tests.measure_judges [--steps 20] [--repeat 3]

Starts a headless Temporal dev server, the fake LLM (tests/fake_llm.py, 127.0.0.1) and an
in-process worker; the real SDK clients talk to the fake, which answers at once, so the
added latency is raftline + SDK + Temporal overhead, not model time.

1. Judge calls per step: examples/board_memo.yaml (the demo: 5 steps, one L1 rollback) at
   LOW, MEDIUM, MEDIUM with 1 in 5 L2 passes below min_confidence (escalated), HIGH
   (one L3 judge) and HIGH with a quorum of 2 judges (openai + anthropic wires).
2. Added latency: the same N scripted steps at LOW (rules only), MEDIUM (one L2 judge)
   and HIGH-quorum (two judges in parallel); median wall time per step over `repeat` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from raftline.activities.llm import reset_breakers
from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import EventType, PipelineSpec, RunResult, Task
from raftline.worker import build_worker
from tests.fake_llm import FakeLLM, Recorded, Reply, isolated_env, provider_env, verdict_json

ROOT = Path(__file__).resolve().parent.parent
QUORUM = {
    "quorum": {
        "require": 2,
        "judges": [
            {"params": {"provider": "openai"}},
            {"params": {"provider": "anthropic"}},
        ],
    }
}


def judged_step(rec: Recorded) -> str:
    first = rec.prompt.split("\n", 1)[0]
    return first.removeprefix("Step: ")


class Judge:
    """Answers PASS; with `hesitant_every=k`, every k-th L2 call passes at confidence 0.4."""

    def __init__(self, hesitant_every: int = 0) -> None:
        self.hesitant_every = hesitant_every
        self.l2_calls = 0

    def __call__(self, rec: Recorded) -> Reply:
        if "strict verifier" not in rec.system:
            return Reply(text="agent output", usage=(100, 50))
        confidence = 0.9
        model = str(rec.body.get("model", "")) if isinstance(rec.body, dict) else ""
        if model.endswith("mini") or "haiku" in model:
            self.l2_calls += 1
            if self.hesitant_every and self.l2_calls % self.hesitant_every == 0:
                confidence = 0.4
        return Reply(text=verdict_json("PASS", confidence=confidence), usage=(300, 40))


async def run(client: RaftlineClient, spec: PipelineSpec, task: Task) -> tuple[RunResult, float]:
    started = time.perf_counter()
    result = await client.run(spec, task)
    return result, time.perf_counter() - started


def with_policy(spec: PipelineSpec, **policy: Any) -> PipelineSpec:
    data = spec.model_dump(mode="json", exclude_none=True)
    data["policy"].update(policy)
    return PipelineSpec.model_validate(data)


async def judge_calls(client: RaftlineClient, fake: FakeLLM) -> None:
    from raftline.cli import DEMO_GOAL, DEMO_INPUTS

    demo = PipelineSpec.from_yaml(ROOT / "examples" / "board_memo.yaml")
    task = Task(goal=DEMO_GOAL, inputs=DEMO_INPUTS)
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("LOW (rules only)", {"criticality": "LOW"}, 0),
        ("MEDIUM (L2 judge)", {"criticality": "MEDIUM"}, 0),
        ("MEDIUM, 1 in 5 L2 passes hesitant", {"criticality": "MEDIUM"}, 5),
        ("HIGH (L3 judge)", {"criticality": "HIGH"}, 0),
        ("HIGH, quorum of 2", {"criticality": "HIGH", "verifier": QUORUM}, 0),
    ]
    print("judge calls per step on examples/board_memo.yaml (5 steps, 1 L1 rollback)")
    print(f"  {'tier':<36}{'attempts':>9}{'judge calls':>12}{'per step':>9}{'per attempt':>12}")
    for label, policy, hesitant in cases:
        fake.reset()
        reset_breakers()
        fake.responder = Judge(hesitant)
        result, _ = await run(client, with_policy(demo, **policy), task)
        assert result.success, result.error
        attempts = sum(1 for e in result.trace if e.type is EventType.STEP_STARTED)
        calls = [r for r in fake.requests if "strict verifier" in r.system]
        per_step = len(calls) / result.steps_total
        print(
            f"  {label:<36}{attempts:>9}{len(calls):>12}{per_step:>9.2f}"
            f"{len(calls) / attempts:>12.2f}"
        )


async def latency(client: RaftlineClient, fake: FakeLLM, n: int, repeat: int) -> None:
    steps = [
        {"name": f"s{i}", "goal": f"step {i}", "params": {"text": f"Result of step {i}."}}
        for i in range(n)
    ]
    base = {"name": "lat", "steps": steps}
    cases = {
        "LOW": {"criticality": "LOW"},
        "MEDIUM": {"criticality": "MEDIUM"},
        "HIGH-quorum": {"criticality": "HIGH", "verifier": QUORUM},
    }
    per_step: dict[str, list[float]] = {k: [] for k in cases}
    judge_ms: dict[str, list[float]] = {k: [] for k in cases}
    task = Task(goal="measure")
    for _ in range(repeat + 1):  # the first round warms up and is dropped
        for label, policy in cases.items():
            fake.reset()
            reset_breakers()
            fake.responder = Judge()
            spec = PipelineSpec.model_validate(base | {"policy": policy})
            result, wall = await run(client, spec, task)
            assert result.success, result.error
            per_step[label].append(wall / n * 1000)
            judge_ms[label] += [c.verdict.latency_ms or 0.0 for c in result.checkpoints]
    for label in cases:
        per_step[label] = per_step[label][1:]
    low = statistics.median(per_step["LOW"])
    print(f"\nadded latency per verified step ({n} scripted steps, median of {repeat} runs)")
    print(f"  {'tier':<14}{'ms/step':>9}{'min-max':>15}{'added':>9}{'judge activity ms':>19}")
    for label in cases:
        times = per_step[label]
        med = statistics.median(times)
        spread = f"{min(times):.0f}-{max(times):.0f}"
        inner = statistics.median(judge_ms[label]) if label != "LOW" else 0.0
        print(f"  {label:<14}{med:>9.1f}{spread:>15}{med - low:>9.1f}{inner:>19.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    home = Path(tempfile.mkdtemp(prefix="raftline-measure-"))
    drop, put = isolated_env(str(home))
    for name in drop:
        os.environ.pop(name, None)
    os.environ.update(put, RAFTLINE_HOME=str(home))
    server = EmbeddedServer(
        port=free_port(), ui_port=None, db_file=None, log_file=home / "server.log", headless=True
    ).start()
    try:
        with FakeLLM() as fake:
            os.environ.update(provider_env(fake, "openai"), **provider_env(fake, "anthropic"))
            os.environ["RAFTLINE_VERIFIER_PROVIDER"] = "openai"
            queue = f"measure-{uuid.uuid4().hex[:8]}"
            temporal = await temporal_client(server.address)
            async with build_worker(temporal, queue, collect()):
                client = RaftlineClient(temporal, queue)
                await judge_calls(client, fake)
                await latency(client, fake, args.steps, args.repeat)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
