"""Chaos benchmark: SIGKILL workers and restart the server while runs are in flight.

It starts its own dev server (a SQLite file in a temp dir) and several real worker
processes (`python worker.py --task-queue Q --activities benchmarks.chaos_steps`),
starts many runs at a steady rate, SIGKILLs a random worker every few seconds and
starts a fresh one, and restarts the server once mid-way (same database file, same
port; SIGKILL by default, `--server-signal term` for a clean stop). Steps sleep (with
heartbeats, `heartbeat_timeout_s`) so kills land mid-step; some steps drift on their
first attempt (the L1 topic rule rolls them back); every `--fatal-every`-th run ends
with a non-retryable error, so its committed steps are compensated. Where it lands:
- linear, sub: the last step, after every other step committed;
- dag: a root branch (`needs: []`) that fails fast while its sibling roots still sleep
  (with three roots or more, one sibling commits first, so a commit is undone too);
- map: one item (`item_faults`), started once a slot frees, while other items still run.
The run then cancels the branches (items) still running, waits until they stopped,
compensates their cut-short attempts, then every commit in reverse commit order.

Runs rotate over shapes (`--shapes`, default all four):
- linear: s1 -> s2 -> ... (each step needs the one before);
- dag: roots with `needs: []` running in parallel, a layer joining pairs of them, a join;
- map: a step committing a JSON list (format: json), a map over it (`max_concurrency`;
  each item sleeps, some drift on their first attempt), a last step;
- sub: a sub-pipeline step (an inline child spec, run as a child workflow) in parallel
  with a plain branch, then a join. When the parent compensates, it undoes the child's
  checkpoints itself (the child run completed; its own rollbacks it undid itself).

Then every run (and every child run) is checked:
- no run lost: each started run reached a final state before the deadline;
- completed verified: normal runs `completed` with every step verified (every branch,
  every map item); fatal ones `compensated`, failed at their fatal step, with every
  ancestor of it committed and neither it nor any step after it;
- the failure cuts the rest short: after the fatal error (in a later workflow task than
  its own, which may still take in a sibling's result that came with it) no attempt
  starts, no output is taken, nothing commits, and nothing once the saga began; the run's
  final event last;
- no double commit: checkpoints have unique step names, seq 1..k, each step committed
  after all its needs (lower seq; DAG branches in any order), one `committed` trace
  event per step, and one passing verdict per map item;
- no compensation twice: each compensation once per idempotency key (in the result and
  in the trace), and its effect (a marker per key) applied once however often delivered;
- every uncommitted attempt (map items included; attempts cut short by the failure too)
  undone exactly once, every commit undone once when the run compensates (map items one
  by one; a sub-pipeline's checkpoints by its parent), nothing undone in a completed run;
- saga order: the attempts left open first, then the commits in reverse commit order
  (checkpoint seq descending; a map's items and a child's checkpoints newest first);
- cut short means stopped: no compensation (journaled by the worker) ran before every
  delivery of the attempt it undoes had ended (returned, or its worker SIGKILLed), and no
  delivery started after it.
Recovery after a kill: for each step attempt in flight on the killed worker, the time
from the kill until its run decided it (its commit, rollback or error event in the
trace; a map item's verdict); also the time until the next commit anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from benchmarks.chaos_steps import ITEM_SLEEP_KEY, JOURNAL_KEY
from benchmarks.common import Progress, emit_json, machine, note, stop_process, table
from raftline.activities.agents import RAISE_FATAL
from raftline.client import RaftlineClient, RaftlineError, RunHandle, temporal_client
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import EventType, PipelineSpec, RunResult, RunStatus, Task

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "Oslo"
DECIDED = {EventType.COMMITTED, EventType.ROLLED_BACK, EventType.STEP_ERROR}
DOUBLE_COMMITS = ("double commit", "committed twice in the trace", "a map item committed twice")
COUNTED = {"lost", *DOUBLE_COMMITS, "compensation run twice"}
CHILD = re.compile(r"^(child \S+: )+")


SHAPES = ("linear", "dag", "map", "sub")
ITEM_KEY = re.compile(r"/item-(\d+)/\d+$")
# WF/FIRST_RUN/STEP[/item-I]/ATTEMPT/compensate: the attempt a compensation undoes.
UNDO_KEY = re.compile(r"^([^/]+)/[^/]+/(.+?)(?:/item-(\d+))?/(\d+)/compensate$")
# Fatal runs of the dag and map shapes: the fatal branch (item) sleeps this long, so it
# fails while its siblings (at least SIBLING_SLEEP_S) still run; with three roots or more
# one sibling sleeps FAST_SLEEP_S and commits first.
FATAL_SLEEP_S = 0.3
FAST_SLEEP_S = 0.05
SIBLING_SLEEP_S = 1.0


class ChaosParams(BaseModel):
    runs: int = Field(default=60, ge=1)
    steps: int = Field(default=6, ge=2)
    workers: int = Field(default=3, ge=2)
    rate: float = Field(default=2.0, gt=0, description="runs started per second")
    kill_min_s: float = 2.0
    kill_max_s: float = 5.0
    restart_delay_s: float = 0.5
    server_restart: bool = True
    server_signal: str = "kill"
    fatal_every: int = Field(default=5, ge=0, description="every k-th run ends in a saga")
    drift_rate: float = 0.2
    sleep_min_s: float = 0.3
    sleep_max_s: float = 1.5
    heartbeat_timeout_s: float = 2.0
    deadline_s: float = 300.0
    seed: int = 11
    shapes: list[str] = Field(default_factory=lambda: list(SHAPES), min_length=1)
    items: int = Field(default=6, ge=1, description="elements of the map shape's list")
    map_concurrency: int = Field(default=3, ge=1)

    @field_validator("shapes")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SHAPES]
        if bad:
            raise ValueError(f"unknown shape(s) {bad}; choose from {', '.join(SHAPES)}")
        return v


@dataclass
class Plan:
    """One run: its shape, whether it ends in a saga (and which step fails), and its spec."""

    shape: str
    fatal: bool
    spec: PipelineSpec
    fatal_step: str | None = None


class _Builder:
    """Chaos steps: each sleeps (heartbeating) and may drift on its first attempt."""

    def __init__(self, prm: ChaosParams, rng: random.Random, folder: Path) -> None:
        self.prm, self.rng, self.folder = prm, rng, folder

    def sleep(self) -> float:
        return round(self.rng.uniform(self.prm.sleep_min_s, self.prm.sleep_max_s), 2)

    def step(self, name: str, needs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        faults: dict[int, str] = {}
        if self.rng.random() < self.prm.drift_rate:
            faults[0] = "GOAL_DRIFT"
        params = {
            "text": f"Section {name} on {TOPIC}: {{goal}}.",
            "sleep_s": self.sleep(),
            "faults": faults,
            JOURNAL_KEY: str(self.folder),
        }
        params |= extra.pop("params", {})
        return {
            "name": name,
            "goal": f"Write section {name} about {TOPIC}",
            "activity": "bench.chaos_step",
            "params": params,
            "checks": {"topic": [TOPIC]},
            "heartbeat_timeout_s": self.prm.heartbeat_timeout_s,
            "timeout_s": 60,
            "compensation": "bench.chaos_undo",
            "compensation_params": {JOURNAL_KEY: str(self.folder)},
            **({"needs": needs} if needs is not None else {}),
            **extra,
        }

    def policy(self) -> dict[str, Any]:
        fast = {"max_attempts": 30, "initial_interval_s": 0.2, "backoff": 1.5, "max_interval_s": 2}
        return {
            "retries": 2,
            "activity_retry": fast,
            "compensation_retry": fast,
            "breaker": {"failure_threshold": 10, "cooldown_s": 0},
        }

    # ------------------------------------------------------------ the shapes

    def linear(self) -> list[dict[str, Any]]:
        return [self.step(f"s{j + 1}") for j in range(self.prm.steps)]

    def dag(self) -> list[dict[str, Any]]:
        """Roots with `needs: []` (parallel), a layer joining pairs of them, one join."""
        branches = self.prm.steps - 1
        roots = max(min(2, branches), math.ceil(branches / 2))
        mids = branches - roots
        steps = [self.step(f"a{r + 1}", needs=[]) for r in range(roots)]
        covered: set[str] = set()
        for m in range(mids):
            pair = sorted({f"a{m % roots + 1}", f"a{(m + 1) % roots + 1}"})
            covered |= set(pair)
            steps.append(self.step(f"m{m + 1}", needs=pair))
        leaves = [f"m{m + 1}" for m in range(mids)]
        leaves += [f"a{r + 1}" for r in range(roots) if f"a{r + 1}" not in covered]
        steps.append(self.step("join", needs=leaves))
        return steps

    def map(self) -> list[dict[str, Any]]:
        """A step committing a JSON list, a map over it (items sleep and drift), a last step."""
        prm = self.prm
        steps = [self.step(f"s{j + 1}") for j in range(max(prm.steps - 3, 0))]
        places = [f"{TOPIC} {p}" for p in ("harbour", "museums", "parks", "fjord", "opera")]
        listing = json.dumps([f"{places[i % len(places)]} #{i}" for i in range(prm.items)])
        steps.append(self.step("list", format="json", params={"text": listing}))
        drift = {
            i: {0: "GOAL_DRIFT"} for i in range(prm.items) if self.rng.random() < prm.drift_rate
        }
        steps.append(
            self.step(
                "items",
                map={"over": "list", "max_concurrency": prm.map_concurrency},
                params={
                    "text": "Part {item_index} about {item}: {goal}.",
                    "faults": {},
                    "item_faults": drift,
                    ITEM_SLEEP_KEY: [self.sleep() for _ in range(prm.items)],
                },
            )
        )
        steps.append(self.step("end"))
        return steps

    # ------------------------------------------------------------ the fatal fault

    def fail(self, shape: str, steps: list[dict[str, Any]]) -> str:
        """Make one step fail for good (RAISE_FATAL on attempt 0); its name."""
        if shape == "dag":
            return self._fail_branch(steps)
        if shape == "map":
            return self._fail_item(steps)
        last = steps[-1]
        last["params"] = {**last["params"], "faults": {0: RAISE_FATAL}}
        return last["name"]

    def _fail_branch(self, steps: list[dict[str, Any]]) -> str:
        """The first root fails fast while its sibling roots still sleep (with three roots
        or more, the first sibling commits before it fails)."""
        victim, *siblings = [s for s in steps if s.get("needs") == []]
        victim["params"] |= {"faults": {0: RAISE_FATAL}, "sleep_s": FATAL_SLEEP_S}
        if len(siblings) >= 2:
            siblings[0]["params"] |= {"faults": {}, "sleep_s": FAST_SLEEP_S}
            siblings = siblings[1:]
        for s in siblings:
            s["params"]["sleep_s"] = max(s["params"]["sleep_s"], SIBLING_SLEEP_S)
        return victim["name"]

    def _fail_item(self, steps: list[dict[str, Any]]) -> str:
        """One map item fails fast: the first to start once a slot frees (the others in
        flight then, and those never started, are cut short)."""
        step = next(s for s in steps if s.get("map"))
        index = min(self.prm.map_concurrency, self.prm.items - 1)
        params = step["params"]
        params["item_faults"] = {**params["item_faults"], index: {0: RAISE_FATAL}}
        params[ITEM_SLEEP_KEY][index] = FATAL_SLEEP_S
        return step["name"]

    def sub(self) -> list[dict[str, Any]]:
        """A sub-pipeline (an inline child spec) in parallel with a plain branch, then a join."""
        child = PipelineSpec.model_validate(
            {
                "name": "chaos-child",
                "policy": self.policy(),
                "steps": [self.step(f"c{j + 1}") for j in range(max(self.prm.steps - 3, 2))],
            }
        )
        sub = {
            "name": "sub",
            "goal": f"Write the {TOPIC} chapter (a sub-pipeline)",
            "needs": ["s1"],
            "pipeline_spec": child.model_dump(),
            "checks": {"topic": [TOPIC]},
        }
        return [
            self.step("s1"),
            sub,
            self.step("side", needs=["s1"]),
            self.step("end", needs=["sub", "side"]),
        ]


def plan_run(i: int, prm: ChaosParams, folder: Path) -> Plan:
    """Run i: shapes in rotation; in every fatal_every-th run one step fails for good (the
    last step; in a dag a parallel branch, in a map one item, while others still run)."""
    rng = random.Random(prm.seed * 100_003 + i)
    shape = prm.shapes[i % len(prm.shapes)]
    fatal = prm.fatal_every > 0 and i % prm.fatal_every == prm.fatal_every - 1
    build = _Builder(prm, rng, folder)
    steps = getattr(build, shape)()
    fatal_step = build.fail(shape, steps) if fatal else None
    spec = PipelineSpec.model_validate(
        {
            "name": f"chaos-{shape}" + ("-fatal" if fatal else ""),
            "policy": build.policy(),
            "steps": steps,
        }
    )
    return Plan(shape, fatal, spec, fatal_step)


def run_spec(i: int, prm: ChaosParams, folder: Path) -> PipelineSpec:
    return plan_run(i, prm, folder).spec


# ---------------------------------------------------------------- processes


@dataclass
class Kill:
    at: float
    pid: int
    what: str = "worker"  # or "server"
    back_at: float | None = None


@dataclass
class Cluster:
    """The server and the worker processes, all started (and ended) by us."""

    server: EmbeddedServer
    queue: str
    folder: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    all_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(TEMPORAL_ADDRESS=self.server.address, PYTHONPATH=str(ROOT))
        log = (self.folder / f"worker-{len(self.all_workers)}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "worker.py"),
                "--task-queue",
                self.queue,
                "--activities",
                "benchmarks.chaos_steps",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.workers.append(proc)
        self.all_workers.append(proc)
        return proc

    async def kill_worker(self, rng: random.Random, restart_delay_s: float) -> Kill:
        victim = rng.choice(self.workers)
        kill = Kill(at=time.time(), pid=victim.pid)
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
        self.workers.remove(victim)
        self.kills.append(kill)
        await asyncio.sleep(restart_delay_s)
        self.spawn()
        kill.back_at = time.time()
        return kill

    async def restart_server(self, how: str) -> Kill:
        proc = self.server.process
        assert proc is not None
        kill = Kill(at=time.time(), pid=proc.pid, what="server")
        if how == "kill":
            await asyncio.to_thread(self.server.kill)
        else:
            await asyncio.to_thread(self.server.stop)
        await asyncio.to_thread(self.server.start)
        await self.until_serving()
        kill.back_at = time.time()
        self.kills.append(kill)
        return kill

    async def until_serving(self, limit_s: float = 60.0) -> None:
        """Wait until the server answers a namespace lookup, not just until its port opens."""
        deadline = time.monotonic() + limit_s
        while True:
            try:
                client = await temporal_client(self.server.address)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=client.namespace)
                )
                return
            except (RPCError, RaftlineError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        self.server.stop()


# ---------------------------------------------------------------- driving


async def start_run(rc: RaftlineClient, spec: PipelineSpec, wid: str, until: float) -> RunHandle:
    """Start, retrying while the server is down; a start that landed before is kept."""
    while True:
        try:
            return await rc.start(spec, Task(goal=f"{TOPIC} report"), id=wid)
        except WorkflowAlreadyStartedError:
            return rc.get(wid)
        except (RPCError, RaftlineError, RuntimeError):
            if time.time() > until:
                raise
            await asyncio.sleep(0.5)


async def wait_result(handle: RunHandle, until: float) -> RunResult | None:
    """The run's result, riding out server restarts; None if it never ended (lost)."""
    while time.time() < until:
        try:
            return await asyncio.wait_for(handle.result(), timeout=max(1.0, until - time.time()))
        except TimeoutError:
            return None
        except (RPCError, RaftlineError, RuntimeError):
            await asyncio.sleep(0.5)
    return None


