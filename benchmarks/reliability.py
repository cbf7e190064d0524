"""Reliability benchmark: does verification keep a long pipeline right, and at what cost?

Every trial is a real VerifiedPipeline run on a real Temporal dev server. Faults are
injected by the `scripted` step (attempt 0 is bad with probability p, a retry after a
hint with p·r, in a random taxonomy class) and judged by `bench.sim_judge` (recall ρ,
false-positive rate f), a real judge activity run as a local activity. Three arms run
the same trials (same workflow ids, so the same fault draws: paired):

- baseline: criticality LOW and every L1 check off: whatever comes is committed.
- verified: MEDIUM, one simulated judge (tier L2).
- quorum:   HIGH, a quorum of two independent simulated judges, require 2 (tier L3).

L1 checks are off in every arm, so the judge alone decides and the measured figures
can be held against the formulas below (`rules_pass_faults` checks that every
injected fault passes the disabled L1 rules). The circuit breaker is set out of reach
(failure_threshold = R + 2 > attempts per step, cooldown 0): this benchmark measures
verify-and-retry, not the breaker.

Outcome of a trial: success (completed, every committed output good), silent
corruption (completed with at least one bad output committed), caught failure (the run
ended without completing: a step spent its R retries; nothing wrong shipped).

Analytic model. Attempt j of a step (j = 0..R) is bad with probability
    b_j = p (j = 0),  b_j = p·r (j ≥ 1).
A verifier lets a bad output through with probability m and a good one with
probability a. One judge: m = 1-ρ, a = 1-f. A quorum of k judges requiring q passes:
    m = P[Bin(k, 1-ρ) ≥ q],  a = P[Bin(k, 1-f) ≥ q]   (k = q = 2: m = (1-ρ)², a = (1-f)²).
Per attempt: commit bad c_j = b_j·m, commit good g_j = (1-b_j)·a, reject x_j = 1-c_j-g_j.
Per step, with X_j = x_0·…·x_{j-1} (X_0 = 1):
    G = Σ_j X_j g_j   (commits a good output)      B = Σ_j X_j c_j   (commits a bad one)
    F = X_{R+1}       (spends its retries)         A = Σ_j X_j       (expected attempts)
Per run of n steps:
    success = G^n,   silent corruption = (G+B)^n − G^n,   caught = 1 − (G+B)^n
    generations per run = A·Σ_{i<n} (G+B)^i,   judge calls per run = k·generations
Baseline (no verifier: m = a = 1): success = (1-p)^n, silent = 1-(1-p)^n, caught = 0,
n generations. The naive alternative, "rerun the whole pipeline until it succeeds"
(with a perfect end-to-end check that no one has), needs 1/(1-p)^n runs, i.e.
n/(1-p)^n generations per success; verification needs A·Σ(G+B)^i / G^n per verified
success (failed runs rerun too).

Long scenario (n=20, p=0.10, r=0.45, R=3, ρ=0.9, f=0.03): one judge gives success
80.8%, silent corruption 19.1%; the quorum gives success 97.6%, silent 2.1%.

Besides the statistics, a reference model (`predict`) replays each trial's exact draws
(the scripted step's RNG and the judge's) in plain Python; every measured trial must
agree with it, which checks the harness and the workflow against each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.worker import Worker

from benchmarks.common import (
    Progress,
    bench_client,
    bench_worker,
    binomial_consistent,
    emit_json,
    machine,
    note,
    pct,
    spawn_worker,
    start_server,
    stop_process,
    stop_server,
    table,
    wilson,
)
from benchmarks.sim_judge import SIM_JUDGE, SimJudgeParams, decide, judge_draw, sim_judge
from raftline.activities.agents import ScriptedParams, choose_fault, inject
from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.models import (
    EventType,
    PipelineSpec,
    RunResult,
    RunStatus,
    StepInput,
    StepOutput,
    Task,
    VerifyInput,
)
from raftline.verifiers.rules import check_rules

ArmName = Literal["baseline", "verified", "quorum"]
ARMS: tuple[ArmName, ...] = ("baseline", "verified", "quorum")
NO_CHECKS = {"refusal": False, "error_signatures": False, "truncation": False, "secrets": False}
STEP_TEXT = "Done: {goal}."
TASK = Task(goal="Write the quarterly report")

HEADLINE = [(5, 0.05), (10, 0.10), (20, 0.10)]
LENGTHS = [5, 10, 15, 20]
LENGTH_P = 0.10
RECALLS = [0.5, 0.7, 0.9, 0.99]
LONG = (20, 0.10)
SECTIONS = ("headline", "length", "recall")


class Params(BaseModel):
    """Fixed parameters of a benchmark invocation."""

    r: float = 0.45
    retries: int = 3
    recall: float = 0.9
    fpr: float = 0.03
    seed: int = 7
    quorum_judges: int = 2
    quorum_require: int = 2


@dataclass(frozen=True)
class Config:
    """One arm of one scenario."""

    n: int
    p: float
    arm: ArmName
    recall: float | None = None  # None for the baseline

    @property
    def key(self) -> str:
        rec = "" if self.recall is None else f" ρ={self.recall:g}"
        return f"n={self.n} p={self.p:g} {self.arm}{rec}"


# ---------------------------------------------------------------- analytic model


@dataclass
class Expect:
    success: float
    silent: float
    caught: float
    generations: float
    judge_calls: float
    attempts_per_step: float


def binom_at_least(k: int, q: int, p: float) -> float:
    """P[Bin(k, p) ≥ q]."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(q, k + 1))


