"""The CLI contract (DESIGN.md): exit codes, one-line errors, one JSON object, live lines.

Every test runs starter.py as a subprocess, as a user or a script would.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raftline.cli import DEMO_GOAL, DEMO_INPUTS
from raftline.embedded import EmbeddedServer, free_port, port_open
from tests.conftest import PYTHON, ROOT, SUMMARY_KEYS, cli_env

DEMO = str(ROOT / "examples" / "board_memo.yaml")
DEMO_ARGS = [
    "--goal",
    DEMO_GOAL,
    *(a for k, v in DEMO_INPUTS.items() for a in ("--input", f"{k}={v}")),
]
EVENT_KEYS = {"seq", "type", "step", "attempt", "at"}
# The test server is headless: runs link to a Web UI only where one is configured.
UI = "http://ui.test:8233"


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON object (one line), and nothing crashed."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def one_line_error(
    proc: subprocess.CompletedProcess[str], code: int, prefix: str = "raftline:"
) -> str:
    """Exit `code`, nothing on stdout, exactly one line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def queue() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- bad input: exit 2


@pytest.fixture
def offline(tmp_path: Path) -> tuple[dict[str, str], Path, str]:
    """An env whose TEMPORAL_ADDRESS is a closed local port: starting a server would show."""
    home = tmp_path / "home"
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(None, home, TEMPORAL_ADDRESS=address, RAFTLINE_TASK_QUEUE=queue())
    return env, home, address


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def nothing_started(home: Path, address: str) -> None:
    assert not (home / "temporal.db").exists()
    assert not (home / "temporal-server.log").exists()
    host, _, port = address.rpartition(":")
    assert not port_open(host, int(port))


