"""Small shared pieces of the commit loop: how a run ends, retry policies, shielding."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

from raftline.models import ActivityRetry, Policy

T = TypeVar("T")

# ApplicationError types raftline's activities raise (activities/llm.py, references.py).
BUDGET_EXCEEDED = "BudgetExceeded"
JUDGE_NOT_CONFIGURED = "JudgeNotConfigured"
# A judge that answered, but gave no usable verdict, or whose providers are all failing:
# no verdict now, maybe later (the workflow waits, then fails closed).
JUDGE_NO_VERDICT = frozenset({"JudgeUnparseable", "JudgeUnavailable"})


# Since 0.2.1: once a run is ending, no branch or map item starts another attempt, and a
# rollback compensation a cancel interrupted is not run again by the saga. Before it, a
# branch whose cancel was lost (its activity finished first) could retry after the run
# failed, map items went on after an item's fatal error, and such a compensation ran
# twice. Runs from before keep their recorded path.
ENDING_PATCH = "raftline-stop-on-end"


def ending_patched() -> bool:
    """workflow.patched(ENDING_PATCH), asked only where the new path differs."""
    return not evicting() and workflow.patched(ENDING_PATCH)


# Since 0.2.1 a map item or a DAG step does not start once the run's history nears
# Temporal's hard limits (policy.history_max_events / history_max_mb): the run ends and
# compensates instead of being terminated by the server with nothing undone. Asked only
# when the bound is reached, so runs in flight below it record nothing new.
HISTORY_PATCH = "raftline-history-bound"


def history_full(policy: Policy, step: str) -> str | None:
    """Why `step` may not start another item or branch now, or None."""
    info = workflow.info()
    events, size = info.get_current_history_length(), info.get_current_history_size()
    limit_bytes = int(policy.history_max_mb * 1_000_000)
    if events < policy.history_max_events and size < limit_bytes:
        return None
    if evicting() or not workflow.patched(HISTORY_PATCH):
        return None
    return (
        f"the run's history is near Temporal's limits ({events:,} events, "
        f"{size / 1_000_000:.1f} MB; policy.history_max_events {policy.history_max_events:,}, "
        f"history_max_mb {policy.history_max_mb:g}) while step {step!r} still had work to "
        "start, and a step cannot continue as new halfway: split its list, or run each part "
        "as a sub-pipeline (each child has its own history)"
    )


class RunEnded(Exception):
    """The run cannot finish: compensate what was committed and report why."""

    def __init__(self, reason: str, step: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.step = step


class Ending(asyncio.CancelledError):
    """Raised in a branch that finds the run ending: it stops, its attempt uncommitted."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def retry_policy(r: ActivityRetry) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff,
        maximum_interval=timedelta(seconds=r.max_interval_s),
        maximum_attempts=r.max_attempts,
    )


def cause_of(err: BaseException) -> BaseException:
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return err


def error_message(err: BaseException) -> str:
    cause = cause_of(err)
    return str(cause) or type(cause).__name__


def application_error(err: BaseException) -> ApplicationError | None:
    cause = cause_of(err)
    return cause if isinstance(cause, ApplicationError) else None


def error_details(err: BaseException) -> dict[str, Any]:
    """The first detail of an activity's ApplicationError, when it is a mapping."""
    app = application_error(err)
    if app is not None and app.details and isinstance(app.details[0], dict):
        return app.details[0]
    return {}


def evicting() -> bool:
    """True while the worker evicts this run from its cache (not a cancel of the run).

    Eviction cancels every task of the run and expects them all to stop at once; the run
    goes on elsewhere (its history replays). Shielding must not hold it up. The SDK has no
    public flag for it: this reads the instance's, and tests/test_fail_closed.py pins it.
    """
    if isinstance(sys.exception(), GeneratorExit) or not workflow.in_workflow():
        # A run's coroutine closed by the garbage collector (the worker shut down, or
        # dropped it): nothing may run now, and any workflow API reached now would be
        # another run's, whose activation may be on this thread at that moment.
        return True
    runtime = workflow._Runtime.current()
    return bool(getattr(runtime, "_deleting", False))


async def shielded(work: Awaitable[T], reraise: bool = True) -> T:
    """Run `work` to completion even if the run is canceled meanwhile (any number of times).

    A compensation half done is worse than none: a cancel that arrives during the saga
    (or a rollback's compensation) changes nothing; the work goes on and is recorded.
    With `reraise`, the cancel is delivered once the work is done, so the branch that
    waited still stops.
    """
    task = asyncio.ensure_future(work)
    canceled = False
    while True:
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            if evicting():
                raise
            canceled = True
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            continue
        if canceled and reraise:
            raise asyncio.CancelledError()
        return task.result()
