"""What the user writes: the pipeline spec, its YAML form, and the one-line SpecError.

Specs are strict: an unknown key or a bad value is an error that names the field, and
nothing starts. A spec is also the first thing every run carries in its input, so it
serializes compactly (fields left at their default are not written): a 1,000-step
pipeline's spec stays a few dozen KB, in every continue-as-new hand-over too.

The steps form a DAG: `needs` names the steps whose committed outputs a step sees.
Without `needs` a step needs the step before it (a plain list is a sequence);
`needs: []` starts it with the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

DAY = 86_400.0


class SpecError(ValueError):
    """A pipeline spec or task is invalid; the message is one line naming the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Compact(Strict):
    """A strict model that writes only the fields that differ from their default."""

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, default in _defaults(type(self)).items():
                if name in data and getattr(self, name) == default:
                    del data[name]
        return data


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """Each optional field's default, computed once per class (pydantic's get_default
    inspects the factory's signature on every call: 5,000 steps made that seconds)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = {
            name: field.get_default(call_default_factory=True)
            for name, field in cls.model_fields.items()
            if not field.is_required()
        }
        _DEFAULTS[cls] = found
    return found


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


OnJudgeUnavailable = Literal["fail", "degrade"]


class Checks(Compact):
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
        default=False,
        description="every number must come from the task or committed outputs, "
        "directly or by simple arithmetic",
    )
    consistent_keys: list[str] = Field(
        default_factory=list,
        description="JSON keys (or dotted paths) that must equal earlier committed values",
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


class JudgeSpec(Compact):
    """One judge: an activity that takes a VerifyInput and returns a Verdict."""

    activity: str = "raftline.llm_judge"
    params: dict[str, Any] = Field(default_factory=dict)
    task_queue: str | None = None
    local: bool = Field(
        default=False, description="run as a local activity: for cheap, deterministic judges"
    )


class QuorumSpec(Compact):
    judges: list[JudgeSpec] = Field(min_length=1, max_length=9)
    require: int = Field(ge=1)

    @model_validator(mode="after")
    def _require_fits(self) -> QuorumSpec:
        if self.require > len(self.judges):
            raise ValueError(f"require={self.require} exceeds the {len(self.judges)} judges")
        return self


class VerifierSpec(Compact):
    """Beyond L1: a single judge or a quorum. None of them means rules only."""

    judge: JudgeSpec | None = None
    quorum: QuorumSpec | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VerifierSpec:
        if self.judge is not None and self.quorum is not None:
            raise ValueError("give either judge or quorum, not both")
        return self


class ActivityRetry(Compact):
    """Temporal's own retries for transient infrastructure errors inside one attempt."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval_s: float = Field(default=1.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1, le=10)
    max_interval_s: float = Field(default=30.0, gt=0, le=DAY)


class BreakerPolicy(Compact):
    failure_threshold: int = Field(default=3, ge=1, le=1000)
    cooldown_s: float = Field(default=30.0, ge=0, le=DAY)
    max_trips: int = Field(default=1, ge=0, le=100, description="trips allowed before the run ends")


class Budget(Compact):
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)


class Policy(Compact):
    retries: int = Field(default=2, ge=0, le=20, description="verification retries per step")
    criticality: Criticality = Criticality.LOW
    step_timeout_s: float = Field(default=300.0, gt=0, le=DAY)
    activity_retry: ActivityRetry = Field(default_factory=ActivityRetry)
    compensation_retry: ActivityRetry = Field(default_factory=lambda: ActivityRetry(max_attempts=5))
    compensation_timeout_s: float = Field(
        default=60.0, gt=0, le=DAY, description="start-to-close timeout of one compensation"
    )
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    budget: Budget = Field(default_factory=Budget)
    verifier: VerifierSpec | None = None
    on_judge_unavailable: OnJudgeUnavailable = Field(
        default="fail",
        description="fail: no verdict, no commit (the run waits judge_wait_s, then ends); "
        "degrade: commit on the rules alone, flagged degraded everywhere",
    )
    judge_wait_s: float = Field(
        default=60.0, ge=0, le=DAY, description="how long a step waits for a judge that is down"
    )
    attention_timeout_s: float = Field(
        default=7 * DAY,
        gt=0,
        le=365 * DAY,
        description="how long a run whose compensation failed waits for an operator",
    )
    max_parallel: int = Field(default=8, ge=1, le=256, description="steps running at once")
    continue_as_new_after_steps: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="start a fresh run (continue-as-new) after this many committed steps; "
        "Temporal's own suggestion (history size) always applies",
    )
    # A step cannot continue as new halfway (a map's items, parallel branches): before its
    # history reaches Temporal's hard limits (51,200 events, 50 MB), which terminate a run
    # with no compensation, such a step ends the run, so the saga still runs.
    history_max_events: int = Field(
        default=30_000,
        ge=100,
        le=50_000,
        description="end the run (and compensate) before a step grows the history past this",
    )
    history_max_mb: float = Field(
        default=30.0, gt=0, le=48, description="the same bound on the history's size, in MB"
    )


