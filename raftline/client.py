"""The embeddable client: connect, start, result, status, trace, cancel, follow events.

Backend services use this module directly; the CLI is a thin shell around it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
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
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from raftline.models import (
    CompensationAction,
    EventType,
    ForkSpec,
    PendingReview,
    PipelineSpec,
    ReviewDecision,
    ReviewOutcome,
    RunInput,
    RunResult,
    RunStatus,
    SpecError,
    StatusView,
    Task,
    TraceEvent,
    TraceSlice,
    describe_validation_error,
)
from raftline.settings import (
    RAFT_FORK_OF,
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


def run_rpc_error(workflow_id: str, err: RPCError) -> RaftlineError:
    """The server's refusal of a request about one run: not found, or unreadable now."""
    if err.status == RPCStatusCode.NOT_FOUND:
        return RunNotFound(f"no run with id {workflow_id!r}")
    return RunUnavailable(f"run {workflow_id}: {err.message}")


class RunExists(RaftlineError):
    """start() with the id of a run that is still running."""


class Refused(RaftlineError):
    """A decision or action the run refused (its validator said why), or a fork that
    cannot be made: the message is one line."""


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


STARTING_UP_S = 15.0


async def temporal_client(
    address: str | None = None, *, tracing: bool | None = None, **overrides: Any
) -> Client:
    """A Temporal client with raftline's data converter. `tracing`: add OpenTelemetry's
    TracingInterceptor (workers built from this client inherit it); default on when this
    process has configured an OpenTelemetry SDK tracer provider (e.g. the worker from
    OTEL_* variables)."""
    config = {"data_converter": data_converter(), **connect_config(address), **overrides}
    config["interceptors"] = [*config.get("interceptors", []), *tracing_interceptors(tracing)]
    # A server that just opened its port may not serve yet ("Frontend is not healthy
    # yet"): the embedded one right after start-up. Wait for it a little, not for a
    # server that is down.
    deadline = asyncio.get_running_loop().time() + STARTING_UP_S
    while True:
        try:
            return await Client.connect(**config)
        except RuntimeError as exc:
            starting = "not healthy yet" in str(exc)
            if starting and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
                continue
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
        """The run's result, waiting for it to end. Failed runs return too (success False).
        Its checkpoints carry their outputs and its trace covers the whole continue-as-new
        chain (both are fetched from the output store; the run itself holds references)."""
        try:
            result = await self._handle.result(rpc_timeout=None)
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "PipelineFailed":
                result = RunResult.model_validate(cause.details[0])
            elif isinstance(cause, CancelledError):
                result = await self._query_result(RunStatus.CANCELED)
            else:
                raise RaftlineError(f"run {self.id} failed: {cause or err}") from None
        except RPCError as err:
            raise _rpc_error(self.id, err) from None
        return await _complete(result, self._handle)

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
        events = [e for e in events if e.seq > after]
        if not events or events[0].seq > after + 1:
            # Continued as new since `after`: the earlier runs' events are in the store.
            events = [*await self._archived(after, events), *events]
        return events

    async def _archived(self, after: int, newer: list[TraceEvent]) -> list[TraceEvent]:
        try:
            slices: list[TraceSlice] = await self._handle.query(
                VerifiedPipeline.trace_archive, rpc_timeout=QUERY_TIMEOUT
            )
        except (WorkflowQueryFailedError, RPCError):
            return []  # a run from before 0.2, or between runs of the chain: next poll
        limit = newer[0].seq if newer else None
        events = await _load_slices(slices, after, self._handle)
        return [e for e in events if limit is None or e.seq < limit]

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

    # ------------------------------------------------------------ human review

    async def reviews(self) -> list[PendingReview]:
        """The run's pending reviews (each with the output waiting for a decision)."""
        try:
            return await self._handle.query(VerifiedPipeline.reviews, rpc_timeout=QUERY_TIMEOUT)
        except (WorkflowQueryFailedError, RPCError) as err:
            raise _rpc_error(self.id, err) from None

    async def approve(
        self,
        step: str,
        *,
        note: str | None = None,
        by: str | None = None,
        attempt: int | None = None,
        item: int | None = None,
        update_id: str | None = None,
    ) -> ReviewOutcome:
        """Approve the pending review of `step`: its output commits (recorded as yours)."""
        return await self._decide(
            "approve",
            ReviewDecision(step=step, note=note, by=by, attempt=attempt, item=item),
            update_id,
        )

    async def reject(
        self,
        step: str,
        hint: str | None = None,
        *,
        error_class: str | None = None,
        by: str | None = None,
        attempt: int | None = None,
        item: int | None = None,
        update_id: str | None = None,
    ) -> ReviewOutcome:
        """Reject it: the step retries with `hint` (and `error_class`); `before` without a
        hint ends the run."""
        return await self._decide(
            "reject",
            ReviewDecision(
                step=step, hint=hint, error_class=error_class, by=by, attempt=attempt, item=item
            ),
            update_id,
        )

    async def edit(
        self,
        step: str,
        output: str,
        *,
        note: str | None = None,
        by: str | None = None,
        attempt: int | None = None,
        item: int | None = None,
        update_id: str | None = None,
    ) -> ReviewOutcome:
        """Replace the pending output with yours: it must pass the step's L1 rules, and
        commits with verdict tier HUMAN."""
        return await self._decide(
            "edit",
            ReviewDecision(step=step, output=output, note=note, by=by, attempt=attempt, item=item),
            update_id,
        )

    async def _decide(
        self, kind: str, decision: ReviewDecision, update_id: str | None
    ) -> ReviewOutcome:
        if decision.by is None:
            decision.by = _os_user()
        try:
            outcome: ReviewOutcome = await self._handle.execute_update(
                kind, decision, id=update_id, result_type=ReviewOutcome
            )
        except WorkflowUpdateFailedError as err:
            raise Refused(f"run {self.id}: {_update_reason(err)}") from None
        except RPCError as err:
            if "already completed" not in str(err):
                raise _rpc_error(self.id, err) from None
            return await self._decided(kind, decision)
        return outcome

    async def _decided(self, kind: str, decision: ReviewDecision) -> ReviewOutcome:
        """A decision for a run that has ended: the recorded one if it is the same (a resend
        after the run moved on), else refused."""
        result = await self.result()
        for event in reversed(result.trace):
            done = event.review
            if event.type is not EventType.REVIEW_DECIDED or done is None:
                continue
            if done.step != decision.step or (
                decision.item is not None and done.item != decision.item
            ):
                continue
            same = done.decision == kind and (
                (kind == "approve" and done.note == decision.note)
                or (kind == "reject" and done.hint == decision.hint)
                or (kind == "edit" and done.output_sha256 == _sha(decision.output))
            )
            if same:
                return done.model_copy(update={"repeated": True})
            raise Refused(
                f"run {self.id}: step {decision.step!r} was already decided: "
                f"{done.decision} by {done.by}"
            )
        raise Refused(
            f"run {self.id} has ended ({result.status.value}): step {decision.step!r} "
            "has no pending review"
        )

    # ------------------------------------------------------------ operators

    async def compensations(
        self, *, retry: bool = False, resolve: str | None = None, by: str | None = None
    ) -> StatusView:
        """A run in needs_attention: retry its failed compensations, or mark them handled
        by hand (`resolve` is the note). Returns the run's status afterwards."""
        action = CompensationAction(retry=retry, resolve=resolve, by=by or _os_user())
        try:
            view: StatusView = await self._handle.execute_update(
                VerifiedPipeline.compensations, action, result_type=StatusView
            )
        except WorkflowUpdateFailedError as err:
            raise Refused(f"run {self.id}: {_update_reason(err)}") from None
        except RPCError as err:
            if "already completed" in str(err):
                raise Refused(
                    f"run {self.id} has ended: it has no failed compensation to act on"
                ) from None
            raise _rpc_error(self.id, err) from None
        return view

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
        self,
        pipeline: PipelineSpec | Any,
        task: Task | str | dict[str, Any],
        id: str | None = None,
        fork: ForkSpec | None = None,
    ) -> RunHandle:
        """Start a run and return its handle at once. `pipeline`: a PipelineSpec, or a
        raftline.Pipeline (its `.spec`; a worker must register its functions); `task`: a
        Task, a goal or a mapping. Raises SpecError for a bad task or pipeline, RunExists
        when a run with this id is still running (a closed one's id may be reused)."""
        spec, task = _spec_of(pipeline), _task_of(task)
        spec.check_conditions(f"pipeline {spec.name!r}", task.inputs)
        if self._search_attributes is None:
            self._search_attributes = await ensure_search_attributes(self.client)
        workflow_id = id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_NAME,
                RunInput(
                    spec=spec, task=task, search_attributes=self._search_attributes, fork=fork
                ),
                id=workflow_id,
                task_queue=self.task_queue,
                result_type=RunResult,
                memo={
                    "pipeline": spec.name,
                    "goal": task.goal,
                    **(
                        {"fork_of": fork.source_workflow_id, "from": fork.from_step} if fork else {}
                    ),
                },
                static_summary=f"{spec.name}: {task.goal}"[:200],
                # Indexed from the start, so the workflow need not write them itself.
                search_attributes=(
                    TypedSearchAttributes(
                        [
                            SearchAttributePair(RAFT_STATUS, RunStatus.RUNNING.value),
                            SearchAttributePair(RAFT_PIPELINE, spec.name),
                            *(
                                [SearchAttributePair(RAFT_FORK_OF, fork.source_workflow_id)]
                                if fork
                                else []
                            ),
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
                    "fork_of": _attr(attrs, "RaftForkOf"),
                    # The server's own mark of a run whose workflow task keeps failing.
                    "problems": list(_attr(attrs, "TemporalReportedProblems") or []),
                }
            )
        return rows

    async def pending_reviews(self, limit: int = 200) -> list[PendingReview]:
        """Every pending review across runs: the runs visibility lists as awaiting_review,
        each asked for its reviews (a run no worker can answer shows what the index has)."""
        query = f"WorkflowType = '{WORKFLOW_NAME}' AND RaftStatus = 'awaiting_review'"
        found: list[PendingReview] = []
        async for wf in self.client.list_workflows(query, limit=limit):
            try:
                pending = await self.get(wf.id).reviews()
            except RaftlineError:
                attrs = wf.typed_search_attributes
                when = wf.start_time or datetime.now(UTC)
                pending = [
                    PendingReview(
                        step=_attr(attrs, "RaftStep") or "?",
                        attempt=0,
                        why="unknown: no worker answers the run's reviews query",
                        since=when,
                        deadline=when,
                    )
                ]
            pipeline = _attr(wf.typed_search_attributes, "RaftPipeline") or ""
            for review in pending:
                review.workflow_id, review.pipeline = wf.id, review.pipeline or pipeline
            found += pending
        return found

    async def fork(
        self,
        run_id: str,
        from_step: str,
        *,
        hint: str | None = None,
        output: str | None = None,
        by: str | None = None,
        pipeline: PipelineSpec | Any = None,
        set_params: dict[str, Any] | None = None,
        models: dict[str, str] | None = None,
        id: str | None = None,
    ) -> RunHandle:
        """A new run of the same pipeline (or `pipeline`) that reuses `run_id`'s committed
        checkpoints of every step that is not `from_step` or downstream of it, and runs
        `from_step` (with `hint`, or committing `output` as a human's edit) and its
        descendants. Raises Refused (one line) when the fork cannot be made."""
        from raftline.fork import plan_fork

        plan = await plan_fork(
            self,
            run_id,
            from_step,
            hint=hint,
            output=output,
            by=by or _os_user(),
            pipeline=_spec_of(pipeline) if pipeline is not None else None,
            set_params=set_params or {},
            models=models or {},
        )
        return await self.start(plan.spec, plan.task, id=id, fork=plan.fork)

    async def diff(self, run_a: str, run_b: str) -> dict[str, Any]:
        """Step by step: same output or not (sha256), verdicts, attempts, tokens and cost of
        each side, and a unified diff of the outputs that differ."""
        from raftline.fork import diff_runs

        return diff_runs(await self.get(run_a).result(), await self.get(run_b).result())


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


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user database entry (containers)
        return "unknown"


def _update_reason(err: WorkflowUpdateFailedError) -> str:
    """The validator's own words: its one-line message, without the exception's type."""
    cause = err.cause
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.message:
        return cause.message.splitlines()[0]
    text = str(cause or err)
    return text.splitlines()[0] if text else "refused"


async def _load_slices(
    slices: list[TraceSlice], after: int, handle: WorkflowHandle[Any, Any]
) -> list[TraceEvent]:
    """Trace events of earlier runs of a chain, seq > after: from the output store, else
    from the history of the run that archived them (no store, no worker needed)."""
    from raftline.blobs import BlobMissing, blob_store, sha256_text

    store = blob_store()
    events: list[TraceEvent] = []
    for piece in slices:
        if piece.last_seq <= after:
            continue
        try:
            raw = await store.get(piece.sha256)
        except BlobMissing:
            found = await _archived_in_history(handle, piece)
            if found is None or sha256_text(found) != piece.sha256:
                raise
            raw = found
        events += [e for e in TypeAdapter(list[TraceEvent]).validate_json(raw) if e.seq > after]
    return events


async def _archived_in_history(handle: WorkflowHandle[Any, Any], piece: TraceSlice) -> str | None:
    """The archive_trace local activity's result, as its run's history recorded it."""
    old = handle._client.get_workflow_handle(handle.id, run_id=piece.run_id)
    converter = handle._client.data_converter
    async for event in old.fetch_history_events():
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        result = event.marker_recorded_event_attributes.details.get("result")
        if result is None or not result.payloads:
            continue
        try:
            [value] = await converter.decode(list(result.payloads), [str])
        except Exception:  # noqa: BLE001 - another local activity's result
            continue
        if isinstance(value, str) and value.startswith("[{"):
            return value
    return None


async def _complete(result: RunResult, handle: WorkflowHandle[Any, Any]) -> RunResult:
    """Fill in what the run holds by reference: checkpoint outputs, the final output (from
    the store, else from the run's `output` query), and the trace of earlier runs of its
    continue-as-new chain. An output found nowhere stays None."""
    from raftline.blobs import BlobMissing, blob_store

    missing = [c for c in result.checkpoints if c.output is None]
    if not missing and result.output is not None and not result.trace_archive:
        return result
    store = blob_store()

    async def text(sha256: str) -> str | None:
        try:
            return await store.get(sha256)
        except BlobMissing:
            try:
                found: str | None = await handle.query(
                    VerifiedPipeline.output, sha256, rpc_timeout=QUERY_TIMEOUT
                )
            except (WorkflowQueryFailedError, RPCError):
                return None
            return found

    for checkpoint, found in zip(
        missing, await asyncio.gather(*(text(c.sha256) for c in missing)), strict=True
    ):
        checkpoint.output = found
    if result.output is None and result.output_sha256:
        result.output = await text(result.output_sha256)
    if result.trace_archive:
        try:
            earlier = await _load_slices(result.trace_archive, 0, handle)
        except BlobMissing as exc:
            raise RunUnavailable(f"run {result.workflow_id}: {exc}") from None
        first = result.trace[0].seq if result.trace else None
        result.trace = [e for e in earlier if first is None or e.seq < first] + result.trace
        result.trace_archive = []
    return result
