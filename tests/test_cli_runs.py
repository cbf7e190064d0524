"""The CLI verbs that act on runs: reviews, show, approve, reject, edit, compensations,
fork and diff, end to end against detached runs served by a worker of the test."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer
from tests.conftest import PYTHON, ROOT, cli_env


def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, input=stdin,
    )  # fmt: skip


async def acli(*args: str, env: dict[str, str], stdin: str | None = None) -> Any:
    return await asyncio.to_thread(cli, *args, env=env, stdin=stdin)


def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode in (0, 1), (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stdout.splitlines()
    return json.loads(line)


@pytest.fixture
def env(temporal_server: EmbeddedServer, tmp_path: Path, worker: RaftlineClient) -> dict[str, str]:
    """The CLI, pointed at the test server and the queue the test's worker serves."""
    return cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=worker.task_queue)


def pipeline(tmp_path: Path, steps: list[dict[str, Any]], **policy: Any) -> str:
    path = tmp_path / "p.yaml"
    policy = {"activity_retry": {"max_attempts": 2, "initial_interval_s": 0.1}, **policy}
    path.write_text(yaml.safe_dump({"name": "cli-runs", "policy": policy, "steps": steps}))
    return str(path)


async def started(env: dict[str, str], path: str, *extra: str) -> str:
    out = await acli(
        "run", path, "--goal", "pay the vendor", "--detach", "--json",
        "--activities", "tests.steps", *extra, env=env,
    )  # fmt: skip
    return str(one_json(out)["workflow_id"])


async def until_pending(env: dict[str, str], run: str) -> list[dict[str, Any]]:
    for _ in range(100):
        found = [r for r in one_json(await acli("reviews", "--json", env=env))["reviews"]
                 if r["workflow_id"] == run]  # fmt: skip
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no pending review for {run}")


