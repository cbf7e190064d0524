"""The runtime records every part of raftline shares: what travels through Temporal's
history (inputs, outputs, verdicts, checkpoints, trace events, results).

The spec (what the user writes) is in raftline/spec.py; its names are re-exported here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from raftline.spec import (
    ActivityRetry,
    BreakerPolicy,
    Budget,
    Checks,
    Criticality,
    ErrorClass,
    JudgeSpec,
    MapSpec,
    PipelineSpec,
    Policy,
    QuorumSpec,
    ReviewSpec,
    SpecError,
    StepSpec,
    Strict,
    VerifierSpec,
    describe_validation_error,
)

__all__ = [  # the spec's names, for `from raftline.models import PipelineSpec`
    "ActivityRetry",
    "BreakerPolicy",
    "Budget",
    "Checks",
    "Criticality",
    "ErrorClass",
    "JudgeSpec",
    "MapSpec",
    "PipelineSpec",
    "Policy",
    "QuorumSpec",
    "ReviewSpec",
    "SpecError",
    "StepSpec",
    "VerifierSpec",
    "describe_validation_error",
]


class RunStatus(StrEnum):
    """The search attribute RaftStatus, and `raftline list --status`."""

    RUNNING = "running"
    BREAKER_OPEN = "breaker_open"
    AWAITING_REVIEW = "awaiting_review"
    COMPENSATING = "compensating"
    NEEDS_ATTENTION = "needs_attention"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELED = "canceled"


# ---------------------------------------------------------------- runtime records


class Task(Strict):
    goal: str = Field(min_length=1)
    inputs: dict[str, str] = Field(default_factory=dict)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 8),
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class BudgetCap(BaseModel):
    """What one call may spend at most: its share of the run's budget, reserved before the
    call. A built-in LLM call refuses (BudgetExceeded) when its worst case (prompt tokens
    plus its max output tokens, at the model's price) would not fit."""

    max_tokens: int | None = None
    max_cost_usd: float | None = None
    # The most input tokens a call of this kind has reported so far in the run: a floor
    # for the next call's estimate (a prompt's length in characters is only a guess).
    seen_input_tokens: int = 0


class CommittedRef(BaseModel):
    """A committed output a step or judge saw: the causal chain of the trace."""

    seq: int
    step: str
    sha256: str


class ContextRef(BaseModel):
    """Where a worker finds the committed outputs a step sees when there are too many to
    list in its input: the run answers the `context` query with them."""

    workflow_id: str
    run_id: str
    step: str


class StepInput(BaseModel):
    workflow_id: str
    pipeline: str
    step: str
    goal: str
    task: Task
    params: dict[str, Any] = Field(default_factory=dict)
    # The committed outputs of the step's ancestors, {step: text}. They travel by
    # reference (committed_refs, or `context` for long pipelines) and the worker fills
    # this in before the step function runs.
    committed: dict[str, str] = Field(default_factory=dict)
    committed_refs: list[CommittedRef] = Field(default_factory=list)
    context: ContextRef | None = None
    attempt: int = 0
    hint: str | None = None
    error_class: ErrorClass | None = None
    idempotency_key: str = ""
    # A map step's element and its index in the list.
    item: Any = None
    item_index: int | None = None
    budget: BudgetCap | None = None


class StepOutput(BaseModel):
    text: str
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # Custom steps may return a plain string.
        return {"text": value} if isinstance(value, str) else value


class VerifyInput(BaseModel):
    workflow_id: str
    step: StepSpec
    task: Task
    output: StepOutput
    committed: dict[str, str] = Field(default_factory=dict)
    committed_refs: list[CommittedRef] = Field(default_factory=list)
    context: ContextRef | None = None
    attempt: int = 0
    tier: str = "L1"
    params: dict[str, Any] = Field(default_factory=dict)
    budget: BudgetCap | None = None
    item_index: int | None = None


class Verdict(BaseModel):
    passed: bool
    error_class: ErrorClass | None = None
    reason: str = ""
    hint: str | None = None
    tier: str = "L1"
    verifier: str = "rules"
    model: str | None = None
    prompt_version: str | None = None
    confidence: float = 1.0
    # Committed without the verification its criticality asks for (a judge was down and
    # the step opted into on_judge_unavailable: degrade). Never silent: every surface
    # counts and shows it.
    degraded: bool = False
    checks_run: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None
    reviewer: str | None = Field(default=None, description="tier HUMAN: who decided")


class Checkpoint(BaseModel):
    seq: int
    step: str
    # None while it is only referenced (the client fills it in from the payload store).
    output: str | None = None
    sha256: str
    verdict: Verdict
    attempt: int
    at: datetime
    usage: Usage = Field(default_factory=Usage)
    parents: list[int] = Field(
        default_factory=list, description="checkpoints of the step's direct needs: the causal DAG"
    )
    reused_from: str | None = Field(
        default=None, description="a fork's checkpoint taken over unchanged: 'RUN#seq'"
    )
    key: str | None = Field(default=None, description="the committed attempt's idempotency key")


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    OUTPUT = "output"
    STEP_ERROR = "step_error"
    VERDICT = "verdict"
    JUDGE_UNAVAILABLE = "judge_unavailable"
    COMMITTED = "committed"
    REUSED = "reused"
    SKIPPED = "skipped"
    ROLLED_BACK = "rolled_back"
    RETRY = "retry"
    REVIEW_PENDING = "review_pending"
    REVIEW_DECIDED = "review_decided"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"
    BREAKER_CLOSED = "breaker_closed"
    BUDGET_EXCEEDED = "budget_exceeded"
    WORKER_MISSING = "worker_missing"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    ATTENTION_NEEDED = "attention_needed"
    ATTENTION_RESOLVED = "attention_resolved"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELED = "run_canceled"


class ReviewOutcome(BaseModel):
    """What a decision did, as recorded: a repeated decision returns the same record."""

    step: str
    attempt: int
    item: int | None = None
    decision: Literal["approve", "reject", "edit", "timeout"]
    by: str
    at: datetime
    note: str | None = None
    hint: str | None = None
    error_class: ErrorClass | None = None
    output_sha256: str | None = None
    repeated: bool = False


class TraceEvent(BaseModel):
    seq: int
    type: EventType
    step: str | None = None
    attempt: int | None = None
    at: datetime
    verdict: Verdict | None = None
    hint: str | None = None
    checkpoint_seq: int | None = None
    # The checkpoints the step or judge saw. Since raftline 0.2: those of its direct needs
    # (with their own inputs they form the causal DAG of everything it saw); a bounded list,
    # so a long run's trace grows with its steps, not with their square.
    inputs: list[CommittedRef] = Field(default_factory=list)
    seen: str | None = Field(
        default=None, description="content-addressed id of everything the step saw"
    )
    message: str = ""
    sha256: str | None = None
    item: int | None = Field(default=None, description="a map step's element index")
    by: str | None = Field(default=None, description="who decided (reviews, operators)")
    review: ReviewOutcome | None = Field(default=None, description="a review's decision")


class CompensationOutcome(BaseModel):
    step: str
    activity: str
    ok: bool
    error: str | None = None
    at: datetime
    attempt: int | None = None
    committed: bool = True
    idempotency_key: str | None = None
    resolved: str | None = Field(default=None, description="an operator's note, for a failed one")


class CompensationInput(BaseModel):
    workflow_id: str
    step: str
    # The output of the attempt it undoes ("" for an attempt cut short before it returned).
    output: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    # The undone attempt's idempotency key plus "/compensate".
    idempotency_key: str
    attempt: int | None = None
    item_index: int | None = None
    committed: bool = Field(
        default=True, description="False: an attempt that was rolled back or cut short"
    )
    output_sha256: str | None = Field(default=None, description="the worker fills in `output`")


class BreakerState(BaseModel):
    state: Literal["closed", "open", "half_open"] = "closed"
    consecutive_failures: int = 0
    trips: int = 0


class CarriedState(BaseModel):
    """What a generation-2 run handed to its continuation (workflows/legacy.py)."""

    next_step: int
    runs: int = Field(default=1, description="runs of this workflow id before this one")
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    trace: list[TraceEvent] = Field(default_factory=list)
    breaker: BreakerState = Field(default_factory=BreakerState)
    usage: Usage = Field(default_factory=Usage)
    kind_usage: dict[str, Usage] = Field(default_factory=dict)
    kind_calls: dict[str, int] = Field(default_factory=dict)
    rollbacks: int = 0
    retries: int = 0
    verdicts: int = 0


class ForkSpec(BaseModel):
    """A run that starts from another run's checkpoints (raftline fork)."""

    source_workflow_id: str
    source_run_id: str | None = None
    from_step: str
    hint: str | None = None
    output: str | None = Field(default=None, description="replaces from_step's output (HUMAN)")
    by: str | None = None
    reused: list[Any] = Field(
        default_factory=list, description="the source's checkpoints taken over (ledger entries)"
    )


class ParentRef(BaseModel):
    """A sub-pipeline's parent: whose step it is, for ids and idempotency keys."""

    workflow_id: str
    step: str
    key: str


class RunInput(BaseModel):
    """The one input of the VerifiedPipeline workflow."""

    spec: PipelineSpec
    task: Task
    # Off on a namespace without raftline's search attributes registered: an upsert
    # of an unknown attribute would fail every workflow task.
    search_attributes: bool = True
    # Generation 2: the state a continued run resumes from (workflows/legacy.py).
    carry: CarriedState | None = None
    # Since 0.2: the run's ledger, handed over by continue-as-new (raftline/ledger.py).
    ledger: Any = None
    fork: ForkSpec | None = None
    parent: ParentRef | None = None


class StepView(BaseModel):
    """One step of the DAG as `status` and `trace` show it."""

    name: str
    state: Literal[
        "waiting",
        "running",
        "awaiting_review",
        "verified",
        "reused",
        "skipped",
        "failed",
        "compensated",
    ]
    attempt: int | None = None
    checkpoint_seq: int | None = None
    items: str | None = Field(default=None, description="a map step's progress: 'done/total'")
    degraded: bool = False


class PendingReview(BaseModel):
    """A step output (or, for `before`, a step) waiting for a human decision."""

    workflow_id: str = ""
    pipeline: str = ""
    step: str
    attempt: int
    item_index: int | None = None
    why: str
    since: datetime
    deadline: datetime
    reviewers: list[str] = Field(default_factory=list)
    output: str | None = None
    output_sha256: str | None = None
    verdict: Verdict | None = None


class ReviewDecision(BaseModel):
    """A human's decision on a pending review (the approve / reject / edit updates)."""

    step: str
    attempt: int | None = Field(default=None, description="the pending attempt; None: any")
    item: int | None = Field(default=None, description="a map step's element index")
    note: str | None = None
    by: str | None = None
    hint: str | None = Field(default=None, description="reject: what the retry should fix")
    error_class: ErrorClass | None = Field(default=None, description="reject: why")
    output: str | None = Field(default=None, description="edit: the replacement output")


class CompensationAction(BaseModel):
    """An operator's answer to a run in needs_attention (the `compensations` update)."""

    retry: bool = False
    resolve: str | None = Field(default=None, description="a note: handled by hand")
    by: str | None = None


class WhenInput(BaseModel):
    """A `when` condition to evaluate (the raftline.when local activity)."""

    expression: str
    outputs: dict[str, str | None] = Field(
        default_factory=dict, description="step -> sha256 of its committed output (None: skipped)"
    )
    inputs: dict[str, str] = Field(default_factory=dict)


class ListInput(BaseModel):
    """The JSON list a map step runs over (the raftline.load_list local activity)."""

    source: str
    sha256: str | None = None
    text: str | None = None


class StatusView(BaseModel):
    workflow_id: str
    pipeline: str
    status: RunStatus
    current_step: str | None
    attempt: int
    steps_total: int
    verified: int
    breaker: BreakerState
    checkpoints: list[CommittedRef]
    usage: Usage
    degraded: int = 0
    steps: list[StepView] = Field(default_factory=list)
    reviews: list[PendingReview] = Field(default_factory=list)
    compensations: list[CompensationOutcome] = Field(default_factory=list)
    waiting: str | None = Field(default=None, description="what the run waits for, if anything")


class TraceSlice(BaseModel):
    """The trace events of one earlier run of a continue-as-new chain, kept in the payload
    store (by sha256 of their JSON), so the chain's trace is never copied forward."""

    first_seq: int
    last_seq: int
    sha256: str
    run_id: str


class RunResult(BaseModel):
    workflow_id: str
    pipeline: str
    status: RunStatus
    success: bool
    steps_total: int
    verified: int
    rollbacks: int = 0
    retries: int = 0
    verdicts: int = 0
    breaker_trips: int = 0
    compensations: list[CompensationOutcome] = Field(default_factory=list)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    output: str | None = None
    output_sha256: str | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    failed_step: str | None = None
    trace: list[TraceEvent] = Field(default_factory=list)
    degraded: int = 0
    skipped: list[str] = Field(default_factory=list)
    reused: int = 0
    fork_of: str | None = None
    # Earlier runs' trace events (continue-as-new): the client reads them from the store.
    trace_archive: list[TraceSlice] = Field(default_factory=list)

    passed_verdicts: int | None = None

    @property
    def reliability(self) -> float:
        """Share of verdicts that passed: 1.0 means every attempt was right first time."""
        passed = self.passed_verdicts
        if passed is None:  # a run from before 0.2: one passing verdict per commit
            passed = self.verified + self.degraded - self.reused
        return round(passed / self.verdicts, 4) if self.verdicts else 0.0

    def summary(self, ui_url: str | None = None) -> dict[str, Any]:
        """The `--json` object of run/result/demo (the CLI contract). `verified` counts the
        fully verified steps only; `degraded` the ones committed without a judge."""
        return {
            "workflow_id": self.workflow_id,
            "status": self.status.value,
            "success": self.success,
            "verified": f"{self.verified}/{self.steps_total}",
            "degraded": self.degraded,
            "rollbacks": self.rollbacks,
            "retries": self.retries,
            "compensations": len(self.compensations),
            "breaker_trips": self.breaker_trips,
            "reliability": self.reliability,
            "output": self.output if self.success else None,
            "usage": self.usage.model_dump(),
            "error": self.error,
            "ui_url": ui_url,
        }