def child_ids(wid: str, spec: PipelineSpec, res: RunResult | None) -> list[str]:
    """The child runs of a run's sub-pipeline steps, one per attempt (workflows/attempts.py
    names them PARENT.STEP.ATTEMPT)."""
    subs = {s.name for s in spec.steps if s.pipeline_spec is not None}
    return [
        f"{wid}.{e.step}.{e.attempt}"
        for e in (res.trace if res else [])
        if e.type is EventType.STEP_STARTED and e.step in subs and e.attempt is not None
    ]


async def drive(
    prm: ChaosParams, cluster: Cluster, plans: dict[str, Plan]
) -> tuple[dict[str, RunResult | None], dict[str, RunResult | None]]:
    """Every run's result (None: lost), and the results of their sub-pipelines' child runs."""
    rc = RaftlineClient(await temporal_client(cluster.server.address), queue=cluster.queue)
    tag = uuid.uuid4().hex[:6]
    until = time.time() + prm.deadline_s
    results: dict[str, RunResult | None] = {}
    children: dict[str, RunResult | None] = {}
    progress = Progress("chaos: runs ended", prm.runs)
    done = asyncio.Event()
    half_started = asyncio.Event()

    async def one(i: int) -> None:
        wid = f"chaos-{tag}-{i:03d}"
        plan = plans[wid] = plan_run(i, prm, cluster.folder)
        try:
            handle = await start_run(rc, plan.spec, wid, until)
        except Exception as exc:  # noqa: BLE001 - an unstartable run is counted, not raised
            note(f"chaos: could not start {wid}: {exc}")
            results[wid] = None
            return
        res = results[wid] = await wait_result(handle, until)
        for cid in child_ids(wid, plan.spec, res):  # ended before their parent went on
            children[cid] = await wait_result(rc.get(cid), max(until, time.time() + 60))
        progress.step(extra=f"{len(cluster.kills)} kills/restarts so far")

    async def starter() -> None:
        tasks = []
        for i in range(prm.runs):
            tasks.append(asyncio.create_task(one(i)))
            if i + 1 == prm.runs // 2:
                half_started.set()
            await asyncio.sleep(1 / prm.rate)
        half_started.set()
        await asyncio.gather(*tasks)
        done.set()

    async def chaos() -> None:
        kill_rng = random.Random(prm.seed + 1)
        restarted = not prm.server_restart
        while not done.is_set():
            try:
                await asyncio.wait_for(
                    done.wait(), kill_rng.uniform(prm.kill_min_s, prm.kill_max_s)
                )
                return
            except TimeoutError:
                pass
            if not restarted and half_started.is_set() and cluster.kills:
                restarted = True
                k = await cluster.restart_server(prm.server_signal)
                note(f"chaos: server restarted ({prm.server_signal}), {k.back_at - k.at:.1f}s down")
                continue
            k = await cluster.kill_worker(kill_rng, prm.restart_delay_s)
            note(f"chaos: SIGKILLed worker {k.pid}, started a fresh one")

    await asyncio.gather(starter(), chaos())
    return results, children


