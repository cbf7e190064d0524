"""Step 2 of the commit loop: verify an output before it may be committed.

L1 rules always (in the workflow, over an output already in history; large outputs in a
local activity); then by criticality one judge (MEDIUM -> L2, HIGH -> L3) or a quorum.
A judge that cannot give a verdict is not a pass: the step waits for one (the judge
activity itself tries the provider fallbacks; between calls the run sleeps durably) for
up to `judge_wait_s`, then the run ends, unless the step opted into
`on_judge_unavailable: degrade`, which commits on the rules alone, flagged degraded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError, is_cancelled_exception

from raftline.models import (
    EventType,
    StepOutput,
    StepSpec,
    Usage,
    Verdict,
    VerifyInput,
)
from raftline.verifiers.llm import DEFAULT_MIN_CONFIDENCE, should_escalate
from raftline.verifiers.rules import RULES_VERSION, OutputFacts, check_rules
from raftline.verifiers.tiered import JudgeCall, next_tier, plan_judges, tally
from raftline.workflows.budget import Budget
from raftline.workflows.errors import (
    BUDGET_EXCEEDED,
    JUDGE_NO_VERDICT,
    JUDGE_NOT_CONFIGURED,
    RunEnded,
    application_error,
    error_details,
    error_message,
    retry_policy,
)
from raftline.workflows.run import Run
from raftline.workflows.telemetry import verification_span

# Outputs larger than this are checked by the L1 rules in a local activity: a workflow
# task must yield within 2 s even on a busy worker (the rules scan the whole output).
L1_INLINE_CHARS = 256 * 1024
RULES_ACTIVITY = "raftline.rules_v2"
# Since 0.2.1 the L1 rules decide as rules-3 (more refusal and error shapes); runs that
# started under rules-2 keep deciding as rules-2, so they replay the verdicts they reached.
RULES_3_PATCH = "raftline-rules-3"
FIRST_RETRY_S, MAX_RETRY_S = 2.0, 30.0


def _rules_as_patched(base: VerifyInput, facts: list[OutputFacts]) -> Verdict:
    """rules-3's verdict, unless it differs from what rules-2 decides and the run started
    before rules-3 (no raftline-rules-3 marker): the patch is asked only where the two
    differ, so most runs record no marker. rules-3 only adds failures, so a pass is both."""
    verdict = check_rules(base, facts, RULES_VERSION)
    if verdict.passed:
        return verdict
    old = check_rules(base, facts, "rules-2")
    if (old.passed, old.error_class, old.reason) == (False, verdict.error_class, verdict.reason):
        return verdict
    return verdict if workflow.patched(RULES_3_PATCH) else old


@dataclass
class Judged:
    """The verdict on one output, and why a human should look at it, if the step asks."""

    verdict: Verdict
    review: str | None = None  # "on_disagreement" | "on_low_confidence"


class Verifier:
    def __init__(self, run: Run, budget: Budget) -> None:
        self.run = run
        self.budget = budget
        self.hopeless: set[str] = set()  # steps whose judge cannot be called at all

    async def verify(
        self, step: StepSpec, output: StepOutput, attempt: int, item: int | None = None
    ) -> Judged:
        base = self._input(step, output, attempt, item)
        rules = await self._rules(base)
        plan = plan_judges(self.run.spec.criticality(step), self.run.spec.verifier(step))
        if not rules.passed or not plan.judges:
            return Judged(rules)
        if plan.is_quorum:
            return await self._quorum(step, base, plan.judges, plan.require)
        return await self._single(step, base, plan.judges[0])

    def _input(
        self, step: StepSpec, output: StepOutput, attempt: int, item: int | None
    ) -> VerifyInput:
        refs, context = self.run.inline_refs(step.name)
        return VerifyInput(
            workflow_id=self.run.workflow_id,
            step=step,
            task=self.run.task,
            output=output,
            committed_refs=refs,
            context=context,
            attempt=attempt,
            item_index=item,
        )

    # ------------------------------------------------------------ L1

    async def _rules(self, base: VerifyInput) -> Verdict:
        """Pure, deterministic checks: a replay recomputes the same verdict. A change to what
        they decide is a commit-loop change: a new RULES_VERSION behind workflow.patched."""
        facts = self.run.facts(base.step.name)
        if len(base.output.text) <= L1_INLINE_CHARS:
            verdict = _rules_as_patched(base, facts)
        else:
            version = RULES_VERSION if workflow.patched(RULES_3_PATCH) else "rules-2"
            params = {"facts": [f.model_dump() for f in facts], "rules_version": version}
            try:
                verdict = await workflow.execute_local_activity(
                    RULES_ACTIVITY,
                    base.model_copy(update={"params": params}),
                    result_type=Verdict,
                    start_to_close_timeout=timedelta(seconds=60),
                    summary=f"rules {base.step.name} · attempt {base.attempt} · {version}",
                )
            except FailureError as err:
                if is_cancelled_exception(err):
                    raise
                # No L1 verdict is no verdict: nothing commits (fail closed).
                raise RunEnded(
                    f"the L1 rules could not check step {base.step.name!r}: {error_message(err)}",
                    base.step.name,
                ) from None
        verification_span(base, verdict)
        return verdict

    # ------------------------------------------------------------ judges

    async def _single(self, step: StepSpec, base: VerifyInput, call: JudgeCall) -> Judged:
        verdict = await self._until_verdict(step, base, call, 0)
        if verdict is None:
            return Judged(self._unavailable(step, call.tier, "no verdict"))
        threshold = float(call.params.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        higher = next_tier(call.tier)
        if higher and higher != "L1" and should_escalate(verdict, threshold):
            # A hesitant small judge hands the decision up to the large one.
            self.run.event(
                EventType.VERDICT,
                step.name,
                base.attempt,
                verdict=verdict,
                item=base.item_index,
                message=f"confidence {verdict.confidence} < {threshold}: escalating to {higher}",
            )
            upper = await self._until_verdict(step, base, replace(call, tier=higher), 1)
            if upper is None:
                # The judge that was meant to settle it is down: the L2 pass was judged not
                # good enough, so it is not committed (unless the step opted into degrade).
                return Judged(
                    self._unavailable(step, higher, "the escalation got no verdict", verdict)
                )
            verdict = upper
        low = verdict.passed and verdict.confidence < threshold
        return Judged(verdict, "on_low_confidence" if low else None)

    async def _quorum(
        self, step: StepSpec, base: VerifyInput, calls: tuple[JudgeCall, ...], require: int
    ) -> Judged:
        votes = list(
            await asyncio.gather(
                *(self._judge(step, base, c, i, share=len(calls)) for i, c in enumerate(calls))
            )
        )
        wait = self._waiter(step, calls[0].tier)
        while True:
            result = tally(votes, require)
            if result.verdict is not None:
                self.run.waiting.pop(step.name, None)
                review = "on_disagreement" if result.disagreement else None
                return Judged(result.verdict, review)
            if not await wait():
                return Judged(
                    self._unavailable(
                        step, calls[0].tier, f"{result.missing} of {len(calls)} judges gave no vote"
                    )
                )
            missing = [i for i, v in enumerate(votes) if v is None]
            again = await asyncio.gather(
                *(self._judge(step, base, calls[i], i, share=len(missing)) for i in missing)
            )
            for i, vote in zip(missing, again, strict=True):
                votes[i] = vote

    async def _until_verdict(
        self, step: StepSpec, base: VerifyInput, call: JudgeCall, index: int
    ) -> Verdict | None:
        wait = self._waiter(step, call.tier)
        while True:
            verdict = await self._judge(step, base, call, index)
            if verdict is not None:
                self.run.waiting.pop(step.name, None)
                return verdict
            if not await wait():
                return None

    def _waiter(self, step: StepSpec, tier: str) -> _Patience:
        return _Patience(self, step, tier)

    async def _judge(
        self, step: StepSpec, base: VerifyInput, call: JudgeCall, index: int, share: int = 1
    ) -> Verdict | None:
        """One judge call. None: no verdict this time (provider down, unusable reply)."""
        run = self.run
        ticket, cap = self.budget.reserve(step.name, "judge", share)
        vin = base.model_copy(update={"tier": call.tier, "params": call.params, "budget": cap})
        activity_id = f"{step.name}-{base.attempt}-judge-{call.tier}-{index}"
        if base.item_index is not None:
            activity_id = f"{step.name}-i{base.item_index}-{base.attempt}-judge-{call.tier}-{index}"
        summary = f"judge {step.name} · attempt {base.attempt} · {call.tier}"
        retry = retry_policy(run.spec.policy.activity_retry)
        try:
            if call.local:
                raw = await workflow.execute_local_activity(
                    call.activity,
                    vin,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=retry,
                    activity_id=activity_id,
                    summary=summary,
                )
            else:
                raw = await workflow.execute_activity(
                    call.activity,
                    vin,
                    start_to_close_timeout=timedelta(seconds=120),
                    retry_policy=retry,
                    task_queue=call.task_queue,
                    activity_id=activity_id,
                    summary=summary,
                )
        except FailureError as err:  # local activities raise the failure itself
            if is_cancelled_exception(err):
                self.budget.release(ticket)
                raise
            spent = Usage.model_validate(error_details(err).get("usage") or {})
            self.budget.charge(ticket, spent, "judge", step.name)
            return self._judge_failed(step, base, call, err)
        try:
            verdict = Verdict.model_validate(raw)
        except ValueError as exc:
            self.budget.release(ticket)
            self._note_unavailable(step, base, call, f"returned no valid verdict: {_first(exc)}")
            return None
        self.budget.charge(ticket, verdict.usage, "judge", step.name)
        run.check()
        if verdict.degraded:
            # A judge that says it did not judge is no vote (fail closed).
            self._note_unavailable(step, base, call, verdict.reason or "degraded verdict")
            return None
        return verdict

    def _judge_failed(
        self, step: StepSpec, base: VerifyInput, call: JudgeCall, err: FailureError
    ) -> Verdict | None:
        message = error_message(err)
        app = application_error(err)
        if app is not None and app.type == BUDGET_EXCEEDED:
            raise self.budget.refused(step.name, message) from None
        if (
            app is not None
            and app.non_retryable
            and app.type != JUDGE_NOT_CONFIGURED
            and app.type not in JUDGE_NO_VERDICT
        ):
            # A misconfigured judge (bad key, unknown model) never waves steps through.
            raise RunEnded(f"judge {call.activity} failed: {message}", step.name) from None
        self._note_unavailable(step, base, call, message)
        if app is not None and app.type == JUDGE_NOT_CONFIGURED:
            self.hopeless.add(step.name)  # no judge can be called at all: waiting cannot help
        return None

    def _note_unavailable(
        self, step: StepSpec, base: VerifyInput, call: JudgeCall, message: str
    ) -> None:
        self.run.event(
            EventType.JUDGE_UNAVAILABLE,
            step.name,
            base.attempt,
            item=base.item_index,
            message=f"{call.tier} judge {call.activity} gave no verdict: {message}",
        )

    def _unavailable(
        self, step: StepSpec, tier: str, why: str, fallback: Verdict | None = None
    ) -> Verdict:
        """No verdict after waiting: fail closed (end the run), or degrade if opted in."""
        run = self.run
        run.waiting.pop(step.name, None)
        waited = run.spec.judge_wait_s(step)
        if run.spec.on_judge_unavailable(step) != "degrade":
            raise RunEnded(
                f"judge unavailable: step {step.name!r} got no {tier} verdict ({why}, waited "
                f"{waited:g} s); nothing was committed without one",
                step.name,
            )
        base = fallback or Verdict(passed=True, tier=tier, verifier="none")
        return base.model_copy(
            update={
                "passed": True,
                "degraded": True,
                "tier": tier,
                "reason": f"judge unavailable ({why}): committed on the rules alone "
                "(on_judge_unavailable: degrade)",
            }
        )


class _Patience:
    """A durable back-off between judge calls, until the step's judge_wait_s is spent."""

    def __init__(self, verifier: Verifier, step: StepSpec, tier: str) -> None:
        self.verifier, self.step, self.tier = verifier, step, tier
        run = verifier.run
        self.deadline = workflow.now() + timedelta(seconds=run.spec.judge_wait_s(step))
        self.delay = FIRST_RETRY_S

    async def __call__(self) -> bool:
        """Sleep before the next try; False when there is no time (or no point) left."""
        run = self.verifier.run
        left = (self.deadline - workflow.now()).total_seconds()
        if left <= 0 or self.step.name in self.verifier.hopeless:
            return False
        pause = min(self.delay, left)
        self.delay = min(self.delay * 2, MAX_RETRY_S)
        run.waiting[self.step.name] = f"waiting for the {self.tier} judge (retry in {pause:.0f} s)"
        run.show()
        await workflow.sleep(timedelta(seconds=pause))
        run.check()
        return True


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
