"""Operating raftline without surprises: signals, one server per home, configuration errors
as one line, status without a worker, and work that waits on a queue nobody polls.

The CLI runs as a real subprocess (starter.py) against real dev servers: its own embedded
one (a free port, RAFTLINE_HOME in tmp) where the test is about that server's life.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

import raftline
from raftline.activities.registry import check_spec, placeholders
from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer, free_port, port_open
from raftline.history import _activity_queues, status_from_history, unpolled_task_queues
from raftline.models import CompensationInput, PipelineSpec, RunStatus, SpecError, Task
from raftline.sessions import HEARTBEAT_THROTTLE
from raftline.worker import build_worker
from tests.conftest import PYTHON, ROOT, cli_env, spec

STARTER = str(ROOT / "starter.py")


# ---------------------------------------------------------------- a slow compensation


@activity.defn(name="slow_undo")
async def slow_undo(inp: CompensationInput) -> str:
    """A compensation that takes `sleep_s` (heartbeating), so a second Ctrl-C lands in it."""
    end = time.monotonic() + float(inp.params.get("sleep_s", 60))
    while time.monotonic() < end:
        activity.heartbeat()
        await asyncio.sleep(0.5)
    return "undone slowly"


# ---------------------------------------------------------------- a CLI process to talk to


class Cli:
    """`python starter.py ...` running in the background, its output read as it comes."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, STARTER, *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        """Until `needle` appears on stdout or stderr (fails if the process ends first)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle not in self.stdout and needle not in self.stderr:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail(f"{needle!r} never came:\n{self.stdout}\n{self.stderr}")
                self._changed.wait(min(left, 0.5))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.1)  # let the readers take the last lines
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, STARTER, *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "worker.py"), *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str], code: int, prefix: str = "raftline:") -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- the embedded server's life


