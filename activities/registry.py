"""Which activities a worker registers: the built-ins plus user modules."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from temporalio import activity

from raftline.activities import agents, runtime, verify
from raftline.models import PipelineSpec, SpecError, StepSpec, describe_validation_error


class ModuleError(ValueError):
    """A user activity module could not be loaded; the message is one line."""


def builtin_activities() -> list[Callable[..., Any]]:
    found = [*agents.ACTIVITIES, *verify.ACTIVITIES, *runtime.ACTIVITIES]
    try:  # the LLM step and judge need their SDKs; a worker without them still runs
        from raftline.activities import llm
    except ImportError:
        return found
    return [*found, *getattr(llm, "ACTIVITIES", [])]


def module_activities(module_name: str) -> list[Callable[..., Any]]:
    """Every @activity.defn function in a module, by the module's dotted name."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ModuleError(f"cannot import activity module {module_name!r}: {exc}") from None
    found: list[Callable[..., Any]] = []
    for obj in vars(module).values():
        if callable(obj) and activity._Definition.from_callable(obj) is not None:
            found.append(obj)
        # A code pipeline (raftline.Pipeline) carries its plain functions as activities.
        elif hasattr(obj, "spec") and isinstance(getattr(obj, "activities", None), list):
            found += obj.activities
    if not found:
        raise ModuleError(f"module {module_name!r} defines no @activity.defn functions")
    return found


def collect(modules: Iterable[str] = ()) -> list[Callable[..., Any]]:
    """Built-ins plus user modules, one function per activity name (a later module wins)."""
    by_name: dict[str, Callable[..., Any]] = {}
    for fn in builtin_activities():
        by_name[activity_name(fn)] = fn
    for name in modules:
        for fn in module_activities(name):
            by_name[activity_name(fn)] = fn
    return list(by_name.values())


def activity_name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.must_from_callable(fn)
    assert defn.name is not None
    return defn.name


# What the built-in steps fill in themselves; every other {name} must be a task input.
BUILTIN_PLACEHOLDERS = ("goal", "task", "step", "inputs", "committed", "hint", "item", "item_index")
# `{{` and `}}` are escaped braces, and JSON's braces never enclose a bare word.
_BRACES = re.compile(r"\{\{|\}\}|\{(\w+)\}")


def placeholders(text: str) -> list[str]:
    """The {name} placeholders of a template, in order."""
    return [m.group(1) for m in _BRACES.finditer(text) if m.group(1)]


def _strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    """Every string in a params value, with its path (params.text, params.items[0], ...)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def check_spec(
    spec: PipelineSpec,
    known: Iterable[str] | None,
    source: str,
    advice: str,
    inputs: Iterable[str] | None = None,
) -> None:
    """Raise SpecError (one line) before anything runs, unless:
    - every activity, compensation and judge the spec names is in `known` (None: not checked);
    - the params of built-in steps are valid (scripted's faults, publish's `from`);
    - with `inputs` (the task's input names), every {placeholder} in a goal or a param
      string is a task input or a built-in placeholder."""
    names = set(known) if known is not None else None
    given = set(inputs) if inputs is not None else None
    for step in spec.steps:
        _check_params(spec, step, source)
        if given is not None:
            _check_placeholders(step, given, source)
        if names is None:
            continue
        needed = [("activity", step.activity), ("compensation", step.compensation)]
        vspec = spec.verifier(step)
        if vspec is not None:
            judges = [vspec.judge] if vspec.judge else []
            judges += vspec.quorum.judges if vspec.quorum else []
            needed += [("judge", j.activity) for j in judges]
        for kind, name in needed:
            if name and name not in names:
                mine = sorted(n for n in names if not n.startswith("raftline."))
                raise SpecError(
                    f"{source}: step {step.name!r}: unknown {kind} {name!r}; "
                    f"known: {', '.join(mine)} ({advice})"
                )


def _check_params(spec: PipelineSpec, step: StepSpec, source: str) -> None:
    where = f"{source}: steps[{step.name}].params"
    if (model := agents.PARAM_MODELS.get(step.activity)) is not None:
        try:
            model.model_validate(step.params)
        except ValidationError as exc:
            raise SpecError(f"{where}.{describe_validation_error(exc, step.params)}") from None
    if step.activity == "scripted":
        allowed = [c.value for c in agents.CONTENT_FAULTS] + [agents.RAISE, agents.RAISE_FATAL]
        planned = [(f"faults.{a}", f) for a, f in (step.params.get("faults") or {}).items()]
        for item, faults in (step.params.get("item_faults") or {}).items():
            planned += [(f"item_faults.{item}.{a}", f) for a, f in (faults or {}).items()]
        for at, fault in planned:
            if fault not in allowed:
                raise SpecError(
                    f"{where}.{at}: {fault!r} is not a fault; use one of {', '.join(allowed)}"
                )
    if step.activity == "publish" and (source_step := step.params.get("from")) is not None:
        ancestors = spec.ancestors(step.name)
        if source_step not in ancestors:
            seen = ", ".join(ancestors) or "none"
            raise SpecError(
                f"{where}.from: {source_step!r} is not a step this one needs (it sees: {seen})"
            )


def _check_placeholders(step: StepSpec, given: set[str], source: str) -> None:
    texts = [(f"steps[{step.name}].goal", step.goal)]
    texts += list(_strings(step.params, f"steps[{step.name}].params"))
    for path, text in texts:
        for name in placeholders(text):
            if name not in given and name not in BUILTIN_PLACEHOLDERS:
                have = ", ".join(sorted(given)) or "none"
                raise SpecError(
                    f"{source}: {path}: {{{name}}} is not a task input (inputs: {have}); "
                    f"give it (--input {name}=VALUE), or write {{{{{name}}}}} for literal braces"
                )
