"""Which activities a worker registers: the built-ins plus user modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from temporalio import activity

from activities import agents, verify


class ModuleError(ValueError):
    """A user activity module could not be loaded; the message is one line."""


def builtin_activities() -> list[Callable[..., Any]]:
    found = [*agents.ACTIVITIES, *verify.ACTIVITIES]
    try:  # the LLM step and judge need their SDKs; a worker without them still runs
        from activities import llm
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
