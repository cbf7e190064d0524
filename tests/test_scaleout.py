"""Scale-out and bulkheads with real worker processes on the dev server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftline.activities.registry import collect
from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer
from raftline.models import RunStatus, Task
from raftline.worker import build_worker
from tests.conftest import PYTHON, ROOT, cli_env, spec


class Workers:
    """Worker subprocesses (`python worker.py ...`), stopped at the end of the test."""

    def __init__(self, server: EmbeddedServer, home: Path) -> None:
        self.server, self.home = server, home
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        logfile = self.home / f"worker-{len(self.procs)}.log"
        with logfile.open("wb") as out:
            proc = subprocess.Popen(
                [PYTHON, str(ROOT / "worker.py"), "--activities", "tests.deploy_steps", *args],
                env=cli_env(self.server, self.home),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        self.procs.append(proc)
        return proc

    async def ready(self, limit_s: float = 60) -> None:
        """Until every worker logged "worker started" (it polls from then on).

        Not DescribeTaskQueue: it lists only the pollers of the queue's root partition.
        """
        for _ in range(int(limit_s * 10)):
            logs = [(self.home / f"worker-{i}.log") for i in range(len(self.procs))]
            if all(p.exists() and '"worker started"' in p.read_text() for p in logs):
                return
            dead = [p.args for p in self.procs if p.poll() is not None]
            assert not dead, f"a worker exited: {dead}"
            await asyncio.sleep(0.1)
        raise AssertionError(f"workers not ready in {limit_s:.0f} s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(temporal_server: EmbeddedServer, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(temporal_server, tmp_path)
    yield w
    w.stop()


def log_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def test_three_workers_share_the_work_and_survive_a_kill(
    client: RaftlineClient, queue: str, workers: Workers, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    procs = [workers.start("--task-queue", queue, "--max-activities", "2") for _ in range(3)]
    pids = {p.pid for p in procs}
    raft = RaftlineClient(client.client, queue)
    await workers.ready()

    step = {"activity": "whoami", "params": {"log": str(log), "sleep_s": 0.4}}
    pipeline = spec(
        [
            {"name": f"s{i}", "goal": f"step {i}", "heartbeat_timeout_s": 1.5, **step}
            for i in range(3)
        ]
    )
    handles = [await raft.start(pipeline, Task(goal=f"run {i}")) for i in range(9)]

    # Once every worker has run something, kill one of them mid-run.
    for _ in range(200):
        if len({int(r[0]) for r in log_lines(log)}) == 3:
            break
        await asyncio.sleep(0.05)
    victim = procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = len(log_lines(log))

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=45)
    assert all(r.status is RunStatus.COMPLETED for r in results), [r.error for r in results]
    assert all([c.step for c in r.checkpoints] == ["s0", "s1", "s2"] for r in results)

    calls = log_lines(log)
    by_pid = Counter(int(r[0]) for r in calls)
    assert set(by_pid) == pids, by_pid  # the work spread over all three processes
    assert 0 < killed_at < 27  # the kill landed mid-run
    assert all(int(r[0]) != victim.pid for r in calls[killed_at:])  # survivors finished
    # Every (run, step) ran; a step the victim held may have run twice (retried elsewhere).
    assert {(r[1], r[2]) for r in calls} == {(h.id, f"s{i}") for h in handles for i in range(3)}


async def test_a_saturated_queue_does_not_delay_another(
    client: RaftlineClient, queue: str, workers: Workers, tmp_path: Path
) -> None:
    """Slow agents on queue A (one slot) back up; a pipeline on queue B runs at full speed."""
    slow_q, fast_q = f"{queue}-slow", f"{queue}-fast"
    slow_worker = workers.start(
        "--task-queue", slow_q, "--activities-only", "--max-activities", "1"
    )
    fast_worker = workers.start(
        "--task-queue", fast_q, "--activities-only", "--max-activities", "1"
    )
    raft = RaftlineClient(client.client, queue)
    log = tmp_path / "slow.log"
    slow = spec(
        [{"name": "think", "goal": "think hard", "activity": "whoami", "task_queue": slow_q,
          "heartbeat_timeout_s": 2, "params": {"log": str(log), "sleep_s": 6}}]
    )  # fmt: skip
    fast = spec(
        [
            {"name": f"f{i}", "goal": f"fast step {i}", "task_queue": fast_q,
             "criticality": "MEDIUM",
             "verifier": {"judge": {"activity": "approve_judge", "task_queue": fast_q}}}
            for i in range(3)
        ]
    )  # fmt: skip
    # Workflows (and the L1 rules, evaluated inside them) run on the main queue's worker.
    async with build_worker(client.client, queue, collect(["tests.deploy_steps"])):
        await workers.ready()
        backlog = [await raft.start(slow, Task(goal=f"slow {i}")) for i in range(3)]
        for _ in range(100):  # the one slot on A is taken
            if log_lines(log):
                break
            await asyncio.sleep(0.05)
        # Control: a quick step sent to the saturated queue waits behind the backlog ...
        victim = await raft.start(
            spec([{"name": "quick", "goal": "quick", "task_queue": slow_q}]), Task(goal="q")
        )
        # ... while the same kind of work on its own queue goes straight through.
        started = time.monotonic()
        result = await asyncio.wait_for(raft.run(fast, Task(goal="fast")), timeout=20)
        elapsed = time.monotonic() - started
        still_waiting = await victim.is_running()
        backlog_running = [await h.is_running() for h in backlog]
        for h in [*backlog, victim]:
            await client.client.get_workflow_handle(h.id).terminate("test over")

    assert result.status is RunStatus.COMPLETED
    assert elapsed < 3.0, f"the fast pipeline took {elapsed:.1f}s"
    assert still_waiting and all(backlog_running)
    # max-activities 1: one slow step at a time, on the activities-only worker.
    assert [int(r[0]) for r in log_lines(log)] == [slow_worker.pid]
    # The judges ran on the fast queue's worker process, not on the workflow worker.
    judges = [
        e.verdict for e in result.trace if e.verdict and e.verdict.verifier == "approve_judge"
    ]
    assert len(judges) == 3 and {v.reason for v in judges} == {f"pid {fast_worker.pid}"}
