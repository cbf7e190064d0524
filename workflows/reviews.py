"""Human review: one more verifier tier, above the judges.

A step's `review.when` decides when a person is asked: `before` the step runs (for
irreversible side effects), `always` before a verified output commits, `on_fail` when the
automatic verifiers failed its last retry, `on_disagreement` when a quorum split,
`on_low_confidence` when the top judge stayed unsure. While it waits the run is
`awaiting_review` (search attribute), nothing is committed, the breaker and the budget do
not tick, and the wait is a durable timer (`review.timeout_s`, then `on_timeout`).

Decisions arrive as Temporal updates (approve, reject, edit). A validator refuses a
decision for a step that is not pending, or one that contradicts a decision already
taken; the same decision sent again returns the recorded outcome and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from temporalio import workflow

from raftline.models import (
    ErrorClass,
    EventType,
    PendingReview,
    ReviewDecision,
    ReviewOutcome,
    RunStatus,
    StepOutput,
    StepSpec,
    Verdict,
    VerifyInput,
)
from raftline.verifiers.rules import check_rules
from raftline.workflows.errors import RunEnded, evicting, sha256
from raftline.workflows.run import Run

Kind = Literal["approve", "reject", "edit"]
REJECT_CLASS = ErrorClass.INCOMPLETE  # a rejection that names no class


@dataclass
class _Waiting:
    view: PendingReview
    outcome: ReviewOutcome | None = None
    decision: ReviewDecision | None = None
    kind: str | None = None
    hints: list[str] = field(default_factory=list)  # `before`: rejections with a hint


PAST = {"approve": "approved", "reject": "rejected", "edit": "edited"}


class Reviews:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.pending: dict[tuple[str, int | None], _Waiting] = {}
        self.decided: list[ReviewOutcome] = []

    def views(self) -> list[PendingReview]:
        return [w.view for w in self.pending.values()]

    # ------------------------------------------------------------ waiting (the workflow)

    async def ask(
        self,
        step: StepSpec,
        attempt: int,
        why: str,
        item: int | None = None,
        output: str | None = None,
        verdict: Verdict | None = None,
    ) -> _Waiting:
        """Wait for a decision (or the timeout). Returns the settled wait."""
        run = self.run
        spec = step.review
        assert spec is not None
        now = workflow.now()
        view = PendingReview(
            workflow_id=run.workflow_id,
            pipeline=run.spec.name,
            step=step.name,
            attempt=attempt,
            item_index=item,
            why=why,
            since=now,
            deadline=now + timedelta(seconds=spec.timeout_s),
            reviewers=spec.reviewers,
            output=output,
            output_sha256=sha256(output) if output is not None else None,
            verdict=verdict,
        )
        waiting = _Waiting(view)
        self.pending[(step.name, item)] = waiting
        who = f" ({', '.join(spec.reviewers)})" if spec.reviewers else ""
        target = f"{run.workflow_id} {step.name}" + (f" --item {item}" if item is not None else "")
        run.event(
            EventType.REVIEW_PENDING,
            step.name,
            attempt,
            item=item,
            verdict=verdict,
            message=f"{why}; waiting for a review{who}: raftline approve {target} "
            f"| raftline reject {target} --hint TEXT | raftline edit {target} --file PATH",
        )
        run.waiting[step.name] = (
            f"awaiting review ({why}) of attempt {attempt} until {view.deadline:%Y-%m-%d %H:%M} UTC"
        )
        run.set_status(RunStatus.AWAITING_REVIEW)
        try:
            while True:
                try:
                    await workflow.wait_condition(
                        lambda: waiting.decision is not None,
                        timeout=max(
                            (waiting.view.deadline - workflow.now()).total_seconds(), 0.001
                        ),
                    )
                except TimeoutError:  # a durable timer: the deadline holds across restarts
                    self._timed_out(step, waiting)
                    break
                if (
                    why == "before"
                    and waiting.kind == "reject"
                    and waiting.decision is not None
                    and waiting.decision.hint
                ):
                    # `before`: a rejection with a hint keeps the step waiting; the hint goes
                    # to the step when a later approval lets it run.
                    waiting.hints.append(waiting.decision.hint)
                    waiting.decision = waiting.kind = None
                    continue
                break
        finally:
            self.pending.pop((step.name, item), None)
            run.waiting.pop(step.name, None)
            if (
                not evicting()  # not when a dropped run's coroutines are closed
                and not self.pending
                and run.ledger.status is RunStatus.AWAITING_REVIEW
            ):
                run.set_status(RunStatus.RUNNING)
        return waiting

    def _timed_out(self, step: StepSpec, waiting: _Waiting) -> None:
        assert step.review is not None
        run = self.run
        view = waiting.view
        action = step.review.on_timeout
        outcome = ReviewOutcome(
            step=step.name,
            attempt=view.attempt,
            item=view.item_index,
            decision="timeout",
            by="timeout",
            at=workflow.now(),
            note=f"no decision in {step.review.timeout_s:g} s: {action}",
        )
        self.decided.append(outcome)
        waiting.outcome = outcome
        run.event(
            EventType.REVIEW_DECIDED,
            step.name,
            view.attempt,
            item=view.item_index,
            by="timeout",
            review=outcome,
            message=f"review timed out after {step.review.timeout_s:g} s: on_timeout {action}",
        )
        if action == "fail":
            raise RunEnded(
                f"review of step {step.name!r} timed out after {step.review.timeout_s:g} s "
                "(on_timeout: fail)",
                step.name,
            )
        waiting.kind = "approve" if action == "approve" else "reject"
        waiting.decision = ReviewDecision(step=step.name, by="timeout")

    # ------------------------------------------------------------ deciding (the updates)

    def validate(self, kind: Kind, d: ReviewDecision) -> None:
        """The update validator: refuse, with a clear message, what cannot be applied."""
        if self._repeat(kind, d) is not None:
            return
        waiting = self._find(d)
        if kind == "reject" and d.error_class is ErrorClass.STEP_ERROR:
            raise ValueError("a review may not reject with STEP_ERROR (it is for steps that raise)")
        if kind == "edit":
            if not d.output or not d.output.strip():
                raise ValueError("edit needs the replacement output")
            if waiting.view.why == "before":
                raise ValueError(
                    f"step {d.step!r} has not run yet (review: before): approve or reject it"
                )
            verdict = self._l1(d.step, d.output, waiting.view.attempt)
            if not verdict.passed:
                raise ValueError(
                    f"the edited output fails the step's L1 rules: {verdict.error_class}: "
                    f"{verdict.reason}"
                )

    def decide(self, kind: Kind, d: ReviewDecision) -> ReviewOutcome:
        """The update handler: apply once; a repeat returns the recorded outcome."""
        repeat = self._repeat(kind, d)
        if repeat is not None:
            return repeat.model_copy(update={"repeated": True})
        waiting = self._find(d)
        by = d.by or "unknown"
        outcome = ReviewOutcome(
            step=d.step,
            attempt=waiting.view.attempt,
            item=waiting.view.item_index,
            decision=kind,
            by=by,
            at=workflow.now(),
            note=d.note,
            hint=d.hint,
            error_class=(d.error_class or REJECT_CLASS) if kind == "reject" else None,
            output_sha256=sha256(d.output) if kind == "edit" and d.output else None,
        )
        self.decided.append(outcome)
        waiting.outcome, waiting.decision, waiting.kind = outcome, d, kind
        detail = {"approve": d.note, "reject": d.hint, "edit": outcome.output_sha256}[kind]
        self.run.event(
            EventType.REVIEW_DECIDED,
            d.step,
            waiting.view.attempt,
            item=waiting.view.item_index,
            by=by,
            hint=d.hint if kind == "reject" else None,
            sha256=outcome.output_sha256,
            review=outcome,
            message=f"{PAST[kind]} by {by}" + (f": {detail}" if detail else ""),
        )
        return outcome

    def _find(self, d: ReviewDecision) -> _Waiting:
        matches = [
            w
            for (step, item), w in self.pending.items()
            if step == d.step and (d.item is None or item == d.item)
        ]
        if not matches:
            waiting_on = ", ".join(sorted({s for s, _ in self.pending})) or "nothing"
            raise ValueError(f"step {d.step!r} has no pending review (pending: {waiting_on})")
        if len(matches) > 1:
            items = ", ".join(str(w.view.item_index) for w in matches)
            raise ValueError(f"step {d.step!r} has reviews pending for items {items}: give item")
        waiting = matches[0]
        if d.attempt is not None and d.attempt != waiting.view.attempt:
            raise ValueError(
                f"step {d.step!r} attempt {d.attempt} is not pending "
                f"(attempt {waiting.view.attempt} is)"
            )
        if waiting.decision is not None:
            raise ValueError(f"step {d.step!r} attempt {waiting.view.attempt} is already decided")
        return waiting

    def _repeat(self, kind: Kind, d: ReviewDecision) -> ReviewOutcome | None:
        """The recorded outcome when this exact decision was already applied (a resend); a
        different decision on a decided review is refused."""
        if any(
            s == d.step and (d.item is None or i == d.item) and w.decision is None
            for (s, i), w in self.pending.items()
        ):
            return None  # still pending: a fresh decision
        for outcome in reversed(self.decided):
            if outcome.step != d.step or (d.item is not None and outcome.item != d.item):
                continue
            if d.attempt is not None and outcome.attempt != d.attempt:
                continue
            same = outcome.decision == kind and (
                (kind == "approve" and outcome.note == d.note)
                or (kind == "reject" and outcome.hint == d.hint)
                or (
                    kind == "edit"
                    and d.output is not None
                    and outcome.output_sha256 == sha256(d.output)
                )
            )
            if same:
                return outcome
            raise ValueError(
                f"step {d.step!r} attempt {outcome.attempt} was already decided: "
                f"{outcome.decision} by {outcome.by}"
            )
        return None

    def _l1(self, step_name: str, text: str, attempt: int) -> Verdict:
        run = self.run
        base = VerifyInput(
            workflow_id=run.workflow_id,
            step=run.step(step_name),
            task=run.task,
            output=StepOutput(text=text),
            attempt=attempt,
        )
        return check_rules(base, run.facts(step_name))
