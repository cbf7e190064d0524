"""Scheduling the DAG: a step starts when all its needs are committed (or skipped);
independent steps run in parallel, at most `policy.max_parallel` at once.

When one branch cannot finish, the run ends: the other branches are canceled and waited
for (their attempts cut short stay open for the saga). Between steps, when nothing is
in flight, a long run hands its ledger to a fresh run (continue-as-new).
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import timedelta

from temporalio import workflow

from raftline.models import RunInput, TraceSlice
from raftline.workflows.attempts import Steps
from raftline.workflows.errors import RunEnded, evicting, history_full, sha256, shielded
from raftline.workflows.run import Run

ARCHIVE_ACTIVITY = "raftline.archive_trace"


class Dag:
    def __init__(self, run: Run, steps: Steps) -> None:
        self.run = run
        self.steps = steps
        self.committed_here = 0

    async def run_to_end(self) -> None:
        """Every step committed or skipped; RunEnded (or a cancel) when that cannot be."""
        run = self.run
        graph = run.graph
        done = set(run.entries) | set(run.ledger.skipped)
        waiting = {
            s.name: sum(1 for p in graph.parents[s.name] if p not in done)
            for s in run.spec.steps
            if s.name not in done
        }
        # Ready steps start in spec order (a heap of (position, name)).
        ready = [(graph.order[s.name], s.name) for s in run.spec.steps if waiting.get(s.name) == 0]
        running: dict[str, asyncio.Task[None]] = {}
        limit = run.spec.policy.max_parallel
        try:
            while ready or running:
                while ready and len(running) < limit:
                    if running:  # no continue-as-new while branches run: bound the history
                        full = history_full(run.spec.policy, ready[0][1])
                        if full is not None:
                            raise RunEnded(full, ready[0][1])
                    _, name = heapq.heappop(ready)
                    running[name] = asyncio.create_task(self.steps.complete(run.step(name)))
                finished, _ = await asyncio.wait(
                    running.values(), return_when=asyncio.FIRST_COMPLETED
                )
                for name, task in list(running.items()):
                    if task not in finished:
                        continue
                    del running[name]
                    task.result()  # a branch's RunEnded ends the run
                    if name in run.entries:
                        self.committed_here += 1
                    for child in graph.children[name]:
                        waiting[child] -= 1
                        if waiting[child] == 0:
                            heapq.heappush(ready, (graph.order[child], child))
                if not running and ready and self._due():
                    await self._continue_as_new()
        except BaseException as exc:
            if evicting():
                raise  # the worker drops this run from its cache: it goes on elsewhere
            run.ending = getattr(exc, "reason", None) or "run canceled"
            for task in running.values():
                task.cancel()
            if running:
                # Wait until every branch stopped: no attempt may land after the saga.
                await shielded(asyncio.wait(list(running.values())), reraise=False)
            raise

    # ------------------------------------------------------------ continue-as-new

    def _due(self) -> bool:
        limit = self.run.spec.policy.continue_as_new_after_steps
        return (limit is not None and self.committed_here >= limit) or (
            workflow.info().is_continue_as_new_suggested()
        )

    async def _continue_as_new(self) -> None:
        """Hand the ledger to a fresh run. This run's trace goes to the output store (by
        reference in the ledger): the carry stays the same size however long the chain."""
        run = self.run
        ledger = run.ledger
        # Not a trace event: a chain reads exactly like the same run in one piece.
        if run.events:
            payload = "[" + ",".join(e.model_dump_json() for e in run.events) + "]"
            await workflow.execute_local_activity(
                ARCHIVE_ACTIVITY,
                payload,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=60),
                summary=f"archive trace #{run.events[0].seq}-{run.events[-1].seq}",
            )
            digest = sha256(payload)
            ledger.trace_archive.append(
                TraceSlice(
                    first_seq=run.events[0].seq,
                    last_seq=run.events[-1].seq,
                    sha256=digest,
                    run_id=run.run_id,
                )
            )
        ledger.runs += 1
        workflow.logger.info(
            "continue_as_new",
            extra={
                "raftline": {
                    "event": "continue_as_new",
                    "runs": ledger.runs,
                    "committed_here": self.committed_here,
                }
            },
        )
        workflow.continue_as_new(
            RunInput(
                spec=run.spec,
                task=run.task,
                search_attributes=run.inp.search_attributes,
                # Compact: defaults and what the next run derives (each checkpoint's seen id)
                # stay out, so the carry of a 1,000-step run stays well under 256 KiB.
                ledger=ledger.model_dump(
                    mode="json",
                    exclude_defaults=True,
                    exclude={"checkpoints": {"__all__": {"seen"}}},
                ),
                parent=run.inp.parent,
            )
        )
