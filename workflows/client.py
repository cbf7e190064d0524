"""The embeddable client: connect, start, result, status, trace, cancel, follow events.

Backend services use this module directly; the CLI is a thin shell around it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError

from workflows.models import (
    PipelineSpec,
    RunInput,
    RunResult,
    RunStatus,
    StatusView,
    Task,
    TraceEvent,
)
from workflows.pipeline import WORKFLOW_NAME, VerifiedPipeline

DEFAULT_TASK_QUEUE = "raftline"
SEARCH_ATTRIBUTES = {
    "RaftStatus": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "RaftStep": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "RaftPipeline": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "RaftRollbacks": IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


class RaftlineError(Exception):
    """Base of the errors this client raises."""


class TemporalUnreachable(RaftlineError):
    """Nothing answers at the Temporal address."""


class RunNotFound(RaftlineError):
    """No run with that workflow id."""


class RunUnavailable(RaftlineError):
    """The run exists but its record cannot be read now (e.g. no worker to answer)."""


def task_queue() -> str:
    return os.environ.get("RAFTLINE_TASK_QUEUE", DEFAULT_TASK_QUEUE)


def connect_config(address: str | None = None) -> dict[str, Any]:
    """Connection settings the way Temporal's own tools read them (envconfig)."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", "localhost:7233")
    config.setdefault("namespace", "default")
    return config


async def connect(address: str | None = None, **overrides: Any) -> Client:
    config = {**connect_config(address), **overrides}
    try:
        return await Client.connect(data_converter=pydantic_data_converter, **config)
    except RuntimeError as exc:
        raise TemporalUnreachable(
            f"Temporal is unreachable at {config['target_host']}: {exc}".splitlines()[0]
        ) from None


async def ensure_search_attributes(client: Client) -> bool:
    """Register raftline's search attributes if missing; False if this namespace refuses."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        have = set(listed.custom_attributes) | set(listed.system_attributes)
        missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in have}
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
            return await self._handle.query(VerifiedPipeline.status)
        except (WorkflowQueryFailedError, RPCError) as err:
            raise _rpc_error(self.id, err) from None

    async def trace(self, after: int = 0) -> list[TraceEvent]:
        """Trace events with seq > after: from the query while running, else the result."""
        if await self.is_running():
            try:
                return await self._handle.query(VerifiedPipeline.trace, after)
            except (WorkflowQueryFailedError, RPCError) as err:
                raise _rpc_error(self.id, err) from None
        return (await self.result()).trace[after:]

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
        """Every trace event once, in order, from seq `after` on, until the run ends.

        Resume after a disconnect by passing the last seq you saw.
        """
        seen = after
        while True:
            running = await self.is_running()
            for event in await self.trace(seen):
                seen = event.seq
                yield event
            if not running:
                # One more read: events appended between the describe and the query.
                for event in await self.trace(seen):
                    seen = event.seq
                    yield event
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

    def __init__(self, client: Client, queue: str | None = None) -> None:
        self.client = client
        self.task_queue = queue or task_queue()
        self._search_attributes: bool | None = None

    @classmethod
    async def connect(cls, address: str | None = None, queue: str | None = None) -> RaftlineClient:
        return cls(await connect(address), queue)

    async def start(self, spec: PipelineSpec, task: Task | str, id: str | None = None) -> RunHandle:
        if isinstance(task, str):
            task = Task(goal=task)
        if self._search_attributes is None:
            self._search_attributes = await ensure_search_attributes(self.client)
        workflow_id = id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        handle = await self.client.start_workflow(
            WORKFLOW_NAME,
            RunInput(spec=spec, task=task, search_attributes=self._search_attributes),
            id=workflow_id,
            task_queue=self.task_queue,
            result_type=RunResult,
            memo={"pipeline": spec.name, "goal": task.goal},
            static_summary=f"{spec.name}: {task.goal}"[:200],
        )
        return RunHandle(handle)

    def get(self, workflow_id: str) -> RunHandle:
        return RunHandle(self.client.get_workflow_handle(workflow_id, result_type=RunResult))

    async def run(self, spec: PipelineSpec, task: Task | str, id: str | None = None) -> RunResult:
        return await (await self.start(spec, task, id)).result()

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


def _attr(attrs: Any, name: str) -> Any:
    for pair in attrs:
        if pair.key.name == name:
            return pair.value
    return None
