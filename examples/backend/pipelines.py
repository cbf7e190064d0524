"""The pipelines this example service offers by name, defined in code.

Plain async functions: the service's in-process worker registers them (raftline turns
each into a Temporal activity). A step that takes a StepInput sees the task, its
attempt and the correction hint; one that takes a dict sees the committed outputs.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from raftline import Pipeline, Step, StepInput


class Facts(BaseModel):
    city: str
    residents: int
    bike_lanes_km: int


async def research(inp: StepInput) -> Facts:
    """Collect the market facts about the city."""
    await asyncio.sleep(float(inp.params.get("delay_s", 0)))
    return Facts(city="Oslo", residents=720_000, bike_lanes_km=41)


async def analyse(inp: StepInput) -> str:
    """Weigh the demand in the city against the cost."""
    await asyncio.sleep(float(inp.params.get("delay_s", 0)))
    facts = Facts.model_validate_json(inp.committed["research"])
    if inp.attempt == 0 and inp.params.get("drift_once"):
        return "A short history of the printing press in Mainz."  # off goal: rolled back
    return (
        f"Demand in {facts.city} is strong: {facts.residents:,} residents and "
        f"{facts.bike_lanes_km} km of new bike lanes support a phased launch."
    )


async def recommend(committed: dict[str, str]) -> str:
    """Recommend go or no-go in one paragraph."""
    return f"Recommendation: expand in 2027. {committed['analyse']}"


def oslo_brief(delay_s: float = 0.0, drift_once: bool = True) -> Pipeline:
    params = {"delay_s": delay_s, "drift_once": drift_once}
    return Pipeline(
        "oslo_brief",
        steps=[
            Step(research, params=params, checks={"required": ["Oslo"]}),
            Step(analyse, params=params, checks={"topic": ["Oslo", "demand"], "topic_min": 2}),
            Step(recommend, checks={"required": ["Recommendation"]}),
        ],
        policy={"activity_retry": {"max_attempts": 2, "initial_interval_s": 0.2}},
        description="A three-step brief from plain async functions.",
    )


PIPELINES = {"oslo_brief": oslo_brief()}
