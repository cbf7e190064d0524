"""Chaos benchmark: SIGKILL workers and restart the server while runs are in flight.

It starts its own dev server (a SQLite file in a temp dir) and several real worker
processes (`python worker.py --task-queue Q --activities benchmarks.chaos_steps`),
starts many runs at a steady rate, SIGKILLs a random worker every few seconds and
starts a fresh one, and restarts the server once mid-way (same database file, same
port; SIGKILL by default, `--server-signal term` for a clean stop). Steps sleep (with
heartbeats, `heartbeat_timeout_s`) so kills land mid-step; some steps drift on their
first attempt (the L1 topic rule rolls them back); every `--fatal-every`-th run ends
with a non-retryable error, so its committed steps are compensated (saga).

Then every run is checked:
- no run lost: each started run reached a final state before the deadline;
- completed verified: normal runs `completed` with every step verified, the others
  `compensated`;
- no double commit: checkpoints have unique step names, in order, seq 1..k, and the
  trace holds one `committed` event per step;
- no compensation twice: each committed step compensated once in the result, and
  its effect (a marker per idempotency key) applied once however often delivered.
Recovery after a kill: for each step attempt in flight on the killed worker, the time
from the kill until the run decided it (its commit, rollback or error event in the
trace); also the time until the next commit anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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

from pydantic import BaseModel, Field
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from benchmarks.chaos_steps import JOURNAL_KEY
from benchmarks.common import Progress, emit_json, machine, note, stop_process, table
from raftline.client import RaftlineClient, RaftlineError, RunHandle, temporal_client
from raftline.embedded import EmbeddedServer, free_port
from raftline.models import EventType, PipelineSpec, RunResult, RunStatus, Task

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "Oslo"
DECIDED = {EventType.COMMITTED, EventType.ROLLED_BACK, EventType.STEP_ERROR}
COUNTED = {"lost", "double commit", "committed twice in the trace", "compensation run twice"}


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


def run_spec(i: int, prm: ChaosParams, folder: Path) -> PipelineSpec:
    rng = random.Random(prm.seed * 100_003 + i)
    fatal = prm.fatal_every > 0 and i % prm.fatal_every == prm.fatal_every - 1
    steps = []
    for j in range(prm.steps):
        faults: dict[int, str] = {}
        if rng.random() < prm.drift_rate:
            faults[0] = "GOAL_DRIFT"
        if fatal and j == prm.steps - 1:
            faults = {0: "RAISE_FATAL"}
        steps.append(
            {
                "name": f"s{j + 1}",
                "goal": f"Write section {j + 1} about {TOPIC}",
                "activity": "bench.chaos_step",
                "params": {
                    "text": f"Section {j + 1} on {TOPIC}: {{goal}}.",
                    "sleep_s": round(rng.uniform(prm.sleep_min_s, prm.sleep_max_s), 2),
                    "faults": faults,
                    JOURNAL_KEY: str(folder),
                },
                "checks": {"topic": [TOPIC]},
                "heartbeat_timeout_s": prm.heartbeat_timeout_s,
                "timeout_s": 60,
                "compensation": "bench.chaos_undo",
                "compensation_params": {JOURNAL_KEY: str(folder)},
            }
        )
    fast = {"max_attempts": 30, "initial_interval_s": 0.2, "backoff": 1.5, "max_interval_s": 2}
    return PipelineSpec.model_validate(
        {
            "name": "chaos-fatal" if fatal else "chaos",
            "policy": {
                "retries": 2,
                "activity_retry": fast,
                "compensation_retry": fast,
                "breaker": {"failure_threshold": 10, "cooldown_s": 0},
            },
            "steps": steps,
        }
    )


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


async def drive(
    prm: ChaosParams, cluster: Cluster, specs: dict[str, PipelineSpec]
) -> dict[str, RunResult | None]:
    rc = RaftlineClient(await temporal_client(cluster.server.address), queue=cluster.queue)
    tag = uuid.uuid4().hex[:6]
    until = time.time() + prm.deadline_s
    results: dict[str, RunResult | None] = {}
    progress = Progress("chaos: runs ended", prm.runs)
    done = asyncio.Event()
    half_started = asyncio.Event()

    async def one(i: int) -> None:
        wid = f"chaos-{tag}-{i:03d}"
        spec = specs[wid] = run_spec(i, prm, cluster.folder)
        try:
            handle = await start_run(rc, spec, wid, until)
        except Exception as exc:  # noqa: BLE001 - an unstartable run is counted, not raised
            note(f"chaos: could not start {wid}: {exc}")
            results[wid] = None
            return
        results[wid] = await wait_result(handle, until)
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
    return results


# ---------------------------------------------------------------- checking


@dataclass
class Journal:
    starts: list[tuple[float, int, str, str, int, int]] = field(default_factory=list)
    ends: set[tuple[int, str, str, int, int]] = field(default_factory=set)
    end_times: dict[tuple[int, str, str, int, int], float] = field(default_factory=dict)
    undos: list[tuple[str, str, str, str]] = field(default_factory=list)


def read_journal(folder: Path) -> Journal:
    j = Journal()
    for path in folder.glob("journal-*.tsv"):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 7:
                continue  # a line cut short by SIGKILL
            t, pid, kind = float(parts[0]), int(parts[1]), parts[2]
            if kind == "undo":
                # (workflow, step, effect, the undone attempt's key: one effect per key)
                key = parts[7] if len(parts) > 7 else parts[4]
                j.undos.append((parts[3], parts[4], parts[5], key))
                continue
            wid, step, attempt, act = parts[3], parts[4], int(parts[5]), int(parts[6])
            if kind == "start":
                j.starts.append((t, pid, wid, step, attempt, act))
            elif kind == "end":
                j.ends.add((pid, wid, step, attempt, act))
                j.end_times[(pid, wid, step, attempt, act)] = t
    return j


def check_run(wid: str, spec: PipelineSpec, res: RunResult | None) -> list[str]:
    """Every invariant this run breaks (empty when it is sound)."""
    if res is None:
        return ["lost"]
    problems = []
    fatal = spec.name == "chaos-fatal"
    names = [s.name for s in spec.steps]
    expect_steps = names[:-1] if fatal else names
    want = RunStatus.COMPENSATED if fatal else RunStatus.COMPLETED
    if res.status is not want:
        problems.append(f"status {res.status.value}, want {want.value}")
    steps = [c.step for c in res.checkpoints]
    if len(set(steps)) != len(steps):
        problems.append("double commit")
    if [c.seq for c in res.checkpoints] != list(range(1, len(steps) + 1)):
        problems.append("checkpoint seq not 1..k")
    if steps != expect_steps:
        problems.append(f"committed {steps}, want {expect_steps}")
    commits = Counter(e.step for e in res.trace if e.type is EventType.COMMITTED)
    if any(n > 1 for n in commits.values()):
        problems.append("committed twice in the trace")
    # One compensation per undone attempt (a rolled-back attempt and the committed one of
    # the same step are two side effects, undone once each).
    comp = Counter((c.step, c.idempotency_key) for c in res.compensations)
    if any(n > 1 for n in comp.values()):
        problems.append("compensation run twice")
    undone = sorted(c.step for c in res.compensations if c.committed)
    if fatal and (undone != sorted(steps) or not all(c.ok for c in res.compensations)):
        problems.append("compensations do not match the committed steps")
    if not fatal and any(c.committed for c in res.compensations):
        problems.append("compensated a completed run's commits")
    # Every attempt that ran and was not committed is undone once (rollbacks, the fatal one).
    attempts = {
        (e.step, e.attempt)
        for e in res.trace
        if e.type is EventType.STEP_STARTED
        and not any(c.step == e.step and c.attempt == e.attempt for c in res.checkpoints)
    }
    undone_attempts = {(c.step, c.attempt) for c in res.compensations if not c.committed}
    if attempts != undone_attempts:
        problems.append("an uncommitted attempt was not undone")
    return problems


def recovery(kills: list[Kill], jour: Journal, results: dict[str, RunResult | None]) -> list[dict]:
    """Per kill: the steps in flight on the killed worker and how long until each was decided."""
    decided: dict[tuple[str, str, int], float] = {}
    commits: list[float] = []
    for wid, res in results.items():
        for e in res.trace if res else []:
            if e.type in DECIDED and e.step is not None and e.attempt is not None:
                decided.setdefault((wid, e.step, e.attempt), e.at.timestamp())
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
                (wid, step, attempt)
                for (t, pid, wid, step, attempt, act) in jour.starts
                if pid == k.pid
                and t < k.at
                and jour.end_times.get((pid, wid, step, attempt, act), float("inf")) >= k.at
            }
            waits = [
                decided[key] - k.at for key in in_flight if key in decided and decided[key] > k.at
            ]
            # When the same step attempt started again, on a live worker.
            restarts = [
                min(
                    (t for (t, pid, w, s, a, _) in jour.starts if (w, s, a) == key and t > k.at),
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
    p.add_argument("--keep", action="store_true", help="keep the database, logs and journals")


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
    specs: dict[str, PipelineSpec] = {}
    try:
        for _ in range(prm.workers):
            cluster.spawn()
        results = await drive(prm, cluster, specs)
    finally:
        await asyncio.to_thread(cluster.stop)
    wall = time.monotonic() - t0
    problems = {wid: check_run(wid, specs[wid], res) for wid, res in results.items()}
    jour = read_journal(folder)
    undo_effects = Counter(
        (wid, key) for wid, _step, effect, key in jour.undos if effect == "applied"
    )
    redelivered = sum(
        n - 1 for n in Counter((w, s, a) for _, _, w, s, a, _ in jour.starts).values()
    )
    kills = recovery(cluster.kills, jour, results)
    worker_waits = [k["recovery_max_s"] for k in kills if k.get("recovery_max_s") is not None]
    count = Counter(p for probs in problems.values() for p in probs)
    statuses = Counter(r.status.value if r else "lost" for r in results.values())
    done = [r for r in results.values() if r is not None]
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
        "sound_runs": sum(not p for p in problems.values()),
        "lost_runs": count["lost"],
        "double_commits": count["double commit"] + count["committed twice in the trace"],
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
    counts = [
        ["runs", res["runs"]],
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
            f"chaos: {prm['runs']} runs × {prm['steps']} steps, {prm['workers']} workers, "
            f"a kill every {prm['kill_min_s']}-{prm['kill_max_s']} s, wall {res['wall_s']} s",
            table(["check", "value"], counts),
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
