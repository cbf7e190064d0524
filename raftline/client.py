"""The embeddable client: connect, start, result, status, trace, cancel, follow events.

Backend services use this module directly; the CLI is a thin shell around it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from raftline.models import (
    PipelineSpec,
    RunInput,
    RunResult,
    RunStatus,
    SpecError,
    StatusView,
    Task,
    TraceEvent,
    describe_validation_error,
)
from raftline.settings import (
    RAFT_PIPELINE,
    RAFT_STATUS,
    SEARCH_ATTRIBUTES,
    task_queue,
)
from raftline.workflows.pipeline import WORKFLOW_NAME, VerifiedPipeline

# A query waits for a worker to answer; without one the server would hold it for 30 s.
QUERY_TIMEOUT = timedelta(seconds=10)


class RaftlineError(Exception):
    """Base of the errors this client raises."""


class TemporalUnreachable(RaftlineError):
    """Nothing answers at the Temporal address."""


class RunNotFound(RaftlineError):
    """No run with that workflow id."""


class ConfigError(RaftlineError):
    """A raftline setting (encryption key, payload storage) is malformed."""


class RunUnavailable(RaftlineError):
    """The run exists but its record cannot be read now (e.g. no worker to answer)."""


class RunExists(RaftlineError):
    """start() with the id of a run that is still running."""


def connect_config(address: str | None = None) -> dict[str, Any]:
    """Connection settings the way Temporal's own tools read them (envconfig)."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    if config.get("api_key") == "":
        # `TEMPORAL_API_KEY=` (empty, e.g. from compose's ${TEMPORAL_API_KEY:-}) means none;
        # envconfig would otherwise send an empty key and switch TLS on.
        del config["api_key"]
        if config.get("tls") is True and not os.environ.get("TEMPORAL_TLS"):
            del config["tls"]
    if address:
        config["target_host"] = address
    config.setdefault("target_host", "localhost:7233")
    config.setdefault("namespace", "default")
    return config


def data_converter() -> DataConverter:
    """pydantic payloads; AES-GCM encryption with RAFTLINE_ENCRYPTION_KEY (codec.py); payloads
    over RAFTLINE_STORAGE_THRESHOLD in external storage (storage.py). Never in the sandbox."""
    from raftline.codec import KeyConfigError, codec_from_env
    from raftline.storage import StorageConfigError, external_storage_from_env

    try:
        codec = codec_from_env()
        storage = external_storage_from_env()
    except (KeyConfigError, StorageConfigError) as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        external_storage=storage,
        # Encrypted runs keep failure messages (which may quote outputs) encrypted too.
        failure_converter_class=(
            DefaultFailureConverterWithEncodedAttributes
            if codec.encrypting
            else pydantic_data_converter.failure_converter_class
        ),
    )


async def temporal_client(
    address: str | None = None, *, tracing: bool | None = None, **overrides: Any
) -> Client:
    """A Temporal client with raftline's data converter. `tracing`: add OpenTelemetry's
    TracingInterceptor (workers built from this client inherit it); default on when this
    process has configured an OpenTelemetry SDK tracer provider (e.g. the worker from
    OTEL_* variables)."""
    config = {"data_converter": data_converter(), **connect_config(address), **overrides}
    config["interceptors"] = [*config.get("interceptors", []), *tracing_interceptors(tracing)]
    try:
        return await Client.connect(**config)
    except RuntimeError as exc:
        raise TemporalUnreachable(
            f"Temporal is unreachable at {config['target_host']}: {exc}".splitlines()[0]
        ) from None


def tracing_interceptors(tracing: bool | None = None) -> list[Any]:
    """[TracingInterceptor] when tracing is on (None: when a tracer provider is configured)."""
    if tracing is False:
        return []
    try:
        from opentelemetry import trace
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError:
        if tracing:
            raise ConfigError("tracing needs OpenTelemetry: pip install 'raftline[otel]'") from None
        return []
    if tracing is None and isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    ):
        return []
    # Workflow spans even for runs started without a span (CLI, schedules, other services).
    return [TracingInterceptor(always_create_workflow_spans=True)]


