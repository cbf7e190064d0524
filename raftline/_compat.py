"""The pre-0.2 import names, for code written against a source checkout of 0.1.

raftline 0.1 installed twelve top-level modules (`workflows`, `activities`, `worker`,
...). 0.2 installs one, `raftline`. In a source checkout the old folders are still on
the path, so `import workflows.models` would load a second copy of the code under a
second name (two `PipelineSpec` classes, two activity registries). Instead, the old
package names alias the one copy: `workflows.models` *is* `raftline.models`.

Only the old packages themselves install this (their `__init__` does when it runs
under the old name), so a service with its own `workflows` package never sees it.
Retire it with the old names (README, "Upgrading").
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# Old name -> new name; a child of an old package maps to the same child of the new one.
RENAMED = {
    "workflows": "raftline.workflows",
    "workflows.models": "raftline.models",
    "workflows.client": "raftline.client",
    "activities": "raftline.activities",
    "verifiers": "raftline.verifiers",
    "worker": "raftline.worker",
    "starter": "raftline.cli",
}


def new_name(old: str) -> str | None:
    if old in RENAMED:
        return RENAMED[old]
    package, _, child = old.partition(".")
    if child and package in RENAMED:
        return f"{RENAMED[package]}.{child}"
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


_FINDER = _AliasFinder()


def alias(old: str) -> None:
    """Make the module being imported as `old` the one under its new name."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    new = new_name(old)
    assert new is not None, old
    sys.modules[old] = importlib.import_module(new)
