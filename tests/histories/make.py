"""Record the histories that tests/test_replay.py replays against today's workflow code.

    python tests/histories/make.py              # every scenario
    python tests/histories/make.py rollback     # just some

Histories live in one directory per generation of the commit loop (tests/histories/
1-local-rules, 2-lean-commit, ...); this script writes into CURRENT. Run it ONCE per new
scenario or new generation and commit the JSON: the files stand for runs that were in
flight under an older version of the code. Never regenerate a history to make a failing
replay test pass; a change to the commit loop that breaks one needs `workflow.patched`,
and a new generation (bump CURRENT) so the new path is pinned too.
Each file is `WorkflowHistory.to_json()` (the format of `temporal workflow show -o json`
and of the Web UI's "Download"), named after the scenario.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The commit loop of today's code: the ledger engine (patch raftline-ledger).
CURRENT = HERE / "3-ledger"
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from raftline.activities.registry import collect  # noqa: E402
from raftline.client import RaftlineClient, temporal_client  # noqa: E402
from raftline.embedded import EmbeddedServer, free_port  # noqa: E402
from raftline.history import chain_histories  # noqa: E402
from raftline.models import PipelineSpec, RunStatus, Task  # noqa: E402
from raftline.worker import build_worker  # noqa: E402
from tests.conftest import spec  # noqa: E402

TASK = Task(
    goal="Recommend whether to expand bike sharing into Oslo",
    inputs={"market": "Oslo has 720,000 residents", "budget": "4.2 million EUR"},
)
UNDO = Path(tempfile.gettempdir()) / "raftline-history-undo.log"
UNDO_PARAMS = {"log": str(UNDO)}


def clean() -> PipelineSpec:
    return spec(
        [
            {"name": "research", "goal": "Oslo facts", "params": {"text": "Oslo: {market}."}},
            {"name": "draft", "goal": "draft", "params": {"text": "Draft about Oslo."}},
            {"name": "memo", "goal": "memo", "params": {"text": "Recommendation: go."}},
        ]
    )


def rollback() -> PipelineSpec:
    """GOAL_DRIFT caught by L1, then a step error after Temporal's retries, then a pass."""
    return spec(
        [
            {"name": "facts", "goal": "facts", "params": {"text": "Oslo facts."}},
            {
                "name": "analysis",
                "goal": "analyse Oslo",
                "params": {"text": "Oslo analysis.", "faults": {0: "GOAL_DRIFT", 1: "RAISE"}},
                "checks": {"topic": ["Oslo"]},
            },
            {"name": "echo", "goal": "see what was committed", "activity": "echo_context"},
        ]
    )


def rules_3() -> PipelineSpec:
    """A refusal only rules-3 knows, caught by L1 (patch raftline-rules-3), then a pass."""
    return spec(
        [
            {
                "name": "pitch",
                "goal": "pitch Oslo",
                "activity": "by_attempt",
                "params": {
                    "texts": [
                        base64.b64encode(text.encode()).decode()
                        for text in (
                            "That's not something I'm going to help with.",
                            "Oslo pitch: 720,000 residents and a 4.2 million EUR budget.",
                        )
                    ]
                },
            },
        ]
    )


def history_bound() -> PipelineSpec:
    """A map too big for one history: it stops starting items at policy.history_max_events
    (patch raftline-history-bound), the run ends and the saga undoes the first step."""
    return spec(
        [
            {
                "name": "prepare",
                "goal": "prepare",
                "compensation": "record_undo",
                "compensation_params": UNDO_PARAMS,
            },
            {
                "name": "outline",
                "goal": "outline",
                "format": "json",
                "params": {"text": json.dumps(list(range(60)))},
            },
            {
                "name": "items",
                "goal": "item",
                "needs": ["outline"],
                "map": {"over": "outline", "max_concurrency": 4},
                "params": {"text": "Item {item} done."},
            },
        ],
        history_max_events=100,
    )


def judged() -> PipelineSpec:
    """L2 judge unsure → escalates to L3; an L3 quorum fails attempt 0, passes attempt 1."""
    return spec(
        [
            {
                "name": "analysis",
                "goal": "analyse",
                "criticality": "MEDIUM",
                "verifier": {
                    "judge": {"activity": "fake_judge", "params": {"confidence": {"L2": 0.4}}}
                },
            },
            {
                "name": "memo",
                "goal": "memo",
                "criticality": "HIGH",
                "verifier": {
                    "quorum": {
                        "require": 2,
                        "judges": [
                            {"activity": "fake_judge", "params": {"name": "a"}},
                            {
                                "activity": "fake_judge",
                                "params": {"name": "b", "fail_attempts": [0]},
                            },
                        ],
                    }
                },
            },
        ]
    )