# ---------------------------------------------------------------- checking


@dataclass
class Journal:
    # (time, pid, workflow, step, attempt, Temporal's attempt, map item or None)
    starts: list[tuple[float, int, str, str, int, int, int | None]] = field(default_factory=list)
    end_times: dict[tuple[int, str, str, int, int, int | None], float] = field(default_factory=dict)
    undos: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (time, the compensating workflow, the idempotency key) of each compensation delivery
    undo_at: list[tuple[float, str, str]] = field(default_factory=list)


def read_journal(folder: Path) -> Journal:
    j = Journal()
    for path in folder.glob("journal-*.tsv"):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 8:
                continue  # a line cut short by SIGKILL
            t, pid, kind = float(parts[0]), int(parts[1]), parts[2]
            if kind == "undo":
                # (workflow, step, effect, the undone attempt's key: one effect per key)
                j.undos.append((parts[3], parts[4], parts[5], parts[7]))
                j.undo_at.append((t, parts[3], parts[7]))
                continue
            wid, step, attempt, act = parts[3], parts[4], int(parts[5]), int(parts[6])
            item = None if parts[7] == "-" else int(parts[7])
            if kind == "start":
                j.starts.append((t, pid, wid, step, attempt, act, item))
            elif kind == "end":
                j.end_times[(pid, wid, step, attempt, act, item)] = t
    return j