@dataclass
class Home:
    """A RAFTLINE_HOME in tmp and a free local address: the CLI starts its own server."""

    path: Path
    address: str
    env: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def server_pid(self) -> int:
        """The pid of the server that holds this home's lock (written once it runs)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = (self.path / "server.lock").read_text(encoding="utf-8").splitlines()
            if len(lines) >= 3 and lines[2].strip():
                return int(lines[2])
            time.sleep(0.1)
        raise AssertionError("the lock file never named the server's pid")

    def lock_free(self) -> bool:
        with (self.path / "server.lock").open("a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return True


@pytest.fixture
def home(tmp_path: Path) -> Home:
    address = f"127.0.0.1:{free_port()}"
    path = tmp_path / "home"
    env = cli_env(
        None,
        path,
        TEMPORAL_ADDRESS=address,
        RAFTLINE_TASK_QUEUE=f"ops-{uuid.uuid4().hex[:8]}",
        RAFTLINE_UI_PORT=str(free_port()),
    )
    return Home(path, address, env)


def live_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (a zombie waiting for a reaper is done:
    in a container, PID 1 may never reap the server once its parent is gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def server_gone(home: Home, pid: int, within: float = 15) -> None:
    """No process of the server's group runs, its port is closed and the lock is free."""
    deadline = time.monotonic() + within
    while live_in_group(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_in_group(pid), f"the server's group still runs: {live_in_group(pid)}"
    assert not port_open("127.0.0.1", home.port)
    assert home.lock_free()


SLOW = """\
name: slow
policy:
  activity_retry: {{max_attempts: 1}}
steps:
  - name: draft
    goal: Draft the note
    params: {{text: "A short note about Oslo."}}
  - name: publish
    activity: publish
    goal: Publish the note
    params: {{from: draft}}
    compensation: {compensation}
    compensation_params: {{sleep_s: 60}}
  - name: wait
    goal: Wait for a long time
    params: {{text: "Waited.", sleep_s: 120}}
"""


def slow_pipeline(tmp_path: Path, compensation: str = "unpublish") -> str:
    return write(tmp_path / "slow.yaml", SLOW.format(compensation=compensation))


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_cancels_the_run_compensates_and_stops_the_server(
    home: Home, tmp_path: Path, sig: int, code: int
) -> None:
    wid = f"signal-{uuid.uuid4().hex[:8]}"
    run = Cli("run", slow_pipeline(tmp_path), "--goal", "g", "--id", wid, env=home.env)
    try:
        run.wait_for("wait           attempt 0: started")
        published = home.path / "outbox" / wid / "publish.md"
        assert published.exists()
        pid = home.server_pid()
        run.signal(sig)
        assert run.finish() == code, (run.stdout, run.stderr)
    finally:
        run.kill()
    assert "Traceback" not in run.stderr
    assert f"canceling run {wid}" in run.stderr
    assert f"interrupted: run {wid} ended canceled (1 compensation done)" in run.stderr
    assert "publish        compensated (unpublish)" in run.stdout
    assert "canceled: 2/3 steps verified" in run.stdout
    assert "output: retracted" in run.stdout and "Published" not in run.stdout
    assert not published.exists()  # the compensation ran before the command left
    server_gone(home, pid)


def test_second_ctrl_c_leaves_at_once_and_says_what_is_left(home: Home, tmp_path: Path) -> None:
    wid = f"twice-{uuid.uuid4().hex[:8]}"
    run = Cli(
        "run", slow_pipeline(tmp_path, "slow_undo"), "--goal", "g", "--id", wid,
        "--activities", "tests.test_operate", env=home.env,
    )  # fmt: skip
    try:
        run.wait_for("wait           attempt 0: started")
        pid = home.server_pid()
        run.signal(signal.SIGINT)
        run.wait_for("publish        compensating checkpoint #2 with slow_undo")
        run.signal(signal.SIGINT)
        assert run.finish(timeout=10) == 130, (run.stdout, run.stderr)
    finally:
        run.kill()
    last = run.err[-1]
    assert last.startswith("raftline: leaving at once: "), run.stderr
    assert f"run {wid} is left canceling" in last
    assert f"the embedded server at {home.address} is stopping" in last
    server_gone(home, pid)


def test_sigkill_of_the_cli_leaves_no_server(home: Home, tmp_path: Path) -> None:
    run = Cli("run", slow_pipeline(tmp_path), "--goal", "g", env=home.env)
    try:
        run.wait_for("wait           attempt 0: started")
        pid = home.server_pid()
        run.signal(signal.SIGKILL)
        run.finish()
    finally:
        run.kill()
    server_gone(home, pid)  # the kernel's parent-death signal stopped it


def test_a_run_that_ends_on_its_own_stops_its_server(home: Home, tmp_path: Path) -> None:
    pipeline = write(tmp_path / "quick.yaml", "name: quick\nsteps: [{name: a, goal: Say hi}]\n")
    run = Cli("run", pipeline, "--goal", "g", "--json", env=home.env)
    try:
        assert run.finish() == 0, run.stderr
    finally:
        run.kill()
    assert json.loads(run.stdout)["status"] == "completed"
    assert not port_open("127.0.0.1", home.port) and home.lock_free()


def test_a_server_started_from_a_passing_thread_outlives_that_thread(tmp_path: Path) -> None:
    """The parent-death signal follows the thread that forked: asyncio.to_thread(start)
    must not tie the server's life to a pool thread (the fork happens on a thread that
    lives as long as the process)."""
    server = EmbeddedServer(free_port(), None, None, tmp_path / "server.log", headless=True)
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
    try:
        time.sleep(1)  # a death signal would have stopped it by now
        assert server.process is not None and server.process.poll() is None
        assert port_open("127.0.0.1", server.port)
    finally:
        server.stop()


# ---------------------------------------------------------------- one server per home


@pytest.fixture
def foreground(home: Home) -> Iterator[Cli]:
    """`raftline server --headless` in the foreground, on the home's address."""
    server = Cli("server", "--headless", env=home.env)
    try:
        server.wait_for("Ctrl-C to stop.")
        yield server
    finally:
        server.kill()


def test_one_server_per_home(home: Home, foreground: Cli) -> None:
    other = {**home.env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    for argv in (["list"], ["server", "--headless"], ["status", "some-run"]):
        line = one_line(cli(*argv, env=other), 2)
        assert f"is in use by the server at {home.address}" in line, line
        assert f"TEMPORAL_ADDRESS={home.address}" in line
    assert cli("list", env=home.env).returncode == 0  # the right address is served

    pid = home.server_pid()
    foreground.signal(signal.SIGINT)
    assert foreground.finish(timeout=30) == 0, foreground.stderr  # `server` keeps working
    server_gone(home, pid)


def test_status_without_a_worker_reads_the_history(home: Home, foreground: Cli) -> None:
    wid = f"detached-{uuid.uuid4().hex[:8]}"
    pipeline = write(
        home.path / "p.yaml", "name: p\nsteps: [{name: a, goal: g}, {name: b, goal: h}]\n"
    )
    started = cli("run", pipeline, "--goal", "g", "--id", wid, "--detach", env=home.env)
    assert started.returncode == 0, started.stderr
    assert "no worker polls task queue" in started.stderr

    proc = cli("status", wid, env=home.env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    first = proc.stdout.splitlines()[0]
    assert first == f"{wid} (p): running, 0/2 verified (from history: no worker is running)"

    st = json.loads(cli("status", wid, "--json", env=home.env).stdout)
    assert st["status"] == "running" and st["verified"] == "0/2"
    assert st["source"] == "from history: no worker is running"
    assert st["ui_url"] is None  # a headless server has no UI to link to


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["run", str(ROOT / "examples" / "board_memo.yaml"), "--goal", "g", "--input", "market=m",
         "--input", "finance=f"],
        ["demo", "--no-wait"],
        ["status", "no-such-run"],
        ["cancel", "no-such-run"],
        ["replay", "no-such-run"],
    ],
    ids=["list", "run", "demo", "status", "cancel", "replay"],
)  # fmt: skip
def test_unknown_namespace_is_named(
    temporal_server: EmbeddedServer, tmp_path: Path, argv: list[str]
) -> None:
    env = cli_env(temporal_server, tmp_path, TEMPORAL_NAMESPACE="nope")
    line = one_line(cli(*argv, env=env), 2)
    assert f"namespace 'nope' does not exist at {temporal_server.address}" in line


def test_worker_names_the_unknown_namespace(
    temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(temporal_server, tmp_path, TEMPORAL_NAMESPACE="nope")
    line = one_line(worker(env=env), 2, "raftline-worker:")
    assert "namespace 'nope' does not exist" in line


def read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o500)
        return path
    for candidate in (Path("/sys/fs"), Path("/proc/sys")):  # root writes anywhere else
        if candidate.is_dir() and not os.access(candidate / "x", os.W_OK):
            try:
                (candidate / "server.lock").open("a").close()
            except OSError:
                return candidate
    pytest.skip("no read-only directory for root here")


SETTINGS = [
    pytest.param(
        "list",
        {"TEMPORAL_PROFILE": "nope"},
        "Temporal client settings: Profile 'nope'",
        id="list-profile",
    ),
    pytest.param(
        "run",
        {"TEMPORAL_PROFILE": "nope"},
        "Temporal client settings: Profile 'nope'",
        id="run-profile",
    ),
    pytest.param(
        "list", {"TEMPORAL_ADDRESS": "localhost:99999"}, "the port must be 1-65535", id="list-port"
    ),
    pytest.param(
        "run", {"TEMPORAL_ADDRESS": "localhost:99999"}, "the port must be 1-65535", id="run-port"
    ),
    pytest.param("list", {"TEMPORAL_ADDRESS": "nohost"}, "is not host:port", id="list-address"),
    # Starting the embedded server is what needs RAFTLINE_HOME.
    pytest.param(
        "run", {"RAFTLINE_HOME": "FILE/home"}, "is a file, not a directory", id="home-under-file"
    ),
    pytest.param("run", {"RAFTLINE_HOME": "FILE"}, "is a file, not a directory", id="home-a-file"),
    pytest.param("run", {"RAFTLINE_HOME": "READONLY"}, "is not writable", id="home-read-only"),
]


@pytest.mark.parametrize(("command", "setting", "expected"), SETTINGS)
def test_configuration_errors_are_one_line_exit_2(
    home: Home, tmp_path: Path, command: str, setting: dict[str, str], expected: str
) -> None:
    env = dict(home.env)
    for key, value in setting.items():
        if value.startswith("FILE"):
            (tmp_path / "file").write_text("x")
            value = value.replace("FILE", str(tmp_path / "file"))
        elif value == "READONLY":
            value = str(read_only_dir(tmp_path))
        env[key] = value
    argv = ["list"] if command == "list" else ["run", slow_pipeline(tmp_path), "--goal", "g"]
    line = one_line(cli(*argv, env=env), 2)
    assert expected in line, line
    assert not port_open("127.0.0.1", home.port)


def test_worker_configuration_errors_are_one_line_exit_2(home: Home) -> None:
    for setting, expected in (
        ({"TEMPORAL_PROFILE": "nope"}, "Profile 'nope' not found"),
        ({"TEMPORAL_ADDRESS": "localhost:99999"}, "the port must be 1-65535"),
    ):
        line = one_line(worker(env={**home.env, **setting}), 2, "raftline-worker:")
        assert expected in line


# ---------------------------------------------------------------- work nobody serves


def test_a_step_on_a_queue_nobody_polls_is_reported(
    temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=f"ops-{uuid.uuid4().hex[:8]}")
    gpu = f"gpu-{uuid.uuid4().hex[:6]}"
    pipeline = write(
        tmp_path / "gpu.yaml",
        f"name: gpu\nsteps:\n  - {{name: draft, goal: Draft}}\n"
        f"  - {{name: render, goal: Render, task_queue: {gpu}}}\n",
    )
    wid = f"gpu-{uuid.uuid4().hex[:8]}"
    message = f"no worker polls task queue {gpu}: start one with raftline-worker --task-queue {gpu}"
    run = Cli("run", pipeline, "--goal", "g", "--id", wid, env=env)
    try:
        run.wait_for(f"waiting: {message}", timeout=30)  # in the live output
        status = cli("status", wid, env=env)
        assert status.returncode == 0, status.stderr
        assert f"waiting: {message}" in status.stdout
        st = json.loads(cli("status", wid, "--json", env=env).stdout)
        assert st["unpolled_task_queues"] == [gpu]
        run.signal(signal.SIGINT)
        assert run.finish() == 130, run.stderr
    finally:
        run.kill()
    assert "canceled: 1/2 steps verified" in run.stdout


# ---------------------------------------------------------------- quiet, honest output


def test_json_run_keeps_stderr_to_one_line_warnings(
    temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=f"ops-{uuid.uuid4().hex[:8]}")
    pipeline = write(
        tmp_path / "flaky.yaml",
        "name: flaky\npolicy: {activity_retry: {max_attempts: 3, initial_interval_s: 0.1}}\n"
        "steps: [{name: a, goal: Say hi, params: {flaky_attempts: 2}}]\n",
    )
    proc = cli("run", pipeline, "--goal", "g", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "completed"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines, "the two failed attempts are worth a warning each"
    assert all(line.startswith("raftline: warning: ") for line in lines), proc.stderr


def test_a_compensated_run_shows_no_retracted_output(
    temporal_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(temporal_server, tmp_path, RAFTLINE_TASK_QUEUE=f"ops-{uuid.uuid4().hex[:8]}")
    pipeline = write(
        tmp_path / "fails.yaml",
        """\
name: fails
policy: {activity_retry: {max_attempts: 1}}
steps:
  - {name: draft, goal: Draft the note, params: {text: "A note about Oslo."}}
  - name: publish
    activity: publish
    goal: Publish
    params: {from: draft}
    compensation: unpublish
  - {name: boom, goal: Fail, params: {faults: {0: RAISE_FATAL}}}
""",
    )
    proc = cli("run", pipeline, "--goal", "g", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "compensated: 2/3 steps verified" in proc.stdout
    assert "output: retracted (1 compensation undid the committed steps)" in proc.stdout
    assert "Published" not in proc.stdout.split("compensated: 2/3", 1)[1]
    assert "Web UI" not in proc.stdout  # headless: no link to a UI that is not there
    s = json.loads(cli("run", pipeline, "--goal", "g", "--json", env=env).stdout)
    assert s["status"] == "compensated" and s["output"] is None and s["ui_url"] is None


# ---------------------------------------------------------------- status from history


async def test_status_from_history_matches_the_query(client: RaftlineClient, queue: str) -> None:
    pipeline = spec(
        [
            {"name": "a", "goal": "Do a", "params": {"text": "A is done."}},
            {"name": "b", "goal": "Do b", "params": {"text": "B is done.", "sleep_s": 30}},
        ]
    )
    async with build_worker(
        client.client,
        queue,
        raftline_activities(),
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,  # the step hears the cancel
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    ):
        c = RaftlineClient(client.client, queue)
        handle = await c.start(pipeline, Task(goal="g"))
        while (await handle.status()).current_step != "b":  # noqa: ASYNC110 - a query
            await asyncio.sleep(0.1)
        asked = await handle.status()
        rebuilt = await status_from_history(client.client, handle.id)
        assert rebuilt == asked  # what the running workflow says, not its eviction
        assert rebuilt.status is RunStatus.RUNNING and rebuilt.verified == 1
        await handle.cancel()
        await handle.result()
    canceled = await status_from_history(client.client, handle.id)
    assert canceled.status is RunStatus.CANCELED
    assert await unpolled_task_queues(client.client, handle.id) == []  # it has ended


async def test_unpolled_queues_of_the_run_and_of_its_steps(
    client: RaftlineClient, queue: str
) -> None:
    """Without the 10 s grace: the run's own queue while no worker serves it, then a step's
    queue; the history's answer (older servers) matches the describe's."""
    gpu = f"gpu-{uuid.uuid4().hex[:6]}"
    pipeline = spec(
        [{"name": "a", "goal": "Do a"}, {"name": "b", "goal": "Do b", "task_queue": gpu}]
    )
    c = RaftlineClient(client.client, queue)
    handle = await c.start(pipeline, Task(goal="g"))
    now = timedelta(0)
    assert await unpolled_task_queues(client.client, handle.id, now) == [queue]
    async with build_worker(client.client, queue, raftline_activities()):
        desc = await described(client, handle.id)
        while not desc.pending_activities:  # noqa: ASYNC110 - the server's view
            await asyncio.sleep(0.1)
            desc = await described(client, handle.id)
        pending = desc.pending_activities[0]
        assert await unpolled_task_queues(client.client, handle.id, now) == [gpu]
        execution = desc.workflow_execution_info.execution
        by_history = await _activity_queues(client.client, execution, [pending.activity_id])
        assert by_history == {pending.activity_id: gpu}
        await handle.cancel()
        await handle.result()


async def described(client: RaftlineClient, workflow_id: str) -> Any:
    return (await client.client.get_workflow_handle(workflow_id).describe()).raw_description


def raftline_activities() -> list[Any]:
    from raftline.activities.registry import collect

    return collect()


# ---------------------------------------------------------------- the pre-start check


def test_placeholders_skip_json_and_escaped_braces() -> None:
    assert placeholders('{"a": 1} {{market}} {goal} {x_1}') == ["goal", "x_1"]
    ok = PipelineSpec.model_validate(
        {"name": "p", "steps": [{"name": "a", "goal": "g {goal}", "params": {
            "text": '{"k": "{{literal}}"} for {market} at {item_index}'}}]}
    )  # fmt: skip
    check_spec(ok, None, "p", "", inputs=["market"])
    with pytest.raises(SpecError, match=r"steps\[a\]\.params\.text: \{market\} is not a task"):
        check_spec(ok, None, "p", "", inputs=[])


def test_arun_checks_placeholders_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))
    board = ROOT / "examples" / "board_memo.yaml"
    with pytest.raises(SpecError, match=r"\{market\} is not a task input \(inputs: finance\)"):
        raftline.run(board, "goal", inputs={"finance": "f"})
    with pytest.raises(SpecError, match="is not a step this one needs"):
        raftline.run(
            PipelineSpec.model_validate(
                {"name": "p", "steps": [{"name": "a", "goal": "g"}, {
                    "name": "b", "goal": "g", "activity": "publish", "params": {"from": "zz"}}]}
            ),
            "goal",
            worker=False,
        )  # fmt: skip
    assert not port_open("127.0.0.1", port) and not (tmp_path / "temporal.db").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