def compensation() -> PipelineSpec:
    """A committed step, then a non-retryable error: the saga undoes the commit."""
    return spec(
        [
            {
                "name": "publish",
                "goal": "publish",
                "compensation": "record_undo",
                "compensation_params": UNDO_PARAMS,
            },
            {"name": "notify", "goal": "notify", "params": {"faults": {0: "RAISE_FATAL"}}},
        ]
    )


def breaker() -> PipelineSpec:
    """Two failures open the breaker; a 10-minute durable cooldown; the trial passes."""
    return spec(
        [
            {"name": "ok", "goal": "ok"},
            {
                "name": "flaky",
                "goal": "Oslo",
                "retries": 5,
                "params": {"text": "Oslo.", "faults": {0: "GOAL_DRIFT", 1: "GOAL_DRIFT"}},
                "checks": {"topic": ["Oslo"]},
            },
        ],
        breaker={"failure_threshold": 2, "cooldown_s": 600, "max_trips": 1},
    )


def cancel() -> PipelineSpec:
    return spec(
        [
            {
                "name": "publish",
                "goal": "publish",
                "compensation": "record_undo",
                "compensation_params": UNDO_PARAMS,
            },
            {"name": "slow", "goal": "slow", "params": {"sleep_s": 3}, "timeout_s": 30},
        ]
    )


def dag() -> PipelineSpec:
    """Parallel branches, a routed step (one skipped), and a map whose item 1 retries."""
    return spec(
        [
            {"name": "market", "goal": "market", "needs": [], "params": {"text": "Oslo."}},
            {"name": "finance", "goal": "finance", "needs": [], "params": {"text": "EUR."}},
            {"name": "topics", "goal": "topics", "needs": ["market", "finance"],
             "format": "json", "params": {"text": '["a", "b"]'}},
            {"name": "escalate", "goal": "escalate", "needs": ["topics"],
             "when": "size(topics) == 2"},
            {"name": "proceed", "goal": "proceed", "needs": ["topics"],
             "when": "size(topics) == 3"},
            {"name": "sections", "goal": "sections", "needs": ["topics"],
             "map": {"over": "topics", "max_concurrency": 2}, "checks": {"topic": ["Part"]},
             "params": {"text": "Part {item_index}.", "item_faults": {1: {0: "GOAL_DRIFT"}}}},
        ]
    )  # fmt: skip


def branch_ends() -> PipelineSpec:
    """A map item fails for good: the run ends at once (patch raftline-stop-on-end), the
    item waiting for a slot never starts, and every attempt that ran is compensated."""
    return spec(
        [
            {"name": "outline", "goal": "outline", "format": "json",
             "params": {"text": '["a", "b", "c"]'}},
            {"name": "sections", "goal": "sections",
             "map": {"over": "outline", "max_concurrency": 2},
             "params": {"text": "Part {item_index}.", "sleep_s": 0.3,
                        "item_faults": {1: {0: "RAISE_FATAL"}}},
             "compensation": "record_undo", "compensation_params": UNDO_PARAMS},
        ]
    )  # fmt: skip


def review() -> PipelineSpec:
    """A step that waits for a human before it runs, approved by an update."""
    return spec(
        [
            {"name": "quote", "goal": "quote"},
            {"name": "payout", "goal": "payout", "review": {"when": "before"},
             "compensation": "record_undo", "compensation_params": UNDO_PARAMS},
        ]
    )  # fmt: skip


def judge_down() -> PipelineSpec:
    """A judge that is down: one step waits (durable sleeps) then the run fails closed;
    the other opted into degrade and commits flagged."""
    judge = {"judge": {"activity": "down_judge"}}
    return spec(
        [
            {"name": "memo", "goal": "memo", "criticality": "MEDIUM", "verifier": judge,
             "on_judge_unavailable": "degrade"},
            {"name": "final", "goal": "final", "criticality": "MEDIUM", "verifier": judge,
             "judge_wait_s": 3},
        ]
    )  # fmt: skip


def attention() -> PipelineSpec:
    """A compensation fails for good: needs_attention, then an operator resolves it."""
    return spec(
        [
            {"name": "pay", "goal": "pay", "compensation": "record_undo",
             "compensation_params": {**UNDO_PARAMS, "fail": True}},
            {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}},
        ]
    )  # fmt: skip


def chain() -> PipelineSpec:
    """Long enough to continue as new twice: the middle run is the saved one."""
    steps = [{"name": f"s{i}", "goal": f"step {i}", "params": {"text": f"R{i}."}} for i in range(6)]
    return spec(steps, continue_as_new_after_steps=2)


def subpipeline() -> PipelineSpec:
    child = PipelineSpec.model_validate(
        {"name": "legal", "steps": [{"name": "review", "goal": "review"}]}
    )
    return spec(
        [
            {"name": "draft", "goal": "draft"},
            {"name": "legal", "goal": "legal", "pipeline": "legal", "pipeline_spec": child},
        ]
    )