AttemptId = tuple[str, int | None, int | None]  # (step, attempt, map item)


def _item(key: str | None) -> int | None:
    """A map item's index, from its idempotency key (WF/RUN/STEP/item-I/ATTEMPT)."""
    m = ITEM_KEY.search(key or "")
    return int(m.group(1)) if m else None


def check_run(
    wid: str,
    plan: Plan,
    res: RunResult | None,
    children: dict[str, RunResult | None] | None = None,
) -> list[str]:
    """Every invariant this run breaks (empty when it is sound)."""
    if res is None:
        return ["lost"]
    return check_result(plan.spec, res, plan.fatal_step, children or {})


def cut_short(spec: PipelineSpec, res: RunResult) -> set[AttemptId]:
    """Attempts that started and never returned (no output, no error event): in a run that
    failed, the branches and map items still running when it did. (A sub-pipeline's
    attempt is its child run: never counted.)"""
    subs = {s.name for s in spec.steps if s.pipeline_spec is not None}
    ended = {
        (e.step, e.attempt, e.item)
        for e in res.trace
        if e.type in (EventType.OUTPUT, EventType.STEP_ERROR)
    }
    return {
        (e.step, e.attempt, e.item)
        for e in res.trace
        if e.type is EventType.STEP_STARTED
        and e.step not in subs
        and (e.step, e.attempt, e.item) not in ended
    }


