"""The VerifiedPipeline workflow: nothing is committed without agreement.

For each step whose needs are committed (independent steps in parallel):
1. run the step activity on the committed outputs of its ancestors   (attempts.py)
2. verify: L1 rules, then a judge or a quorum by criticality, then a
   human where the step asks; no verdict is not a pass                (verify.py, reviews.py)
3. pass -> commit a checkpoint                                       (attempts.py)
4. fail -> undo the attempt's side effects, retry with a typed hint  (attempts.py, saga.py)
5. a circuit breaker stops cascades                                  (attempts.py)
6. a run that cannot finish stops its branches and compensates every
   committed step in reverse commit order                            (dag.py, saga.py)

Deterministic code only: time from workflow.now(), no I/O. Activities are called by
name, so user steps plug in without touching this file. Runs that started before the
`raftline-ledger` patch replay the previous commit loop (legacy.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from raftline.ledger import Entry
    from raftline.models import (
        Checkpoint,
        CommittedRef,
        CompensationAction,
        EventType,
        PendingReview,
        ReviewDecision,
        ReviewOutcome,
        RunInput,
        RunResult,
        RunStatus,
        StatusView,
        StepOutput,
        TraceEvent,
        TraceSlice,
        Usage,
        VerifyInput,
    )
    from raftline.verifiers.rules import check_rules
    from raftline.workflows.attempts import Committed, Steps
    from raftline.workflows.budget import Budget
    from raftline.workflows.dag import Dag
    from raftline.workflows.errors import RunEnded, evicting, shielded
    from raftline.workflows.legacy import Generation2
    from raftline.workflows.reviews import Reviews
    from raftline.workflows.run import Run
    from raftline.workflows.saga import Saga

WORKFLOW_NAME = "VerifiedPipeline"
# Runs that started before raftline 0.2 have no marker of this patch: they replay the
# generation-2 commit loop (legacy.py). Since it: the ledger, the DAG, fail-closed
# verification, compensation of rolled-back attempts, reviews and forks. Retire with
# legacy.py once no run older than 0.2 can be in flight.
LEDGER_PATCH = "raftline-ledger"


@workflow.defn(name=WORKFLOW_NAME)
class VerifiedPipeline:
    # The parts of the process, as classes a test can swap for a changed version (the
    # replay tests show an unguarded change to either loop failing the saved histories).
    generation2: type[Generation2] = Generation2
    steps: type[Steps] = Steps

    def __init__(self) -> None:
        self._gen2: Generation2 | None = None
        self._run: Run | None = None
        self._reviews: Reviews | None = None
        self._saga: Saga | None = None

    # ------------------------------------------------------------ the process

    @workflow.run
    async def run(self, inp: RunInput) -> RunResult:
        if not workflow.patched(LEDGER_PATCH):
            self._gen2 = self.generation2()
            return await self._gen2.run(inp)
        run = self._run = Run(inp)
        budget = Budget(run)
        saga = self._saga = Saga(run)
        reviews = self._reviews = Reviews(run)
        steps = self.steps(run, budget, reviews, saga)
        run.index_start()
        try:
            if not run.ledger.runs:  # the first run of the chain (not a continuation)
                run.event(EventType.RUN_STARTED, message=f"{len(run.spec.steps)} steps")
                await self._fork(run, steps)
            await Dag(run, steps).run_to_end()
        except RunEnded as end:
            run.failed_step = end.step
            return await self._unwind(end.reason, end.step, canceled=False)
        except asyncio.CancelledError:
            if evicting():
                raise  # the worker drops this run from its cache: it goes on elsewhere
            return await self._unwind("run canceled", run.current, canceled=True)
        return self._finish(RunStatus.COMPLETED, EventType.RUN_COMPLETED, "all steps verified")

    async def _unwind(self, reason: str, step: str | None, canceled: bool) -> RunResult:
        """Step 6: compensate what the run did; an operator settles failed compensations."""
        run, saga = self._run, self._saga
        assert run is not None and saga is not None
        run.ending = reason
        undone = await saga.unwind()
        if not undone:
            await self._attention(reason)
        compensated = bool(run.ledger.compensations) and not saga.failed()
        if canceled:
            self._finish(RunStatus.CANCELED, EventType.RUN_CANCELED, reason, step)
            raise asyncio.CancelledError()
        status = RunStatus.COMPENSATED if compensated else RunStatus.FAILED
        result = self._finish(status, EventType.RUN_FAILED, reason, step)
        raise ApplicationError(
            f"{status.value}: {reason}", result, type="PipelineFailed", non_retryable=True
        )

    async def _attention(self, reason: str) -> None:
        """A compensation failed for good: keep the run open until an operator acts (the
        `compensations` update: retry, or resolve with a note) or the timeout closes it."""
        run, saga = self._run, self._saga
        assert run is not None and saga is not None
        timeout = run.spec.policy.attention_timeout_s
        failed = saga.failed()
        run.set_status(RunStatus.NEEDS_ATTENTION)
        run.event(
            EventType.ATTENTION_NEEDED,
            failed[0].step if failed else None,
            message=f"{len(failed)} compensation(s) failed ({reason}): retry them with "
            f"`raftline compensations {run.workflow_id} --retry`, or mark them handled with "
            f"--resolve NOTE; the run closes as failed in {timeout:g} s otherwise",
        )
        try:
            await workflow.wait_condition(lambda: not saga.failed(), timeout=timeout)
        except TimeoutError:
            run.event(EventType.ATTENTION_RESOLVED, message="attention timeout: closed as failed")
        except asyncio.CancelledError:
            if evicting():
                raise
            run.event(EventType.ATTENTION_RESOLVED, message="canceled while awaiting an operator")
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _finish(
        self, status: RunStatus, type_: EventType, reason: str, step: str | None = None
    ) -> RunResult:
        run = self._run
        assert run is not None
        run.set_status(status)
        run.event(type_, step, message=reason)
        return run.result(None if status is RunStatus.COMPLETED else reason, step)

    async def _fork(self, run: Run, steps: Steps) -> None:
        """A fork starts from another run's checkpoints: those it reuses count as committed
        (they cost nothing here); its from-step runs with the fork's hint, or commits the
        fork's output (a human's edit)."""
        fork = run.inp.fork
        if fork is None:
            return
        renumber: dict[int, int] = {}
        for raw in fork.reused:
            source = Entry.model_validate(raw)
            seq = len(run.ledger.checkpoints) + 1
            renumber[source.seq] = seq
            entry = source.model_copy(
                update={
                    "seq": seq,
                    "parents": [renumber[p] for p in source.parents if p in renumber],
                    "reused_from": f"{fork.source_workflow_id}#{source.seq}",
                    "usage": Usage(),  # paid for by the source run
                }
            )
            run.add(entry)
            run.event(
                EventType.REUSED,
                entry.step,
                entry.attempt,
                checkpoint_seq=seq,
                sha256=entry.sha256,
                message=f"reused checkpoint #{source.seq} of {fork.source_workflow_id}",
            )
        run.ledger.fork_of = fork.source_workflow_id
        if fork.hint:
            run.ledger.hints[fork.from_step] = fork.hint
        if fork.output is not None:
            step = run.step(fork.from_step)
            verdict = check_rules(
                VerifyInput(
                    workflow_id=run.workflow_id,
                    step=step,
                    task=run.task,
                    output=StepOutput(text=fork.output),
                ),
                run.facts(step.name),
            )
            if not verdict.passed:
                raise RunEnded(
                    f"the fork's output for step {step.name!r} fails its L1 rules: "
                    f"{verdict.error_class}: {verdict.reason}",
                    step.name,
                )
            by = fork.by or "unknown"
            digest = await steps.put(fork.output)
            steps.commit(
                step,
                Committed(
                    fork.output,
                    digest,
                    verdict.model_copy(
                        update={"tier": "HUMAN", "verifier": f"human:{by}", "reviewer": by}
                    ),
                    0,
                    run.key(step.name, 0),
                    Usage(),
                ),
            )

    # ------------------------------------------------------------ queries

    @workflow.query
    def status(self) -> StatusView:
        return self.snapshot()

    def snapshot(self) -> StatusView:
        """The status query's answer; also callable on an instance rebuilt by replaying the
        run's history outside a worker (raftline status with no worker running)."""
        if self._gen2 is not None:
            return self._gen2.status()
        assert self._run is not None and self._reviews is not None
        return self._run.status_view(self._reviews.views())

    @workflow.query
    def checkpoints(self) -> list[Checkpoint]:
        if self._gen2 is not None:
            return self._gen2.checkpoints()
        assert self._run is not None
        run = self._run
        return [
            e.checkpoint(run.texts.get(e.sha256), run.key_of(e)) for e in run.ledger.checkpoints
        ]

    @workflow.query
    def trace(self, after: int = 0) -> list[TraceEvent]:
        """This run's events with seq > after (a follower resumes where it stopped). Earlier
        runs of a continue-as-new chain: `trace_archive`."""
        if self._gen2 is not None:
            return self._gen2.trace(after)
        assert self._run is not None
        return [e for e in self._run.events if e.seq > after]

    @workflow.query
    def trace_archive(self) -> list[TraceSlice]:
        if self._run is None:
            return []
        return self._run.ledger.trace_archive

    @workflow.query
    def result(self) -> RunResult:
        if self._gen2 is not None:
            return self._gen2.result()
        assert self._run is not None
        run = self._run
        error = run.ending if run.ledger.status is not RunStatus.COMPLETED else None
        return run.result(error, run.failed_step)

    @workflow.query
    def context(self, step: str) -> list[CommittedRef]:
        """The committed checkpoints a step sees (for workers: too many to inline)."""
        assert self._run is not None
        return self._run.refs(step)

    @workflow.query
    def output(self, sha256: str) -> str | None:
        """An output this run holds in memory (a worker or client without the store)."""
        return self._run.texts.get(sha256) if self._run is not None else None

    @workflow.query
    def reviews(self) -> list[PendingReview]:
        return self._reviews.views() if self._reviews is not None else []

    # ------------------------------------------------------------ updates: human review

    @workflow.update
    def approve(self, decision: ReviewDecision) -> ReviewOutcome:
        return self._decide("approve", decision)

    @approve.validator
    def _validate_approve(self, decision: ReviewDecision) -> None:
        self._check_review("approve", decision)

    @workflow.update
    def reject(self, decision: ReviewDecision) -> ReviewOutcome:
        return self._decide("reject", decision)

    @reject.validator
    def _validate_reject(self, decision: ReviewDecision) -> None:
        self._check_review("reject", decision)

    @workflow.update
    def edit(self, decision: ReviewDecision) -> ReviewOutcome:
        return self._decide("edit", decision)

    @edit.validator
    def _validate_edit(self, decision: ReviewDecision) -> None:
        self._check_review("edit", decision)

    def _check_review(self, kind: Any, decision: ReviewDecision) -> None:
        if self._reviews is None:
            raise ValueError("this run has no reviews (it started before raftline 0.2)")
        self._reviews.validate(kind, decision)

    def _decide(self, kind: Any, decision: ReviewDecision) -> ReviewOutcome:
        assert self._reviews is not None
        return self._reviews.decide(kind, decision)

    # ------------------------------------------------------------ updates: operators

    @workflow.update
    async def compensations(self, action: CompensationAction) -> StatusView:
        """needs_attention: retry the failed compensations, or mark them handled."""
        assert self._saga is not None
        if action.retry:
            await shielded(self._saga.retry_failed(), reraise=False)
        elif action.resolve:
            self._saga.resolve(action.resolve, action.by or "unknown")
        return self.snapshot()

    @compensations.validator
    def _validate_compensations(self, action: CompensationAction) -> None:
        run = self._run
        if run is None or self._saga is None:
            raise ValueError("this run has no operator actions (it started before raftline 0.2)")
        if run.ledger.status is not RunStatus.NEEDS_ATTENTION or not self._saga.failed():
            raise ValueError(
                f"run {run.workflow_id} has no failed compensation to act on "
                f"(status {run.ledger.status.value})"
            )
        if action.retry == bool(action.resolve):
            raise ValueError("give either retry or resolve (with a note)")
