"""Pipelines in Python code: the same `PipelineSpec` as the YAML, plus the step functions.

    Pipeline("brief", steps=[
        Step(research, "Collect facts about Oslo", checks={"topic": ["Oslo"]}),
        Step("draft", "Draft the memo", activity="llm", criticality="MEDIUM"),
    ])

Every argument of `Step` is the YAML key of the same name; `activity` (or the first
argument) may be a function instead of a registered activity's name, and so may
`compensation`. A bad spec raises `SpecError` with one line naming the field, before
anything starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from raftline.activities.registry import ModuleError, activity_name, check_spec, collect
from raftline.models import (
    Checks,
    Criticality,
    MapSpec,
    PipelineSpec,
    Policy,
    ReviewSpec,
    SpecError,
    VerifierSpec,
)
from raftline.spec import REGISTERED
from raftline.steps import (
    compensation_activity,
    default_name,
    defined_name,
    returns_model,
    step_activity,
)


def _plain(value: Any) -> Any:
    """A model given where the YAML has a mapping, as that mapping (only the keys set)."""
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


class Step:
    """One step: `Step(function, goal, ...)` or `Step(name, goal, activity="...", ...)`.

    The keyword arguments are the YAML keys of a step (see the README's "Pipeline YAML").
    `activity` and `compensation` take a function or a registered activity's name. A
    function step is named after the function unless `name` is given, and its goal
    defaults to the first line of its docstring.
    """

    def __init__(
        self,
        step: str | Callable[..., Any],
        goal: str | None = None,
        *,
        name: str | None = None,
        activity: str | Callable[..., Any] | None = None,
        params: dict[str, Any] | None = None,
        criticality: Criticality | Literal["LOW", "MEDIUM", "HIGH"] | None = None,
        format: Literal["text", "json"] | None = None,
        checks: Checks | dict[str, Any] | None = None,
        retries: int | None = None,
        timeout_s: float | None = None,
        heartbeat_timeout_s: float | None = None,
        task_queue: str | None = None,
        verifier: VerifierSpec | dict[str, Any] | None = None,
        compensation: str | Callable[..., Any] | None = None,
        compensation_params: dict[str, Any] | None = None,
        needs: Sequence[str] | None = None,
        map: MapSpec | dict[str, Any] | None = None,  # noqa: A002 - the YAML key
        when: str | None = None,
        pipeline: Pipeline | PipelineSpec | str | None = None,
        review: ReviewSpec | dict[str, Any] | None = None,
        on_judge_unavailable: Literal["fail", "degrade"] | None = None,
        judge_wait_s: float | None = None,
    ) -> None:
        if callable(step) and not isinstance(step, str):
            if activity is not None:
                raise SpecError(f"step {name or _fn_name(step)!r}: give a function or activity=")
            self.name = name or _fn_name(step)
            run: str | Callable[..., Any] = step
        elif isinstance(step, str):
            if name is not None and name != step:
                raise SpecError(f"step {step!r}: name={name!r} contradicts the step's name")
            self.name = step
            run = activity if activity is not None else "scripted"
        else:
            raise SpecError(f"step {step!r}: expected a step name or a function")
        if goal is None and callable(run) and not isinstance(run, str):
            doc = inspect.getdoc(run)
            goal = doc.strip().splitlines()[0] if doc and doc.strip() else None
        if format is None and callable(run) and not isinstance(run, str) and returns_model(run):
            format = "json"  # a pydantic model goes on as its JSON text
        self.goal = goal
        self.run = run
        self.compensation = compensation
        # A code sub-pipeline's functions must be served by the same worker.
        self.children: list[Callable[..., Any]] = list(getattr(pipeline, "activities", []))
        self.options: dict[str, Any] = {
            k: _plain(v)
            for k, v in {
                "params": params,
                "criticality": criticality,
                "format": format,
                "checks": checks,
                "retries": retries,
                "timeout_s": timeout_s,
                "heartbeat_timeout_s": heartbeat_timeout_s,
                "task_queue": task_queue,
                "verifier": verifier,
                "compensation_params": compensation_params,
                "needs": list(needs) if needs is not None else None,
                "map": map,
                "when": when,
                "review": review,
                "on_judge_unavailable": on_judge_unavailable,
                "judge_wait_s": judge_wait_s,
                **_sub_pipeline(pipeline),
            }.items()
            if v is not None
        }

    def __repr__(self) -> str:
        run = self.run if isinstance(self.run, str) else _fn_name(self.run)
        return f"Step({self.name!r}, {self.goal!r}, activity={run!r})"


def _sub_pipeline(pipeline: Any) -> dict[str, Any]:
    """`pipeline=`: another Pipeline (or spec) run as a child, or a YAML path / a name."""
    if pipeline is None:
        return {}
    spec = getattr(pipeline, "spec", pipeline)
    if isinstance(spec, PipelineSpec):
        return {"pipeline": spec.name, "pipeline_spec": spec.model_dump()}
    return {"pipeline": str(pipeline)}


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


class Pipeline:
    """A pipeline defined in code: `.spec` is the validated `PipelineSpec` (the very type the
    YAML parses to) and `.activities` the activities made from its functions, which the
    worker that runs it must register (`raftline.run` and `raftline.session` do)."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step | Callable[..., Any]],
        *,
        policy: Policy | dict[str, Any] | None = None,
        description: str = "",
        modules: Sequence[str] = (),
    ) -> None:
        source = f"pipeline {name!r}"
        if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
            raise SpecError(f"{source}: steps: expected a list of Step or functions")
        self.activities: list[Callable[..., Any]] = []
        names: dict[str, Any] = {}  # activity name -> its function, within this pipeline
        data_steps: list[dict[str, Any]] = []
        for i, item in enumerate(steps):
            if isinstance(item, Step):
                step = item
            elif callable(item):
                step = Step(item)
            else:
                raise SpecError(
                    f"{source}: steps[{i}]: expected a Step or a function, got "
                    f"{type(item).__name__}"
                )
            entry: dict[str, Any] = {"name": step.name}
            if step.goal is not None:
                entry["goal"] = step.goal
            elif callable(step.run):
                raise SpecError(
                    f"{source}: steps[{i}]({step.name}).goal: field required (pass "
                    f"Step({_fn_name(step.run)}, goal=...) or give the function a docstring)"
                )
            entry["activity"] = self._activity(step.run, names, step_activity)
            if step.compensation is not None:
                entry["compensation"] = self._activity(
                    step.compensation, names, compensation_activity
                )
            entry.update(step.options)
            data_steps.append(entry)
            for child in step.children:
                if activity_name(child) not in {activity_name(a) for a in self.activities}:
                    self.activities.append(child)
        data: dict[str, Any] = {"name": name, "steps": data_steps}
        if description:
            data["description"] = description
        if modules:
            data["modules"] = list(modules)
        if policy is not None:
            data["policy"] = _plain(policy)
        self.spec = PipelineSpec.parse(data, source).resolve(Path.cwd(), source)
        REGISTERED[self.spec.name] = self.spec  # a YAML step's `pipeline: NAME` finds it

    def _activity(
        self,
        run: str | Callable[..., Any],
        names: dict[str, Any],
        make: Callable[[Callable[..., Any], str | None], Callable[..., Any]],
    ) -> str:
        if isinstance(run, str):
            return run
        wrapper = make(run, self._unique(run, names))
        act = activity_name(wrapper)
        if act not in {activity_name(a) for a in self.activities}:
            self.activities.append(wrapper)
        names[act] = run
        return act

    @staticmethod
    def _unique(fn: Callable[..., Any], names: dict[str, Any]) -> str | None:
        """`module.qualname`, or with a suffix when another function of this pipeline has
        the same one (closures made by one factory)."""
        if defined_name(fn) is not None:
            return None
        base = default_name(fn)
        candidate, n = base, 1
        while candidate in names and names[candidate] is not fn:
            n += 1
            candidate = f"{base}#{n}"
        return candidate

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_spec(
        cls, spec: PipelineSpec, activities: Iterable[Callable[..., Any]] = ()
    ) -> Pipeline:
        """Wrap a spec (e.g. parsed from YAML) with the activities that serve it."""
        self = cls.__new__(cls)
        self.spec = spec
        self.activities = list(activities)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pipeline:
        return cls.from_spec(PipelineSpec.from_yaml(path))

    def worker_activities(self) -> list[Callable[..., Any]]:
        """Everything a worker needs for this pipeline: the built-ins, the spec's `modules`
        and this pipeline's functions (one activity per name; the functions win)."""
        try:
            found = collect(self.spec.modules)
        except ModuleError as exc:
            raise SpecError(f"pipeline {self.name!r}: {exc}") from None
        by_name = {activity_name(a): a for a in [*found, *self.activities]}
        return list(by_name.values())

    def check(self, known: Iterable[str] | None = None) -> None:
        """Raise SpecError unless every activity the spec names is known (by default: the
        ones `worker_activities()` registers) and the built-in steps' params are valid."""
        if known is None:
            known = map(activity_name, self.worker_activities())
        check_spec(
            self.spec,
            known,
            f"pipeline {self.name!r}",
            "pass the function, or add its module to modules=",
        )

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.spec.steps]})"


def as_pipeline(pipeline: Pipeline | PipelineSpec | str | Path) -> Pipeline:
    """A Pipeline from a Pipeline, a PipelineSpec or the path of a YAML file."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, PipelineSpec):
        return Pipeline.from_spec(pipeline)
    if isinstance(pipeline, str | Path):
        return Pipeline.from_yaml(pipeline)
    raise SpecError(
        f"expected a Pipeline, a PipelineSpec or a YAML path, got {type(pipeline).__name__}"
    )