class MapSpec(Compact):
    """Run the step once per element of a JSON list: a committed step's output or a task
    input. Each element is its own attempt chain; the step commits the list of results."""

    over: str = Field(min_length=1)
    max_concurrency: int = Field(default=8, ge=1, le=256)


ReviewWhen = Literal["before", "always", "on_fail", "on_disagreement", "on_low_confidence"]


class ReviewSpec(Compact):
    """A human as one more verifier tier, above the judges."""

    when: ReviewWhen
    timeout_s: float = Field(default=DAY, gt=0, le=365 * DAY)
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    reviewers: list[str] = Field(default_factory=list)


NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
PIPELINE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class StepSpec(Compact):
    name: str
    goal: str = Field(min_length=1)
    activity: str = "scripted"
    params: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] | None = Field(
        default=None, description="steps whose committed outputs this one sees; none: the previous"
    )
    map: MapSpec | None = None
    when: str | None = Field(default=None, description="a CEL condition; false skips the step")
    pipeline: str | None = Field(
        default=None, description="run this pipeline (YAML path or registered name) as a child"
    )
    pipeline_spec: PipelineSpec | None = Field(
        default=None, description="the resolved `pipeline` (filled in when the spec is loaded)"
    )
    criticality: Criticality | None = None
    format: Literal["text", "json"] = "text"
    checks: Checks = Field(default_factory=Checks)
    retries: int | None = Field(default=None, ge=0, le=20)
    timeout_s: float | None = Field(default=None, gt=0, le=DAY)
    heartbeat_timeout_s: float | None = Field(
        default=None, gt=0, le=DAY, description="retry sooner when a worker dies mid-step"
    )
    task_queue: str | None = Field(default=None, min_length=1)
    verifier: VerifierSpec | None = None
    on_judge_unavailable: OnJudgeUnavailable | None = None
    judge_wait_s: float | None = Field(default=None, ge=0, le=DAY)
    review: ReviewSpec | None = None
    compensation: str | None = None
    compensation_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(
                "must be letters, digits, '_' or '-', starting with a letter or '_' "
                "(at most 64 characters)"
            )
        return v

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> StepSpec:
        if (
            self.heartbeat_timeout_s is not None
            and self.timeout_s is not None
            and self.heartbeat_timeout_s > self.timeout_s
        ):
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s:g}) is larger than "
                f"timeout_s ({self.timeout_s:g}): it could never fire"
            )
        if self.pipeline is not None and self.map is not None:
            raise ValueError("a step is either a map or a sub-pipeline, not both")
        return self


