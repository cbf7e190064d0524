"""raftline: start, follow and inspect verified pipeline runs.

import raftline
from raftline import Pipeline, Step

pipeline = Pipeline("brief", steps=[Step(research, "Collect facts about Oslo"), ...])
result = raftline.run(pipeline, "Should we expand to Oslo?")       # scripts, notebooks
client = await raftline.connect()                                   # backend services
handle = await client.start(pipeline, "Should we expand to Oslo?")
async for event in handle.events(after=last_seen_seq): ...

Names are imported on first use: `import raftline` itself is cheap and has no side
effects, because Temporal's workflow sandbox imports this package for every run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS = {
    "arun": "raftline.local",
    "as_task": "raftline.local",
    "run": "raftline.local",
    "session": "raftline.local",
    "Pipeline": "raftline.pipelines",
    "Step": "raftline.pipelines",
    "as_pipeline": "raftline.pipelines",
    "registered": "raftline.steps",
    "connect": "raftline.client",
    "ConfigError": "raftline.client",
    "RaftlineClient": "raftline.client",
    "RaftlineError": "raftline.client",
    "Refused": "raftline.client",
    "RunExists": "raftline.client",
    "RunHandle": "raftline.client",
    "RunNotFound": "raftline.client",
    "RunUnavailable": "raftline.client",
    "TemporalUnreachable": "raftline.client",
    "Checks": "raftline.models",
    "CompensationInput": "raftline.models",
    "Criticality": "raftline.models",
    "EventType": "raftline.models",
    "PendingReview": "raftline.models",
    "PipelineSpec": "raftline.models",
    "Policy": "raftline.models",
    "ReviewOutcome": "raftline.models",
    "RunResult": "raftline.models",
    "RunStatus": "raftline.models",
    "SpecError": "raftline.models",
    "StatusView": "raftline.models",
    "StepInput": "raftline.models",
    "StepOutput": "raftline.models",
    "Task": "raftline.models",
    "TraceEvent": "raftline.models",
    "Usage": "raftline.models",
    "Verdict": "raftline.models",
}

__all__ = [
    "Checks",
    "CompensationInput",
    "ConfigError",
    "Criticality",
    "EventType",
    "PendingReview",
    "Pipeline",
    "PipelineSpec",
    "Policy",
    "RaftlineClient",
    "RaftlineError",
    "Refused",
    "ReviewOutcome",
    "RunExists",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "RunStatus",
    "RunUnavailable",
    "SpecError",
    "StatusView",
    "Step",
    "StepInput",
    "StepOutput",
    "Task",
    "TemporalUnreachable",
    "TraceEvent",
    "Usage",
    "Verdict",
    "arun",
    "as_pipeline",
    "as_task",
    "connect",
    "registered",
    "run",
    "session",
]

if TYPE_CHECKING:
    from raftline.client import (
        ConfigError,
        RaftlineClient,
        RaftlineError,
        Refused,
        RunExists,
        RunHandle,
        RunNotFound,
        RunUnavailable,
        TemporalUnreachable,
        connect,
    )
    from raftline.local import arun, as_task, run, session
    from raftline.models import (
        Checks,
        CompensationInput,
        Criticality,
        EventType,
        PendingReview,
        PipelineSpec,
        Policy,
        ReviewOutcome,
        RunResult,
        RunStatus,
        SpecError,
        StatusView,
        StepInput,
        StepOutput,
        Task,
        TraceEvent,
        Usage,
        Verdict,
    )
    from raftline.pipelines import Pipeline, Step, as_pipeline
    from raftline.steps import registered


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raftline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