def check_result(
    spec: PipelineSpec,
    res: RunResult,
    fatal: str | None,
    children: dict[str, RunResult | None],
) -> list[str]:
    """The invariants of one run (a sub-pipeline's child run too), whatever its shape.
    `fatal`: the step that fails for good (its run must compensate); None: must complete."""
    problems: list[str] = []
    graph = spec.graph()
    by_name = {s.name: s for s in spec.steps}
    trace = res.trace
    want = RunStatus.COMPENSATED if fatal else RunStatus.COMPLETED
    if res.status is not want:
        problems.append(f"status {res.status.value}, want {want.value}")
    # -- the end: one final event, the trace's last; a fatal run failed at its fatal step
    # (its non-retryable STEP_ERROR, without a verdict), and nothing committed after that
    # but a sibling whose result came in the same workflow task as the failure (same `at`:
    # it had stopped already, it is undone as a commit); nothing at all once the saga began
    finals = {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELED}
    ends = [e for e in trace if e.type in finals]
    ending = EventType.RUN_FAILED if fatal else EventType.RUN_COMPLETED
    if len(ends) != 1 or ends[0].type is not ending or trace[-1] is not ends[0]:
        problems.append(f"the trace does not end with one {ending.value} event")
    fail_seq = ends[0].seq if ends else trace[-1].seq if trace else 0
    fail_at = None
    if fatal:
        failure = next(
            (
                e
                for e in trace
                if e.type is EventType.STEP_ERROR and e.step == fatal and e.verdict is None
            ),
            None,
        )
        if failure is None:
            problems.append(f"no non-retryable error of {fatal} in the trace")
        else:
            fail_seq, fail_at = failure.seq, failure.at
        if res.failed_step != fatal:
            problems.append(f"failed at step {res.failed_step}, want {fatal}")
    saga_seq = next(
        (e.seq for e in trace if e.type is EventType.COMPENSATION_STARTED and e.seq > fail_seq),
        math.inf,
    )
    after = [e for e in trace if e.seq > fail_seq and (e.at != fail_at or e.seq > saga_seq)]
    if any(e.type is EventType.COMMITTED for e in after):
        problems.append("a step committed after the failure")
    # ... and the branches still running are cut short: no attempt starts, no output is
    # taken (verified) in a later workflow task
    if any(e.type is EventType.STEP_STARTED for e in after):
        problems.append("an attempt started after the failure")
    if any(e.type is EventType.OUTPUT for e in after):
        problems.append("an output taken after the failure")
    short = cut_short(spec, res)
    if not fatal and short:
        problems.append("an attempt never ended in a completed run")
    # -- commits: each step once, seq 1..k, a step only after all its needs (any order else);
    # a fatal run: every ancestor of its fatal step, neither it nor any step after it
    steps = [c.step for c in res.checkpoints]
    if len(set(steps)) != len(steps):
        problems.append("double commit")
    if [c.seq for c in res.checkpoints] != list(range(1, len(steps) + 1)):
        problems.append("checkpoint seq not 1..k")
    if fatal:
        must, never = set(graph.ancestors(fatal)), graph.descendants([fatal])
        if not must <= set(steps) or never & set(steps):
            problems.append(
                f"committed {sorted(steps)}: want all of {sorted(must)}, none of {sorted(never)}"
            )
    elif set(steps) != set(by_name):
        problems.append(f"committed {sorted(steps)}, want {sorted(by_name)}")
    seq_of = {c.step: c.seq for c in res.checkpoints}
    for c in res.checkpoints:
        needs = graph.parents.get(c.step, [])
        early = [n for n in needs if seq_of.get(n, c.seq) >= c.seq]
        if early:
            problems.append(f"{c.step} committed before its needs {early}")
        if sorted(c.parents) != sorted(seq_of[n] for n in needs if n in seq_of):
            problems.append(f"{c.step}: checkpoint parents {c.parents} are not its needs'")
    commits = Counter(e.step for e in trace if e.type is EventType.COMMITTED)
    if any(n > 1 for n in commits.values()):
        problems.append("committed twice in the trace")
    if set(commits) != set(steps):
        problems.append("the trace's commits do not match the checkpoints")
    started = Counter(
        (e.step, e.attempt, e.item) for e in trace if e.type is EventType.STEP_STARTED
    )
    if any(n > 1 for n in started.values()):
        problems.append("an attempt started twice in the trace")
    # -- the attempts that were committed: a map step's are its items' passing attempts
    kept: set[AttemptId] = set()
    for c in res.checkpoints:
        step = by_name[c.step]
        if step.map is None:
            kept.add((c.step, c.attempt, None))
            continue
        passed = [
            (e.step, e.attempt, e.item)
            for e in trace
            if e.type is EventType.VERDICT
            and e.step == c.step
            and e.item is not None
            and e.verdict is not None
            and e.verdict.passed
        ]
        per_item = Counter(item for _, _, item in passed)
        if any(n > 1 for n in per_item.values()):
            problems.append("a map item committed twice")
        source = next((x for x in res.checkpoints if x.step == step.map.over), None)
        if source is not None and source.output is not None:
            total = len(json.loads(source.output))
            if sorted(per_item) != list(range(total)):
                problems.append(f"{c.step}: items {sorted(per_item)} of {total} committed")
        kept |= set(passed)
    # -- compensations: every uncommitted attempt undone once (at its rollback or by the
    # saga), every commit undone once when the run compensates, nothing else
    compensable = {s.name for s in spec.steps if s.compensation}
    open_attempts = Counter(k for k in started if k[0] in compensable and k not in kept)
    own = [c for c in res.compensations if c.step in by_name]
    foreign = [c for c in res.compensations if c.step not in by_name]  # a child's steps
    rolled = Counter((c.step, c.attempt, _item(c.idempotency_key)) for c in own if not c.committed)
    undone = Counter((c.step, c.attempt, _item(c.idempotency_key)) for c in own if c.committed)
    if any(n > 1 for n in [*rolled.values(), *undone.values()]):
        problems.append("compensation run twice")
    if set(rolled) != set(open_attempts):
        problems.append("an uncommitted attempt was not undone once")
    want_undone = {k for k in kept if k[0] in compensable} if fatal else set()
    if set(undone) != want_undone:
        problems.append(
            "compensations do not match the committed steps"
            if fatal
            else "compensated a completed run's commits"
        )
    if not all(c.ok for c in res.compensations):
        problems.append("a compensation failed")
    # The result keeps one record per key (a retry replaces a failed one): the trace shows
    # whether the run scheduled the same compensation twice.
    for kind in (EventType.COMPENSATION_STARTED, EventType.COMPENSATED):
        seen = Counter(
            (e.step, e.attempt, e.item, e.checkpoint_seq) for e in trace if e.type is kind
        )
        if any(n > 1 for n in seen.values()):
            problems.append("compensation run twice")
            break
    # -- the saga's order (what it started after the failure): the attempts left open
    # first, then the commits by checkpoint seq, descending; within one, a map's items and
    # a sub-pipeline's checkpoints newest first
    owner = {c.name: s.name for s in spec.steps if s.pipeline_spec for c in s.pipeline_spec.steps}
    order: list[tuple[int, int]] = []
    for e in trace:
        if e.type is not EventType.COMPENSATION_STARTED or e.seq <= fail_seq:
            continue
        if e.checkpoint_seq is None:
            if order and e.step in by_name:
                problems.append("an open attempt compensated after a commit")
            continue
        if e.step in by_name:
            place = (e.checkpoint_seq, -1 if e.item is None else e.item)
        elif e.step in owner and owner[e.step] in seq_of:
            place = (seq_of[owner[e.step]], e.checkpoint_seq)
        else:
            continue  # a compensation of a child run's step this run did not commit
        if order and place >= order[-1]:
            problems.append("commits not compensated in reverse commit order")
        order.append(place)
    # -- sub-pipelines: each child run sound; its commits undone once, by this run, when
    # this run compensates (or the child's output was rolled back), else never
    want_foreign: Counter[str | None] = Counter()
    for s in spec.steps:
        if s.pipeline_spec is None:
            continue
        for name, attempt, _ in started:
            if name != s.name:
                continue
            cid = f"{res.workflow_id}.{s.name}.{attempt}"
            child = children.get(cid)
            if child is None:
                problems.append(f"child run {cid} lost")
                continue
            problems += [
                f"child {s.name}#{attempt}: {p}"
                for p in check_result(s.pipeline_spec, child, False, children)
            ]
            if fatal or (s.name, attempt, None) not in kept:
                want_foreign.update(c.key for c in child.checkpoints)
    got_foreign = Counter(c.idempotency_key for c in foreign)
    if any(n > 1 for n in got_foreign.values()):
        problems.append("compensation run twice")
    if set(got_foreign) != set(want_foreign) or not all(c.committed for c in foreign):
        problems.append("a sub-pipeline's commits were not undone once with its parent")
    return list(dict.fromkeys(problems))