async def run_to_end(rc: RaftlineClient, name: str, pipeline: PipelineSpec) -> RunStatus:
    return (await rc.run(pipeline, TASK, id=f"history-{name}")).status


async def cancel_mid_run(rc: RaftlineClient, name: str, pipeline: PipelineSpec) -> RunStatus:
    handle = await rc.start(pipeline, TASK, id=f"history-{name}")
    for _ in range(200):
        if (await handle.status()).current_step == "slow":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the slow step is running
    await handle.cancel()
    return (await handle.result()).status


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the run never got there")


async def approve_review(rc: RaftlineClient, name: str, pipeline: PipelineSpec) -> RunStatus:
    handle = await rc.start(pipeline, TASK, id=f"history-{name}")

    async def waits() -> bool:
        return bool(await handle.reviews())

    await until(waits)
    await handle.approve("payout", note="checked", by="ana")
    return (await handle.result()).status


async def resolve_attention(rc: RaftlineClient, name: str, pipeline: PipelineSpec) -> RunStatus:
    handle = await rc.start(pipeline, TASK, id=f"history-{name}")

    async def stuck() -> bool:
        return (await handle.status()).status is RunStatus.NEEDS_ATTENTION

    await until(stuck)
    await handle.compensations(resolve="undone by hand", by="ops")
    return (await handle.result()).status


async def fork_of_clean(rc: RaftlineClient, name: str, pipeline: PipelineSpec) -> RunStatus:
    source = await rc.run(pipeline, TASK, id=f"history-{name}-source")
    handle = await rc.fork(source.workflow_id, "draft", hint="Shorter.", id=f"history-{name}")
    return (await handle.result()).status


Scenario = tuple[Callable[[], PipelineSpec], Callable[..., Awaitable[RunStatus]], RunStatus]
DEV_SERVER: dict[str, Scenario] = {
    "clean": (clean, run_to_end, RunStatus.COMPLETED),
    "rollback": (rollback, run_to_end, RunStatus.COMPLETED),
    "judged": (judged, run_to_end, RunStatus.COMPLETED),
    "compensation": (compensation, run_to_end, RunStatus.COMPENSATED),
    "cancel": (cancel, cancel_mid_run, RunStatus.CANCELED),
    "dag": (dag, run_to_end, RunStatus.COMPLETED),
    "review": (review, approve_review, RunStatus.COMPLETED),
    "judge_down": (judge_down, run_to_end, RunStatus.FAILED),
    "attention": (attention, resolve_attention, RunStatus.COMPENSATED),
    "fork": (clean, fork_of_clean, RunStatus.COMPLETED),
    "continue_as_new": (chain, run_to_end, RunStatus.COMPLETED),
    "subpipeline": (subpipeline, run_to_end, RunStatus.COMPLETED),
    "branch_ends": (branch_ends, run_to_end, RunStatus.COMPENSATED),
    "rules_3": (rules_3, run_to_end, RunStatus.COMPLETED),
    "history_bound": (history_bound, run_to_end, RunStatus.COMPENSATED),
}
# The saved history of a chain is its middle run: it resumed from a carry and handed one on.
MIDDLE_RUN = {"continue_as_new"}
TIME_SKIPPING: dict[str, Scenario] = {"breaker": (breaker, run_to_end, RunStatus.COMPLETED)}
ACTIVITY_MODULES = ["tests.steps", "tests.judges"]


async def record(client: Client, scenarios: dict[str, Scenario], wanted: set[str]) -> None:
    queue = "histories"
    rc = RaftlineClient(client, queue)
    async with build_worker(client, queue, collect(ACTIVITY_MODULES)):
        for name, (make_spec, drive, expected) in scenarios.items():
            if wanted and name not in wanted:
                continue
            status = await drive(rc, name, make_spec())
            if status is not expected:
                raise SystemExit(f"{name}: ended {status.value}, expected {expected.value}")
            history = await client.get_workflow_handle(f"history-{name}").fetch_history()
            if name in MIDDLE_RUN:
                history = await middle_run(client, f"history-{name}")
            CURRENT.mkdir(exist_ok=True)
            path = CURRENT / f"{name}.json"
            path.write_text(history.to_json() + "\n", encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {len(history.events)} events, {status.value}")


async def middle_run(client: Client, workflow_id: str) -> Any:
    runs = await chain_histories(client, workflow_id)
    return runs[len(runs) // 2]


async def main(wanted: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        server = EmbeddedServer(free_port(), None, None, log, headless=True).start()
        try:
            await record(await temporal_client(server.address, tracing=False), DEV_SERVER, wanted)
        finally:
            server.stop()
    if not wanted or wanted & TIME_SKIPPING.keys():
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        )
        async with env:
            await record(env.client, TIME_SKIPPING, wanted)


if __name__ == "__main__":
    asyncio.run(main(set(sys.argv[1:])))
    gc.collect()  # free the Temporal clients before interpreter exit (sdk-python#300)
