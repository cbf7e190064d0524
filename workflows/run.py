"""The state of one run as the workflow holds it: the ledger, this run's trace events, and
what is in flight. Every helper of the commit loop works on a `Run`.

Deterministic code only: time from workflow.now(), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio import workflow

from raftline.ledger import Entry, Ledger, seen_id
from raftline.models import (
    CommittedRef,
    ContextRef,
    EventType,
    PipelineSpec,
    RunInput,
    RunResult,
    RunStatus,
    StatusView,
    StepSpec,
    StepView,
    Task,
    TraceEvent,
)
from raftline.settings import RAFT_PIPELINE, RAFT_ROLLBACKS, RAFT_STATUS, RAFT_STEP
from raftline.verifiers.rules import OutputFacts
from raftline.workflows.errors import Ending
from raftline.workflows.telemetry import count, decision_record

# A step with more ancestors than this gets their refs from the run's `context` query
# instead of inside its input: inputs stay small however long the pipeline.
INLINE_REFS = 32
# A result carries its checkpoints' outputs up to this many characters in all; beyond,
# by reference (RunHandle.result() fetches them from the store).
RESULT_INLINE_CHARS = 256 * 1024


@dataclass
class Attempt:
    """A step attempt that ran (or runs) and is not committed: if it has a compensation,
    its side effects are undone at rollback, or by the saga if the run ends first."""

    step: str
    attempt: int
    key: str
    item: int | None = None
    sha256: str | None = None  # its output, once it returned


class Run:
    def __init__(self, inp: RunInput) -> None:
        info = workflow.info()
        self.inp = inp
        self.spec: PipelineSpec = inp.spec
        self.task: Task = inp.task
        self.workflow_id = info.workflow_id
        self.run_id = info.run_id
        self.ledger = (
            Ledger.model_validate(inp.ledger)
            if inp.ledger is not None
            else Ledger(first_run_id=info.first_execution_run_id or info.run_id)
        )
        self.events: list[TraceEvent] = []  # this run's part of the trace
        self.texts: dict[str, str] = {}  # outputs produced in this run, by sha256
        self.open: dict[str, Attempt] = {}  # uncommitted attempts, by idempotency key
        self.running: dict[str, int] = {}  # step -> its attempt in flight
        self.items: dict[str, tuple[int, int]] = {}  # map step -> (done, total)
        self.waiting: dict[str, str] = {}  # step -> what it waits for (a judge, a human)
        self.graph = self.spec.graph()
        self.steps = {s.name: s for s in self.spec.steps}
        self.entries = {e.step: e for e in self.ledger.checkpoints}
        # The carry leaves out what the ledger can derive (see Dag._continue_as_new).
        for e in self.ledger.checkpoints:
            if not e.seen:
                e.seen = seen_id([self.ledger.by_seq(p) for p in e.parents])
        self.failed_step: str | None = None
        self.ending: str | None = None  # set once the run cannot finish: nothing commits
        self.current: str | None = None  # the step last started, for the index

    # ------------------------------------------------------------ the DAG as this run sees it

    def step(self, name: str) -> StepSpec:
        return self.steps[name]

    def refs(self, step: str, limit: int | None = None) -> list[CommittedRef]:
        """The committed checkpoints `step` sees: its ancestors', in commit order. With
        `limit`, at most limit + 1 (enough to know there are too many to inline)."""
        refs = [
            e.ref()
            for name in self.graph.ancestors(step, limit)
            if (e := self.entries.get(name)) is not None
        ]
        return sorted(refs, key=lambda r: r.seq)

    def inline_refs(self, step: str) -> tuple[list[CommittedRef], ContextRef | None]:
        """Refs for a step or judge input: listed when few, else the `context` query's."""
        refs = self.refs(step, INLINE_REFS)
        if len(refs) > INLINE_REFS:
            return [], self.context_ref(step)
        return refs, None

    def parent_refs(self, step: str) -> list[CommittedRef]:
        """The checkpoints of `step`'s direct needs: what the trace records it saw."""
        return [e.ref() for n in self.graph.parents[step] if (e := self.entries.get(n))]

    def seen(self, step: str) -> str:
        """The content-addressed id of everything `step` sees (see ledger.seen_id)."""
        return seen_id([e for n in self.graph.parents[step] if (e := self.entries.get(n))])

    def facts(self, step: str) -> list[OutputFacts]:
        """What L1 needs of the outputs `step` sees (extracted when they were committed):
        only for a step whose checks read earlier outputs."""
        checks = self.steps[step].checks
        if not (checks.grounded_numbers or checks.consistent_keys):
            return []
        return [
            OutputFacts.model_validate(e.facts)
            for name in self.graph.ancestors(step)
            if (e := self.entries.get(name)) is not None and e.facts is not None
        ]

    def add(self, entry: Entry) -> None:
        """Append a checkpoint to the log (seq in commit order)."""
        self.ledger.checkpoints.append(entry)
        self.entries[entry.step] = entry
        if entry.degraded:
            self.ledger.counters.degraded += 1
        if entry.reused_from:
            self.ledger.counters.reused += 1

    def context_ref(self, step: str) -> ContextRef:
        """Where a worker gets the refs of a step with many ancestors: our `context` query."""
        return ContextRef(workflow_id=self.workflow_id, run_id=self.run_id, step=step)

    def key(self, step: str, attempt: int, item: int | None = None) -> str:
        """Unique across runs that reuse a workflow id: the chain's first run id is in it."""
        base = f"{self.workflow_id}/{self.ledger.first_run_id}/{step}"
        return f"{base}/item-{item}/{attempt}" if item is not None else f"{base}/{attempt}"

    def key_of(self, entry: Entry, item: int | None = None) -> str:
        """The idempotency key of a committed attempt: stored only when not derivable."""
        return entry.key or self.key(entry.step, entry.attempt, item)

    def check(self) -> None:
        """Called after every await that could have let the run end meanwhile."""
        if self.ending is not None:
            raise Ending(self.ending)

    # ------------------------------------------------------------ the trace

    def event(
        self, type_: EventType, step: str | None = None, attempt: int | None = None, **kw: Any
    ) -> TraceEvent:
        self.ledger.trace_seq += 1
        event = TraceEvent(
            seq=self.ledger.trace_seq,
            type=type_,
            step=step,
            attempt=attempt,
            at=workflow.now(),
            **kw,
        )
        self.events.append(event)
        # A decision record in the worker's JSON log and raftline's counters: both are
        # skipped while the worker replays history (workflows/telemetry.py).
        workflow.logger.info(
            type_.value, extra={"raftline": decision_record(event, self.spec.name)}
        )
        count(event, self.spec.name)
        return event

    # ------------------------------------------------------------ status, index, details

    def set_status(self, status: RunStatus) -> None:
        self.ledger.status = status
        self.show()
        attrs: list[Any] = [RAFT_STATUS.value_set(status.value)]
        if self.current is not None:
            attrs.append(RAFT_STEP.value_set(self.current))
        self.upsert(*attrs)

    def show(self) -> None:
        """The run's current details in the Web UI (no history event, no index write)."""
        workflow.set_current_details(self.details())

    def upsert(self, *updates: Any) -> None:
        if self.inp.search_attributes:
            workflow.upsert_search_attributes(list(updates))

    def index_start(self) -> None:
        """RaftStatus and RaftPipeline, unless the client indexed them when it started us."""
        attrs = workflow.info().typed_search_attributes
        started = attrs.get(RAFT_STATUS) == RunStatus.RUNNING.value and (
            attrs.get(RAFT_PIPELINE) == self.spec.name
        )
        if not started:
            self.upsert(
                RAFT_STATUS.value_set(RunStatus.RUNNING.value),
                RAFT_PIPELINE.value_set(self.spec.name),
            )
        self.show()

    def index_rollback(self, step: str) -> None:
        self.upsert(
            RAFT_ROLLBACKS.value_set(self.ledger.counters.rollbacks), RAFT_STEP.value_set(step)
        )

    def details(self) -> str:
        """Where the run is, in one line of markdown."""
        total = len(self.spec.steps)
        parts = [f"**{self.ledger.status.value}**"]
        if self.running:
            shown = []
            for name, attempt in list(self.running.items())[:6]:
                index = next(i for i, s in enumerate(self.spec.steps, 1) if s.name == name)
                label = f"step {index}/{total} `{name}`"
                if attempt:
                    label += f" · retry {attempt}"
                if name in self.items:
                    done, n = self.items[name]
                    label += f" · items {done}/{n}"
                if name in self.waiting:
                    label += f" · {self.waiting[name]}"
                shown.append(label)
            more = len(self.running) - len(shown)
            parts.append(", ".join(shown) + (f" (+{more} more)" if more > 0 else ""))
        parts.append(f"{self.ledger.verified}/{total} verified")
        if self.ledger.degraded:
            parts.append(f"{self.ledger.degraded} degraded")
        return " · ".join(parts)

    # ------------------------------------------------------------ views

    def step_views(self, pending_reviews: set[str] = frozenset()) -> list[StepView]:
        compensated = {c.step for c in self.ledger.compensations if c.ok and c.committed}
        views = []
        for s in self.spec.steps:
            entry = self.entries.get(s.name)
            state: Any
            if entry is not None:
                if s.name in compensated:
                    state = "compensated"
                else:
                    state = "reused" if entry.reused_from else "verified"
            elif s.name in self.ledger.skipped:
                state = "skipped"
            elif s.name in pending_reviews:
                state = "awaiting_review"
            elif s.name in self.running:
                state = "running"
            elif s.name == self.failed_step:
                state = "failed"
            else:
                state = "waiting"
            items = self.items.get(s.name)
            views.append(
                StepView(
                    name=s.name,
                    state=state,
                    attempt=entry.attempt if entry is not None else self.running.get(s.name),
                    checkpoint_seq=entry.seq if entry is not None else None,
                    items=f"{items[0]}/{items[1]}" if items else None,
                    degraded=bool(entry and entry.degraded),
                )
            )
        return views

    def status_view(self, reviews: list[Any] = ()) -> StatusView:  # type: ignore[assignment]
        current = next(iter(self.running), None) or self.current
        return StatusView(
            workflow_id=self.workflow_id,
            pipeline=self.spec.name,
            status=self.ledger.status,
            current_step=current,
            attempt=self.running.get(current, 0) if current else 0,
            steps_total=len(self.spec.steps),
            verified=self.ledger.verified,
            degraded=self.ledger.degraded,
            breaker=self.ledger.breaker,
            checkpoints=[e.ref() for e in self.ledger.checkpoints],
            usage=self.ledger.usage,
            steps=self.step_views({r.step for r in reviews}),
            reviews=list(reviews),
            compensations=self.ledger.compensations,
            waiting="; ".join(f"{k}: {v}" for k, v in self.waiting.items()) or None,
        )

    def _checkpoints(self) -> list[Any]:
        """Small results carry their outputs; large ones (and outputs committed by earlier
        runs of a chain) go by reference."""
        budget = RESULT_INLINE_CHARS
        out = []
        for e in self.ledger.checkpoints:
            text = self.texts.get(e.sha256)
            if text is not None and len(text) <= budget:
                budget -= len(text)
                out.append(e.checkpoint(text, self.key_of(e)))
            else:
                out.append(e.checkpoint(key=self.key_of(e)))
        return out

    def result(self, error: str | None = None, failed_step: str | None = None) -> RunResult:
        last: Entry | None = self.ledger.checkpoints[-1] if self.ledger.checkpoints else None
        return RunResult(
            workflow_id=self.workflow_id,
            pipeline=self.spec.name,
            status=self.ledger.status,
            success=self.ledger.status is RunStatus.COMPLETED,
            steps_total=len(self.spec.steps),
            verified=self.ledger.verified,
            degraded=self.ledger.degraded,
            rollbacks=self.ledger.counters.rollbacks,
            retries=self.ledger.counters.retries,
            verdicts=self.ledger.counters.verdicts,
            passed_verdicts=self.ledger.counters.passed,
            breaker_trips=self.ledger.breaker.trips,
            compensations=self.ledger.compensations,
            checkpoints=self._checkpoints(),
            output=self.texts.get(last.sha256) if last is not None else None,
            output_sha256=last.sha256 if last is not None else None,
            usage=self.ledger.usage,
            error=error,
            failed_step=failed_step,
            trace=self.events,
            skipped=self.ledger.skipped,
            reused=self.ledger.reused,
            fork_of=self.ledger.fork_of,
            trace_archive=self.ledger.trace_archive,
        )