def undone_early(jour: Journal, kills: list[Kill]) -> dict[str, list[str]]:
    """Per run (a child's under its parent): compensations that ran while a delivery of the
    attempt they undo was still running, or before one started. An attempt ends with its
    journal's `end` line, or when its worker was SIGKILLed (one machine: one clock)."""
    killed = {k.pid: k.at for k in kills if k.what == "worker"}
    stops: dict[tuple[str, str, int, int | None], list[float]] = {}
    for _t, pid, wid, step, attempt, act, item in jour.starts:
        stop = jour.end_times.get((pid, wid, step, attempt, act, item), killed.get(pid))
        stops.setdefault((wid, step, attempt, item), []).append(math.inf if stop is None else stop)
    early: dict[str, list[str]] = {}
    for t, wid, key in jour.undo_at:
        m = UNDO_KEY.match(key)
        if m is None:
            continue
        item = None if m[3] is None else int(m[3])
        if any(stop > t for stop in stops.get((m[1], m[2], int(m[4]), item), [])):
            early.setdefault(wid.split(".")[0], []).append(
                "a compensation ran before its attempt stopped"
            )
    return early


def recovery(
    kills: list[Kill], jour: Journal, results: dict[str, RunResult | None]
) -> list[dict[str, Any]]:
    """Per kill: the steps in flight on the killed worker and how long until each was decided
    (`results` holds the child runs too: their steps ran under their own workflow ids)."""
    decided: dict[tuple[str, str, int, int | None], float] = {}
    commits: list[float] = []
    for wid, res in results.items():
        for e in res.trace if res else []:
            if e.step is None or e.attempt is None:
                continue
            # A map item is decided by its verdict (the step commits once all items are).
            item_passed = (
                e.type is EventType.VERDICT
                and e.item is not None
                and e.verdict is not None
                and e.verdict.passed
            )
            if e.type in DECIDED or item_passed:
                decided.setdefault((wid, e.step, e.attempt, e.item), e.at.timestamp())
            if e.type is EventType.COMMITTED:
                commits.append(e.at.timestamp())
    commits.sort()
    rows = []
    for k in kills:
        next_commit = next(
            (t for t in commits if t > (k.back_at if k.what == "server" else k.at)), None
        )
        row: dict[str, Any] = {
            "what": k.what,
            "at": round(k.at, 3),
            "down_s": round(k.back_at - k.at, 2) if k.what == "server" and k.back_at else None,
            "next_commit_anywhere_s": round(next_commit - k.at, 2) if next_commit else None,
        }
        if k.what == "worker":
            in_flight = {
                (wid, step, attempt, item)
                for (t, pid, wid, step, attempt, act, item) in jour.starts
                if pid == k.pid
                and t < k.at
                and jour.end_times.get((pid, wid, step, attempt, act, item), float("inf")) >= k.at
            }
            waits = [
                decided[key] - k.at for key in in_flight if key in decided and decided[key] > k.at
            ]
            # When the same step attempt started again, on a live worker.
            restarts = [
                min(
                    (
                        t
                        for (t, _, w, s, a, _, i) in jour.starts
                        if (w, s, a, i) == key and t > k.at
                    ),
                    default=None,
                )
                for key in in_flight
            ]
            again = [t - k.at for t in restarts if t is not None]
            row.update(
                in_flight=len(in_flight),
                redispatch_max_s=round(max(again), 2) if again else None,
                recovered=len(waits),
                recovery_max_s=round(max(waits), 2) if waits else None,
                recovery_median_s=round(statistics.median(waits), 2) if waits else None,
            )
        rows.append(row)
    return rows


