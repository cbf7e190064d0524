"""A deterministic LLM-judge stand-in, for the observability tests and the replay histories.

It answers like `raftline.llm_judge` (model, prompt version, usage, cost, confidence)
without a model: params decide. Register with `--activities tests.judges`.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.models import ErrorClass, Usage, Verdict, VerifyInput

PROVIDER = "fakellm"


@activity.defn(name="fake_judge")
async def fake_judge(inp: VerifyInput) -> Verdict:
    """params: confidence ({tier: float}), fail_attempts (step attempts to fail), name,
    down (tiers whose provider is down: the call fails)."""
    p = inp.params
    if inp.tier in p.get("down", []):  # this tier's provider is down
        raise ApplicationError("fakellm: server error (503)", type="ProviderRetryable")
    fail = inp.attempt in p.get("fail_attempts", [])
    confidence = float(p.get("confidence", {}).get(inp.tier, 0.9))
    return Verdict(
        passed=not fail,
        error_class=ErrorClass.HALLUCINATION if fail else None,
        reason=(
            "claims a figure no input supports" if fail else f"supported by the inputs ({inp.tier})"
        ),
        hint="Use only the figures given in the inputs." if fail else None,
        tier=inp.tier,
        verifier=f"llm:{PROVIDER}",
        model=f"{p.get('name', 'judge')}-{inp.tier.lower()}",
        prompt_version="judge-v1",
        confidence=confidence,
        usage=Usage(input_tokens=120, output_tokens=30, cost_usd=0.0015),
    )


@activity.defn(name="down_judge")
async def down_judge(inp: VerifyInput) -> Verdict:
    """A judge whose provider is down: every call fails, retryably."""
    raise ApplicationError("fakellm: server error (503)", type="ProviderRetryable")


ACTIVITIES = [fake_judge, down_judge]