async def test_review_verbs_decide_a_pending_review_from_another_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = pipeline(
        tmp_path,
        [
            {"name": "memo", "goal": "memo", "params": {"text": "Recommendation: pay."},
             "checks": {"required": ["Recommendation"]}, "review": {"when": "always"}},
            {"name": "payout", "goal": "pay",
             "review": {"when": "before", "reviewers": ["finance"]}},
        ],
    )  # fmt: skip
    run = await started(env, path)
    [memo] = await until_pending(env, run)
    assert (memo["step"], memo["why"], memo["attempt"]) == ("memo", "always", 0)
    human = await acli("reviews", env=env)
    assert f"raftline approve {run} memo" in human.stdout
    shown = await acli("show", run, "memo", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == "Recommendation: pay."

    bad = await acli("edit", run, "memo", "--file", "-", env=env, stdin="Pay it.")
    assert bad.returncode == 2 and "L1 rules" in bad.stderr and bad.stdout == ""
    edited = await acli(
        "edit", run, "memo", "--file", "-", "--by", "ana", env=env,
        stdin="Recommendation: pay 4,200 EUR.",
    )  # fmt: skip
    assert edited.returncode == 0 and "edited by ana" in edited.stdout

    [payout] = await until_pending(env, run)
    assert payout["step"] == "payout" and payout["reviewers"] == ["finance"]
    nothing = await acli("approve", run, "memo", env=env)  # memo was edited: decided
    assert nothing.returncode == 2 and "already decided: edit by ana" in nothing.stderr
    assert nothing.stderr.startswith("raftline: run ") and "Error" not in nothing.stderr
    approved = await acli("approve", run, "payout", "--note", "ok", "--by", "ben", env=env)
    assert approved.returncode == 0, approved.stderr
    again = await acli("approve", run, "payout", "--note", "ok", "--by", "ben", env=env)
    assert again.returncode == 0 and "already recorded" in again.stdout

    result = one_json(await acli("result", run, "--json", env=env))
    assert result["status"] == "completed"
    trace = one_json(await acli("trace", run, "--json", env=env))["events"]
    decided = [e for e in trace if e["type"] == "review_decided"]
    assert [(e["step"], e["by"]) for e in decided] == [("memo", "ana"), ("payout", "ben")]
    lines = (await acli("trace", run, env=env)).stdout
    assert "REVIEW PENDING" in lines and "raftline approve" in lines


async def test_reject_with_a_hint_from_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    path = pipeline(
        tmp_path,
        [{"name": "payout", "goal": "pay", "activity": "echo_context",
          "review": {"when": "before"}}],
    )  # fmt: skip
    run = await started(env, path)
    await until_pending(env, run)
    rejected = await acli(
        "reject", run, "payout", "--hint", "Net, not gross.", "--class", "GOAL_DRIFT", env=env
    )
    assert rejected.returncode == 0 and "rejected" in rejected.stdout
    await until_pending(env, run)
    assert (await acli("approve", run, "payout", env=env)).returncode == 0
    result = one_json(await acli("result", run, "--json", env=env))
    assert json.loads(result["output"])["hint"] == "Net, not gross."


async def test_compensations_verb_resolves_a_run_that_needs_attention(
    env: dict[str, str], tmp_path: Path
) -> None:
    undo = {"log": str(tmp_path / "undo.log"), "fail": True}
    path = pipeline(
        tmp_path,
        [{"name": "pay", "goal": "pay", "compensation": "record_undo",
          "compensation_params": undo},
         {"name": "boom", "goal": "boom", "params": {"faults": {0: "RAISE_FATAL"}}}],
    )  # fmt: skip
    run = await started(env, path)
    for _ in range(100):
        listed = one_json(await acli("list", "--status", "needs_attention", "--json", env=env))
        if run in [r["workflow_id"] for r in listed["runs"]]:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("never listed as needs_attention")
    shown = one_json(await acli("compensations", run, "--json", env=env))
    assert shown["status"] == "needs_attention"
    assert [(c["step"], c["ok"]) for c in shown["compensations"]] == [("pay", False)]
    both = await acli("compensations", run, "--retry", "--resolve", "x", env=env)
    assert both.returncode == 2
    resolved = await acli("compensations", run, "--resolve", "refunded by hand", env=env)
    assert resolved.returncode == 0, resolved.stderr
    result = one_json(await acli("result", run, "--json", env=env))
    assert result["status"] == "compensated"
    late = await acli("compensations", run, "--retry", env=env)
    assert late.returncode == 2 and "no failed compensation" in late.stderr


async def test_fork_and_diff_from_the_cli(env: dict[str, str], tmp_path: Path) -> None:
    path = pipeline(
        tmp_path,
        [{"name": "research", "goal": "research", "params": {"text": "Oslo facts."}},
         {"name": "draft", "goal": "draft", "activity": "echo_context"}],
    )  # fmt: skip
    source = one_json(
        await acli(
            "run",
            path,
            "--goal",
            "memo",
            "--json",
            "--no-worker",
            "--activities",
            "tests.steps",
            env=env,
        )  # fmt: skip
    )
    assert source["status"] == "completed"
    fork = one_json(
        await acli(
            "fork", source["workflow_id"], "--from", "draft", "--hint", "Shorter.",
            "--json", "--no-worker", "--activities", "tests.steps", env=env,
        )
    )  # fmt: skip
    assert fork["status"] == "completed" and fork["workflow_id"] != source["workflow_id"]
    assert json.loads(fork["output"])["hint"] == "Shorter."
    diff = one_json(
        await acli("diff", source["workflow_id"], fork["workflow_id"], "--json", env=env)
    )
    assert diff["changed"] == ["draft"]
    human = await acli("diff", source["workflow_id"], fork["workflow_id"], env=env)
    assert (
        "= research" in human.stdout
        and "~ draft" in human.stdout
        and "saved by reuse" in (human.stdout)
    )
    refused = await acli("fork", source["workflow_id"], "--from", "nope", env=env)
    assert refused.returncode == 2 and "'nope' is not a step" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_decide_commands_offer_what_the_review_can_take() -> None:
    from raftline.cli_runs import decide_commands

    # A step that has not run yet has no output to edit; a map item is named.
    assert decide_commands("r1", "payout", None, "before") == (
        "raftline approve r1 payout | raftline reject r1 payout --hint TEXT"
    )
    assert decide_commands("r1", "sections", 2, "always").endswith(
        "raftline edit r1 sections --item 2 --file PATH"
    )