# ---------------------------------------------------------------- entry point


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ChaosParams()
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--workers", type=int, default=d.workers, help="worker processes")
    p.add_argument("--rate", type=float, default=d.rate, help="runs started per second")
    p.add_argument("--kill-every", type=float, nargs=2, default=[d.kill_min_s, d.kill_max_s])
    p.add_argument("--no-server-restart", action="store_true")
    p.add_argument("--server-signal", choices=["kill", "term"], default=d.server_signal)
    p.add_argument("--deadline", type=float, default=d.deadline_s, help="seconds for all runs")
    p.add_argument("--quick", action="store_true", help="20 runs of 4 steps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--shapes",
        type=_shapes,
        default=d.shapes,
        help=f"runs rotate over these shapes (default: {','.join(SHAPES)})",
    )
    p.add_argument("--keep", action="store_true", help="keep the database, logs and journals")


def _shapes(text: str) -> list[str]:
    shapes = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if not shapes or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of {', '.join(SHAPES)}")
    return shapes


def params_from(args: argparse.Namespace) -> ChaosParams:
    prm = ChaosParams(
        runs=args.runs,
        steps=args.steps,
        workers=args.workers,
        rate=args.rate,
        kill_min_s=args.kill_every[0],
        kill_max_s=args.kill_every[1],
        server_restart=not args.no_server_restart,
        server_signal=args.server_signal,
        deadline_s=args.deadline,
        seed=args.seed,
        shapes=args.shapes,
    )
    if args.quick:
        prm = prm.model_copy(update={"runs": 20, "steps": 4, "rate": 2.0})
    return prm


async def run_chaos(
    prm: ChaosParams, folder: Path | None = None, keep: bool = False
) -> dict[str, Any]:
    """Run the chaos scenario. Its database, logs and journals go to `folder` (default: a
    temp dir, removed afterwards unless `keep` or a run broke an invariant)."""
    own = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix="raftline-chaos-"))
    server = EmbeddedServer(
        port=free_port(),
        ui_port=None,
        db_file=folder / "temporal.db",
        log_file=folder / "server.log",
        headless=True,
    )
    cond = machine()
    await asyncio.to_thread(server.start)
    cluster = Cluster(server=server, queue=f"chaos-{uuid.uuid4().hex[:6]}", folder=folder)
    t0 = time.monotonic()
    plans: dict[str, Plan] = {}
    try:
        for _ in range(prm.workers):
            cluster.spawn()
        results, children = await drive(prm, cluster, plans)
    finally:
        await asyncio.to_thread(cluster.stop)
    wall = time.monotonic() - t0
    problems = {wid: check_run(wid, plans[wid], res, children) for wid, res in results.items()}
    jour = read_journal(folder)
    for wid, early in undone_early(jour, cluster.kills).items():
        if wid in problems:
            problems[wid] = list(dict.fromkeys([*problems[wid], *early]))
    undo_effects = Counter(
        (wid, key) for wid, _step, effect, key in jour.undos if effect == "applied"
    )
    redelivered = sum(
        n - 1 for n in Counter((w, s, a, i) for _, _, w, s, a, _, i in jour.starts).values()
    )
    kills = recovery(cluster.kills, jour, {**results, **children})
    worker_waits = [k["recovery_max_s"] for k in kills if k.get("recovery_max_s") is not None]
    # A child run's problem counts as the same kind as its parent's own.
    count = Counter(CHILD.sub("", p) for probs in problems.values() for p in probs)
    statuses = Counter(r.status.value if r else "lost" for r in results.values())
    done = [r for r in [*results.values(), *children.values()] if r is not None]
    shapes: dict[str, dict[str, Any]] = {
        shape: {"runs": 0, "sound": 0, "fatal": 0, "cut_short": 0, "statuses": Counter()}
        for shape in prm.shapes
    }
    for wid, res in results.items():
        row = shapes[plans[wid].shape]
        row["runs"] += 1
        row["sound"] += not problems[wid]
        row["fatal"] += plans[wid].fatal
        if res is not None and plans[wid].fatal:  # attempts the failure cut short
            row["cut_short"] += len(cut_short(plans[wid].spec, res))
        row["statuses"][res.status.value if res else "lost"] += 1
    for row in shapes.values():
        row["statuses"] = dict(row["statuses"])
    broken = any(problems.values())
    if own and not keep and not broken:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "benchmark": "chaos",
        "params": prm.model_dump(),
        "conditions": cond,
        "folder": str(folder) if folder.exists() else None,
        "wall_s": round(wall, 1),
        "runs": len(results),
        "statuses": dict(statuses),
        "shapes": shapes,
        "child_runs": len(children),
        "sound_runs": sum(not p for p in problems.values()),
        "lost_runs": count["lost"],
        "double_commits": sum(count[k] for k in DOUBLE_COMMITS),
        "double_compensations": count["compensation run twice"],
        "compensation_effects_applied_twice": sum(n > 1 for n in undo_effects.values()),
        "compensation_deliveries": len(jour.undos),
        "compensation_effects": len(undo_effects),
        "step_attempts_redelivered": redelivered,
        "compensation_effects_expected": sum(len(r.compensations) for r in done),
        "other_problems": {k: v for k, v in count.items() if k not in COUNTED},
        "worker_kills": sum(k["what"] == "worker" for k in kills),
        "server_restarts": sum(k["what"] == "server" for k in kills),
        "recovery_max_s": max(worker_waits) if worker_waits else None,
        "kills": kills,
        "problems": {wid: p for wid, p in problems.items() if p},
    }