def verifier_pass(cfg: Config, prm: Params) -> tuple[float, float, int]:
    """(m, a, judges per attempt): pass probability of a bad and of a good output."""
    if cfg.arm == "baseline":
        return 1.0, 1.0, 0
    rho = cfg.recall if cfg.recall is not None else prm.recall
    if cfg.arm == "verified":
        return 1 - rho, 1 - prm.fpr, 1
    k, q = prm.quorum_judges, prm.quorum_require
    return binom_at_least(k, q, 1 - rho), binom_at_least(k, q, 1 - prm.fpr), k


def expect(cfg: Config, prm: Params) -> Expect:
    m, a, k = verifier_pass(cfg, prm)
    retries = 0 if cfg.arm == "baseline" else prm.retries
    G = B = A = 0.0
    X = 1.0
    for j in range(retries + 1):
        b = cfg.p if j == 0 else cfg.p * prm.r
        c, g = b * m, (1 - b) * a
        A += X
        G += X * g
        B += X * c
        X *= 1 - c - g
    done = G + B
    completed = done**cfg.n
    gens = A * sum(done**i for i in range(cfg.n))
    return Expect(
        success=G**cfg.n,
        silent=completed - G**cfg.n,
        caught=1 - completed,
        generations=gens,
        judge_calls=k * gens,
        attempts_per_step=A,
    )


# ---------------------------------------------------------------- the pipeline


def workflow_id(tag: str, n: int, p: float, trial: int) -> str:
    """Same id in every arm of a trial: the scripted step's fault draw is keyed on it."""
    return f"{tag}-n{n}-p{p:g}-{trial:05d}"


def step_goal(i: int) -> str:
    return f"Produce part {i + 1} of the report"


def good_text(i: int) -> str:
    return STEP_TEXT.replace("{goal}", step_goal(i))


def build_spec(cfg: Config, prm: Params) -> PipelineSpec:
    judge = {
        "activity": SIM_JUDGE,
        "local": True,
        "params": {"recall": cfg.recall, "fpr": prm.fpr, "seed": prm.seed, "index": 0},
    }
    verifier: dict[str, Any] | None = None
    criticality = {"baseline": "LOW", "verified": "MEDIUM", "quorum": "HIGH"}[cfg.arm]
    if cfg.arm == "verified":
        verifier = {"judge": judge}
    elif cfg.arm == "quorum":
        judges = [
            {**judge, "params": {**judge["params"], "index": i}} for i in range(prm.quorum_judges)
        ]
        verifier = {"quorum": {"judges": judges, "require": prm.quorum_require}}
    steps = [
        {
            "name": f"s{i + 1:02d}",
            "goal": step_goal(i),
            "params": {
                "text": STEP_TEXT,
                "fail_rate": cfg.p,
                "hint_factor": prm.r,
                "seed": prm.seed,
            },
            "checks": NO_CHECKS,
        }
        for i in range(cfg.n)
    ]
    policy = {
        "retries": prm.retries,
        "criticality": criticality,
        "activity_retry": {"max_attempts": 3, "initial_interval_s": 0.1},
        # Out of reach: consecutive failures never exceed R + 1 within a step.
        "breaker": {"failure_threshold": prm.retries + 2, "cooldown_s": 0, "max_trips": 0},
        "verifier": verifier,
    }
    name = f"bench-n{cfg.n}-p{cfg.p:g}-{cfg.arm}"
    return PipelineSpec.model_validate({"name": name, "policy": policy, "steps": steps})


