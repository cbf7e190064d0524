"""The generation-2 commit loop, frozen: runs started before raftline 0.2 replay it.

VerifiedPipeline (workflows/pipeline.py) hands a run to this class when the run's history
has no `raftline-ledger` patch marker, i.e. it started under the previous code. Nothing
here may change what a run decides or the commands it issues: a change would break the
replay of runs in flight (tests/histories/1-local-rules and 2-lean-commit pin it). The
helpers it used from other modules (judge routing, quorum counting, the L1 rules) are
frozen copies below or in verifiers/rules_v1.py for the same reason.

One deliberate change rides on its own patch: a judge that cannot give a verdict no
longer passes the step (it failed open before); such a run now ends and compensates.
Retire this module once no run older than 0.2 can be in flight (README, Replay).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from raftline.models import (
        ActivityRetry,
        BreakerState,
        CarriedState,
        Checkpoint,
        CommittedRef,
        CompensationInput,
        CompensationOutcome,
        Criticality,
        ErrorClass,
        EventType,
        JudgeSpec,
        PipelineSpec,
        RunInput,
        RunResult,
        RunStatus,
        StatusView,
        StepInput,
        StepOutput,
        StepSpec,
        Task,
        TraceEvent,
        Usage,
        Verdict,
        VerifierSpec,
        VerifyInput,
    )
    from raftline.settings import RAFT_PIPELINE, RAFT_ROLLBACKS, RAFT_STATUS, RAFT_STEP
    from raftline.verifiers.rules_v1 import check_rules
    from raftline.workflows.telemetry import count, decision_record, rules_span

RULES_ACTIVITY = "raftline.rules"
# Runs that started before this patch replay their old commit loop: L1 rules as a local
# activity and a RaftStep upsert on every attempt. Since it, the rules run in the
# workflow and RaftStep is written only with status changes and rollbacks.
LEAN_PATCH = "raftline-lean-commit"
# Runs in flight from before 0.2 used to pass a step whose judge was down (degraded):
# since this patch they end and compensate instead. Retire with this module.
JUDGE_FAIL_CLOSED_PATCH = "raftline-judge-fail-closed"


class RunEnded(Exception):
    """The run cannot finish: compensate what was committed and report why."""

    def __init__(self, reason: str, step: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.step = step


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def retry_policy(r: ActivityRetry) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff,
        maximum_interval=timedelta(seconds=r.max_interval_s),
        maximum_attempts=r.max_attempts,
    )


def error_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) and err.cause else err
    return str(cause) or type(cause).__name__


class Generation2:
    """The previous VerifiedPipeline, unchanged but for the decorators (the new class
    registers the run, queries and name, and delegates here)."""

    def __init__(self) -> None:
        self._status = RunStatus.RUNNING
        self._step: str | None = None
        self._attempt_no = 0
        self._checkpoints: list[Checkpoint] = []
        self._trace: list[TraceEvent] = []
        self._breaker = BreakerState()
        self._usage = Usage()
        # Usage per kind of call ("step", "judge"), to estimate the next call of that kind.
        self._kind_usage: dict[str, Usage] = {}
        self._kind_calls: dict[str, int] = {}
        self._rollbacks = 0
        self._retries = 0
        self._verdicts = 0
        self._compensations: list[CompensationOutcome] = []
        self._inp: RunInput | None = None
        self._wid = ""
        self._lean = False

    # ------------------------------------------------------------ the process

    async def run(self, inp: RunInput) -> RunResult:
        self._inp = inp
        self._wid = workflow.info().workflow_id
        self._lean = workflow.patched(LEAN_PATCH)
        if inp.carry is not None:
            self._resume(inp.carry)
        if not (self._lean and self._started_indexed()):
            self._set_status(RunStatus.RUNNING)
        if inp.carry is None:
            self._event(EventType.RUN_STARTED, message=f"{len(inp.spec.steps)} steps")
        first = inp.carry.next_step if inp.carry is not None else 0
        try:
            for index, step in enumerate(inp.spec.steps[first:], first):
                await self._complete_step(step)
                self._continue_as_new_if_due(index + 1, index + 1 - first)
        except RunEnded as end:
            await self._compensate()
            compensated = self._compensations and all(c.ok for c in self._compensations)
            status = RunStatus.COMPENSATED if compensated else RunStatus.FAILED
            result = self._end(status, EventType.RUN_FAILED, end.reason, end.step)
            raise ApplicationError(
                f"{status.value}: {end.reason}",
                result,
                type="PipelineFailed",
                non_retryable=True,
            ) from None
        except (asyncio.CancelledError, ActivityError) as err:
            # A cancel reaches us as CancelledError, or wrapped by the activity it cut short.
            if not is_cancelled_exception(err):
                raise
            await self._compensate()
            self._end(RunStatus.CANCELED, EventType.RUN_CANCELED, "run canceled", self._step)
            raise
        return self._end(RunStatus.COMPLETED, EventType.RUN_COMPLETED, "all steps verified")

    # ------------------------------------------------------------ continue-as-new

    def _continue_as_new_if_due(self, next_step: int, committed_here: int) -> None:
        """Hand the log to a fresh run when the history grows long; it resumes at next_step.

        Due after policy.continue_as_new_after_steps steps committed in this run, or when
        Temporal suggests it (history near its event or size limit).
        """
        if next_step >= len(self._spec.steps):
            return
        limit = self._spec.policy.continue_as_new_after_steps
        due = (limit is not None and committed_here >= limit) or (
            workflow.info().is_continue_as_new_suggested()
        )
        # patched: a run that started before this code existed replays as it ran.
        if not due or not workflow.patched("raftline-continue-as-new"):
            return
        assert self._inp is not None
        runs = (self._inp.carry.runs if self._inp.carry is not None else 0) + 1
        workflow.logger.info(
            "continue_as_new",
            extra={"raftline": {"event": "continue_as_new", "next_step": next_step, "runs": runs}},
        )
        workflow.continue_as_new(
            self._inp.model_copy(
                update={
                    "carry": CarriedState(
                        next_step=next_step,
                        runs=runs,
                        checkpoints=self._checkpoints,
                        trace=self._trace,
                        breaker=self._breaker,
                        usage=self._usage,
                        kind_usage=self._kind_usage,
                        kind_calls=self._kind_calls,
                        rollbacks=self._rollbacks,
                        retries=self._retries,
                        verdicts=self._verdicts,
                    )
                }
            )
        )

    def _resume(self, carry: CarriedState) -> None:
        self._checkpoints = list(carry.checkpoints)
        self._trace = list(carry.trace)
        self._breaker = carry.breaker
        self._usage = carry.usage
        self._kind_usage, self._kind_calls = dict(carry.kind_usage), dict(carry.kind_calls)
        self._rollbacks = carry.rollbacks
        self._retries, self._verdicts = carry.retries, carry.verdicts

    async def _complete_step(self, step: StepSpec) -> None:
        """Attempt the step until a verified output is committed or its budget is spent."""
        spec = self._spec
        budget = spec.retries(step)
        hint: str | None = None
        error_class: ErrorClass | None = None
        for attempt in range(budget + 1):
            if attempt:
                self._retries += 1
                self._event(EventType.RETRY, step.name, attempt, hint=hint)
            await self._breaker_gate(step.name)
            output, verdict = await self._attempt(step, attempt, hint, error_class)
            if output is not None and verdict.passed:
                self._commit(step, output, verdict, attempt)
                return
            self._rollback(step, attempt, verdict)
            error_class = verdict.error_class or ErrorClass.STEP_ERROR
            hint = verdict.hint
        raise RunEnded(
            f"step {step.name!r} spent its retry budget ({budget} retries); "
            f"last failure {error_class}: {verdict.reason}",
            step.name,
        )

    async def _attempt(
        self, step: StepSpec, attempt: int, hint: str | None, error_class: ErrorClass | None
    ) -> tuple[StepOutput | None, Verdict]:
        self._step, self._attempt_no = step.name, attempt
        # The live step is in the UI's "current details" (no history event, no index
        # write); RaftStep in the index follows status changes and rollbacks.
        workflow.set_current_details(self._details())
        if not self._lean:
            self._upsert(RAFT_STEP.value_set(step.name))
        refs = self._refs()
        self._check_budget(step.name, "step")
        self._event(EventType.STEP_STARTED, step.name, attempt, inputs=refs)
        policy = self._spec.policy
        try:
            output = await workflow.execute_activity(
                step.activity,
                StepInput(
                    workflow_id=workflow.info().workflow_id,
                    pipeline=self._spec.name,
                    step=step.name,
                    goal=step.goal,
                    task=self._task,
                    params=step.params,
                    committed=self._committed(),
                    committed_refs=refs,
                    attempt=attempt,
                    hint=hint,
                    error_class=error_class,
                    idempotency_key=f"{workflow.info().workflow_id}/{step.name}/{attempt}",
                ),
                result_type=StepOutput,
                start_to_close_timeout=timedelta(seconds=step.timeout_s or policy.step_timeout_s),
                heartbeat_timeout=(
                    timedelta(seconds=step.heartbeat_timeout_s)
                    if step.heartbeat_timeout_s
                    else None
                ),
                retry_policy=retry_policy(policy.activity_retry),
                task_queue=step.task_queue,
                activity_id=f"{step.name}-{attempt}",
                summary=f"step {step.name} · attempt {attempt}",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            return None, self._step_error(step, attempt, err)
        self._add_usage(output.usage, "step")
        self._event(EventType.OUTPUT, step.name, attempt, sha256=sha256(output.text))
        verdict = await self._verify(step, output, attempt, refs)
        self._verdicts += 1
        self._event(EventType.VERDICT, step.name, attempt, verdict=verdict, inputs=refs)
        return output, verdict

    def _step_error(self, step: StepSpec, attempt: int, err: ActivityError) -> Verdict:
        message = error_message(err)
        if isinstance(err.cause, ApplicationError) and err.cause.non_retryable:
            self._event(EventType.STEP_ERROR, step.name, attempt, message=message)
            raise RunEnded(
                f"step {step.name!r} failed with a non-retryable error: {message}", step.name
            )
        verdict = Verdict(
            passed=False,
            error_class=ErrorClass.STEP_ERROR,
            reason=message,
            hint=f"The previous attempt failed with an error: {message}",
            tier="L0",
            verifier="temporal",
        )
        self._verdicts += 1
        self._event(EventType.STEP_ERROR, step.name, attempt, verdict=verdict, message=message)
        return verdict

    # ------------------------------------------------------------ verification

    async def _verify(
        self, step: StepSpec, output: StepOutput, attempt: int, refs: list[CommittedRef]
    ) -> Verdict:
        """L1 rules always; then by criticality one judge (L2/L3) or a quorum."""
        base = VerifyInput(
            workflow_id=workflow.info().workflow_id,
            step=step,
            task=self._task,
            output=output,
            committed=self._committed(),
            committed_refs=refs,
            attempt=attempt,
        )
        rules = await self._rules(base)
        plan = plan_judges(self._spec.criticality(step), self._spec.verifier(step))
        if not rules.passed or not plan.judges:
            return rules
        if plan.is_quorum:
            verdicts = await asyncio.gather(
                *(self._judge(step, base, call, i) for i, call in enumerate(plan.judges))
            )
            return combine_quorum(verdicts, plan.require)
        call = plan.judges[0]
        verdict = await self._judge(step, base, call, 0)
        # A hesitant small judge hands the decision up to the large one.
        threshold = float(call.params.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        higher = next_tier(call.tier)
        if higher and higher != "L1" and should_escalate(verdict, threshold):
            self._event(
                EventType.VERDICT,
                step.name,
                attempt,
                verdict=verdict,
                message=f"confidence {verdict.confidence} < {threshold}: escalating to {higher}",
            )
            verdict = await self._judge(step, base, replace(call, tier=higher), 1)
        return verdict

    async def _rules(self, base: VerifyInput) -> Verdict:
        """L1: pure, deterministic checks of an output that is already in history.

        They run in the workflow: a replay recomputes the same verdict from the same
        output. A change to what the rules decide is a change to the commit loop: bump
        RULES_VERSION (verifiers/rules.py) and guard it with workflow.patched.
        """
        if self._lean:
            verdict = check_rules(base)
            rules_span(base, verdict)
            return verdict
        return await workflow.execute_local_activity(
            RULES_ACTIVITY,
            base,
            result_type=Verdict,
            start_to_close_timeout=timedelta(seconds=30),
        )

    async def _judge(
        self, step: StepSpec, base: VerifyInput, call: JudgeCall, index: int
    ) -> Verdict:
        self._check_budget(step.name, "judge")
        vin = base.model_copy(update={"tier": call.tier, "params": call.params})
        activity_id = f"{step.name}-{base.attempt}-judge-{call.tier}-{index}"
        summary = f"judge {step.name} · attempt {base.attempt} · {call.tier}"
        retry = retry_policy(self._spec.policy.activity_retry)
        try:
            if call.local:
                verdict = await workflow.execute_local_activity(
                    call.activity,
                    vin,
                    result_type=Verdict,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=retry,
                    activity_id=activity_id,
                    summary=summary,
                )
            else:
                verdict = await workflow.execute_activity(
                    call.activity,
                    vin,
                    result_type=Verdict,
                    start_to_close_timeout=timedelta(seconds=120),
                    retry_policy=retry,
                    task_queue=call.task_queue,
                    activity_id=activity_id,
                    summary=summary,
                )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            message = error_message(err)
            if isinstance(err.cause, ApplicationError) and err.cause.non_retryable:
                # A misconfigured judge (bad key, unknown model) must not wave steps through.
                raise RunEnded(f"judge {call.activity} failed: {message}", step.name) from None
            if workflow.patched(JUDGE_FAIL_CLOSED_PATCH):
                # Fail closed: no verdict, no commit. The run ends and compensates.
                raise RunEnded(
                    f"judge unavailable: {call.activity} could not give a verdict "
                    f"({message}); nothing was committed without one",
                    step.name,
                ) from None
            # The judge's provider is down, not the step wrong: rules only, and say so.
            return Verdict(
                passed=True,
                degraded=True,
                tier=call.tier,
                verifier=call.activity,
                reason=f"judge unavailable ({message}): checked by rules only",
            )
        self._add_usage(verdict.usage, "judge")
        return verdict

    # ------------------------------------------------------------ commit and rollback

    def _commit(self, step: StepSpec, output: StepOutput, verdict: Verdict, attempt: int) -> None:
        seq = len(self._checkpoints) + 1
        self._checkpoints.append(
            Checkpoint(
                seq=seq,
                step=step.name,
                output=output.text,
                sha256=sha256(output.text),
                verdict=verdict,
                attempt=attempt,
                at=workflow.now(),
                usage=output.usage,
            )
        )
        self._event(
            EventType.COMMITTED,
            step.name,
            attempt,
            checkpoint_seq=seq,
            sha256=self._checkpoints[-1].sha256,
        )
        if self._breaker.state != "closed":
            self._event(EventType.BREAKER_CLOSED, step.name, attempt, message="trial passed")
        self._breaker = BreakerState(trips=self._breaker.trips)

    def _rollback(self, step: StepSpec, attempt: int, verdict: Verdict) -> None:
        """Discard the output: later steps only ever see the last checkpoint."""
        self._rollbacks += 1
        attrs = [RAFT_ROLLBACKS.value_set(self._rollbacks)]
        if self._lean:
            attrs.append(RAFT_STEP.value_set(step.name))
        self._upsert(*attrs)
        last = self._checkpoints[-1].seq if self._checkpoints else 0
        self._event(
            EventType.ROLLED_BACK,
            step.name,
            attempt,
            verdict=verdict,
            checkpoint_seq=last,
            message=f"{verdict.error_class}: {verdict.reason}",
        )
        self._record_failure(step.name, attempt)

    # ------------------------------------------------------------ circuit breaker

    def _record_failure(self, step: str, attempt: int) -> None:
        b = self._breaker
        policy = self._spec.policy.breaker
        if b.state == "half_open":
            raise RunEnded(f"circuit breaker: the half-open trial of step {step!r} failed", step)
        b.consecutive_failures += 1
        if b.consecutive_failures < policy.failure_threshold:
            return
        b.state, b.trips = "open", b.trips + 1
        self._event(
            EventType.BREAKER_OPEN,
            step,
            attempt,
            message=f"{b.consecutive_failures} consecutive failures (trip {b.trips})",
        )
        if b.trips > policy.max_trips:
            raise RunEnded(
                f"circuit breaker tripped {b.trips} times (max_trips {policy.max_trips})", step
            )

    async def _breaker_gate(self, step: str) -> None:
        """An open breaker waits out its cooldown durably, then lets one trial through."""
        if self._breaker.state != "open":
            return
        self._set_status(RunStatus.BREAKER_OPEN)
        await workflow.sleep(timedelta(seconds=self._spec.policy.breaker.cooldown_s))
        self._breaker.state = "half_open"
        self._set_status(RunStatus.RUNNING)
        self._event(EventType.BREAKER_HALF_OPEN, step, message="cooldown over: one trial")

    # ------------------------------------------------------------ budget

    def _add_usage(self, usage: Usage, kind: str) -> None:
        self._usage += usage
        self._kind_usage[kind] = self._kind_usage.get(kind, Usage()) + usage
        self._kind_calls[kind] = self._kind_calls.get(kind, 0) + 1

    def _check_budget(self, step: str, kind: str) -> None:
        """Stop before a call that, at the average usage of its kind so far, would overspend.

        Agent calls and judge calls differ by an order of magnitude, so each kind is
        estimated from its own history (from all calls until that kind has one).
        """
        budget = self._spec.policy.budget
        if budget.max_tokens is None and budget.max_cost_usd is None:
            return
        u = self._usage
        if self._kind_calls.get(kind):
            per, n = self._kind_usage[kind], self._kind_calls[kind]
        else:
            per, n = u, max(sum(self._kind_calls.values()), 1)
        next_tokens = u.tokens + per.tokens / n
        next_cost = u.cost_usd + per.cost_usd / n
        over = None
        if budget.max_tokens is not None and u.tokens and next_tokens > budget.max_tokens:
            over = f"{u.tokens} tokens used, next call would exceed {budget.max_tokens}"
        if budget.max_cost_usd is not None and u.cost_usd and next_cost > budget.max_cost_usd:
            over = f"${u.cost_usd:.4f} spent, next call would exceed ${budget.max_cost_usd}"
        if over:
            self._event(EventType.BUDGET_EXCEEDED, step, self._attempt_no, message=over)
            raise RunEnded(f"budget: {over}", step)

    # ------------------------------------------------------------ saga

    async def _compensate(self) -> None:
        """Undo committed side effects in reverse order; report every outcome."""
        todo = [
            (cp, step)
            for cp in reversed(self._checkpoints)
            if (step := self._spec_step(cp.step)).compensation
        ]
        if not todo:
            return
        self._set_status(RunStatus.COMPENSATING)
        for cp, step in todo:
            assert step.compensation is not None
            self._event(
                EventType.COMPENSATION_STARTED,
                step.name,
                cp.attempt,
                checkpoint_seq=cp.seq,
                message=step.compensation,
            )
            try:
                await workflow.execute_activity(
                    step.compensation,
                    CompensationInput(
                        workflow_id=workflow.info().workflow_id,
                        step=step.name,
                        output=cp.output,
                        params=step.compensation_params,
                        idempotency_key=f"{workflow.info().workflow_id}/{step.name}/compensate",
                    ),
                    start_to_close_timeout=timedelta(seconds=step.timeout_s or 60),
                    retry_policy=retry_policy(self._spec.policy.compensation_retry),
                    task_queue=step.task_queue,
                    activity_id=f"{step.name}-compensate",
                    summary=f"compensate {step.name} · {step.compensation}",
                )
            except ActivityError as err:
                message = error_message(err)
                self._compensations.append(
                    CompensationOutcome(
                        step=step.name,
                        activity=step.compensation,
                        ok=False,
                        error=message,
                        at=workflow.now(),
                    )
                )
                self._event(
                    EventType.COMPENSATION_FAILED,
                    step.name,
                    cp.attempt,
                    checkpoint_seq=cp.seq,
                    message=message,
                )
                continue
            self._compensations.append(
                CompensationOutcome(
                    step=step.name, activity=step.compensation, ok=True, at=workflow.now()
                )
            )
            self._event(
                EventType.COMPENSATED,
                step.name,
                cp.attempt,
                checkpoint_seq=cp.seq,
                message=step.compensation,
            )

    # ------------------------------------------------------------ queries

    def status(self) -> StatusView:
        """Also callable on an instance rebuilt from history outside a worker."""
        return StatusView(
            workflow_id=self._wid,
            pipeline=self._spec.name,
            status=self._status,
            current_step=self._step,
            attempt=self._attempt_no,
            steps_total=len(self._spec.steps),
            verified=len(self._checkpoints),
            breaker=self._breaker,
            checkpoints=self._refs(),
            usage=self._usage,
        )

    def checkpoints(self) -> list[Checkpoint]:
        return self._checkpoints

    def trace(self, after: int = 0) -> list[TraceEvent]:
        """Events with seq > after, so a follower can resume where it stopped."""
        return self._trace[after:]

    def result(self) -> RunResult:
        return self._result(None)

    # ------------------------------------------------------------ bookkeeping

    @property
    def _spec(self) -> PipelineSpec:
        assert self._inp is not None
        return self._inp.spec

    @property
    def _task(self) -> Task:
        assert self._inp is not None
        return self._inp.task

    def _spec_step(self, name: str) -> StepSpec:
        return next(s for s in self._spec.steps if s.name == name)

    def _committed(self) -> dict[str, str]:
        return {cp.step: cp.output for cp in self._checkpoints}

    def _refs(self) -> list[CommittedRef]:
        return [CommittedRef(seq=c.seq, step=c.step, sha256=c.sha256) for c in self._checkpoints]

    def _event(
        self, type_: EventType, step: str | None = None, attempt: int | None = None, **kw: Any
    ) -> None:
        event = TraceEvent(
            seq=len(self._trace) + 1,
            type=type_,
            step=step,
            attempt=attempt,
            at=workflow.now(),
            **kw,
        )
        self._trace.append(event)
        # A decision record in the worker's JSON log and raftline's counters: both are
        # skipped while the worker replays history (workflows/telemetry.py).
        pipeline = self._inp.spec.name if self._inp is not None else None
        workflow.logger.info(type_.value, extra={"raftline": decision_record(event, pipeline)})
        count(event, pipeline)

    def _set_status(self, status: RunStatus) -> None:
        self._status = status
        if self._inp is not None:
            workflow.set_current_details(self._details())
        attrs = [RAFT_STATUS.value_set(status.value)]
        if status is RunStatus.RUNNING and self._inp is not None:
            attrs.append(RAFT_PIPELINE.value_set(self._spec.name))
        if self._lean and self._step is not None:
            attrs.append(RAFT_STEP.value_set(self._step))
        self._upsert(*attrs)

    def _started_indexed(self) -> bool:
        """True when the client set RaftStatus and RaftPipeline at start (one index write less)."""
        attrs = workflow.info().typed_search_attributes
        return attrs.get(RAFT_STATUS) == RunStatus.RUNNING.value and attrs.get(RAFT_PIPELINE) == (
            self._spec.name
        )

    def _details(self) -> str:
        """The run's current details in the Web UI: where it is, in one line of markdown."""
        total = len(self._spec.steps)
        parts = [f"**{self._status.value}**"]
        if self._step is not None and self._status in (RunStatus.RUNNING, RunStatus.BREAKER_OPEN):
            index = next(i for i, s in enumerate(self._spec.steps, 1) if s.name == self._step)
            retry = f" · retry {self._attempt_no}" if self._attempt_no else ""
            parts.append(f"step {index}/{total} `{self._step}`{retry}")
        parts.append(f"{len(self._checkpoints)}/{total} verified")
        return " · ".join(parts)

    def _upsert(self, *updates: Any) -> None:
        if self._inp is not None and self._inp.search_attributes:
            workflow.upsert_search_attributes(list(updates))

    def _end(
        self, status: RunStatus, type_: EventType, reason: str, step: str | None = None
    ) -> RunResult:
        self._set_status(status)
        self._event(type_, step, message=reason)
        return self._result(None if status is RunStatus.COMPLETED else reason, step)

    def _result(self, error: str | None, failed_step: str | None = None) -> RunResult:
        return RunResult(
            workflow_id=workflow.info().workflow_id,
            pipeline=self._spec.name,
            status=self._status,
            success=self._status is RunStatus.COMPLETED,
            steps_total=len(self._spec.steps),
            verified=len(self._checkpoints),
            rollbacks=self._rollbacks,
            retries=self._retries,
            verdicts=self._verdicts,
            breaker_trips=self._breaker.trips,
            compensations=self._compensations,
            checkpoints=self._checkpoints,
            output=self._checkpoints[-1].output if self._checkpoints else None,
            usage=self._usage,
            error=error,
            failed_step=failed_step,
            trace=self._trace,
        )


