"""A simulated judge of chosen recall and false-positive rate, run as a real verifier.

`bench.sim_judge` is an ordinary judge activity (VerifyInput → Verdict) that the
workflow calls like any LLM judge (as a local activity when `JudgeSpec.local`). It
reads the label the `scripted` step recorded in `StepOutput.meta["injected"]` and:

- on a bad output, fails it with probability `recall` (else lets it through);
- on a good output, fails it with probability `fpr` (a false positive).

The draw is a pure function of (seed, workflow id, step, attempt, judge index): a run
replays exactly, the judges of a quorum (different `index`) are independent, and the
same trial judged at two recall values uses the same draw (so a higher recall
catches a superset: the recall sweep is paired too).
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from raftline.models import ErrorClass, Verdict, VerifyInput
from raftline.verifiers.taxonomy import hint_for

SIM_JUDGE = "bench.sim_judge"


class SimJudgeParams(BaseModel):
    """`JudgeSpec.params` of the simulated judge."""

    model_config = ConfigDict(extra="ignore")  # e.g. min_confidence, read by the workflow

    recall: float = Field(ge=0, le=1)
    fpr: float = Field(ge=0, le=1)
    seed: int = 0
    index: int = Field(default=0, ge=0, description="judge index: independent draws")


def judge_draw(seed: int, workflow_id: str, step: str, attempt: int, index: int) -> float:
    """A uniform [0, 1) number, independent of the scripted step's own fault draw."""
    key = f"judge:{seed}:{workflow_id}:{step}:{attempt}:{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def decide(params: SimJudgeParams, injected: str | None, u: float) -> Verdict:
    """The verdict for one output, given its injected label and the judge's draw."""
    if injected:
        cls = ErrorClass(injected) if injected in ErrorClass.__members__ else ErrorClass.FORMAT
        if u < params.recall:
            return Verdict(
                passed=False,
                error_class=cls,
                reason=f"simulated judge caught the injected {injected} fault",
                hint=hint_for(cls),
                verifier=SIM_JUDGE,
            )
        return Verdict(passed=True, reason=f"simulated judge missed {injected}", verifier=SIM_JUDGE)
    if u < params.fpr:
        return Verdict(
            passed=False,
            error_class=ErrorClass.GOAL_DRIFT,
            reason="simulated judge false positive on a good output",
            hint=hint_for(ErrorClass.GOAL_DRIFT),
            verifier=SIM_JUDGE,
        )
    return Verdict(passed=True, reason="simulated judge passed a good output", verifier=SIM_JUDGE)


@activity.defn(name=SIM_JUDGE)
async def sim_judge(inp: VerifyInput) -> Verdict:
    params = SimJudgeParams.model_validate(inp.params)
    injected = inp.output.meta.get("injected")
    u = judge_draw(params.seed, inp.workflow_id, inp.step.name, inp.attempt, params.index)
    verdict = decide(params, injected, u)
    return verdict.model_copy(update={"tier": inp.tier, "confidence": 1.0})


ACTIVITIES = [sim_judge]