BAD_INPUTS: list[Any] = [
    pytest.param(
        lambda d: ["run", str(d / "missing.yaml"), "--goal", "g"],
        "no such pipeline file",
        id="missing-file",
    ),
    pytest.param(
        lambda d: ["run", write(d / "p.yaml", "name: x\nsteps:\n\t- name: a\n"), "--goal", "g"],
        "invalid YAML at line 3",
        id="invalid-yaml",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: g, activity: nope}\n"),
            "--goal",
            "g",
        ],
        "step 'a': unknown activity 'nope'",
        id="unknown-activity",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: g, compensation: nope}\n"),
            "--goal",
            "g",
        ],
        "step 'a': unknown compensation 'nope'",
        id="unknown-compensation",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: g, colour: red}\n"),
            "--goal",
            "g",
        ],
        "steps[0](a).colour: unknown field",
        id="unknown-field",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(
                d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: g}\n  - {name: a, goal: h}\n"
            ),
            "--goal",
            "g",
        ],
        "duplicate step name 'a'",
        id="duplicate-steps",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(
                d / "p.yaml",
                "name: x\nmodules: [no_such_module_xyz]\nsteps: [{name: a, goal: g}]\n",
            ),
            "--goal",
            "g",
        ],
        "cannot import activity module 'no_such_module_xyz'",
        id="bad-module",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: g, params: {txt: hi}}\n"),
            "--goal",
            "g",
        ],
        "steps[a].params.txt: unknown field",
        id="bad-scripted-params",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(
                d / "p.yaml",
                "name: x\nsteps:\n  - {name: a, goal: g, params: {faults: {0: NOPE}}}\n",
            ),
            "--goal",
            "g",
        ],
        "steps[a].params.faults.0: 'NOPE' is not a fault",
        id="bad-scripted-fault",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(
                d / "p.yaml",
                "name: x\nsteps:\n  - {name: a, goal: g}\n"
                "  - {name: b, goal: g, activity: publish, params: {from: nonexistent}}\n",
            ),
            "--goal",
            "g",
        ],
        "steps[b].params.from: 'nonexistent' is not a step this one needs (it sees: a)",
        id="publish-from-unknown-step",
    ),
    pytest.param(
        lambda d: ["run", DEMO, "--goal", "g", "--input", "finance=f"],
        "steps[research].params.text: {market} is not a task input (inputs: finance)",
        id="placeholder-without-input",
    ),
    pytest.param(
        lambda d: [
            "run",
            write(d / "p.yaml", "name: x\nsteps:\n  - {name: a, goal: 'Sum up {topic}'}\n"),
            "--goal",
            "g",
        ],
        "steps[a].goal: {topic} is not a task input (inputs: none)",
        id="placeholder-in-goal",
    ),
    pytest.param(
        lambda d: ["run", DEMO, "--goal", "g", "--input", "market"],
        "--input 'market': expected KEY=VALUE",
        id="input-without-equals",
    ),
    pytest.param(
        lambda d: ["run", DEMO, "--goal", "g", "--input", "=value"],
        "expected KEY=VALUE",
        id="input-empty-key",
    ),
    pytest.param(
        lambda d: ["run", DEMO, "--goal", "   "], "--goal must not be empty", id="empty-goal"
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(
    offline: tuple[dict[str, str], Path, str], tmp_path: Path, argv: Any, expected: str
) -> None:
    env, home, address = offline
    line = one_line_error(cli(*argv(tmp_path), env=env), 2)
    assert expected in line
    nothing_started(home, address)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-subcommand"),
        pytest.param([], "required: command", id="no-subcommand"),
        pytest.param(["status"], "required: id", id="status-without-id"),
        pytest.param(["run", DEMO], "required: --goal", id="run-without-goal"),
        pytest.param(["run", "--goal", "g"], "required: pipeline", id="run-without-pipeline"),
        pytest.param(["list", "--status", "weird"], "invalid choice: 'weird'", id="bad-status"),
        pytest.param(["run", DEMO, "--goal", "g", "--bogus"], "unrecognized", id="unknown-flag"),
        pytest.param(["list", "--limit", "0"], "--limit: must be at least 1", id="limit-0"),
        pytest.param(["list", "--limit", "-1"], "--limit: must be at least 1", id="limit-negative"),
        pytest.param(["status", ""], "a run id must not be empty", id="status-empty-id"),
        pytest.param(["cancel", " "], "a run id must not be empty", id="cancel-blank-id"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    offline: tuple[dict[str, str], Path, str], argv: list[str], expected: str
) -> None:
    env, home, address = offline
    line = one_line_error(cli(*argv, env=env), 2, prefix="raftline")
    assert line.split(":", 1)[0] == "raftline"
    assert expected in line
    nothing_started(home, address)


@pytest.mark.parametrize("command", ["status", "result", "trace", "cancel", "replay"])
def test_unreachable_temporal_exits_3(
    offline: tuple[dict[str, str], Path, str], command: str
) -> None:
    env, home, address = offline
    line = one_line_error(cli(command, "SOMEID", env=env), 3)
    assert f"Temporal is unreachable at {address}" in line
    nothing_started(home, address)


def test_list_unreachable_exits_3(offline: tuple[dict[str, str], Path, str]) -> None:
    env, home, address = offline
    one_line_error(cli("list", "--json", env=env), 3)
    nothing_started(home, address)


# ---------------------------------------------------------------- against a real server


@dataclass
class DemoRun:
    env: dict[str, str]
    summary: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.summary["workflow_id"])


