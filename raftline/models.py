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


class CommittedRef(BaseModel):
    """A committed output a step or judge saw: the causal chain of the trace."""

    seq: int
    step: str
    sha256: str


class StepInput(BaseModel):
    workflow_id: str
    pipeline: str
    step: str
    goal: str
    task: Task
    params: dict[str, Any] = Field(default_factory=dict)
    committed: dict[str, str] = Field(default_factory=dict)
    committed_refs: list[CommittedRef] = Field(default_factory=list)
    attempt: int = 0
    hint: str | None = None
    error_class: ErrorClass | None = None
    idempotency_key: str = ""


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
    attempt: int = 0
    tier: str = "L1"
    params: dict[str, Any] = Field(default_factory=dict)


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
    degraded: bool = False
    checks_run: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    latency_ms: float | None = None


class Checkpoint(BaseModel):
    seq: int
    step: str
    output: str
    sha256: str
    verdict: Verdict
    attempt: int
    at: datetime
    usage: Usage = Field(default_factory=Usage)


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    OUTPUT = "output"
    STEP_ERROR = "step_error"
    VERDICT = "verdict"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    RETRY = "retry"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"
    BREAKER_CLOSED = "breaker_closed"
    BUDGET_EXCEEDED = "budget_exceeded"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELED = "run_canceled"


class TraceEvent(BaseModel):
    seq: int
    type: EventType
    step: str | None = None
    attempt: int | None = None
    at: datetime
    verdict: Verdict | None = None
    hint: str | None = None
    checkpoint_seq: int | None = None
    inputs: list[CommittedRef] = Field(default_factory=list)
    message: str = ""
    sha256: str | None = None


class CompensationOutcome(BaseModel):
    step: str
    activity: str
    ok: bool
    error: str | None = None
    at: datetime


class CompensationInput(BaseModel):
    workflow_id: str
    step: str
    output: str
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str


class BreakerState(BaseModel):
    state: Literal["closed", "open", "half_open"] = "closed"
    consecutive_failures: int = 0
    trips: int = 0


class CarriedState(BaseModel):
    """What a run hands to its continuation: the checkpoint log, trace and counters."""

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


class RunInput(BaseModel):
    """The one input of the VerifiedPipeline workflow."""

    spec: PipelineSpec
    task: Task
    # Off on a namespace without raftline's search attributes registered: an upsert
    # of an unknown attribute would fail every workflow task.
    search_attributes: bool = True
    # Set when a long run continued as new: the state the next run resumes from.
    carry: CarriedState | None = None


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
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    failed_step: str | None = None
    trace: list[TraceEvent] = Field(default_factory=list)

    @property
    def reliability(self) -> float:
        """Share of verdicts that passed: 1.0 means every attempt was right first time."""
        return round(self.verified / self.verdicts, 4) if self.verdicts else 0.0

    def summary(self, ui_url: str | None = None) -> dict[str, Any]:
        """The `--json` object of run/result/demo (the CLI contract)."""
        return {
            "workflow_id": self.workflow_id,
            "status": self.status.value,
            "success": self.success,
            "verified": f"{self.verified}/{self.steps_total}",
            "rollbacks": self.rollbacks,
            "retries": self.retries,
            "compensations": len(self.compensations),
            "breaker_trips": self.breaker_trips,
            "reliability": self.reliability,
            "output": self.output,
            "usage": self.usage.model_dump(),
            "error": self.error,
            "ui_url": ui_url,
        }