class PipelineSpec(Compact):
    name: str
    description: str = ""
    modules: list[str] = Field(
        default_factory=list, description="Python modules that define this pipeline's activities"
    )
    policy: Policy = Field(default_factory=Policy)
    steps: list[StepSpec] = Field(min_length=1, max_length=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PIPELINE_NAME.match(v):
            raise ValueError(
                "must be letters, digits, '_', '-' or '.', starting with a letter, digit "
                "or '_' (at most 100 characters: it names runs and Web UI links)"
            )
        return v

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[StepSpec]) -> list[StepSpec]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            seen.add(step.name)
        return steps

    @model_validator(mode="after")
    def _graph(self) -> PipelineSpec:
        names = {s.name for s in self.steps}
        for i, step in enumerate(self.steps):
            for need in step.needs or []:
                if need not in names:
                    raise _at(i, step, "needs", f"unknown step {need!r}")
                if need == step.name:
                    raise _at(i, step, "needs", "a step cannot need itself")
            timeout = step.timeout_s or self.policy.step_timeout_s
            if step.heartbeat_timeout_s is not None and step.heartbeat_timeout_s > timeout:
                raise _at(
                    i,
                    step,
                    "heartbeat_timeout_s",
                    f"{step.heartbeat_timeout_s:g} is larger than the step's timeout "
                    f"({timeout:g} s): it could never fire",
                )
        graph = self.graph()
        cycle = graph.cycle()
        if cycle:
            raise ValueError(f"steps: cyclic needs: {' -> '.join(cycle)}")
        for i, step in enumerate(self.steps):
            if step.map is not None and step.map.over in names:
                if step.map.over not in graph.ancestors(step.name):
                    raise _at(
                        i, step, "map.over", f"{step.map.over!r} is not an ancestor of this step"
                    )
        return self

    # ------------------------------------------------------------ the DAG

    def graph(self) -> Graph:
        """The steps' DAG, indexed (O(steps + needs) to build): keep it for many queries."""
        return Graph(self)

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def parents(self, name: str) -> list[str]:
        """The steps `name` needs: its `needs`, or the step before it when it has none."""
        return list(self.graph().parents[name])

    def ancestors(self, name: str) -> list[str]:
        """Every step whose committed output `name` sees, in spec order."""
        return self.graph().ancestors(name)

    def descendants(self, names: Iterable[str]) -> set[str]:
        """The given steps and every step that (transitively) needs one of them."""
        return self.graph().descendants(names)

    def fact_keys(self, name: str) -> list[str] | None:
        """What the L1 rules of steps downstream of `name` need from its output once it is
        committed (grounded numbers, consistent keys): the keys, or None for nothing."""
        return self.graph().fact_keys(name)

    # ------------------------------------------------------------ effective settings

    def criticality(self, step: StepSpec) -> Criticality:
        return step.criticality or self.policy.criticality

    def retries(self, step: StepSpec) -> int:
        return self.policy.retries if step.retries is None else step.retries

    def verifier(self, step: StepSpec) -> VerifierSpec | None:
        return step.verifier or self.policy.verifier

    def on_judge_unavailable(self, step: StepSpec) -> OnJudgeUnavailable:
        return step.on_judge_unavailable or self.policy.on_judge_unavailable

    def judge_wait_s(self, step: StepSpec) -> float:
        return self.policy.judge_wait_s if step.judge_wait_s is None else step.judge_wait_s

    # ------------------------------------------------------------ loading

    @classmethod
    def from_yaml_text(
        cls, text: str, source: str = "pipeline", base: Path | None = None
    ) -> PipelineSpec:
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise SpecError(f"{source}: invalid YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping with 'name' and 'steps' at the top")
        return cls.parse(data, source).resolve(base or Path.cwd(), source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSpec:
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"{p}: no such pipeline file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"{p}: cannot read: {exc}") from None
        return cls.from_yaml_text(text, str(p), p.resolve().parent)

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "pipeline") -> PipelineSpec:
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{source}: {describe_validation_error(exc, data)}") from None
        spec.check_conditions(source)
        return spec

    def check_conditions(
        self, source: str = "pipeline", inputs: Iterable[str] | None = None
    ) -> None:
        """Every `when` parses and reads only the step's ancestors (and, given the task's
        input names, only inputs that exist): SpecError naming the step otherwise. Not a
        model validator: the workflow decodes specs too, and needs no CEL parser."""
        steps = [(i, s) for i, s in enumerate(self.steps) if s.when is not None]
        if not steps:
            return
        from raftline.expressions import ExpressionError, check

        graph = self.graph()
        for i, step in steps:
            assert step.when is not None
            try:
                check(
                    step.when, graph.ancestors(step.name), None if inputs is None else set(inputs)
                )
            except ExpressionError as exc:
                raise SpecError(f"{source}: steps[{i}]({step.name}).when: {exc}") from None

    def resolve(
        self, base: Path, source: str = "pipeline", _within: tuple[str, ...] = ()
    ) -> PipelineSpec:
        """Fill in each sub-pipeline step's `pipeline_spec` from its YAML file (relative to
        `base`) or from a pipeline registered by name in this process."""
        for i, step in enumerate(self.steps):
            if step.pipeline is None or step.pipeline_spec is not None:
                continue
            child = _load_child(step.pipeline, base, f"{source}: steps[{i}]({step.name}).pipeline")
            if child.name in (*_within, self.name):
                raise SpecError(
                    f"{source}: steps[{i}]({step.name}).pipeline: {step.pipeline!r} includes itself"
                )
            step.pipeline_spec = child.resolve(base, step.pipeline, (*_within, self.name))
        return self