def rules_pass_faults() -> list[str]:
    """Fault classes whose injected output the disabled L1 rules would still catch (want [])."""
    caught = []
    spec = build_spec(Config(1, 0.5, "baseline"), Params())
    step = spec.steps[0]
    for fault in ScriptedParams().fault_classes:
        text = inject(fault, good_text(0))
        vin = VerifyInput(workflow_id="w", step=step, task=TASK, output=StepOutput(text=text))
        if not check_rules(vin).passed:
            caught.append(fault.value)
    return caught


# ---------------------------------------------------------------- reference model


@dataclass
class Outcome:
    """One trial of one arm: what happened, classified."""

    outcome: Literal["success", "silent", "caught", "error"]
    generations: int = 0
    judge_calls: int = 0
    l1_rejections: int = 0
    degraded: int = 0
    agrees: bool = True
    error: str | None = None


def predict(cfg: Config, prm: Params, wid: str) -> tuple[str, int]:
    """The trial's exact outcome and generations, replaying the same draws in plain Python."""
    scripted = ScriptedParams(text=STEP_TEXT, fail_rate=cfg.p, hint_factor=prm.r, seed=prm.seed)
    _, _, k = verifier_pass(cfg, prm)
    retries = 0 if cfg.arm == "baseline" else prm.retries
    require = 1 if cfg.arm == "verified" else prm.quorum_require
    rho = cfg.recall or 0.0
    judge = SimJudgeParams(recall=rho, fpr=prm.fpr, seed=prm.seed)
    bad_committed, gens = False, 0
    for i in range(cfg.n):
        name = f"s{i + 1:02d}"
        for attempt in range(retries + 1):
            gens += 1
            inp = StepInput(
                workflow_id=wid, pipeline="", step=name, goal="", task=TASK, attempt=attempt
            )
            fault = choose_fault(scripted, inp)
            passes = sum(
                decide(judge, fault, judge_draw(prm.seed, wid, name, attempt, j)).passed
                for j in range(k)
            )
            if k == 0 or passes >= require:
                bad_committed |= fault is not None
                break
        else:
            return "caught", gens
    return ("silent" if bad_committed else "success"), gens


def classify(cfg: Config, prm: Params, result: RunResult) -> Outcome:
    goods = {f"s{i + 1:02d}": good_text(i) for i in range(cfg.n)}
    bad = any(cp.output != goods[cp.step] for cp in result.checkpoints)
    if result.status is RunStatus.COMPLETED:
        outcome = "silent" if bad else "success"
    elif result.status in (RunStatus.FAILED, RunStatus.COMPENSATED):
        outcome = "caught"
    else:
        outcome = "error"
    gens = judges = l1 = degraded = 0
    for e in result.trace:
        if e.type is EventType.OUTPUT:
            gens += 1
        if e.type is EventType.VERDICT and e.verdict is not None:
            v = e.verdict
            degraded += v.degraded
            if v.tier == "L1":
                l1 += not v.passed
            else:  # a quorum's verdict names each judge it combined
                judges += v.verifier.count(SIM_JUDGE)
    expected, expected_gens = predict(cfg, prm, result.workflow_id)
    return Outcome(
        outcome=outcome,  # type: ignore[arg-type]
        generations=gens,
        judge_calls=judges,
        l1_rejections=l1,
        degraded=degraded,
        agrees=(expected, expected_gens) == (outcome, gens),
    )


# ---------------------------------------------------------------- running


@dataclass
class Job:
    """One trial of one scenario: its arms run in turn under the same workflow id."""

    n: int
    p: float
    trial: int
    configs: list[Config]


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, what: str) -> int:
        return sum(o.outcome == what for o in self.outcomes)

    def mean(self, attr: str) -> float:
        vals = [getattr(o, attr) for o in self.outcomes if o.outcome != "error"]
        return sum(vals) / len(vals) if vals else 0.0


