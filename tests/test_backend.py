"""The example backend (examples/backend/) over real HTTP, against the real dev server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
import uvicorn

from examples.backend.app import create_app
from examples.backend.pipelines import oslo_brief
from raftline.embedded import EmbeddedServer, free_port

Frame = dict[str, Any]


@pytest_asyncio.fixture(scope="module")
async def service(temporal_server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    """The service under uvicorn on a free port, with its in-process worker."""
    app = create_app(
        address=temporal_server.address,
        queue=f"backend-{uuid.uuid4().hex[:8]}",
        worker=True,
        pipelines={"slow_brief": oslo_brief(delay_s=0.4)},
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the service did not start"
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http
    server.should_exit = True
    await task


async def frames(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None, stop: int = 0
) -> list[Frame]:
    """Server-sent events as {id, event, data}; leaves after the frame with id `stop`."""
    got: list[Frame] = []
    frame: Frame = {}
    async with http.stream("GET", path, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line:
                key, _, value = line.partition(": ")
                frame[key] = value
                continue
            if "data" in frame:
                frame["data"] = json.loads(frame["data"])
                got.append(frame)
                if stop and int(frame.get("id", 0)) >= stop:
                    break  # the client goes away mid-run
            frame = {}
    return got


async def start(http: httpx.AsyncClient, **body: Any) -> str:
    resp = await http.post("/runs", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["events_url"] == f"/runs/{resp.json()['id']}/events"
    return str(resp.json()["id"])


def check_events(events: list[Frame]) -> None:
    assert [int(f["id"]) for f in events] == list(range(1, len(events) + 1))
    assert all(f["event"] == f["data"]["type"] and int(f["id"]) == f["data"]["seq"] for f in events)


async def test_sse_stream_ends_with_the_run_summary(service: httpx.AsyncClient) -> None:
    run_id = await start(service, pipeline="oslo_brief", goal="Should we expand to Oslo?")
    got = await frames(service, f"/runs/{run_id}/events")
    *events, summary = got
    check_events(events)
    assert events[-1]["event"] == "run_completed"
    assert "rolled_back" in [f["event"] for f in events]  # analyse drifted once, recovered
    assert summary["event"] == "summary" and "id" not in summary
    assert summary["data"]["workflow_id"] == run_id
    assert summary["data"]["status"] == "completed" and summary["data"]["verified"] == "3/3"
    assert summary["data"]["rollbacks"] == 1
    status = (await service.get(f"/runs/{run_id}")).json()
    assert status["running"] is False and status["summary"] == summary["data"]
    assert status["result"]["output"].startswith("Recommendation: expand in 2027.")


async def test_sse_resumes_with_last_event_id_mid_run(service: httpx.AsyncClient) -> None:
    run_id = await start(service, pipeline="slow_brief", goal="Oslo?", id=f"r-{uuid.uuid4()}")
    first = await frames(service, f"/runs/{run_id}/events", stop=5)
    progress = (await service.get(f"/runs/{run_id}")).json()
    assert progress["running"] is True and progress["progress"]["verified"] < 3
    dup = await service.post("/runs", json={"pipeline": "slow_brief", "goal": "x", "id": run_id})
    assert dup.status_code == 409 and "already running" in dup.json()["detail"]
    rest = await frames(
        service, f"/runs/{run_id}/events", headers={"Last-Event-ID": first[-1]["id"]}
    )
    *events, summary = first + rest
    check_events(events)  # 1..N: none lost, none repeated across the reconnect
    assert summary["event"] == "summary" and summary["data"]["status"] == "completed"
    # ?after= does the same for clients that cannot set headers.
    tail = await frames(service, f"/runs/{run_id}/events?after={len(events) - 1}")
    assert [f["event"] for f in tail] == ["run_completed", "summary"]


async def test_inline_spec_and_clear_errors(service: httpx.AsyncClient) -> None:
    spec = {"name": "inline", "steps": [{"name": "a", "goal": "Say hi", "params": {"text": "hi"}}]}
    run_id = await start(service, pipeline=spec, goal="greet")
    *_, summary = await frames(service, f"/runs/{run_id}/events")
    assert summary["data"]["output"] == "hi"

    bad = {"name": "x", "steps": [{"name": "a", "goal": "g", "checks": {"min_lenght": 3}}]}
    resp = await service.post("/runs", json={"pipeline": bad, "goal": "g"})
    assert resp.status_code == 422
    assert resp.json()["detail"] == "pipeline: steps[0](a).checks.min_lenght: unknown field"
    unknown = {"name": "x", "steps": [{"name": "a", "goal": "g", "activity": "nope"}]}
    resp = await service.post("/runs", json={"pipeline": unknown, "goal": "g"})
    assert resp.status_code == 422 and "unknown activity 'nope'" in resp.json()["detail"]
    resp = await service.post("/runs", json={"pipeline": "nope", "goal": "g"})
    assert resp.status_code == 422 and "unknown pipeline 'nope'" in resp.json()["detail"]
    assert (await service.get("/runs/no-such-run")).status_code == 404
    assert (await service.get("/runs/no-such-run/events")).status_code == 404
    resp = await service.get(f"/runs/{run_id}/events", headers={"Last-Event-ID": "x"})
    assert resp.status_code == 400


async def test_reviews_over_http(service: httpx.AsyncClient) -> None:
    spec = {
        "name": "reviewed",
        "steps": [
            {"name": "memo", "goal": "memo", "params": {"text": "Recommendation: go."},
             "checks": {"required": ["Recommendation"]},
             "review": {"when": "always", "reviewers": ["board"]}},
        ],
    }  # fmt: skip
    run_id = await start(service, pipeline=spec, goal="decide")
    pending: list[dict[str, Any]] = []
    for _ in range(100):
        pending = [r for r in (await service.get("/reviews")).json()["reviews"]
                   if r["workflow_id"] == run_id]  # fmt: skip
        if pending:
            break
        await asyncio.sleep(0.1)
    [review] = pending
    assert (review["step"], review["why"], review["output"]) == (
        "memo",
        "always",
        "Recommendation: go.",
    )
    bad = await service.post(
        f"/runs/{run_id}/reviews/memo", json={"decision": "edit", "output": "Go."}
    )
    assert bad.status_code == 409 and "fails the step's L1 rules" in bad.json()["detail"]
    url = f"/runs/{run_id}/reviews/memo"
    first = await service.post(url, json={"decision": "approve", "by": "ana", "note": "ok"})
    assert first.status_code == 200, first.text
    assert first.json()["decision"] == "approve" and first.json()["by"] == "ana"
    again = await service.post(url, json={"decision": "approve", "by": "ana", "note": "ok"})
    assert again.status_code == 200 and again.json()["repeated"] is True
    other = await service.post(url, json={"decision": "reject", "hint": "no", "by": "ben"})
    assert other.status_code == 409 and "already decided" in other.json()["detail"]
    *events, summary = await frames(service, f"/runs/{run_id}/events")
    kinds = [f["event"] for f in events]
    assert kinds.index("review_pending") < kinds.index("review_decided") < kinds.index("committed")
    assert summary["data"]["status"] == "completed"
    assert (
        await service.post("/runs/no-such/reviews/x", json={"decision": "approve"})
    ).status_code == 404
