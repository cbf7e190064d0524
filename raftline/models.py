"""The pydantic contracts every part of raftline shares.

Specs (what the user writes) are strict: an unknown key or a bad value is an error
that names the field. Runtime records (inputs, outputs, verdicts, checkpoints,
trace events, results) are what travels through Temporal's history.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class SpecError(ValueError):
    """A pipeline spec or task is invalid; the message is one line naming the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Criticality(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class ErrorClass(StrEnum):
    INCOMPLETE = "INCOMPLETE"
    FORMAT = "FORMAT"
    GOAL_DRIFT = "GOAL_DRIFT"
    HALLUCINATION = "HALLUCINATION"
    CONTRADICTION = "CONTRADICTION"
    SCOPE_CREEP = "SCOPE_CREEP"
    UNSAFE = "UNSAFE"
    STEP_ERROR = "STEP_ERROR"


class RunStatus(StrEnum):
    RUNNING = "running"
    BREAKER_OPEN = "breaker_open"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELED = "canceled"


# ---------------------------------------------------------------- the spec


class Checks(Strict):
    """L1 rule configuration of one step (`checks:` in YAML)."""

    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    required: list[str] = Field(default_factory=list, description="phrases that must appear")
    forbidden: list[str] = Field(default_factory=list, description="regexes that must not match")
    out_of_scope: list[str] = Field(
        default_factory=list, description="regexes for work beyond the step's scope"
    )
    topic: list[str] = Field(
        default_factory=list, description="keywords; at least `topic_min` must appear"
    )
    topic_min: int = Field(default=1, ge=1)
    grounded_numbers: bool = Field(
        default=False, description="every number must appear in the task or committed outputs"
    )
    consistent_keys: list[str] = Field(
        default_factory=list, description="JSON keys that must equal earlier committed values"
    )
    refusal: bool = True
    error_signatures: bool = True
    truncation: bool = True
    secrets: bool = True
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _lengths(self) -> Checks:
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise ValueError("min_length is greater than max_length")
        if self.topic and self.topic_min > len(self.topic):
            raise ValueError(
                f"topic_min={self.topic_min} exceeds the {len(self.topic)} topic keywords"
            )
        for pattern in [*self.forbidden, *self.out_of_scope]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return self


class JudgeSpec(Strict):
    """One judge: an activity that takes a VerifyInput and returns a Verdict."""

    activity: str = "raftline.llm_judge"
    params: dict[str, Any] = Field(default_factory=dict)
    task_queue: str | None = None
    local: bool = Field(
        default=False, description="run as a local activity: for cheap, deterministic judges"
    )


class QuorumSpec(Strict):
    judges: list[JudgeSpec] = Field(min_length=1)
    require: int = Field(ge=1)

    @model_validator(mode="after")
    def _require_fits(self) -> QuorumSpec:
        if self.require > len(self.judges):
            raise ValueError(f"require={self.require} exceeds the {len(self.judges)} judges")
        return self


class VerifierSpec(Strict):
    """Beyond L1: a single judge or a quorum. None of them means rules only."""

    judge: JudgeSpec | None = None
    quorum: QuorumSpec | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VerifierSpec:
        if self.judge is not None and self.quorum is not None:
            raise ValueError("give either judge or quorum, not both")
        return self


class ActivityRetry(Strict):
    """Temporal's own retries for transient infrastructure errors inside one attempt."""

    max_attempts: int = Field(default=3, ge=1)
    initial_interval_s: float = Field(default=1.0, gt=0)
    backoff: float = Field(default=2.0, ge=1)
    max_interval_s: float = Field(default=30.0, gt=0)


class BreakerPolicy(Strict):
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    max_trips: int = Field(default=1, ge=0, description="trips allowed before the run ends")


class Budget(Strict):
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)


class Policy(Strict):
    retries: int = Field(default=2, ge=0, description="verification retries per step")
    criticality: Criticality = Criticality.LOW
    step_timeout_s: float = Field(default=300.0, gt=0)
    activity_retry: ActivityRetry = Field(default_factory=ActivityRetry)
    compensation_retry: ActivityRetry = Field(default_factory=lambda: ActivityRetry(max_attempts=5))
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    budget: Budget = Field(default_factory=Budget)
    verifier: VerifierSpec | None = None
    continue_as_new_after_steps: int | None = Field(
        default=None,
        ge=1,
        description="start a fresh run (continue-as-new) after this many committed steps; "
        "Temporal's own suggestion (history size) always applies",
    )


STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class StepSpec(Strict):
    name: str
    goal: str = Field(min_length=1)
    activity: str = "scripted"
    params: dict[str, Any] = Field(default_factory=dict)
    criticality: Criticality | None = None
    format: Literal["text", "json"] = "text"
    checks: Checks = Field(default_factory=Checks)
    retries: int | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    heartbeat_timeout_s: float | None = Field(
        default=None, gt=0, description="retry sooner when a worker dies mid-step"
    )
    task_queue: str | None = None
    verifier: VerifierSpec | None = None
    compensation: str | None = None
    compensation_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STEP_NAME.match(v):
            raise ValueError("must be letters, digits, '_' or '-', starting with a letter or '_'")
        return v


class PipelineSpec(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    modules: list[str] = Field(
        default_factory=list, description="Python modules that define this pipeline's activities"
    )
    policy: Policy = Field(default_factory=Policy)
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[StepSpec]) -> list[StepSpec]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            seen.add(step.name)
        return steps

    def criticality(self, step: StepSpec) -> Criticality:
        return step.criticality or self.policy.criticality

    def retries(self, step: StepSpec) -> int:
        return self.policy.retries if step.retries is None else step.retries

    def verifier(self, step: StepSpec) -> VerifierSpec | None:
        return step.verifier or self.policy.verifier

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "pipeline") -> PipelineSpec:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise SpecError(f"{source}: invalid YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping with 'name' and 'steps' at the top")
        return cls.parse(data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSpec:
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"{p}: no such pipeline file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"{p}: cannot read: {exc}") from None
        return cls.from_yaml_text(text, str(p))

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "pipeline") -> PipelineSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{source}: {describe_validation_error(exc, data)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a repeated key is an error instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line: the first error with its field path, plus how many more there are."""
    errors = exc.errors()
    first = errors[0]
    parts: list[str] = []
    node = data
    for loc in first["loc"]:
        # Name steps by their name, not only their index, where we can.
        if isinstance(loc, int) and isinstance(node, list) and loc < len(node):
            item = node[loc]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"[{loc}]" + (f"({name})" if name else ""))
            node = item
        else:
            parts.append(("." if parts else "") + str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
    field = "".join(parts) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "field required"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {msg}{more}"


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
