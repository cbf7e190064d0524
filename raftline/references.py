"""Worker side of passing committed outputs by reference (see raftline/blobs.py).

An activity interceptor, wired by the worker:
- before a step, judge or compensation runs, it fills in the texts its input references:
  `StepInput.committed` / `VerifyInput.committed` from their refs (or, for a step with
  many ancestors, from the run's `context` query), `CompensationInput.output` from its
  sha256;
- after a step attempt returns, it puts the output in the store, so that later steps
  (on any worker) can fetch it once it is committed;
- while a compensation (or a step with a heartbeat timeout) runs, it heartbeats for it,
  so a worker that dies mid-way is noticed within the heartbeat timeout and another
  worker takes over; user code need not heartbeat itself.

Steps that never read `committed` skip the fetch (SKIP_RESOLVE): the benchmarks' and
demos' `scripted` step, so a 5,000-step pipeline of them costs the same per step at the
end as at the start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from raftline.blobs import BlobMissing, BlobStore, blob_store, sha256_text
from raftline.models import CommittedRef, CompensationInput, StepInput, StepOutput, VerifyInput

# Activities that never read `committed` (their params and the task are all they use).
SKIP_RESOLVE = frozenset({"scripted"})
CONTEXT_QUERY = "context"
OUTPUT_QUERY = "output"


class ReferencesInterceptor(Interceptor):
    def __init__(self, store: BlobStore | None = None) -> None:
        self._store = store

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = blob_store()
        return self._store

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, root: ReferencesInterceptor) -> None:
        super().__init__(next)
        self.root = root

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        try:
            if isinstance(arg, StepInput | VerifyInput):
                if activity.info().activity_type not in SKIP_RESOLVE:
                    await self._resolve(arg)
            elif isinstance(arg, CompensationInput) and arg.output_sha256 and not arg.output:
                arg.output = await self._text(arg.output_sha256)
        except BlobMissing as exc:
            # Retryable: a store that is briefly unreachable comes back; a missing one
            # ends the step as a STEP_ERROR naming the store, never as empty input.
            raise ApplicationError(str(exc), type="CommittedOutputMissing") from None
        beat = _heartbeat() if activity.info().heartbeat_timeout else None
        try:
            result = await self.next.execute_activity(input)
        finally:
            if beat is not None:
                beat.cancel()
        if isinstance(arg, StepInput):
            text = result.text if isinstance(result, StepOutput) else result
            if isinstance(text, str):
                await self.root.store.put(text)
        return result

    async def _resolve(self, arg: StepInput | VerifyInput) -> None:
        if arg.committed:
            return  # given inline (runs from before 0.2, tests)
        refs = list(arg.committed_refs)
        if arg.context is not None and not refs:
            refs = await _context(arg.context.workflow_id, arg.context.run_id, arg.context.step)
        try:  # mostly from this worker's cache: no task per output
            texts = await self.root.store.get_many([r.sha256 for r in refs])
        except BlobMissing:
            texts = await asyncio.gather(*(self._text(r.sha256) for r in refs))
        arg.committed = {r.step: text for r, text in zip(refs, texts, strict=True)}

    async def _text(self, sha256: str) -> str:
        """From the store; failing that, from the run itself (a worker that does not share
        the store still works for outputs the run holds in memory)."""
        try:
            return await self.root.store.get(sha256)
        except BlobMissing:
            info = activity.info()
            handle = activity.client().get_workflow_handle(
                info.workflow_id or "", run_id=info.workflow_run_id
            )
            try:
                text = await handle.query(OUTPUT_QUERY, sha256, result_type=str)
            except Exception:  # noqa: BLE001 - any failure: the store's message says more
                text = None
            if text is None or sha256_text(text) != sha256:
                raise
            return text


def _heartbeat() -> asyncio.Task[None] | None:
    """Heartbeat in the background at a third of the heartbeat timeout (async activities)."""
    timeout = activity.info().heartbeat_timeout
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    assert timeout is not None
    every = max(timeout.total_seconds() / 3, 0.2)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    return asyncio.ensure_future(beat())


async def _context(workflow_id: str, run_id: str, step: str) -> list[CommittedRef]:
    """The committed checkpoints a step sees, from the run itself (too many to inline)."""
    handle = activity.client().get_workflow_handle(workflow_id, run_id=run_id)
    refs: list[CommittedRef] = await handle.query(
        CONTEXT_QUERY, step, result_type=list[CommittedRef]
    )
    return refs
