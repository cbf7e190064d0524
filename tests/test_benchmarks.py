"""Small versions of the benchmarks: their invariants, never their speed."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from benchmarks import overhead
from benchmarks.chaos import ChaosParams, run_chaos
from benchmarks.reliability import (
    ARMS,
    Config,
    Params,
    expect,
    jobs_for,
    make_worker,
    predict,
    rules_pass_faults,
    run_jobs,
    summarise,
)
from benchmarks.sim_judge import SimJudgeParams, decide, judge_draw
from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer


def test_scripted_faults_pass_the_disabled_l1_rules() -> None:
    """Baseline commits whatever comes: no injected fault may be caught by L1."""
    assert rules_pass_faults() == []


def test_analytic_model_matches_the_issue_figures() -> None:
    prm = Params()
    base = expect(Config(20, 0.10, "baseline"), prm)
    single = expect(Config(20, 0.10, "verified", 0.9), prm)
    quorum = expect(Config(20, 0.10, "quorum", 0.9), prm)
    assert base.success == pytest.approx(0.9**20)
    assert single.silent == pytest.approx(0.191, abs=0.002)
    assert quorum.silent == pytest.approx(0.021, abs=0.001)
    assert quorum.success > 0.95
    for e in (base, single, quorum):
        assert e.success + e.silent + e.caught == pytest.approx(1.0)


def test_sim_judge_rates_and_independence() -> None:
    judge = SimJudgeParams(recall=0.9, fpr=0.03, seed=1)
    draws = [judge_draw(1, f"w{i}", "s01", 0, 0) for i in range(4000)]
    caught = sum(not decide(judge, "HALLUCINATION", u).passed for u in draws) / len(draws)
    flagged = sum(not decide(judge, None, u).passed for u in draws) / len(draws)
    assert abs(caught - 0.9) < 0.03 and abs(flagged - 0.03) < 0.015
    other = [judge_draw(1, f"w{i}", "s01", 0, 1) for i in range(4000)]
    both = sum(a < 0.5 and b < 0.5 for a, b in zip(draws, other, strict=True)) / len(draws)
    assert abs(both - 0.25) < 0.04  # judge 0 and judge 1 draw independently


async def test_reliability_core_on_the_real_server(client: RaftlineClient, queue: str) -> None:
    """Paired trials through the real workflow: outcomes agree with the reference model,
    baseline success matches (1-p)^n, a quorum corrupts no more than one judge."""
    prm = Params(seed=3)
    n, p, trials = 4, 0.3, 30
    configs = [Config(n, p, arm, None if arm == "baseline" else 0.9) for arm in ARMS]
    rc = RaftlineClient(client.client, queue)
    async with make_worker(rc, 100, 100):
        tallies = await run_jobs(rc, jobs_for(configs, trials), prm, "tb-fixed", 30)
    rows = {cfg.arm: summarise(cfg, tallies[cfg], prm) for cfg in configs}
    for row in rows.values():
        assert row["trials"] == trials and row["errors"] == 0
        assert row["disagreements_with_reference"] == 0
        assert row["l1_rejections"] == 0 and row["degraded_verdicts"] == 0
    base = rows["baseline"]
    k, q = base["success"]["count"], (1 - p) ** n
    assert abs(k - trials * q) <= 3 * math.sqrt(trials * q * (1 - q)) + 1
    assert base["caught"]["count"] == 0
    assert rows["quorum"]["silent"]["count"] <= rows["verified"]["silent"]["count"]
    assert rows["verified"]["judge_calls_per_run"]["measured"] == pytest.approx(
        rows["verified"]["generations_per_run"]["measured"]
    )
    # The reference model is the same function the harness checks each trial against.
    assert predict(configs[0], prm, "x-n4-p0.3-00000")[1] == n
    assert expect(configs[1], prm).caught < 0.05


async def test_overhead_core_runs_both_arms(temporal_server: EmbeddedServer) -> None:
    args = argparse.Namespace(
        steps=3,
        runs=4,
        rounds=1,
        concurrency=4,
        quick=False,
        breakdown=False,
        max_activities=50,
        max_workflow_tasks=50,
        address=temporal_server.address,
    )
    res = await overhead.run(args)
    for arm in ("plain", "raftline"):
        assert res["arms"][arm]["failures"] == 0 and res["arms"][arm]["steps"] == 12
        assert res["arms"][arm]["steps_per_s"] > 0
    assert res["ratio"] > 0


async def test_mini_chaos_loses_nothing_and_commits_once(tmp_path: Path) -> None:
    """Own server (file db), 2 worker processes SIGKILLed mid-run, one server restart; the
    runs rotate over linear, DAG, map and sub-pipeline shapes."""
    prm = ChaosParams(
        runs=6,
        steps=3,
        workers=2,
        rate=3.0,
        kill_min_s=1.5,
        kill_max_s=2.5,
        fatal_every=3,
        sleep_min_s=0.5,
        sleep_max_s=1.0,
        deadline_s=120,
    )
    res = await run_chaos(prm, tmp_path)
    assert res["lost_runs"] == 0
    assert res["double_commits"] == 0 and res["double_compensations"] == 0
    assert res["compensation_effects_applied_twice"] == 0
    # Every undone attempt once: the dag's saga undoes its fatal branch and the sibling it
    # cut short, the map's the list's commit, the fatal item and the items before it (all
    # started); rolled-back attempts of any run are undone at their rollback.
    assert res["compensation_effects"] == res["compensation_effects_expected"] >= 6
    assert res["sound_runs"] == res["runs"] == 6, res["problems"]
    assert res["statuses"] == {"completed": 4, "compensated": 2}
    assert res["worker_kills"] >= 1 and res["server_restarts"] == 1
    # Runs rotate over the shapes: linear, dag (the fatal one), map (the other fatal), sub.
    assert {k: v["runs"] for k, v in res["shapes"].items()} == {
        "linear": 2,
        "dag": 2,
        "map": 1,
        "sub": 1,
    }
    assert res["shapes"]["map"]["fatal"] == res["shapes"]["dag"]["fatal"] == 1
    assert res["child_runs"] >= 1