def render_text(res: dict[str, Any]) -> str:
    prm = res["params"]
    rows = [
        [
            i + 1,
            k["what"],
            k.get("in_flight", "—"),
            k.get("recovered", "—"),
            k.get("redispatch_max_s") if k.get("redispatch_max_s") is not None else "—",
            k.get("recovery_median_s") if k.get("recovery_median_s") is not None else "—",
            k.get("recovery_max_s") if k.get("recovery_max_s") is not None else "—",
            k["next_commit_anywhere_s"] if k["next_commit_anywhere_s"] is not None else "—",
            k["down_s"] if k["down_s"] is not None else "—",
        ]
        for i, k in enumerate(res["kills"])
    ]
    shape_rows = [
        [
            shape,
            row["runs"],
            row["fatal"],
            row["cut_short"],
            ", ".join(f"{k} {v}" for k, v in sorted(row["statuses"].items())),
            f"{row['sound']}/{row['runs']}",
        ]
        for shape, row in res["shapes"].items()
    ]
    counts = [
        ["runs", f"{res['runs']} (+ {res['child_runs']} sub-pipeline child runs)"],
        ["statuses", ", ".join(f"{k} {v}" for k, v in sorted(res["statuses"].items()))],
        ["sound runs (all checks pass)", res["sound_runs"]],
        ["lost runs", res["lost_runs"]],
        ["double commits", res["double_commits"]],
        ["compensations run twice", res["double_compensations"]],
        ["compensation effects applied twice", res["compensation_effects_applied_twice"]],
        [
            "compensation deliveries / effects / compensations in results",
            f"{res['compensation_deliveries']} / {res['compensation_effects']} / "
            f"{res['compensation_effects_expected']}",
        ],
        ["step attempts re-delivered after kills", res["step_attempts_redelivered"]],
        [
            "worker kills (SIGKILL) / server restarts",
            f"{res['worker_kills']} / {res['server_restarts']}",
        ],
        ["max recovery after a worker kill", f"{res['recovery_max_s']} s"],
        ["other problems", res["other_problems"] or "none"],
    ]
    return "\n".join(
        [
            f"chaos: {prm['runs']} runs × {prm['steps']} steps ({', '.join(prm['shapes'])}), "
            f"{prm['workers']} workers, a kill every {prm['kill_min_s']}-{prm['kill_max_s']} s, "
            f"wall {res['wall_s']} s",
            table(["check", "value"], counts),
            "",
            "Per shape (sound: every check passes; fatal: ends in a saga; cut short: attempts "
            "of fatal runs still running when their run failed, then compensated):",
            table(["shape", "runs", "fatal", "cut short", "statuses", "sound"], shape_rows),
            "",
            "Kills: steps in flight on the killed worker; when each started again on a live "
            "worker; recovery = kill → that step attempt decided (committed, rolled back or "
            "errored) in its run:",
            table(
                [
                    "#",
                    "killed",
                    "in flight",
                    "recovered",
                    "restarted after s (max)",
                    "median s",
                    "max s",
                    "next commit anywhere s",
                    "server down s (until it serves)",
                ],
                rows,
            ),
        ]
    )


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run_chaos(params_from(args), keep=args.keep))
    if args.json:
        emit_json(res)
    else:
        print(render_text(res))
    bad = res["lost_runs"] + res["double_commits"] + res["double_compensations"]
    effects_ok = res["compensation_effects"] == res["compensation_effects_expected"]
    return 0 if bad == 0 and effects_ok and res["sound_runs"] == res["runs"] else 1