@pytest.fixture(scope="module")
def demo_run(temporal_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One `run examples/board_memo.yaml --json`, shared by the read-only commands below."""
    env = cli_env(
        temporal_server,
        tmp_path_factory.mktemp("home"),
        RAFTLINE_TASK_QUEUE=queue(),
        RAFTLINE_UI_URL=UI,
    )
    proc = cli("run", DEMO, *DEMO_ARGS, "--json", env=env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return DemoRun(env, one_json(proc))


def test_run_json_is_one_verified_summary(demo_run: DemoRun) -> None:
    s = demo_run.summary
    assert SUMMARY_KEYS <= set(s)
    assert s["status"] == "completed"
    assert s["success"] is True
    assert s["verified"] == "5/5"
    assert s["rollbacks"] >= 1
    assert s["retries"] >= 1
    assert s["compensations"] == 0
    assert 0 < s["reliability"] < 1  # the drifting analysis attempt is one failed verdict
    assert set(s["usage"]) == {"input_tokens", "output_tokens", "cost_usd"}
    assert s["usage"]["output_tokens"] > 0
    assert s["ui_url"] == f"{UI}/namespaces/default/workflows/{demo_run.id}"
    assert "Published" in s["output"]


def test_trace_json(demo_run: DemoRun) -> None:
    proc = cli("trace", demo_run.id, "--json", env=demo_run.env)
    assert proc.returncode == 0, proc.stderr
    trace = one_json(proc)
    assert trace["workflow_id"] == demo_run.id
    events = trace["events"]
    for e in events:
        assert EVENT_KEYS <= set(e), e
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "run_completed"

    drift = [e for e in events if e["type"] == "verdict" and not e["verdict"]["passed"]]
    assert len(drift) == 1
    verdict = drift[0]["verdict"]
    assert {"passed", "error_class", "reason", "tier", "verifier"} <= set(verdict)
    assert (drift[0]["step"], drift[0]["attempt"]) == ("analysis", 0)
    assert verdict["error_class"] == "GOAL_DRIFT"

    types = [e["type"] for e in events if e["step"] == "analysis"]
    assert types.index("rolled_back") < types.index("retry") < types.index("committed")
    retry = next(e for e in events if e["type"] == "retry")
    assert retry["step"] == "analysis" and retry["attempt"] == 1
    assert "goal" in retry["hint"].lower()

    committed = [e for e in events if e["type"] == "committed"]
    assert [e["checkpoint_seq"] for e in committed] == [1, 2, 3, 4, 5]
    assert [e["step"] for e in committed] == ["research", "finance", "analysis", "memo", "publish"]


def test_trace_plain(demo_run: DemoRun) -> None:
    proc = cli("trace", demo_run.id, env=demo_run.env)
    assert proc.returncode == 0, proc.stderr
    assert "analysis       attempt 0: FAIL GOAL_DRIFT" in proc.stdout
    assert "committed checkpoint #5" in proc.stdout


def test_status_json(demo_run: DemoRun) -> None:
    proc = cli("status", demo_run.id, "--json", env=demo_run.env)
    assert proc.returncode == 0, proc.stderr
    st = one_json(proc)
    assert st["workflow_id"] == demo_run.id
    assert st["pipeline"] == "board_memo"
    assert st["status"] == "completed"
    assert st["verified"] == "5/5"
    assert [c["seq"] for c in st["checkpoints"]] == [1, 2, 3, 4, 5]
    analysis = next(c for c in st["checkpoints"] if c["step"] == "analysis")
    assert analysis["attempt"] == 1
    assert st["ui_url"] == demo_run.summary["ui_url"]


def test_result_json_matches_run(demo_run: DemoRun) -> None:
    proc = cli("result", demo_run.id, "--json", env=demo_run.env)
    assert proc.returncode == 0, proc.stderr
    assert one_json(proc) == demo_run.summary


def test_list_shows_completed_run(demo_run: DemoRun) -> None:
    deadline = time.monotonic() + 10  # visibility may lag behind the run
    while True:
        proc = cli("list", "--status", "completed", "--json", env=demo_run.env)
        assert proc.returncode == 0, proc.stderr
        runs = one_json(proc)["runs"]
        row = next((r for r in runs if r["workflow_id"] == demo_run.id), None)
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row is not None, runs
    assert row["status"] == "completed"
    assert row["pipeline"] == "board_memo"
    assert all(r["status"] == "completed" for r in runs)


def test_replay_is_deterministic(demo_run: DemoRun) -> None:
    proc = cli("replay", demo_run.id, env=demo_run.env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("deterministic: ")
    assert demo_run.id in proc.stdout


@pytest.mark.parametrize("command", ["status", "result", "trace", "replay", "cancel"])
def test_unknown_id_exits_2(demo_run: DemoRun, command: str) -> None:
    line = one_line_error(cli(command, "no-such-run-xyz", env=demo_run.env), 2)
    assert "no run with id 'no-such-run-xyz'" in line


def test_cancel_of_a_finished_run_exits_2(demo_run: DemoRun) -> None:
    line = one_line_error(cli("cancel", demo_run.id, env=demo_run.env), 2)
    assert "is not running" in line


def test_run_plain_prints_the_live_protocol(
    temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=queue(), RAFTLINE_UI_URL=UI)
    proc = cli("run", DEMO, *DEMO_ARGS, "--id", f"plain-{uuid.uuid4().hex[:8]}", env=env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    for needle in (
        "committed checkpoint #1",
        "analysis       attempt 0: FAIL GOAL_DRIFT",
        "analysis       attempt 0: rolled back to checkpoint #2",
        "analysis       attempt 1: retry with hint:",
        "completed: 5/5 steps verified",
    ):
        assert needle in out, needle
    # the live lines come in protocol order
    assert out.index("FAIL GOAL_DRIFT") < out.index("rolled back") < out.index("retry with hint")
    web = [line for line in out.splitlines() if line.startswith("Web UI: ")]
    assert len(web) == 1 and web[0].startswith("Web UI: http")


def test_failing_run_compensates(temporal_server: EmbeddedServer, tmp_path: Path) -> None:
    undo = tmp_path / "undo.log"
    pipeline = write(
        tmp_path / "failing.yaml",
        f"""\
name: failing
policy:
  retries: 2
  activity_retry: {{max_attempts: 1}}
steps:
  - name: a
    activity: scripted
    goal: Do step a
    params: {{text: "Step a did its work."}}
    compensation: record_undo
    compensation_params: {{log: "{undo}"}}
  - name: b
    activity: scripted
    goal: Write one fact about zebras
    params:
      text: "Zebras have stripes."
      faults: {{0: GOAL_DRIFT, 1: GOAL_DRIFT, 2: GOAL_DRIFT}}
    checks: {{topic: [zebra]}}
""",
    )
    env = cli_env(temporal_server, tmp_path / "home", RAFTLINE_TASK_QUEUE=queue())
    proc = cli("run", pipeline, "--goal", "fail on purpose", "--json", env=env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    s = one_json(proc)
    assert s["status"] == "compensated"
    assert s["success"] is False
    assert s["verified"] == "1/2"
    assert s["compensations"] == 1
    assert s["rollbacks"] == 3 and s["retries"] == 2
    assert "step 'b'" in s["error"] and "GOAL_DRIFT" in s["error"]
    assert undo.read_text(encoding="utf-8").splitlines() == ["a"]

    # status of the ended run says why it ended, in text and JSON
    proc = cli("status", s["workflow_id"], env=env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "reason: step 'b'" in proc.stdout and "ended at step: b" in proc.stdout
    st = one_json(cli("status", s["workflow_id"], "--json", env=env))
    assert "GOAL_DRIFT" in st["reason"]


def test_detach_returns_at_once_and_cancel(temporal_server: EmbeddedServer, tmp_path: Path) -> None:
    # A fresh task queue: no worker polls it, so the run waits until cancel comes.
    env = cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=queue(), RAFTLINE_UI_URL=UI)
    wid = f"detached-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    proc = cli("run", DEMO, *DEMO_ARGS, "--id", wid, "--detach", "--json", env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = one_json(proc)
    assert out["workflow_id"] == wid
    assert out["status"] == "running"
    assert out["ui_url"].endswith(f"/workflows/{wid}")
    assert "no worker polls task queue" in proc.stderr  # says why the run will wait

    proc = cli("cancel", wid, env=env, timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"cancel requested for {wid}" in proc.stdout

    # The cancel is recorded; it takes effect when a worker picks the run up.
    worker = subprocess.Popen(
        [PYTHON, str(ROOT / "worker.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            runs = one_json(cli("list", "--status", "canceled", "--json", env=env))["runs"]
            if any(r["workflow_id"] == wid for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert wid in [r["workflow_id"] for r in runs]
