"""Verification activities: L1 rules (scheduled as a local activity) and the judges."""

from __future__ import annotations

from temporalio import activity

from verifiers.rules import check_rules
from workflows.models import Verdict, VerifyInput


@activity.defn(name="raftline.rules")
async def rules(inp: VerifyInput) -> Verdict:
    """L1: deterministic, cheap, recorded in history as a local activity."""
    return check_rules(inp)


ACTIVITIES = [rules]