def plan(sections: Sequence[str]) -> list[Config]:
    """The configs the chosen sections need, each once."""
    prm = Params()
    want: list[Config] = []

    def add(n: int, p: float, recall: float = prm.recall) -> None:
        for arm in ARMS:
            cfg = Config(n, p, arm, None if arm == "baseline" else recall)
            if cfg not in want:
                want.append(cfg)

    if "long" in sections:
        add(*LONG)
    if "headline" in sections:
        for n, p in HEADLINE:
            add(n, p)
    if "length" in sections:
        for n in LENGTHS:
            add(n, LENGTH_P)
    if "recall" in sections:
        for rho in RECALLS:
            add(*LONG, recall=rho)
    return want


def jobs_for(configs: list[Config], trials: int) -> list[Job]:
    by_scenario: dict[tuple[int, float], list[Config]] = {}
    for cfg in configs:
        by_scenario.setdefault((cfg.n, cfg.p), []).append(cfg)
    jobs = [Job(n, p, t, cfgs) for t in range(trials) for (n, p), cfgs in by_scenario.items()]
    # Longest first, so the tail of the run is not one slow 20-step chain.
    jobs.sort(key=lambda j: (j.trial // 50, -j.n * len(j.configs)))
    return jobs


async def run_jobs(
    client: RaftlineClient,
    jobs: list[Job],
    prm: Params,
    tag: str,
    concurrency: int,
    progress: Progress | None = None,
    run_timeout_s: float = 600.0,
) -> dict[Config, Tally]:
    """Run every job's arms in turn; at most `concurrency` jobs in flight. A run that does
    not end within run_timeout_s (e.g. a failing workflow task) counts as an error."""
    tallies: dict[Config, Tally] = {}
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def one(cfg: Config, wid: str) -> Outcome:
        try:
            run = client.run(build_spec(cfg, prm), TASK, id=wid)
            result = await asyncio.wait_for(run, timeout=run_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a lost or broken run is a finding, not a crash
            return Outcome(outcome="error", agrees=False, error=f"{type(exc).__name__}: {exc}")
        return classify(cfg, prm, result)

    async def drain() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            wid = workflow_id(tag, job.n, job.p, job.trial)
            for cfg in job.configs:
                outcome = await one(cfg, wid)
                tallies.setdefault(cfg, Tally()).outcomes.append(outcome)
                if progress is not None:
                    progress.step()

    await asyncio.gather(*(drain() for _ in range(concurrency)))
    return tallies


def bench_activities() -> list[Callable[..., Any]]:
    return [*collect(), sim_judge]


def make_worker(
    client: RaftlineClient, max_activities: int, max_wf_tasks: int, unsandboxed: bool = False
) -> Worker:
    return bench_worker(
        client.client,
        client.task_queue,
        bench_activities(),
        max_activities,
        max_wf_tasks,
        unsandboxed=unsandboxed,
    )


# ---------------------------------------------------------------- reporting


def summarise(cfg: Config, tally: Tally, prm: Params) -> dict[str, Any]:
    n = len(tally.outcomes)
    exp = expect(cfg, prm)
    row: dict[str, Any] = {
        "n": cfg.n,
        "p": cfg.p,
        "arm": cfg.arm,
        "recall": cfg.recall,
        "fpr": None if cfg.arm == "baseline" else prm.fpr,
        "trials": n,
        "errors": tally.count("error"),
        "disagreements_with_reference": sum(not o.agrees for o in tally.outcomes),
        "l1_rejections": sum(o.l1_rejections for o in tally.outcomes),
        "degraded_verdicts": sum(o.degraded for o in tally.outcomes),
    }
    for what in ("success", "silent", "caught"):
        k = tally.count(what)
        lo, hi = wilson(k, n)
        row[what] = {
            "count": k,
            "rate": k / n if n else None,
            "ci95": [lo, hi],
            "expected": getattr(exp, what),
            "consistent": binomial_consistent(k, n, getattr(exp, what)),
        }
    row["generations_per_run"] = {
        "measured": tally.mean("generations"),
        "expected": exp.generations,
    }
    row["judge_calls_per_run"] = {
        "measured": tally.mean("judge_calls"),
        "expected": exp.judge_calls,
    }
    return row


def cell(row: dict[str, Any], what: str) -> str:
    d = row[what]
    flag = "" if d["consistent"] else " (!)"
    return f"{pct(d['rate'])} ({pct(d['expected'])}){flag}"


def find(rows: list[dict[str, Any]], n: int, p: float, arm: str, recall: float | None) -> Any:
    for r in rows:
        if (r["n"], r["p"], r["arm"]) == (n, p, arm) and (
            arm == "baseline" or r["recall"] == recall
        ):
            return r
    return None


def report(rows: list[dict[str, Any]], prm: Params, sections: Sequence[str]) -> dict[str, Any]:
    """Tables (markdown) and the target checks, from the summarised rows."""
    out: dict[str, Any] = {"tables": {}}
    heads = [
        "n",
        "p",
        "arm",
        "trials",
        "success (exp.)",
        "silent corruption (exp.)",
        "caught (exp.)",
    ]
    scen = [s for s in HEADLINE if "headline" in sections] or ([LONG] if "long" in sections else [])
    if scen:
        body = []
        for n, p in scen:
            for arm in ARMS:
                r = find(rows, n, p, arm, None if arm == "baseline" else prm.recall)
                body.append(
                    [
                        n,
                        p,
                        arm,
                        r["trials"],
                        cell(r, "success"),
                        cell(r, "silent"),
                        cell(r, "caught"),
                    ]
                )
        out["tables"]["headline"] = table(heads, body)
    if "length" in sections:
        body = []
        for n in LENGTHS:
            b, v, q = (
                find(rows, n, LENGTH_P, arm, None if arm == "baseline" else prm.recall)
                for arm in ARMS
            )
            body.append(
                [
                    n,
                    cell(b, "success"),
                    cell(v, "success"),
                    cell(v, "silent"),
                    cell(q, "success"),
                    cell(q, "silent"),
                ]
            )
        out["tables"]["length_sweep"] = table(
            [
                "n",
                "baseline success",
                "verified success",
                "verified silent",
                "quorum success",
                "quorum silent",
            ],
            body,
        )
    if "recall" in sections:
        body = []
        n, p = LONG
        for rho in RECALLS:
            v, q = find(rows, n, p, "verified", rho), find(rows, n, p, "quorum", rho)
            body.append(
                [
                    rho,
                    cell(v, "success"),
                    cell(v, "silent"),
                    cell(v, "caught"),
                    cell(q, "success"),
                    cell(q, "silent"),
                    cell(q, "caught"),
                ]
            )
        out["tables"]["recall_sweep"] = table(
            [
                "recall",
                "verified success",
                "verified silent",
                "verified caught",
                "quorum success",
                "quorum silent",
                "quorum caught",
            ],
            body,
        )
    if scen:
        body = []
        for n, p in scen:
            naive_exp = n / (1 - p) ** n
            b = find(rows, n, p, "baseline", None)
            base_rate = b["success"]["rate"]
            naive = n / base_rate if base_rate else float("inf")
            body.append([n, p, "naive rerun", f"{naive:.1f} ({naive_exp:.1f})", "—", "—"])
            for arm in ("verified", "quorum"):
                r = find(rows, n, p, arm, prm.recall)
                g, j = r["generations_per_run"], r["judge_calls_per_run"]
                s = r["success"]["rate"] or float("nan")
                body.append(
                    [
                        n,
                        p,
                        arm,
                        f"{g['measured'] / s:.1f} ({g['expected'] / r['success']['expected']:.1f})",
                        f"{g['measured']:.2f} ({g['expected']:.2f})",
                        f"{j['measured']:.2f} ({j['expected']:.2f})",
                    ]
                )
        out["tables"]["cost"] = table(
            [
                "n",
                "p",
                "strategy",
                "generations per success (exp.)",
                "generations per run (exp.)",
                "judge calls per run (exp.)",
            ],
            body,
        )
    n, p = LONG
    v, q = find(rows, n, p, "verified", prm.recall), find(rows, n, p, "quorum", prm.recall)
    if v and q:
        vs, qs = v["silent"]["rate"], q["silent"]["rate"]
        out["targets"] = {
            "single_silent_within_bounds": v["silent"]["consistent"],
            "quorum_silent_le_3pct": qs <= 0.03,
            "quorum_silent_5x_below_single": qs * 5 <= vs,
            "quorum_success_ge_95pct": q["success"]["rate"] >= 0.95,
        }
    return out


# ---------------------------------------------------------------- entry point


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=None, help="trials per config (default 300)")
    p.add_argument("--quick", action="store_true", help="100 trials per config")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated: headline, length, recall, or long (only n=20 p=0.1)",
    )
    p.add_argument("--concurrency", type=int, default=100, help="trials in flight")
    p.add_argument("--max-activities", type=int, default=200, help="worker activity slots")
    p.add_argument("--max-workflow-tasks", type=int, default=100, help="worker workflow slots")
    p.add_argument(
        "--fast",
        action="store_true",
        help="workflow sandbox and search attributes off: same outcomes, about 2x faster",
    )
    p.add_argument("--workers", type=int, default=0, help="extra worker processes")
    p.add_argument(
        "--workers-only", action="store_true", help="no worker in this process, only --workers"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--address", default=None, help="use this server instead of starting one")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    trials = args.trials or (100 if args.quick else 300)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {*SECTIONS, "long"}
    if unknown:
        raise SystemExit(f"benchmarks: unknown section(s) {', '.join(sorted(unknown))}")
    prm = Params(seed=args.seed)
    leaks = rules_pass_faults()
    if leaks:
        raise SystemExit(f"benchmarks: disabled L1 rules still catch {leaks}: fix NO_CHECKS")
    configs = plan(sections)
    jobs = jobs_for(configs, trials)
    cond = machine()
    server = None if args.address else start_server()
    address = args.address or server.address  # type: ignore[union-attr]
    tag = f"rel-{uuid.uuid4().hex[:6]}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client = bench_client(await temporal_client(address), f"bench-{tag}", not args.fast)
        limits = (args.max_activities, args.max_workflow_tasks)
        worker: Any = make_worker(client, *limits, unsandboxed=args.fast)
        if args.workers:
            procs = [
                spawn_worker(address, client.task_queue, *limits, unsandboxed=args.fast)
                for _ in range(args.workers)
            ]
            worker = contextlib.nullcontext() if args.workers_only else worker
        total = sum(len(j.configs) for j in jobs)
        note(
            f"reliability: {len(configs)} configs × {trials} trials = {total} runs "
            f"on {address} (concurrency {args.concurrency})"
        )
        progress = Progress("runs", total)
        t0 = time.monotonic()
        async with worker:
            tallies = await run_jobs(client, jobs, prm, tag, args.concurrency, progress)
        wall = time.monotonic() - t0
    finally:
        for proc in procs:
            stop_process(proc)
        stop_server(server)
    rows = [summarise(cfg, tallies[cfg], prm) for cfg in configs]
    rep = report(rows, prm, sections)
    attempts = sum(o.generations for t in tallies.values() for o in t.outcomes)
    return {
        "benchmark": "reliability",
        "params": {**prm.model_dump(), "trials": trials, "sections": sections},
        "conditions": {
            **cond,
            "concurrency": args.concurrency,
            "fast": args.fast,
            "worker_processes": args.workers + (0 if args.workers_only else 1),
        },
        "wall_s": round(wall, 1),
        "runs": total,
        "runs_per_s": round(total / wall, 1),
        "step_attempts_per_s": round(attempts / wall, 1),
        "checks": {
            "faults_caught_by_disabled_l1": leaks,
            "errors": sum(r["errors"] for r in rows),
            "disagreements_with_reference": sum(r["disagreements_with_reference"] for r in rows),
            "l1_rejections": sum(r["l1_rejections"] for r in rows),
            "degraded_verdicts": sum(r["degraded_verdicts"] for r in rows),
        },
        "configs": rows,
        **rep,
    }


def render_text(res: dict[str, Any]) -> str:
    lines = [
        f"reliability: {res['runs']} runs in {res['wall_s']} s"
        f"{' (--fast)' if res['conditions']['fast'] else ''} "
        f"({res['runs_per_s']} runs/s, {res['step_attempts_per_s']} step attempts/s); "
        f"r={res['params']['r']} R={res['params']['retries']} fpr={res['params']['fpr']} "
        f"recall={res['params']['recall']} (unless swept); measured (analytic); "
        "(!) = outside 3σ of the analytic figure",
    ]
    titles = {
        "headline": "Headline",
        "length_sweep": "Length sweep (p=0.10)",
        "recall_sweep": "Recall sweep (n=20, p=0.10)",
        "cost": "Cost",
    }
    for key, text in res["tables"].items():
        lines += ["", f"{titles[key]}:", text]
    lines += ["", f"checks: {res['checks']}"]
    if "targets" in res:
        lines.append(f"targets (n=20, p=0.10): {res['targets']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    res = asyncio.run(run(args))
    if args.json:
        emit_json(res)
    else:
        print(render_text(res))
    bad = res["checks"]
    return 0 if not (bad["errors"] or bad["disagreements_with_reference"]) else 1


__all__ = ["expect", "predict", "build_spec", "rules_pass_faults", "run_jobs", "main"]
