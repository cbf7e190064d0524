"""Verification activities: L1 rules as a local activity, for runs started before the
"raftline-lean-commit" patch (newer runs evaluate the rules inside the workflow).

Only those very old runs call it, and they decided under rules-1: it runs the frozen
rules_v1, so their replays and retries reach the verdicts they reached before."""

from __future__ import annotations

from temporalio import activity

from raftline.models import Verdict, VerifyInput
from raftline.verifiers.rules_v1 import check_rules


@activity.defn(name="raftline.rules")
async def rules(inp: VerifyInput) -> Verdict:
    """L1 for runs in flight from before the patch: their history expects this activity."""
    return check_rules(inp)


ACTIVITIES = [rules]
