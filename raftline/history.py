"""What a run's history tells without a worker: its status, rebuilt by replaying the history
here, and the task queues its pending work waits on while no worker polls them.

Both are client-side reads (history, describe, DescribeTaskQueue): they answer when no
worker is running, which is exactly when a query cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
    WorkflowRunner,
)

from raftline.client import RunUnavailable, run_rpc_error
from raftline.models import StatusView
from raftline.workflows.pipeline import VerifiedPipeline

# Work that waits this long on a queue nobody polls is reported as stuck.
STUCK_AFTER = timedelta(seconds=10)


# ---------------------------------------------------------------- status from history


@dataclass
class _Capture:
    """The workflow object being replayed and its latest snapshot()."""

    instance: Any = None
    view: StatusView | None = None

    def take(self) -> None:
        if self.instance is not None:
            self.view = self.instance.snapshot()


def _capturing(capture: _Capture) -> type[WorkflowInboundInterceptor]:
    class CaptureInstance(WorkflowInboundInterceptor):
        async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
            capture.instance = workflow.instance()
            return await super().execute_workflow(input)

    return CaptureInstance


class _CaptureInterceptor(Interceptor):
    def __init__(self, capture: _Capture) -> None:
        self._class = _capturing(capture)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return self._class


class _SnapshotRunner(WorkflowRunner):
    """UnsandboxedWorkflowRunner that snapshots the workflow after every activation.

    The replayer evicts the workflow at the end, and eviction cancels its tasks: the
    workflow's cancel path (compensating...) would then be what a snapshot sees. The last
    snapshot before the eviction is the state the history describes.
    """

    def __init__(self, capture: _Capture) -> None:
        self._inner = UnsandboxedWorkflowRunner()
        self._capture = capture

    def prepare_workflow(self, defn: workflow._Definition) -> None:
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _SnapshotInstance(self._inner.create_instance(det), self._capture)  # type: ignore[return-value]

    def set_worker_level_failure_exception_types(self, types: Any) -> None:
        self._inner.set_worker_level_failure_exception_types(types)


class _SnapshotInstance:
    """A WorkflowInstance that delegates everything and snapshots after each activation."""

    def __init__(self, inner: WorkflowInstance, capture: _Capture) -> None:
        self._inner = inner
        self._capture = capture

    def activate(self, act: Any) -> Any:
        evicting = any(job.HasField("remove_from_cache") for job in act.jobs)
        completion = self._inner.activate(act)
        if not evicting:
            self._capture.take()
        return completion

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def status_from_history(client: Client, workflow_id: str) -> StatusView:
    """The run's StatusView, rebuilt from its history by replaying it in this process.

    Answers without a worker (a `status` query needs one). Raises RunNotFound, or
    RunUnavailable when today's workflow code cannot replay the history.
    """
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as err:
        raise run_rpc_error(workflow_id, err) from None
    capture = _Capture()
    runner = _SnapshotRunner(capture)
    replayer = Replayer(
        workflows=[VerifiedPipeline],
        workflow_runner=runner,
        unsandboxed_workflow_runner=runner,
        data_converter=client.data_converter,
        interceptors=[_CaptureInterceptor(capture)],
    )
    outcome = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if capture.view is None:
        why = outcome.replay_failure or "the history has no workflow state"
        raise RunUnavailable(
            f"run {workflow_id}: cannot rebuild its status from history ({str(why)[:200]}); "
            "start a worker (raftline-worker) to ask the run itself"
        )
    return capture.view


async def chain_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """The histories of every run of a continue-as-new chain, first to last."""
    info = (await client.get_workflow_handle(workflow_id).describe()).raw_description
    run_id = (
        info.workflow_execution_info.first_run_id or info.workflow_execution_info.execution.run_id
    )
    histories = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = ""
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


# ---------------------------------------------------------------- queues nobody polls


@dataclass
class _Waiting:
    queue: str
    kind: TaskQueueType.ValueType
    since: datetime | None = field(default=None)


async def has_pollers(
    client: Client,
    queue: str,
    kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
) -> bool:
    """Whether a worker polled `queue` recently (the server remembers pollers for a few
    minutes, so a worker that just died still counts)."""
    try:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=kind,
            )
        )
    except RPCError:
        return True  # cannot tell: say nothing rather than something wrong
    return bool(resp.pollers)


async def unpolled_task_queues(
    client: Client, workflow_id: str, stuck_after: timedelta = STUCK_AFTER
) -> list[str]:
    """Task queues on which the run's pending workflow task or activities (steps, judges,
    compensations) have waited at least `stuck_after` while no worker polls them."""
    try:
        desc = (await client.get_workflow_handle(workflow_id).describe()).raw_description
    except RPCError:
        return []
    now = datetime.now(UTC)
    waiting: list[_Waiting] = []
    wft = desc.pending_workflow_task
    if desc.HasField("pending_workflow_task") and wft.HasField("scheduled_time"):
        waiting.append(
            _Waiting(
                desc.execution_config.task_queue.name or desc.workflow_execution_info.task_queue,
                TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                wft.scheduled_time.ToDatetime(UTC),
            )
        )
    unknown: dict[str, datetime | None] = {}  # activity id -> scheduled at
    for a in desc.pending_activities:
        if a.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            continue  # started (a worker has it) or cancel requested
        since = a.scheduled_time.ToDatetime(UTC) if a.HasField("scheduled_time") else None
        if since is not None and now - since < stuck_after:
            continue
        # Newer servers say the queue in the pending activity's options; else the history.
        queue = a.activity_options.task_queue.name if a.HasField("activity_options") else ""
        if queue:
            waiting.append(_Waiting(queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, since))
        else:
            unknown[a.activity_id] = since
    if unknown:
        execution = desc.workflow_execution_info.execution
        for activity_id, queue in (await _activity_queues(client, execution, unknown)).items():
            waiting.append(
                _Waiting(queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, unknown[activity_id])
            )
    found: list[str] = []
    for w in waiting:
        if w.since is not None and now - w.since < stuck_after:
            continue
        if w.queue not in found and not await has_pollers(client, w.queue, w.kind):
            found.append(w.queue)
    return found


async def _activity_queues(
    client: Client, execution: WorkflowExecution, activity_ids: Iterable[str]
) -> dict[str, str]:
    """The task queue each activity was scheduled on, from its ActivityTaskScheduled event
    (an older server's describe does not say it), reading the history newest first."""
    todo = set(activity_ids)
    found: dict[str, str] = {}
    token = b""
    while todo:
        try:
            page = await client.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=client.namespace,
                    execution=execution,
                    maximum_page_size=200,
                    next_page_token=token,
                )
            )
        except RPCError:
            break
        for event in page.history.events:
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                continue
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_id in todo:
                todo.discard(attrs.activity_id)
                found[attrs.activity_id] = attrs.task_queue.name
        token = page.next_page_token
        if not token:
            break
    return found


