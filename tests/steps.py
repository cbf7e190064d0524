"""Custom activities used by the tests, registered like a user's module."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.models import CompensationInput, StepInput, StepOutput


@activity.defn(name="echo_context")
async def echo_context(inp: StepInput) -> StepOutput:
    """Returns exactly what the step was given: the committed outputs, hint and class."""
    return StepOutput(
        text=json.dumps(
            {
                "committed": inp.committed,
                "hint": inp.hint,
                "error_class": inp.error_class,
                "attempt": inp.attempt,
                "key": inp.idempotency_key,
            }
        )
    )


@activity.defn(name="plain_text")
async def plain_text(inp: StepInput) -> str:
    """A custom step may return a plain string."""
    return f"Plain answer about {inp.goal}."


# ---------------------------------------------------------------- side effects with keys


def _ledger(inp_params: dict) -> Path:
    return Path(str(inp_params["ledger"]))


@activity.defn(name="charge")
async def charge(inp: StepInput) -> StepOutput:
    """A side effect per attempt: one line `KEY` in params.ledger. params.bad_attempts: the
    attempts whose output fails verification (a `required` check on "charged")."""
    with _ledger(inp.params).open("a", encoding="utf-8") as f:
        f.write(f"{inp.idempotency_key}\n")
    await asyncio.sleep(float(inp.params.get("sleep_s", 0)))
    bad = inp.attempt in inp.params.get("bad_attempts", [])
    return StepOutput(text="nothing to see." if bad else f"charged {inp.attempt}.")


@activity.defn(name="refund")
async def refund(inp: CompensationInput) -> str:
    """Undo a charge: remove the line of the attempt it undoes (key minus /compensate);
    params.sleep_s slows the first delivery; params.fail_until_file: fail while that file
    is missing; every delivery is journaled in params.journal with its time."""
    params = inp.params
    attempt = activity.info().attempt
    journal = params.get("journal")
    if journal:
        with open(journal, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f}\tstart\t{inp.step}\t{inp.idempotency_key}\t{attempt}\n")
    if attempt == 1 and params.get("sleep_s"):
        await asyncio.sleep(float(params["sleep_s"]))
    gate = params.get("fail_until_file")
    if gate and not Path(gate).exists():
        raise ApplicationError(f"refund of {inp.step!r} failed: the bank is down")
    key = inp.idempotency_key.removesuffix("/compensate")
    ledger = _ledger(params)
    lines = ledger.read_text(encoding="utf-8").splitlines() if ledger.exists() else []
    ledger.write_text("".join(f"{line}\n" for line in lines if line != key), encoding="utf-8")
    if journal:
        with open(journal, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f}\tend\t{inp.step}\t{inp.idempotency_key}\t{attempt}\n")
    return f"refunded {key}"


@activity.defn(name="bad_shape")
async def bad_shape(inp: StepInput) -> dict[str, str]:
    """A step whose result is not a StepOutput (a field misspelled)."""
    return {"txt": f"answer {inp.attempt}"}


@activity.defn(name="deaf")
async def deaf(inp: StepInput) -> StepOutput:
    """A step that never heartbeats, so it never hears of a cancel: it sleeps, then returns.
    params: sleep_s; fail0 (true, or map item indexes): attempt 0 fails retryably; fatal
    (map item indexes): those fail non-retryably after fatal_s."""
    params = inp.params
    if inp.item_index in params.get("fatal", []):
        await asyncio.sleep(float(params.get("fatal_s", 0.2)))
        raise ApplicationError("deaf: fatal", non_retryable=True)
    await asyncio.sleep(float(params.get("sleep_s", 1.0)))
    fail0 = params.get("fail0", [])
    if inp.attempt == 0 and (fail0 is True or inp.item_index in (fail0 or [])):
        raise ApplicationError("deaf: a retryable failure", type="Flaky")
    return StepOutput(text=f"deaf {inp.step} {inp.item_index} {inp.attempt}")


@activity.defn(name="by_attempt")
async def by_attempt(inp: StepInput) -> StepOutput:
    """params.texts: the output of each attempt (the last one repeats), base64-encoded: the
    L1 rules read a step's params as its subject, and would take the text for a quote."""
    texts = [base64.b64decode(t).decode() for t in inp.params["texts"]]
    return StepOutput(text=texts[min(inp.attempt, len(texts) - 1)])
