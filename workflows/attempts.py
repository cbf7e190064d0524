"""Steps 1-5 of the commit loop for one step: attempt, verify, commit, or roll back and
retry with a typed hint, behind the circuit breaker.

A plain step is one attempt chain. A `map` step runs one chain per element of a JSON
list and commits the list of their outputs; a `pipeline` step runs a child workflow and
commits its output. Human review (workflows/reviews.py) hooks in where the step asks.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType

from raftline.ledger import Entry
from raftline.models import (
    BreakerState,
    ErrorClass,
    EventType,
    ListInput,
    ParentRef,
    RunInput,
    RunResult,
    RunStatus,
    StepInput,
    StepOutput,
    StepSpec,
    Usage,
    Verdict,
    WhenInput,
)
from raftline.verifiers.rules import extract_facts
from raftline.verifiers.taxonomy import hint_for
from raftline.workflows.budget import Budget
from raftline.workflows.errors import (
    BUDGET_EXCEEDED,
    RunEnded,
    application_error,
    ending_patched,
    error_details,
    error_message,
    evicting,
    history_full,
    retry_policy,
    sha256,
)
from raftline.workflows.reviews import Reviews
from raftline.workflows.run import Attempt, Run
from raftline.workflows.saga import Saga
from raftline.workflows.verify import Verifier

PUT_ACTIVITY = "raftline.put_output"
LIST_ACTIVITY = "raftline.load_list"
WHEN_ACTIVITY = "raftline.when"
LOCAL_TIMEOUT = timedelta(seconds=60)


@dataclass
class Outcome:
    """How one attempt ended."""

    output: StepOutput | None
    verdict: Verdict
    review: str | None = None  # a judge asked for a human (on_disagreement, ...)


@dataclass
class Committed:
    """What a finished attempt chain leaves: the output to commit and how it was judged."""

    text: str
    sha256: str
    verdict: Verdict
    attempt: int
    key: str
    usage: Usage


class Steps:
    verifier_class: type[Verifier] = Verifier

    def __init__(self, run: Run, budget: Budget, reviews: Reviews, saga: Saga) -> None:
        self.run = run
        self.budget = budget
        self.reviews = reviews
        self.saga = saga
        self.verifier = self.verifier_class(run, budget)
        self.breaker = Breaker(run)
        # on_fail: a reviewer's rejection with a hint grants one attempt past the budget
        self._granted: set[str] = set()

    # ------------------------------------------------------------ one step of the DAG

    async def complete(self, step: StepSpec) -> None:
        """Run the step until a verified output is committed, or it is skipped; raises
        RunEnded when it cannot be."""
        run = self.run
        if step.when is not None and not await self._when(step):
            run.ledger.skipped.append(step.name)
            run.event(EventType.SKIPPED, step.name, message=f"when: {step.when} is false")
            return
        run.running[step.name] = 0
        run.current = step.name
        try:
            if step.map is not None:
                await self._map(step)
            elif step.pipeline_spec is not None:
                await self._child(step)
            else:
                done = await self.chain(step)
                self.commit(step, done)
        finally:
            run.running.pop(step.name, None)
            run.items.pop(step.name, None)
            if not evicting():  # not when a dropped run's coroutines are closed
                run.show()

    # ------------------------------------------------------------ the attempt chain

    async def chain(self, step: StepSpec, item: int | None = None, value: Any = None) -> Committed:
        """Attempt, verify, roll back and retry until a verified output (or RunEnded)."""
        run = self.run
        budget = run.spec.retries(step)
        label = step.name if item is None else f"{step.name}[{item}]"
        hint = run.ledger.hints.pop(label, None)
        error_class: ErrorClass | None = None
        if step.review is not None and step.review.when == "before":
            hint = await self._before(step, item, hint)
        attempt = 0
        verdict: Verdict | None = None
        while True:
            if attempt > budget and not self._extra(step.name):
                break
            if attempt and run.ending is not None and ending_patched():
                run.check()  # the run is ending (a sibling failed): no new attempt
            if attempt:
                run.ledger.counters.retries += 1
                run.event(EventType.RETRY, step.name, attempt, hint=hint, item=item)
            await self.breaker.gate(step.name)
            outcome = await self.attempt(step, attempt, hint, error_class, item, value)
            verdict = outcome.verdict
            key = run.key(step.name, attempt, item)
            if outcome.output is not None and verdict.passed:
                decided = await self._review_pass(step, attempt, item, outcome)
                if decided is not None:
                    self.breaker.success(step.name, attempt)
                    return decided
                verdict = outcome.verdict  # a reviewer rejected it: roll back below
            last = attempt >= budget
            if last and outcome.output is not None and self._asks(step, "on_fail"):
                decided = await self._review_fail(step, attempt, item, outcome)
                if decided is not None:
                    self.breaker.success(step.name, attempt)
                    return decided
                verdict = outcome.verdict
            await self.rollback(step, attempt, item, verdict, key)
            error_class = verdict.error_class or ErrorClass.STEP_ERROR
            hint = verdict.hint
            attempt += 1
        assert verdict is not None
        raise RunEnded(
            f"step {label!r} spent its retry budget ({budget} retries); last failure "
            f"{verdict.error_class}: {verdict.reason}",
            step.name,
        )

    async def attempt(
        self,
        step: StepSpec,
        attempt: int,
        hint: str | None,
        error_class: ErrorClass | None,
        item: int | None = None,
        value: Any = None,
    ) -> Outcome:
        """Step 1 and 2: run the step activity on committed inputs only, then verify."""
        run = self.run
        run.running[step.name] = attempt
        run.show()
        key = run.key(step.name, attempt, item)
        refs, context = run.inline_refs(step.name)
        ticket, cap = self.budget.reserve(step.name, "step", share=max(len(run.running), 1))
        run.event(
            EventType.STEP_STARTED,
            step.name,
            attempt,
            item=item,
            inputs=run.parent_refs(step.name),
            seen=run.seen(step.name),
            # A retry's hint is on its RETRY event; a first attempt's (a fork's, a
            # reviewer's) only here.
            hint=hint if attempt == 0 else None,
        )
        pending = Attempt(step.name, attempt, key, item)
        if step.compensation:
            run.open[key] = pending  # from now on the saga knows of its side effects
        policy = run.spec.policy
        suffix = f"-i{item}" if item is not None else ""
        try:
            raw = await workflow.execute_activity(
                step.activity,
                StepInput(
                    workflow_id=run.workflow_id,
                    pipeline=run.spec.name,
                    step=step.name,
                    goal=step.goal,
                    task=run.task,
                    params=step.params,
                    committed_refs=refs,
                    context=context,
                    attempt=attempt,
                    hint=hint,
                    error_class=error_class,
                    idempotency_key=key,
                    item=value,
                    item_index=item,
                    budget=cap,
                ),
                start_to_close_timeout=timedelta(seconds=step.timeout_s or policy.step_timeout_s),
                heartbeat_timeout=(
                    timedelta(seconds=step.heartbeat_timeout_s)
                    if step.heartbeat_timeout_s
                    else None
                ),
                retry_policy=retry_policy(policy.activity_retry),
                # A canceled run waits until the step really stopped, then compensates it:
                # nothing it does may land after the saga ran.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                task_queue=step.task_queue,
                activity_id=f"{step.name}{suffix}-{attempt}",
                summary=f"step {step.name} · attempt {attempt}"
                + (f" · item {item}" if item is not None else ""),
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                self.budget.release(ticket)
                raise
            spent = Usage.model_validate(error_details(err).get("usage") or {})
            self.budget.charge(ticket, spent, "step", step.name)
            return Outcome(None, self._step_error(step, attempt, item, err))
        try:
            output = StepOutput.model_validate(raw)
        except ValueError as exc:
            # A step that returns the wrong shape is a step error, not a stuck workflow task.
            self.budget.release(ticket)
            return Outcome(None, self._bad_output(step, attempt, item, exc))
        self.budget.charge(ticket, output.usage, "step", step.name)
        digest = sha256(output.text)
        pending.sha256 = digest
        run.texts[digest] = output.text
        run.check()  # canceled meanwhile: this attempt is the saga's now
        run.event(EventType.OUTPUT, step.name, attempt, item=item, sha256=digest)
        judged = await self.verifier.verify(step, output, attempt, item)
        run.ledger.counters.verdicts += 1
        run.ledger.counters.passed += judged.verdict.passed
        run.event(
            EventType.VERDICT,
            step.name,
            attempt,
            item=item,
            verdict=judged.verdict,
            inputs=run.parent_refs(step.name),
            seen=run.seen(step.name),
        )
        run.check()
        return Outcome(output, judged.verdict, judged.review)

    def _step_error(
        self, step: StepSpec, attempt: int, item: int | None, err: ActivityError
    ) -> Verdict:
        run = self.run
        message = error_message(err)
        app = application_error(err)
        if app is not None and app.type == BUDGET_EXCEEDED:
            raise self.budget.refused(step.name, message)
        if app is not None and app.non_retryable:
            run.event(EventType.STEP_ERROR, step.name, attempt, item=item, message=message)
            raise RunEnded(
                f"step {step.name!r} failed with a non-retryable error: {message}", step.name
            )
        verdict = Verdict(
            passed=False,
            error_class=ErrorClass.STEP_ERROR,
            reason=message,
            hint=hint_for(ErrorClass.STEP_ERROR, message),
            tier="L0",
            verifier="temporal",
        )
        run.ledger.counters.verdicts += 1
        run.event(
            EventType.STEP_ERROR, step.name, attempt, item=item, verdict=verdict, message=message
        )
        return verdict

    def _bad_output(
        self, step: StepSpec, attempt: int, item: int | None, exc: ValueError
    ) -> Verdict:
        first = str(exc).splitlines()
        where = first[1].strip() if len(first) > 1 else "output"
        why = first[2].strip() if len(first) > 2 else str(exc)[:200]
        message = (
            f"activity {step.activity!r} returned no valid StepOutput ({where}: {why}); "
            "return a string or StepOutput(text=...)"
        )
        verdict = Verdict(
            passed=False,
            error_class=ErrorClass.STEP_ERROR,
            reason=message,
            hint=hint_for(ErrorClass.STEP_ERROR, message),
            tier="L0",
            verifier="temporal",
        )
        self.run.ledger.counters.verdicts += 1
        self.run.event(
            EventType.STEP_ERROR, step.name, attempt, item=item, verdict=verdict, message=message
        )
        return verdict

    # ------------------------------------------------------------ commit and rollback

    def commit(self, step: StepSpec, done: Committed, children: list[Entry] = ()) -> Entry:  # type: ignore[assignment]
        """Step 3: append a checkpoint (seq in commit order) for a verified output."""
        run = self.run
        run.check()
        parents = [r.seq for r in run.parent_refs(step.name)]
        entry = Entry(
            seq=len(run.ledger.checkpoints) + 1,
            step=step.name,
            sha256=done.sha256,
            attempt=done.attempt,
            at=workflow.now(),
            key="" if done.key == run.key(step.name, done.attempt) else done.key,
            parents=parents,
            seen=run.seen(step.name),
            tier=done.verdict.tier,
            verifier=done.verdict.verifier,
            degraded=done.verdict.degraded,
            reviewer=done.verdict.reviewer,
            usage=done.usage,
            facts=self._facts(step, done.text),
            children=list(children),
        )
        run.add(entry)
        run.open.pop(done.key, None)
        run.event(
            EventType.COMMITTED,
            step.name,
            done.attempt,
            checkpoint_seq=entry.seq,
            sha256=entry.sha256,
            verdict=done.verdict if done.verdict.degraded else None,
            message="committed DEGRADED: no judge verdict" if done.verdict.degraded else "",
        )
        return entry

    def _facts(self, step: StepSpec, text: str) -> dict[str, Any] | None:
        """Extract now what later L1 checks of descendants need (the text is not kept)."""
        keys = self.run.graph.fact_keys(step.name)
        if keys is None:
            return None
        return extract_facts(step.name, text, keys).model_dump()

    async def rollback(
        self, step: StepSpec, attempt: int, item: int | None, verdict: Verdict, key: str
    ) -> None:
        """Step 4: discard the output, undo the attempt's side effects, count the failure."""
        run = self.run
        run.ledger.counters.rollbacks += 1
        run.index_rollback(step.name)
        last = run.ledger.checkpoints[-1].seq if run.ledger.checkpoints else 0
        run.event(
            EventType.ROLLED_BACK,
            step.name,
            attempt,
            item=item,
            verdict=verdict,
            checkpoint_seq=last,
            message=f"{verdict.error_class}: {verdict.reason}",
        )
        pending = run.open.get(key)
        if pending is not None:
            await self.saga.undo_attempt(pending)
        self.breaker.failure(step.name, attempt)

    # ------------------------------------------------------------ review hooks

    def _asks(self, step: StepSpec, when: str) -> bool:
        return step.review is not None and step.review.when == when

    def _extra(self, step: str) -> bool:
        """One more attempt past the budget: a reviewer rejected an on_fail review with a hint."""
        if step in self._granted:
            self._granted.discard(step)
            return True
        return False

    async def _before(self, step: StepSpec, item: int | None, hint: str | None) -> str | None:
        waiting = await self.reviews.ask(step, 0, "before", item)
        hints = [*([hint] if hint else []), *waiting.hints]
        if waiting.kind == "reject":
            raise RunEnded(f"step {step.name!r} was rejected before it ran", step.name)
        return " ".join(hints) or None

    async def _review_pass(
        self, step: StepSpec, attempt: int, item: int | None, outcome: Outcome
    ) -> Committed | None:
        """A verified output: commit it, unless the step asks a human first."""
        assert outcome.output is not None
        run = self.run
        why = "always" if self._asks(step, "always") else None
        if outcome.review and self._asks(step, outcome.review):
            why = outcome.review
        key = run.key(step.name, attempt, item)
        if why is None:
            return self._done(outcome.output, outcome.verdict, attempt, key)
        waiting = await self.reviews.ask(
            step, attempt, why, item, outcome.output.text, outcome.verdict
        )
        return await self._apply(step, attempt, item, outcome, waiting, human_only=why != "always")

    async def _review_fail(
        self, step: StepSpec, attempt: int, item: int | None, outcome: Outcome
    ) -> Committed | None:
        assert outcome.output is not None
        waiting = await self.reviews.ask(
            step, attempt, "on_fail", item, outcome.output.text, outcome.verdict
        )
        done = await self._apply(step, attempt, item, outcome, waiting, human_only=True)
        if done is None and waiting.decision is not None and waiting.decision.hint:
            self._granted.add(step.name)  # rejected with a hint: one more attempt
        return done

    async def _apply(
        self,
        step: StepSpec,
        attempt: int,
        item: int | None,
        outcome: Outcome,
        waiting: Any,
        human_only: bool,
    ) -> Committed | None:
        assert outcome.output is not None
        run = self.run
        key = run.key(step.name, attempt, item)
        decision = waiting.decision
        by = (waiting.outcome.by if waiting.outcome else None) or "unknown"
        if waiting.kind == "approve":
            verdict = outcome.verdict.model_copy(
                update={
                    "passed": True,
                    "reviewer": by,
                    **({"tier": "HUMAN", "verifier": f"human:{by}"} if human_only else {}),
                }
            )
            return self._done(outcome.output, verdict, attempt, key)
        if waiting.kind == "edit" and decision is not None and decision.output is not None:
            text = decision.output
            digest = await self.put(text)
            verdict = Verdict(
                passed=True,
                tier="HUMAN",
                verifier=f"human:{by}",
                reviewer=by,
                reason=f"edited by {by}" + (f": {decision.note}" if decision.note else ""),
            )
            return Committed(text, digest, verdict, attempt, key, outcome.output.usage)
        # Rejected: the normal retry path, with the reviewer's class and hint.
        cls = (decision.error_class if decision else None) or ErrorClass.INCOMPLETE
        hint = hint_for(cls, decision.hint if decision else None)
        outcome.verdict = Verdict(
            passed=False,
            error_class=cls,
            hint=hint,
            reason=f"rejected by {by}"
            + (f": {decision.hint}" if decision and decision.hint else ""),
            tier="HUMAN",
            verifier=f"human:{by}",
            reviewer=by,
        )
        return None

    def _done(self, output: StepOutput, verdict: Verdict, attempt: int, key: str) -> Committed:
        return Committed(output.text, sha256(output.text), verdict, attempt, key, output.usage)

    async def put(self, text: str) -> str:
        """Put a text the workflow composed (map results, an edit) in the output store."""
        try:
            digest = await workflow.execute_local_activity(
                PUT_ACTIVITY,
                text,
                result_type=str,
                start_to_close_timeout=LOCAL_TIMEOUT,
                summary="store output",
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            raise RunEnded(f"could not store an output: {error_message(err)}") from None
        self.run.texts[digest] = text
        return digest

    # ------------------------------------------------------------ when, map, sub-pipelines

    async def _when(self, step: StepSpec) -> bool:
        run = self.run
        named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_-]*", step.when or ""))
        refs = {
            n: e.sha256
            for n in run.graph.ancestors(step.name)
            if n in named and (e := run.entries.get(n)) is not None
        }
        try:
            return bool(
                await workflow.execute_local_activity(
                    WHEN_ACTIVITY,
                    WhenInput(
                        expression=step.when or "",
                        outputs={
                            n: refs.get(n) for n in run.graph.ancestors(step.name) if n in named
                        },
                        inputs=run.task.inputs,
                    ),
                    result_type=bool,
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    summary=f"when {step.name}",
                )
            )
        except FailureError as err:  # a local activity raises its failure itself
            if is_cancelled_exception(err):
                raise
            raise RunEnded(
                f"step {step.name!r}: `when` could not be evaluated: {error_message(err)}",
                step.name,
            ) from None

    async def _map(self, step: StepSpec) -> None:
        assert step.map is not None
        run = self.run
        values = await self._list(step)
        if values is None:
            return
        total = len(values)
        run.items[step.name] = (0, total)
        limit = asyncio.Semaphore(step.map.max_concurrency)
        done: dict[int, Committed] = {}

        async def one(index: int) -> None:
            async with limit:
                run.check()
                full = history_full(run.spec.policy, step.name)
                if full is not None:
                    raise RunEnded(full, step.name)
                try:
                    done[index] = await self.chain(step, index, values[index])
                except RunEnded as exc:
                    # Before the slot is freed: the item waiting for it must not start.
                    if run.ending is None and ending_patched():
                        run.ending = exc.reason
                    raise
                run.items[step.name] = (len(done), total)
                run.show()

        await _all([one(i) for i in range(total)], run)
        results = [done[i] for i in range(total)]
        as_json = step.format == "json"
        combined = json.dumps(
            [_json_or_text(r.text) if as_json else r.text for r in results], ensure_ascii=False
        )
        digest = await self.put(combined)
        usage = sum((r.usage for r in results), Usage())
        degraded = any(r.verdict.degraded for r in results)
        verdict = Verdict(
            passed=True,
            tier=max((r.verdict.tier for r in results), default="L1"),
            verifier=f"map({total} items)",
            degraded=degraded,
            reason=f"{total} items verified" + (" (some degraded)" if degraded else ""),
        )
        items = [
            Entry(
                seq=i,
                step=step.name,
                sha256=r.sha256,
                attempt=r.attempt,
                at=workflow.now(),
                key="",  # derivable: run.key(step, attempt, item)
                tier=r.verdict.tier,
                verifier=r.verdict.verifier,
                degraded=r.verdict.degraded,
                usage=r.usage,
            )
            for i, r in enumerate(results)
        ]
        key = run.key(step.name, max((r.attempt for r in results), default=0))
        self.commit(step, Committed(combined, digest, verdict, 0, key, usage), children=items)
        for r in results:  # committed with the step: the saga undoes them from its entry now
            run.open.pop(r.key, None)

    async def _list(self, step: StepSpec) -> list[Any] | None:
        """The map's elements: a committed step's output or a task input, as a JSON list. Not
        a list: a FORMAT verdict on the step (and the run ends, nothing to retry)."""
        assert step.map is not None
        run = self.run
        source = step.map.over
        entry = run.entries.get(source)
        try:
            loaded = await workflow.execute_local_activity(
                LIST_ACTIVITY,
                ListInput(
                    sha256=entry.sha256 if entry is not None else None,
                    text=run.task.inputs.get(source) if entry is None else None,
                    source=source,
                ),
                start_to_close_timeout=LOCAL_TIMEOUT,
                summary=f"items of {step.name} from {source}",
            )
        except FailureError as err:  # a local activity raises its failure itself
            if is_cancelled_exception(err):
                raise
            verdict = Verdict(
                passed=False,
                error_class=ErrorClass.FORMAT,
                reason=f"map over {source!r}: {error_message(err)}",
                hint=hint_for(ErrorClass.FORMAT),
                tier="L1",
                verifier="map",
            )
            run.ledger.counters.verdicts += 1
            run.event(EventType.VERDICT, step.name, 0, verdict=verdict)
            raise RunEnded(verdict.reason, step.name) from None
        return list(loaded)

    async def _child(self, step: StepSpec) -> None:
        """A sub-pipeline: its own verification, breaker and compensations, as a child run."""
        assert step.pipeline_spec is not None
        run = self.run
        budget = run.spec.retries(step)
        for attempt in range(budget + 1):
            if attempt and run.ending is not None and ending_patched():
                run.check()  # the run is ending (a sibling failed): no new attempt
            if attempt:
                run.ledger.counters.retries += 1
                run.event(EventType.RETRY, step.name, attempt)
            key = run.key(step.name, attempt)
            child_id = f"{run.workflow_id}.{step.name}.{attempt}"
            run.event(
                EventType.STEP_STARTED,
                step.name,
                attempt,
                inputs=run.parent_refs(step.name),
                message=f"sub-pipeline {step.pipeline_spec.name} as child run {child_id}",
            )
            try:
                result: RunResult = await workflow.execute_child_workflow(
                    "VerifiedPipeline",
                    RunInput(
                        spec=step.pipeline_spec,
                        task=run.task,
                        search_attributes=run.inp.search_attributes,
                        parent=ParentRef(workflow_id=run.workflow_id, step=step.name, key=key),
                    ),
                    id=child_id,
                    result_type=RunResult,
                    task_queue=workflow.info().task_queue,
                    static_summary=f"{step.pipeline_spec.name}: sub-pipeline of {step.name}",
                )
            except ChildWorkflowError as err:
                if is_cancelled_exception(err):
                    raise
                raise RunEnded(
                    f"sub-pipeline step {step.name!r} ({child_id}) ended without success: "
                    f"{error_message(err)}",
                    step.name,
                ) from None
            text = result.output or ""
            digest = result.output_sha256 or sha256(text)
            run.texts[digest] = text
            children = [
                Entry(
                    seq=c.seq,
                    step=c.step,
                    sha256=c.sha256,
                    attempt=c.attempt,
                    at=c.at,
                    key=c.key or "",
                    parents=c.parents,
                    usage=c.usage,
                )
                for c in result.checkpoints
            ]
            run.ledger.usage += result.usage
            output = StepOutput(text=text, usage=Usage())
            judged = await self.verifier.verify(step, output, attempt)
            run.ledger.counters.verdicts += 1
            run.ledger.counters.passed += judged.verdict.passed
            run.event(EventType.VERDICT, step.name, attempt, verdict=judged.verdict)
            if judged.verdict.passed:
                self.commit(
                    step,
                    Committed(text, digest, judged.verdict, attempt, key, result.usage),
                    children=children,
                )
                return
            # The parent's own checks failed the child's output: undo the child, try again.
            run.ledger.counters.rollbacks += 1
            run.event(
                EventType.ROLLED_BACK,
                step.name,
                attempt,
                verdict=judged.verdict,
                message=f"{judged.verdict.error_class}: {judged.verdict.reason}",
            )
            await self.saga.undo_child(step, children)
            self.breaker.failure(step.name, attempt)
        raise RunEnded(f"sub-pipeline step {step.name!r} spent its retry budget", step.name)


