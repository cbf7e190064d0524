"""Which activities a worker registers: the built-ins plus user modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from temporalio import activity

from raftline.activities import agents, verify
from raftline.models import PipelineSpec, SpecError, describe_validation_error


class ModuleError(ValueError):
    """A user activity module could not be loaded; the message is one line."""


def builtin_activities() -> list[Callable[..., Any]]:
    found = [*agents.ACTIVITIES, *verify.ACTIVITIES]
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


def check_spec(spec: PipelineSpec, known: Iterable[str], source: str, advice: str) -> None:
    """Raise SpecError (one line) unless every activity, compensation and judge the spec
    names is in `known`, and the params of built-in steps are valid: before anything runs."""
    names = set(known)
    for step in spec.steps:
        if (model := agents.PARAM_MODELS.get(step.activity)) is not None:
            try:
                model.model_validate(step.params)
            except ValidationError as exc:
                detail = describe_validation_error(exc, step.params)
                raise SpecError(f"{source}: steps[{step.name}].params.{detail}") from None
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
