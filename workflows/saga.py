"""Compensations: undo the side effects of what a run did, when it cannot finish.

- At rollback, an attempt that was not committed (failed verification, a step error)
  is compensated before the retry, with that attempt's output and idempotency key.
- When the run ends without success it first lets its branches in flight stop (their
  attempts cut short are compensated), then compensates every committed step in reverse
  commit order.
- Every compensation runs to completion even if the run is canceled meanwhile, and is
  recorded. One that fails after its retries leaves the run open in `needs_attention`
  until an operator retries or resolves it (the `compensations` update), or
  `policy.attention_timeout_s` closes the run as failed.

A compensation activity gets its own timeout (`policy.compensation_timeout_s`) and a
heartbeat timeout; the worker heartbeats for it, so a worker killed mid-compensation is
noticed in seconds and another worker takes over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from raftline.ledger import Entry
from raftline.models import (
    CompensationInput,
    CompensationOutcome,
    EventType,
    PipelineSpec,
    RunStatus,
    StepSpec,
)
from raftline.workflows.errors import ending_patched, error_message, retry_policy, shielded
from raftline.workflows.run import Attempt, Run

# Workers heartbeat for compensations (raftline/observability.py) every few seconds;
# a heartbeat missing this long means the worker died: retry on another one.
COMPENSATION_HEARTBEAT_S = 10


class Saga:
    def __init__(self, run: Run) -> None:
        self.run = run
        self._round = 0  # operator retries: activity ids stay unique

    # ------------------------------------------------------------ one attempt, at rollback

    async def undo_attempt(self, attempt: Attempt) -> None:
        """Compensate an uncommitted attempt (the step has a compensation)."""
        step = self.run.step(attempt.step)
        if step.compensation is None:
            self.run.open.pop(attempt.key, None)
            return
        try:
            await shielded(
                self._compensate(
                    self.run.spec,
                    step_name=attempt.step,
                    attempt=attempt.attempt,
                    key=attempt.key,
                    sha256=attempt.sha256,
                    item=attempt.item,
                    committed=False,
                    checkpoint_seq=None,
                )
            )
        except asyncio.CancelledError:
            # The compensation ran to its end (shielded) and is recorded; only the cancel is
            # left to deliver. It is no longer open: the saga must not run it again.
            if ending_patched():
                self.run.open.pop(attempt.key, None)
            raise
        self.run.open.pop(attempt.key, None)

    async def undo_child(self, step: StepSpec, children: list[Entry]) -> None:
        """A sub-pipeline step rolled back: undo the child run's commits, newest first."""
        assert step.pipeline_spec is not None
        for child in reversed(children):
            if self._undoable(step.pipeline_spec, child):
                await shielded(self._undo_entry(step.pipeline_spec, child))

    # ------------------------------------------------------------ the whole run

    async def unwind(self) -> bool:
        """Compensate everything the run did; True when every compensation succeeded (or
        there was nothing to undo). Shielded: a cancel during it changes nothing."""
        return await shielded(self._unwind())

    async def _unwind(self) -> bool:
        run = self.run
        todo = [a for a in run.open.values() if run.step(a.step).compensation]
        committed = [e for e in reversed(run.ledger.checkpoints) if self._undoable(run.spec, e)]
        if not todo and not committed:
            return True
        run.set_status(RunStatus.COMPENSATING)
        # Attempts cut short or rolled back first (they are the newest), then commits.
        for attempt in sorted(todo, key=lambda a: (a.step, a.item or 0, a.attempt), reverse=True):
            await self.undo_attempt(attempt)
        for entry in committed:
            await self._undo_entry(run.spec, entry)
        return all(c.ok or c.resolved for c in run.ledger.compensations)

    def _undoable(self, spec: PipelineSpec, entry: Entry) -> bool:
        if entry.reused_from:
            return False  # a fork's reused checkpoint: its source run owns the side effect
        step = spec.step(entry.step)
        return bool(step.compensation or entry.children)

    async def _undo_entry(self, spec: PipelineSpec, entry: Entry) -> None:
        step = spec.step(entry.step)
        # A map step's items, or a sub-pipeline's own checkpoints: undone one by one, newest
        # first, each with the compensation of the step that made it.
        child_spec = step.pipeline_spec or spec
        for child in reversed(entry.children):
            if child_spec is spec:  # map items
                if step.compensation:
                    await self._compensate(
                        spec,
                        step_name=entry.step,
                        attempt=child.attempt,
                        key=self.run.key_of(child, child.seq),
                        sha256=child.sha256,
                        item=child.seq,
                        committed=True,
                        checkpoint_seq=entry.seq,
                    )
            elif self._undoable(child_spec, child):
                await self._undo_entry(child_spec, child)
        if step.compensation and not (entry.children and child_spec is spec):
            await self._compensate(
                spec,
                step_name=entry.step,
                attempt=entry.attempt,
                key=self.run.key_of(entry),
                sha256=entry.sha256,
                item=None,
                committed=True,
                checkpoint_seq=entry.seq,
            )

    async def _compensate(
        self,
        spec: PipelineSpec,
        *,
        step_name: str,
        attempt: int,
        key: str,
        sha256: str | None,
        item: int | None,
        committed: bool,
        checkpoint_seq: int | None,
    ) -> CompensationOutcome:
        run = self.run
        step = spec.step(step_name)
        assert step.compensation is not None
        run.event(
            EventType.COMPENSATION_STARTED,
            step_name,
            attempt,
            checkpoint_seq=checkpoint_seq,  # None: an attempt that was never committed
            item=item,
            message=step.compensation,
        )
        suffix = f"-i{item}" if item is not None else ""
        try:
            await workflow.execute_activity(
                step.compensation,
                CompensationInput(
                    workflow_id=run.workflow_id,
                    step=step_name,
                    output_sha256=sha256,
                    params=step.compensation_params,
                    idempotency_key=f"{key}/compensate",
                    attempt=attempt,
                    item_index=item,
                    committed=committed,
                ),
                start_to_close_timeout=timedelta(seconds=spec.policy.compensation_timeout_s),
                heartbeat_timeout=timedelta(seconds=COMPENSATION_HEARTBEAT_S),
                retry_policy=retry_policy(spec.policy.compensation_retry),
                task_queue=step.task_queue,
                activity_id=f"{step_name}{suffix}-{attempt}-compensate"
                + ("" if committed else "-rollback")
                + (f"-r{self._round}" if self._round else ""),
                summary=f"compensate {step_name} · {step.compensation} · attempt {attempt}",
            )
        except ActivityError as err:
            error = error_message(err)
        else:
            error = None
        outcome = CompensationOutcome(
            step=step_name,
            activity=step.compensation,
            ok=error is None,
            error=error,
            at=workflow.now(),
            attempt=attempt,
            committed=committed,
            idempotency_key=key,
        )
        self._record(outcome)
        run.event(
            EventType.COMPENSATED if error is None else EventType.COMPENSATION_FAILED,
            step_name,
            attempt,
            checkpoint_seq=checkpoint_seq,
            item=item,
            message=step.compensation if error is None else error,
        )
        return outcome

    def _record(self, outcome: CompensationOutcome) -> None:
        """One outcome per undone attempt: a retry replaces the failed record."""
        records = self.run.ledger.compensations
        for i, old in enumerate(records):
            if old.idempotency_key == outcome.idempotency_key and old.step == outcome.step:
                records[i] = outcome
                return
        records.append(outcome)

    # ------------------------------------------------------------ needs attention

    def failed(self) -> list[CompensationOutcome]:
        return [c for c in self.run.ledger.compensations if not c.ok and not c.resolved]

    async def retry_failed(self) -> None:
        """An operator's retry: run each failed compensation again (newest first)."""
        run = self.run
        self._round += 1
        for outcome in list(reversed(self.failed())):
            key = outcome.idempotency_key or ""
            entry = next((e for e in run.ledger.checkpoints if run.key_of(e) == key), None)
            item_entry = None
            if entry is None:  # a map item, inside its step's entry
                for e in run.ledger.checkpoints:
                    item_entry = next((c for c in e.children if run.key_of(c, c.seq) == key), None)
                    if item_entry is not None:
                        entry = e
                        break
            open_attempt = run.open.get(key)
            sha = (
                item_entry.sha256
                if item_entry is not None
                else entry.sha256
                if entry is not None
                else open_attempt.sha256
                if open_attempt is not None
                else None
            )
            await shielded(
                self._compensate(
                    run.spec,
                    step_name=outcome.step,
                    attempt=outcome.attempt or 0,
                    key=key,
                    sha256=sha,
                    item=item_entry.seq if item_entry is not None else None,
                    committed=outcome.committed,
                    checkpoint_seq=entry.seq if entry is not None else None,
                )
            )

    def resolve(self, note: str, by: str) -> int:
        """An operator took care of the failed compensations by hand."""
        failed = self.failed()
        for outcome in failed:
            outcome.resolved = f"{note} (by {by})"
        self.run.event(
            EventType.ATTENTION_RESOLVED,
            message=f"{len(failed)} failed compensation(s) resolved: {note}",
            by=by,
        )
        return len(failed)