async def ensure_search_attributes(client: Client) -> bool:
    """Register raftline's search attributes if missing; False if this namespace refuses."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        have = set(listed.custom_attributes) | set(listed.system_attributes)
        missing = {k: kind for k, (kind, _) in SEARCH_ATTRIBUTES.items() if k not in have}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        return True
    except RPCError:
        return False


class RunHandle:
    """One pipeline run."""

    def __init__(self, handle: WorkflowHandle[Any, Any]) -> None:
        self._handle = handle

    @property
    def id(self) -> str:
        return self._handle.id

    async def result(self) -> RunResult:
        """The run's result, waiting for it to end. Failed runs return too (success False)."""
        try:
            return await self._handle.result(rpc_timeout=None)
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "PipelineFailed":
                return RunResult.model_validate(cause.details[0])
            if isinstance(cause, CancelledError):
                return await self._query_result(RunStatus.CANCELED)
            raise RaftlineError(f"run {self.id} failed: {cause or err}") from None
        except RPCError as err:
            raise _rpc_error(self.id, err) from None

    async def status(self) -> StatusView:
        try:
            return await self._handle.query(VerifiedPipeline.status, rpc_timeout=QUERY_TIMEOUT)
        except (WorkflowQueryFailedError, RPCError) as err:
            raise _rpc_error(self.id, err) from None

    async def trace(self, after: int = 0) -> list[TraceEvent]:
        """Trace events with seq > after: from the query while running, else the result."""
        return await self._read_trace(after, await self.is_running())

    async def _read_trace(self, after: int, running: bool) -> list[TraceEvent]:
        if not running:
            try:
                return [e for e in (await self.result()).trace if e.seq > after]
            except (RunNotFound, RunUnavailable):
                raise
            except RaftlineError:
                pass  # ended without a result (terminated, timed out): a worker replays it
        try:
            events: list[TraceEvent] = await self._handle.query(
                VerifiedPipeline.trace, after, rpc_timeout=QUERY_TIMEOUT
            )
        except (WorkflowQueryFailedError, RPCError) as err:
            raise _rpc_error(self.id, err) from None
        return [e for e in events if e.seq > after]

    async def is_running(self) -> bool:
        return await self.execution_status() == WorkflowExecutionStatus.RUNNING

    async def execution_status(self) -> WorkflowExecutionStatus | None:
        """Temporal's own status of the workflow execution (RUNNING, COMPLETED, ...)."""
        try:
            desc = await self._handle.describe()
        except RPCError as err:
            raise _rpc_error(self.id, err) from None
        return desc.status

    async def cancel(self) -> None:
        try:
            await self._handle.cancel()
        except RPCError as err:
            raise _rpc_error(self.id, err) from None

    async def events(self, after: int = 0, poll_s: float = 0.25) -> AsyncIterator[TraceEvent]:
        """Every trace event with seq > `after`, exactly once and in order, as it happens,
        until the run ends: the last one is run_completed, run_failed or run_canceled.

        Resume after a disconnect (a new process, a new connection) by passing the last
        seq you saw, e.g. an SSE Last-Event-ID. While no worker can answer (workers
        restarting) it keeps waiting. Raises RunNotFound, or RunUnavailable when the run
        has ended and its record cannot be read.
        """
        seen = after
        while True:
            # Whether it runs, before the read: a read after the run ended has every event.
            running = await self.is_running()
            try:
                batch = await self._read_trace(seen, running)
            except RunUnavailable:
                if not running:
                    raise
                batch = []  # no worker answers the query right now: try again
            for event in batch:
                if event.seq <= seen:
                    continue  # never twice, whatever a worker answers
                seen = event.seq
                yield event
            if not running:
                return
            await asyncio.sleep(poll_s)

    async def _query_result(self, status: RunStatus) -> RunResult:
        try:
            result: RunResult = await asyncio.wait_for(
                self._handle.query(VerifiedPipeline.result), timeout=10
            )
        except (TimeoutError, WorkflowQueryFailedError, RPCError):
            raise RunUnavailable(
                f"run {self.id} ended {status.value}; start a worker to read its record"
            ) from None
        return result


def _rpc_error(workflow_id: str, err: Exception) -> RaftlineError:
    text = str(err)
    if "not found" in text.lower():
        return RunNotFound(f"no run with id {workflow_id!r}")
    return RunUnavailable(f"run {workflow_id}: {text.splitlines()[0] if text else err!r}")


