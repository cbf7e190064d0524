"""Local activities the workflow itself needs: I/O and library code it may not run inline.

- `raftline.put_output`: store a text the workflow composed (a map step's list of
  results, a reviewer's edit, an archived trace) in the output store; returns its sha256.
- `raftline.archive_trace`: a run's trace when it continues as new (store and history).
- `raftline.load_list`: the JSON list a map step runs over, from a committed output or a
  task input.
- `raftline.when`: evaluate a step's CEL condition over committed outputs.
- `raftline.rules_v2`: the L1 rules on an output too large to check inside the workflow.

Their results are recorded in history, so a replay (or an upgraded library) never
decides differently for a run in flight.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.blobs import BlobMissing, blob_store
from raftline.models import ListInput, Verdict, VerifyInput, WhenInput
from raftline.verifiers.rules import OutputFacts, check_rules

MAX_ITEMS = 10_000


@activity.defn(name="raftline.put_output")
async def put_output(text: str) -> str:
    return await blob_store().put(text)


@activity.defn(name="raftline.archive_trace")
async def archive_trace(text: str) -> str:
    """A run's trace events (JSON) when it continues as new: into the store, and back as
    the result, so the run's own history holds them too (a reader without the store
    still finds them there)."""
    try:
        await blob_store().put(text)
    except Exception as exc:  # noqa: BLE001 - the history copy is enough to read the trace
        activity.logger.warning(f"trace archive not stored: {exc}")
    return text


@activity.defn(name="raftline.load_list")
async def load_list(inp: ListInput) -> list[Any]:
    try:
        text = await blob_store().get(inp.sha256) if inp.sha256 else inp.text
    except BlobMissing as exc:
        raise ApplicationError(str(exc), type="CommittedOutputMissing") from None
    if text is None:
        raise ApplicationError(
            f"{inp.source!r} is neither a committed step nor a task input", non_retryable=True
        )
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApplicationError(
            f"{inp.source!r} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            type="NotAList",
            non_retryable=True,
        ) from None
    if not isinstance(value, list):
        raise ApplicationError(
            f"{inp.source!r} is a JSON {type(value).__name__}, not a list",
            type="NotAList",
            non_retryable=True,
        )
    if len(value) > MAX_ITEMS:
        raise ApplicationError(
            f"{inp.source!r} has {len(value)} elements; a map takes at most {MAX_ITEMS}",
            type="NotAList",
            non_retryable=True,
        )
    return value


@activity.defn(name="raftline.when")
async def when(inp: WhenInput) -> bool:
    from raftline.expressions import ExpressionError, evaluate

    store = blob_store()
    outputs: dict[str, str | None] = {}
    try:
        for step, digest in inp.outputs.items():
            outputs[step] = await store.get(digest) if digest else None
    except BlobMissing as exc:
        raise ApplicationError(str(exc), type="CommittedOutputMissing") from None
    try:
        return evaluate(inp.expression, outputs, inp.inputs)
    except ExpressionError as exc:
        raise ApplicationError(str(exc), type="WhenFailed", non_retryable=True) from None


@activity.defn(name="raftline.rules_v2")
async def rules_v2(inp: VerifyInput) -> Verdict:
    facts = [OutputFacts.model_validate(f) for f in inp.params.get("facts", [])]
    # Runs from before rules-3 sent no version: they decided as rules-2.
    version = inp.params.get("rules_version", "rules-2")
    return check_rules(inp.model_copy(update={"params": {}}), facts, version)


ACTIVITIES = [put_output, archive_trace, load_list, when, rules_v2]
