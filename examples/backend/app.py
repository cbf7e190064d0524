"""An example backend: start verified pipeline runs over HTTP, stream their events as SSE.

    pip install -e ".[examples]"          # FastAPI, uvicorn (also in the dev extra)
    python -m examples.backend            # or: uvicorn examples.backend.app:app --port 8000

    POST /runs                {"pipeline": NAME or an inline spec, "goal": ..., "inputs": {...}}
                              -> 201 {"id", "events_url", "status_url"}
    GET  /runs/{id}/events    text/event-stream: one event per TraceEvent (`id:` its seq,
                              `event:` its type, `data:` its JSON), then `event: summary`
                              with the run's summary, and the stream ends. Resume with a
                              Last-Event-ID header (or ?after=SEQ): no event is lost or repeated.
    GET  /runs/{id}           {"running": true, "progress": ...} or {"running": false,
                              "summary": ..., "result": ...}
    GET  /pipelines           the pipelines offered by name
    GET  /reviews             pending human reviews across runs
    POST /runs/{id}/reviews/{step}
                              {"decision": "approve"|"reject"|"edit", "by", "note", "hint",
                              "error_class", "output", "item", "attempt"} -> the recorded
                              outcome (a resend returns it again); 409 when refused

It connects with the usual settings (TEMPORAL_ADDRESS, ... through envconfig); when
nothing answers at a local address it starts the embedded server. An in-process worker
serves the built-in steps and the code-defined pipelines' functions (examples/backend/
pipelines.py); RAFTLINE_EXAMPLE_WORKER=0 leaves that to your `raftline-worker`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

import raftline
from examples.backend.pipelines import PIPELINES
from raftline import (
    Pipeline,
    PipelineSpec,
    RaftlineClient,
    RaftlineError,
    RunHandle,
    RunNotFound,
    RunResult,
    SpecError,
    TraceEvent,
)
from raftline.activities.registry import activity_name, collect
from raftline.client import ConfigError, Refused, RunExists

EXAMPLES = Path(__file__).resolve().parent.parent


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str | dict[str, Any] = Field(description="a pipeline's name or an inline spec")
    goal: str
    inputs: dict[str, str] = Field(default_factory=dict)
    id: str | None = Field(default=None, description="workflow id; default: name-random")


class DecisionRequest(BaseModel):
    """A reviewer's decision on a pending review (the review events are in the SSE stream)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "edit"]
    by: str | None = None
    note: str | None = None
    hint: str | None = None
    error_class: str | None = None
    output: str | None = None
    item: int | None = None
    attempt: int | None = None


def yaml_pipelines() -> dict[str, Pipeline]:
    """The YAML pipelines next to this example (examples/*.yaml), by name."""
    found: dict[str, Pipeline] = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        with contextlib.suppress(SpecError):
            pipe = Pipeline.from_yaml(path)
            found[pipe.name] = pipe
    return found