# ---------------------------------------------------------------- frozen helpers
# Copies of verifiers/tiered.py and verifiers/llm.py as generation 2 used them: their
# verdicts decide commit or rollback, so they may not change under a run in flight.

DEFAULT_MIN_CONFIDENCE = 0.6
TIERS = ("L1", "L2", "L3")


def next_tier(tier: str) -> str | None:
    i = TIERS.index(tier) if tier in TIERS else len(TIERS) - 1
    return TIERS[i + 1] if i + 1 < len(TIERS) else None


def should_escalate(verdict: Verdict, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> bool:
    return verdict.passed and not verdict.degraded and verdict.confidence < min_confidence


@dataclass(frozen=True)
class JudgeCall:
    activity: str
    tier: str
    params: dict[str, Any] = field(default_factory=dict)
    task_queue: str | None = None
    local: bool = False


@dataclass(frozen=True)
class JudgePlan:
    tier: str
    judges: tuple[JudgeCall, ...] = ()
    require: int = 0

    @property
    def is_quorum(self) -> bool:
        return len(self.judges) > 1


def _call(spec: JudgeSpec, tier: str) -> JudgeCall:
    return JudgeCall(spec.activity, tier, dict(spec.params), spec.task_queue, spec.local)


def plan_judges(criticality: Criticality, verifier: VerifierSpec | None) -> JudgePlan:
    if criticality is Criticality.LOW:
        return JudgePlan("L1")
    spec = verifier or VerifierSpec()
    if criticality is Criticality.MEDIUM:
        single = spec.judge or (spec.quorum.judges[0] if spec.quorum else JudgeSpec())
        return JudgePlan("L2", (_call(single, "L2"),), 1)
    if spec.quorum is not None:
        calls = tuple(_call(j, "L3") for j in spec.quorum.judges)
        return JudgePlan("L3", calls, spec.quorum.require)
    return JudgePlan("L3", (_call(spec.judge or JudgeSpec(), "L3"),), 1)


def combine_quorum(verdicts: Sequence[Verdict], require: int) -> Verdict:
    if not verdicts:
        raise ValueError("combine_quorum needs at least one verdict")
    real = [v for v in verdicts if not v.degraded]
    names = ", ".join(f"{v.verifier}" + (f"/{v.model}" if v.model else "") for v in verdicts)
    usage = sum((v.usage for v in verdicts), Usage())
    latency = max((v.latency_ms or 0.0 for v in verdicts), default=0.0)
    tier = max((v.tier for v in verdicts), key=lambda t: TIERS.index(t) if t in TIERS else -1)
    if not real:
        return verdicts[0].model_copy(
            update={"verifier": f"quorum(0/{require}): {names}", "usage": usage, "tier": tier}
        )
    needed = min(require, len(real))
    passes = [v for v in real if v.passed]
    degraded = len(real) < require
    label = f"quorum({len(passes)}/{needed} of {len(verdicts)}): {names}"
    common = {
        "tier": tier,
        "verifier": label,
        "usage": usage,
        "latency_ms": latency,
        "degraded": degraded,
        "prompt_version": next((v.prompt_version for v in real if v.prompt_version), None),
        "checks_run": [c for v in verdicts for c in v.checks_run],
    }
    if len(passes) >= needed:
        note = f" ({len(verdicts) - len(real)} judge(s) unavailable)" if degraded else ""
        return Verdict(
            passed=True,
            reason=f"{len(passes)} of {len(real)} judges passed{note}",
            confidence=min(v.confidence for v in passes),
            model=passes[0].model,
            **common,
        )
    first_fail = next(v for v in real if not v.passed)
    return Verdict(
        passed=False,
        error_class=first_fail.error_class,
        hint=first_fail.hint,
        reason=f"{len(passes)} of {needed} required judges passed; {first_fail.reason}",
        confidence=first_fail.confidence,
        model=first_fail.model,
        **common,
    )