# Pipelines defined in code (raftline.Pipeline) register here by name, so a YAML step's
# `pipeline: NAME` can run one as a sub-pipeline.
REGISTERED: dict[str, PipelineSpec] = {}


def _load_child(ref: str, base: Path, where: str) -> PipelineSpec:
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref) if Path(ref).is_absolute() else base / ref
        if not path.is_file():
            raise SpecError(f"{where}: no such pipeline file {str(path)!r}")
        return PipelineSpec.from_yaml(path)
    if ref in REGISTERED:
        return REGISTERED[ref].model_copy(deep=True)
    raise SpecError(
        f"{where}: {ref!r} is neither a YAML file nor a pipeline defined in this process"
    )


class Graph:
    """A spec's DAG, indexed once: parents, children, spec order, and what each step's
    committed output must keep for the L1 rules downstream. Linear to build, so a
    100,000-step pipeline is checked (and scheduled) in linear time."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.order = {s.name: i for i, s in enumerate(spec.steps)}
        self.parents: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {s.name: [] for s in spec.steps}
        previous: str | None = None
        for s in spec.steps:
            needs = list(s.needs) if s.needs is not None else ([previous] if previous else [])
            self.parents[s.name] = [n for n in needs if n in self.children]
            for n in self.parents[s.name]:
                self.children[n].append(s.name)
            previous = s.name
        self._checks = {
            s.name: (bool(s.checks.grounded_numbers or s.checks.consistent_keys), s.checks)
            for s in spec.steps
        }
        self._facts: dict[str, list[str] | None] | None = None

    def ancestors(self, name: str, limit: int | None = None) -> list[str]:
        """Every step `name` sees, in spec order (with `limit`: stop past that many; the
        caller only wants to know there are more)."""
        seen: set[str] = set()
        todo = list(self.parents[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                if limit is not None and len(seen) > limit:
                    break
                todo.extend(self.parents[current])
        return sorted(seen, key=self.order.__getitem__)

    def descendants(self, names: Iterable[str]) -> set[str]:
        found = set(names)
        todo = list(found)
        while todo:
            for child in self.children[todo.pop()]:
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def fact_keys(self, name: str) -> list[str] | None:
        if self._facts is None:
            self._facts = self._all_fact_keys()
        return self._facts[name]

    def _all_fact_keys(self) -> dict[str, list[str] | None]:
        # Reverse topological order: a step needs what any of its descendants' checks need.
        wanted: dict[str, bool] = {}
        keys: dict[str, set[str]] = {}
        for name in reversed(self._topological()):
            want, found = False, set()
            for child in self.children[name]:
                child_wants, checks = self._checks[child]
                if child_wants or wanted[child]:
                    want = True
                    found |= set(checks.consistent_keys) | keys[child]
            wanted[name], keys[name] = want, found
        return {n: (sorted(keys[n]) if wanted[n] else None) for n in self.order}

    def _topological(self) -> list[str]:
        pending = {n: len(p) for n, p in self.parents.items()}
        ready = [n for n, k in pending.items() if k == 0]
        out: list[str] = []
        while ready:
            node = ready.pop()
            out.append(node)
            for child in self.children[node]:
                pending[child] -= 1
                if pending[child] == 0:
                    ready.append(child)
        return out

    def cycle(self) -> list[str]:
        """A cycle of needs, as a path, or [] for a DAG."""
        if len(self._topological()) == len(self.order):
            return []
        state: dict[str, int] = {}  # 1 on the path, 2 done
        for start in self.order:
            if state.get(start):
                continue
            path: list[str] = []
            stack: list[tuple[str, int]] = [(start, 0)]
            while stack:
                node, i = stack.pop()
                if i == 0:
                    state[node] = 1
                    path.append(node)
                if i < len(self.parents[node]):
                    stack.append((node, i + 1))
                    nxt = self.parents[node][i]
                    if state.get(nxt) == 1:
                        return [*path[path.index(nxt) :], nxt]
                    if not state.get(nxt):
                        stack.append((nxt, 0))
                else:
                    state[node] = 2
                    path.pop()
        return []


def _at(index: int, step: StepSpec, field: str, message: str) -> ValueError:
    return ValueError(f"steps[{index}]({step.name}).{field}: {message}")


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
    field = "".join(parts)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "field required"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {msg}{more}" if field else f"{msg}{more}"


StepSpec.model_rebuild()
