"""Custom activities used by the tests, registered like a user's module."""

from __future__ import annotations

import json

from temporalio import activity

from raftline.models import StepInput, StepOutput


@activity.defn(name="echo_context")
async def echo_context(inp: StepInput) -> StepOutput:
    """Returns exactly what the step was given: the committed outputs, hint and class."""
    return StepOutput(
        text=json.dumps(
            {
                "committed": inp.committed,
                "hint": inp.hint,
                "error_class": inp.error_class,
                "attempt": inp.attempt,
                "key": inp.idempotency_key,
            }
        )
    )


@activity.defn(name="plain_text")
async def plain_text(inp: StepInput) -> str:
    """A custom step may return a plain string."""
    return f"Plain answer about {inp.goal}."
