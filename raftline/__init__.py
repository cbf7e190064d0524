"""raftline from Python: pipelines in code, one-call runs, and the client for services.

import raftline
from raftline import Pipeline, Step

pipeline = Pipeline("brief", steps=[Step(research, "Collect facts about Oslo"), ...])
result = raftline.run(pipeline, "Should we expand to Oslo?")       # scripts, notebooks
client = await raftline.connect()                                   # backend services
handle = await client.start(pipeline, "Should we expand to Oslo?")
async for event in handle.events(after=last_seen_seq): ...
"""

from __future__ import annotations

from typing import Any

from raftline.local import arun, as_task, run, session
from raftline.pipelines import Pipeline, Step, as_pipeline
from raftline.steps import registered
from workflows.client import (
    ConfigError,
    RaftlineClient,
    RaftlineError,
    RunHandle,
    RunNotFound,
    RunUnavailable,
    TemporalUnreachable,
)
from workflows.models import (
    Checks,
    CompensationInput,
    Criticality,
    EventType,
    PipelineSpec,
    Policy,
    RunResult,
    RunStatus,
    SpecError,
    StatusView,
    StepInput,
    StepOutput,
    Task,
    TraceEvent,
)


async def connect(
    address: str | None = None, queue: str | None = None, **options: Any
) -> RaftlineClient:
    """A client for a backend service: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, API key and TLS
    from the environment (temporalio.envconfig), RAFTLINE_TASK_QUEUE for `queue`.
    Raises TemporalUnreachable. `options` go to temporalio's Client.connect."""
    from workflows.client import connect as connect_temporal

    return RaftlineClient(await connect_temporal(address, **options), queue)


__all__ = [
    "Checks",
    "CompensationInput",
    "ConfigError",
    "Criticality",
    "EventType",
    "Pipeline",
    "PipelineSpec",
    "Policy",
    "RaftlineClient",
    "RaftlineError",
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
    "arun",
    "as_pipeline",
    "as_task",
    "connect",
    "registered",
    "run",
    "session",
]