class RaftlineClient:
    """Start and follow pipeline runs on a Temporal namespace."""

    def __init__(
        self, client: Client, queue: str | None = None, search_attributes: bool | None = None
    ) -> None:
        """`search_attributes`: None registers them if missing (or runs without them
        where the namespace refuses); False never writes them."""
        self.client = client
        self.task_queue = queue or task_queue()
        self._search_attributes = search_attributes

    @classmethod
    async def connect(
        cls, address: str | None = None, queue: str | None = None, **options: Any
    ) -> RaftlineClient:
        """Connect with the environment's settings (envconfig); `options` go to
        temporal_client()."""
        return cls(await temporal_client(address, **options), queue)

    async def start(
        self, pipeline: PipelineSpec | Any, task: Task | str | dict[str, Any], id: str | None = None
    ) -> RunHandle:
        """Start a run and return its handle at once. `pipeline`: a PipelineSpec, or a
        raftline.Pipeline (its `.spec`; a worker must register its functions); `task`: a
        Task, a goal or a mapping. Raises SpecError for a bad task or pipeline, RunExists
        when a run with this id is still running (a closed one's id may be reused)."""
        spec, task = _spec_of(pipeline), _task_of(task)
        if self._search_attributes is None:
            self._search_attributes = await ensure_search_attributes(self.client)
        workflow_id = id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_NAME,
                RunInput(spec=spec, task=task, search_attributes=self._search_attributes),
                id=workflow_id,
                task_queue=self.task_queue,
                result_type=RunResult,
                memo={"pipeline": spec.name, "goal": task.goal},
                static_summary=f"{spec.name}: {task.goal}"[:200],
                # Indexed from the start, so the workflow need not write them itself.
                search_attributes=(
                    TypedSearchAttributes(
                        [
                            SearchAttributePair(RAFT_STATUS, RunStatus.RUNNING.value),
                            SearchAttributePair(RAFT_PIPELINE, spec.name),
                        ]
                    )
                    if self._search_attributes
                    else None
                ),
            )
        except WorkflowAlreadyStartedError:
            raise RunExists(f"a run with id {workflow_id!r} is already running") from None
        except RPCError as err:
            raise _rpc_error(workflow_id, err) from None
        return RunHandle(handle)

    def get(self, workflow_id: str) -> RunHandle:
        return RunHandle(self.client.get_workflow_handle(workflow_id, result_type=RunResult))

    async def run(
        self, pipeline: PipelineSpec | Any, task: Task | str | dict[str, Any], id: str | None = None
    ) -> RunResult:
        """Start a run and wait for its result (see start() and RunHandle.result())."""
        return await (await self.start(pipeline, task, id)).result()

    async def list(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = f"WorkflowType = '{WORKFLOW_NAME}'"
        if status:
            query += f" AND RaftStatus = '{status}'"
        rows: list[dict[str, Any]] = []
        async for wf in self.client.list_workflows(query, limit=limit):
            attrs = wf.typed_search_attributes
            rows.append(
                {
                    "workflow_id": wf.id,
                    "status": _attr(attrs, "RaftStatus") or wf.status.name.lower(),
                    "pipeline": _attr(attrs, "RaftPipeline"),
                    "step": _attr(attrs, "RaftStep"),
                    "rollbacks": _attr(attrs, "RaftRollbacks") or 0,
                    "started": wf.start_time.isoformat() if wf.start_time else None,
                }
            )
        return rows


async def connect(
    address: str | None = None, queue: str | None = None, **options: Any
) -> RaftlineClient:
    """A client for a backend service: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, API key and TLS
    from the environment (temporalio.envconfig), RAFTLINE_TASK_QUEUE for `queue`.
    Raises TemporalUnreachable. `options` go to temporalio's Client.connect."""
    return RaftlineClient(await temporal_client(address, **options), queue)


def _spec_of(pipeline: Any) -> PipelineSpec:
    spec = getattr(pipeline, "spec", pipeline)  # a raftline.Pipeline carries its spec
    if not isinstance(spec, PipelineSpec):
        raise SpecError(f"expected a PipelineSpec or a Pipeline, got {type(pipeline).__name__}")
    return spec


def _task_of(task: Task | str | dict[str, Any]) -> Task:
    data = {"goal": task} if isinstance(task, str) else task
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"task: {describe_validation_error(exc, data)}") from None


def _attr(attrs: Any, name: str) -> Any:
    for pair in attrs:
        if pair.key.name == name:
            return pair.value
    return None