class Breaker:
    """Step 5: after `failure_threshold` consecutive failures the breaker opens; the run
    waits out the cooldown durably (status breaker_open), then lets one trial through.
    Parallel branches share it: while it is open or half-open they wait at the gate."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cooling = False
        self.trial = False

    @property
    def state(self) -> BreakerState:
        return self.run.ledger.breaker

    async def gate(self, step: str) -> None:
        run = self.run
        while True:
            b = self.state
            if b.state == "closed":
                return
            if b.state == "half_open":
                if not self.trial:
                    self.trial = True
                    return
                await workflow.wait_condition(lambda: self.state.state != "half_open")
                run.check()
                continue
            if self.cooling:
                await workflow.wait_condition(lambda: self.state.state != "open")
                run.check()
                continue
            self.cooling = True
            run.set_status(RunStatus.BREAKER_OPEN)
            await workflow.sleep(timedelta(seconds=run.spec.policy.breaker.cooldown_s))
            self.cooling = False
            run.check()
            b.state, self.trial = "half_open", False
            run.set_status(RunStatus.RUNNING)
            run.event(EventType.BREAKER_HALF_OPEN, step, message="cooldown over: one trial")

    def success(self, step: str, attempt: int) -> None:
        b = self.state
        if b.state != "closed":
            self.run.event(EventType.BREAKER_CLOSED, step, attempt, message="trial passed")
        self.run.ledger.breaker = BreakerState(trips=b.trips)
        self.trial = False

    def failure(self, step: str, attempt: int) -> None:
        b = self.state
        policy = self.run.spec.policy.breaker
        if b.state == "half_open":
            raise RunEnded(f"circuit breaker: the half-open trial of step {step!r} failed", step)
        b.consecutive_failures += 1
        if b.consecutive_failures < policy.failure_threshold or b.state == "open":
            return
        b.state, b.trips = "open", b.trips + 1
        self.run.event(
            EventType.BREAKER_OPEN,
            step,
            attempt,
            message=f"{b.consecutive_failures} consecutive failures (trip {b.trips})",
        )
        if b.trips > policy.max_trips:
            raise RunEnded(
                f"circuit breaker tripped {b.trips} times (max_trips {policy.max_trips})", step
            )


async def _all(coros: list[Any], run: Run) -> None:
    """Run branches together; the first failure cancels the others and waits for them to
    stop (their attempts cut short stay open for the saga), then propagates."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        if evicting():
            raise  # the worker drops this run: its branches are dropped with it
        if run.ending is None and ending_patched():
            # The run is ending now, not when the error reaches the DAG: a sibling whose
            # cancel is lost (its activity finished first) must not verify or retry.
            run.ending = getattr(exc, "reason", None) or "run canceled"
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks) if tasks else None
        raise


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