def no_worker_message(queue: str) -> str:
    return (
        f"no worker polls task queue {queue}: start one with raftline-worker --task-queue {queue}"
    )


# ---------------------------------------------------------------- a failing workflow task


async def workflow_task_problem(client: Client, workflow_id: str) -> str | None:
    """Why the run's workflow task keeps failing ("workflow task failing: ..."), or None.

    A workflow task that fails is retried by the server for ever, silently: the run stays
    running and nothing moves. The pending task's attempt count says it is failing; the
    last WorkflowTaskFailed event in the history says why.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        raise run_rpc_error(workflow_id, err) from None
    pending = desc.raw_description.pending_workflow_task
    if desc.raw_description.HasField("pending_workflow_task") and pending.attempt <= 1:
        return None
    if not desc.raw_description.HasField("pending_workflow_task"):
        return None
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=workflow_id, run_id=desc.run_id),
        maximum_page_size=50,
    )
    response = await client.workflow_service.get_workflow_execution_history_reverse(request)
    for event in response.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            message = failure.message.splitlines()[0] if failure.message else "unknown error"
            return (
                f"workflow task failing (attempt {pending.attempt}): {message}; the run is "
                "stuck until the workflow code is fixed or the worker is replaced"
            )
    return f"workflow task failing (attempt {pending.attempt})"
