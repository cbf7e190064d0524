"""Activities of the chaos benchmark, loaded by real workers:
`python worker.py --task-queue Q --activities benchmarks.chaos_steps`.

`bench.chaos_step` is the `scripted` step plus a journal: one line when an attempt
starts and one when it returns, with the worker's pid (and a map item's index), so the
benchmark can tell which steps were in flight on a worker it killed. A map step's
`item_sleep_s` (a list) gives each item its own sleep. `bench.chaos_undo` is an idempotent
compensation: its effect (a marker file named by the idempotency key) happens once
however often Temporal delivers it, and every delivery is journaled.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from temporalio import activity

from raftline.activities.agents import scripted
from raftline.models import CompensationInput, StepInput, StepOutput

JOURNAL_KEY = "journal"
ITEM_SLEEP_KEY = "item_sleep_s"


def journal(folder: str, *fields: object) -> None:
    """Append one tab-separated line to this process's journal (one file per pid)."""
    line = "\t".join([f"{time.time():.3f}", str(os.getpid()), *map(str, fields)])
    with open(Path(folder) / f"journal-{os.getpid()}.tsv", "a", encoding="utf-8") as f:
        f.write(line + "\n")


@activity.defn(name="bench.chaos_step")
async def chaos_step(inp: StepInput) -> StepOutput:
    folder = str(inp.params[JOURNAL_KEY])
    info = activity.info()
    item = "-" if inp.item_index is None else inp.item_index
    where = (inp.workflow_id, inp.step, inp.attempt, info.attempt, item)
    journal(folder, "start", *where)
    params = {k: v for k, v in inp.params.items() if k not in (JOURNAL_KEY, ITEM_SLEEP_KEY)}
    sleeps = inp.params.get(ITEM_SLEEP_KEY)
    if sleeps and inp.item_index is not None:
        params["sleep_s"] = sleeps[inp.item_index % len(sleeps)]
    try:
        return await scripted(inp.model_copy(update={"params": params}))
    finally:  # returned or raised: either way no longer in flight (a SIGKILL writes nothing)
        journal(folder, "end", *where)


@activity.defn(name="bench.chaos_undo")
async def chaos_undo(inp: CompensationInput) -> str:
    folder = Path(str(inp.params[JOURNAL_KEY]))
    done = folder / "undone"
    done.mkdir(exist_ok=True)
    marker = done / hashlib.sha256(inp.idempotency_key.encode()).hexdigest()[:32]
    try:
        with open(marker, "x", encoding="utf-8") as f:  # the effect: exactly once per key
            f.write(inp.idempotency_key + "\n")
        effect = "applied"
    except FileExistsError:
        effect = "already"
    journal(
        str(folder),
        "undo",
        inp.workflow_id,
        inp.step,
        effect,
        activity.info().attempt,
        inp.idempotency_key,
    )
    return f"undid {inp.step} ({effect})"


ACTIVITIES = [chaos_step, chaos_undo]