def sse(data: str, event: str | None = None, id: int | None = None) -> str:
    """One server-sent event (data is one line of JSON)."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n"


def create_app(
    *,
    address: str | None = None,
    queue: str | None = None,
    worker: bool | None = None,
    pipelines: Mapping[str, Pipeline] | None = None,
    keepalive_s: float = 15.0,
) -> FastAPI:
    """The service. `worker`: run an in-process worker (default: unless
    RAFTLINE_EXAMPLE_WORKER=0); `pipelines`: offered by name (default: the code-defined
    ones and examples/*.yaml)."""
    offered: dict[str, Pipeline] = {**yaml_pipelines(), **PIPELINES, **(pipelines or {})}
    with_worker = worker if worker is not None else os.environ.get("RAFTLINE_EXAMPLE_WORKER") != "0"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Pipelines whose modules are missing here are left out, not fatal.
        servable = [p for p in offered.values() if _servable(p)]
        async with raftline.session(
            *servable, address=address, queue=queue, worker=with_worker
        ) as client:
            app.state.client = client
            app.state.known = (
                {activity_name(a) for a in collect()}
                | {activity_name(a) for p in servable for a in p.worker_activities()}
                if with_worker
                else None
            )
            yield

    app = FastAPI(title="raftline example backend", lifespan=lifespan)

    def client_of(request: Request) -> RaftlineClient:
        return request.app.state.client  # type: ignore[no-any-return]

    @app.exception_handler(RaftlineError)
    async def raftline_error(request: Request, exc: RaftlineError) -> JSONResponse:
        code = 503
        if isinstance(exc, RunNotFound):
            code = 404
        elif isinstance(exc, RunExists | Refused):
            code = 409
        elif isinstance(exc, ConfigError):
            code = 500
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(SpecError)
    async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/pipelines")
    async def list_pipelines() -> dict[str, Any]:
        return {
            name: {"description": p.spec.description, "steps": [s.name for s in p.spec.steps]}
            for name, p in offered.items()
        }

    @app.post("/runs", status_code=201)
    async def start_run(body: RunRequest, request: Request) -> dict[str, Any]:
        if isinstance(body.pipeline, str):
            if body.pipeline not in offered:
                raise SpecError(
                    f"unknown pipeline {body.pipeline!r}; known: {', '.join(sorted(offered))}"
                )
            pipe = offered[body.pipeline]
        else:
            pipe = Pipeline.from_spec(PipelineSpec.parse(body.pipeline, "pipeline"))
        known = request.app.state.known
        if known is not None:  # our worker serves it: every activity must be one it has
            pipe.check(known)
        task = raftline.as_task(body.goal, body.inputs)
        handle = await client_of(request).start(pipe, task, id=body.id)
        return {
            "id": handle.id,
            "pipeline": pipe.name,
            "events_url": f"/runs/{handle.id}/events",
            "status_url": f"/runs/{handle.id}",
        }

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        handle = client_of(request).get(run_id)
        if await handle.is_running():
            status = await handle.status()
            return {
                "id": run_id,
                "running": True,
                "status": status.status.value,
                "progress": status.model_dump(mode="json"),
            }
        result = await handle.result()
        return {
            "id": run_id,
            "running": False,
            "status": result.status.value,
            "summary": result.summary(_ui_url(run_id)),
            "result": result.model_dump(mode="json", exclude={"trace"}),
        }

    @app.get("/reviews")
    async def list_reviews(request: Request) -> dict[str, Any]:
        found = await client_of(request).pending_reviews()
        return {"reviews": [r.model_dump(mode="json") for r in found]}

    @app.post("/runs/{run_id}/reviews/{step}")
    async def decide(
        run_id: str, step: str, body: DecisionRequest, request: Request
    ) -> dict[str, Any]:
        handle = client_of(request).get(run_id)
        where = {"by": body.by, "item": body.item, "attempt": body.attempt}
        if body.decision == "approve":
            outcome = await handle.approve(step, note=body.note, **where)
        elif body.decision == "reject":
            outcome = await handle.reject(step, body.hint, error_class=body.error_class, **where)
        else:
            if not body.output:
                raise HTTPException(422, "an edit needs the replacement `output`")
            outcome = await handle.edit(step, body.output, note=body.note, **where)
        return outcome.model_dump(mode="json")

    @app.get("/runs/{run_id}/events")
    async def run_events(
        run_id: str,
        request: Request,
        last_event_id: str | None = Header(default=None),
        after: int = Query(default=0, ge=0, description="resume after this seq"),
    ) -> StreamingResponse:
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise HTTPException(400, "Last-Event-ID must be an event's seq")
            after = int(last_event_id)
        handle = client_of(request).get(run_id)
        await handle.execution_status()  # RunNotFound -> 404 before the stream starts
        return StreamingResponse(
            stream(handle, after, keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def stream(handle: RunHandle, after: int, keepalive_s: float) -> AsyncIterator[str]:
    """The SSE body: the run's events from seq `after` on, then its summary."""
    items: asyncio.Queue[TraceEvent | RunResult | Exception] = asyncio.Queue()

    async def follow() -> None:
        try:
            async for event in handle.events(after=after):
                await items.put(event)
            await items.put(await handle.result())
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            await items.put(exc)

    follower = asyncio.create_task(follow())
    try:
        yield "retry: 2000\n\n"  # how long an EventSource waits before it reconnects
        while True:
            try:
                item = await asyncio.wait_for(items.get(), keepalive_s)
            except TimeoutError:
                yield ": keep-alive\n\n"  # proxies keep an idle stream open
                continue
            if isinstance(item, TraceEvent):
                yield sse(item.model_dump_json(), event=item.type.value, id=item.seq)
            elif isinstance(item, RunResult):
                yield sse(json.dumps(item.summary(_ui_url(item.workflow_id))), event="summary")
                return
            else:
                message = str(item) if isinstance(item, RaftlineError) else repr(item)
                yield sse(json.dumps({"error": message}), event="error")
                return
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


def _servable(pipe: Pipeline) -> bool:
    try:
        pipe.worker_activities()
    except SpecError:
        return False
    return True


def _ui_url(run_id: str) -> str | None:
    base = os.environ.get("RAFTLINE_UI_URL")
    namespace = os.environ.get("TEMPORAL_NAMESPACE", "default")
    return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{run_id}" if base else None


app = create_app()
