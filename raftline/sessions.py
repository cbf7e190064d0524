"""One session for the CLI and `raftline.run`: connect, start the embedded server when
nothing answers at a local address, run an in-process worker, and shut it all down in
order (the worker first, while the server still answers; then the server).

Every configuration problem surfaces here as one line: ConfigError (bad settings, a
namespace that does not exist, an unusable RAFTLINE_HOME, a database another server
holds) or TemporalUnreachable (nothing answers, the server would not start).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from raftline.client import (
    ConfigError,
    RaftlineClient,
    TemporalUnreachable,
    connect_config,
    temporal_client,
)
from raftline.embedded import (
    LOCAL_HOSTS,
    EmbeddedServer,
    HomeInUse,
    ServerError,
    embedded_for,
    port_open,
    split_address,
)
from raftline.history import has_pollers

SERVER_START_S = 60.0
# How long an interrupted run's compensations are waited for (CLI and raftline.run).
CANCEL_WAIT_S = 30.0
HEARTBEAT_THROTTLE = timedelta(seconds=1)


def connect_settings(address: str | None = None) -> dict[str, Any]:
    """connect_config(), with a broken Temporal profile or config file as a ConfigError."""
    try:
        return connect_config(address)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - envconfig raises its own (bridge) types
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        raise ConfigError(
            f"cannot load the Temporal client settings: {first} (see TEMPORAL_PROFILE, "
            "TEMPORAL_CONFIG_FILE and the TEMPORAL_* variables)"
        ) from None


async def check_namespace(client: Client, address: str) -> None:
    """ConfigError unless the client's namespace exists (a typo in TEMPORAL_NAMESPACE would
    otherwise show up later as 'no run with id ...' or a traceback)."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"namespace {client.namespace!r} does not exist at {address}: set "
                "TEMPORAL_NAMESPACE to one that does (or create it with `temporal operator "
                f"namespace create --namespace {client.namespace}`)"
            ) from None
        # Other refusals (permissions on a cloud namespace) are not ours to judge here.


class Session:
    """A RaftlineClient, plus the embedded server and an in-process worker when needed.

        async with Session(embed=True, worker=True, activities=acts) as s:
            handle = await s.client.start(spec, task)

    `embed`: start the embedded server when nothing answers at a local address (data
    under RAFTLINE_HOME, one server per database); `worker`: serve `queue` in this process
    with `activities` (default: the built-ins and `modules`); None: only when the session
    started the embedded server, which nobody else can serve.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        queue: str | None = None,
        embed: bool = True,
        worker: bool | None = False,
        activities: Sequence[Callable[..., Any]] | None = None,
        modules: Sequence[str] = (),
        headless: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.requested_address = address
        self.queue = queue
        self.embed = embed
        self.want_worker = worker
        self.activities = activities
        self.modules = list(modules)
        self.headless = headless
        self.progress = progress or (lambda _: None)
        self.address = ""
        self.namespace = "default"
        self.server: EmbeddedServer | None = None
        self.worker_running = False
        self._client: RaftlineClient | None = None
        self._stack = AsyncExitStack()
        self._ui: str | None | bool = False  # False: not looked up yet

    @property
    def client(self) -> RaftlineClient:
        if self._client is None:
            raise RuntimeError("the session is not open")
        return self._client

    async def __aenter__(self) -> Session:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ open

    async def open(self) -> None:
        config = connect_settings(self.requested_address)
        self.address, self.namespace = str(config["target_host"]), str(config["namespace"])
        host, port = split_address(self.address)
        local = host in LOCAL_HOSTS
        if not await asyncio.to_thread(port_open, host, port, 0.3 if local else 3.0):
            if not (self.embed and local):
                raise TemporalUnreachable(
                    f"Temporal is unreachable at {self.address}: nothing answers there (set "
                    "TEMPORAL_ADDRESS, or start a local server with `raftline server`)"
                )
            await self._start_server(host, port)
        self._client = RaftlineClient(await temporal_client(self.address), self.queue)
        await check_namespace(self._client.client, self.address)
        if self.want_worker or (self.want_worker is None and self.server is not None):
            await self.start_worker()

    async def _start_server(self, host: str, port: int) -> None:
        server = embedded_for(self.address, headless=self.headless)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                # Forked from this thread: the event loop's, which lives as long as the
                # session (the server's parent-death signal is tied to the forking thread).
                server.spawn()
                break
            except HomeInUse as exc:
                if exc.address != server.address or time.monotonic() > deadline:
                    raise
            # Our own address: that server is coming up (use it once it answers) or going
            # down (start ours once it has let go of the database).
            if await asyncio.to_thread(port_open, host, port):
                return
            await asyncio.sleep(0.2)
        self.server = server
        self.progress(f"starting the embedded Temporal server at {self.address} ...")
        while not server.ready():
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the embedded Temporal server did not start in {SERVER_START_S:.0f}s; "
                    f"see {server.log_file}"
                )
            await asyncio.sleep(0.1)

    async def start_worker(self) -> None:
        """Serve the session's task queue in this process (once)."""
        if self.worker_running:
            return
        from raftline.activities.registry import collect
        from raftline.worker import build_worker

        acts = list(self.activities) if self.activities is not None else collect(self.modules)
        worker = build_worker(
            self.client.client,
            self.client.task_queue,
            acts,
            # Heartbeats reach the server within a second, and with them the cancel of a
            # step: an interrupted run's step stops at once instead of at worker shutdown.
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        )
        await self._stack.enter_async_context(worker)
        self.worker_running = True

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        """Stop the worker (it finishes or cancels its tasks), then the embedded server."""
        try:
            await self._stack.aclose()
        finally:
            self.worker_running = False
            if self.server is not None:
                await asyncio.to_thread(self.server.stop)
                self.server = None

    def abandon(self) -> str | None:
        """Leaving at once (a second Ctrl-C): SIGTERM the embedded server without waiting.
        Returns its address, or None when this session started none."""
        if self.server is None:
            return None
        self.server.send(signal.SIGTERM)
        return self.server.address

    # ------------------------------------------------------------ helpers

    async def no_workers(self, queue: str | None = None) -> bool:
        """No worker polled the (workflow) task queue lately."""
        return not await has_pollers(
            self.client.client,
            queue or self.client.task_queue,
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )

    def ui_url(self, workflow_id: str | None = None) -> str | None:
        """The Web UI's link for a run, or None where no UI answers (a headless server)."""
        if self._ui is False:
            self._ui = self._ui_base()
        base = self._ui
        if not isinstance(base, str):
            return None
        return (
            f"{base}/namespaces/{self.namespace}/workflows/{workflow_id}" if workflow_id else base
        )

    def _ui_base(self) -> str | None:
        base = os.environ.get("RAFTLINE_UI_URL")
        if base:
            return base.rstrip("/")
        if self.server is not None:
            return self.server.ui_url
        host, port = split_address(self.address)
        if host not in LOCAL_HOSTS:
            return None
        ui = embedded_for(self.address)
        if ui.ui_port and port_open(host, ui.ui_port):
            return f"http://localhost:{ui.ui_port}"
        return None
