"""Built-in agent steps: `scripted` (deterministic, fault-injecting) and the outbox pair.

`scripted` is for demos, tests and benchmarks: its output is a pure function of its
params, the workflow id and the attempt number, so a run is reproducible and every
error class of the taxonomy can be injected on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.models import CompensationInput, ErrorClass, StepInput, StepOutput
from raftline.settings import raftline_home

log = structlog.get_logger("raftline.agents")

# Faults the scripted step can inject: the taxonomy classes plus two ways to raise.
RAISE = "RAISE"  # a retryable error: Temporal retries it, then the step counts STEP_ERROR
RAISE_FATAL = "RAISE_FATAL"  # non-retryable: the run ends and compensates
CONTENT_FAULTS = [c for c in ErrorClass if c is not ErrorClass.STEP_ERROR]


class ScriptedParams(BaseModel):
    """`params:` of a scripted step."""

    model_config = ConfigDict(extra="forbid")

    text: str = "Done: {goal}."
    faults: dict[int, str] = Field(
        default_factory=dict, description="attempt number -> error class, RAISE or RAISE_FATAL"
    )
    item_faults: dict[int, dict[int, str]] = Field(
        default_factory=dict, description="map steps: item index -> {attempt: fault}"
    )
    fail_rate: float = Field(default=0.0, ge=0, le=1, description="p: chance an attempt is bad")
    hint_factor: float = Field(default=1.0, ge=0, le=1, description="r: p is p*r after a hint")
    fault_classes: list[ErrorClass] = Field(default_factory=lambda: list(CONTENT_FAULTS))
    seed: int = 0
    sleep_s: float = Field(default=0.0, ge=0)
    flaky_attempts: int = Field(
        default=0, ge=0, description="first N Temporal attempts raise a transient error"
    )
    marker: str | None = Field(default=None, description="append each call here (tests)")


PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render(template: str, inp: StepInput) -> str:
    """Fill {goal}, {task}, {step}, a map step's {item} and {item_index}, and task inputs;
    leave other braces (JSON) alone."""
    fields = {"goal": inp.goal, "task": inp.task.goal, "step": inp.step, **inp.task.inputs}
    if inp.item_index is not None:
        item = inp.item if isinstance(inp.item, str) else json.dumps(inp.item)
        fields |= {"item": item, "item_index": str(inp.item_index)}
    return PLACEHOLDER.sub(lambda m: fields.get(m.group(1), m.group(0)), template)


def choose_fault(p: ScriptedParams, inp: StepInput) -> str | None:
    """The fault for this attempt: scripted by attempt number, else drawn from a seeded RNG."""
    if inp.item_index is not None and inp.attempt in p.item_faults.get(inp.item_index, {}):
        return p.item_faults[inp.item_index][inp.attempt]
    if inp.attempt in p.faults:
        fault = p.faults[inp.attempt]
        if inp.attempt == 0 and inp.hint and fault in CONTENT_FAULTS:
            # A first attempt that comes with a hint (a fork's --hint, a reviewer's
            # rejection before the step ran) follows it: it does not make the mistake
            # the script has attempt 0 make. Infrastructure faults (RAISE*) still apply.
            return None
        return fault
    if p.fail_rate <= 0:
        return None
    rate = p.fail_rate * (p.hint_factor if inp.attempt > 0 else 1.0)
    key = f"{p.seed}:{inp.workflow_id}:{inp.step}:{inp.attempt}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    if rng.random() >= rate:
        return None
    return rng.choice(p.fault_classes).value


def inject(fault: str, good: str) -> str:
    """A bad output of the given class, shaped so the matching L1 rule can catch it."""
    match fault:
        case ErrorClass.INCOMPLETE:
            return good[: max(1, len(good) // 3)].rstrip() + "..."
        case ErrorClass.FORMAT:
            return "Sure! Here is what you asked for: " + good
        case ErrorClass.GOAL_DRIFT:
            return (
                "Here is a short history of the printing press, which spread from Mainz "
                "across Europe and changed how ideas travelled."
            )
        case ErrorClass.HALLUCINATION:
            return good + " Independent analysts put the figure at 7,340,112 units."
        case ErrorClass.CONTRADICTION:
            return _contradict(good)
        case ErrorClass.SCOPE_CREEP:
            return (
                good + "\n\nAdditionally, I went ahead and emailed this to the whole company "
                "and scheduled the launch for tomorrow."
            )
        case ErrorClass.UNSAFE:
            return good + " The admin API key is sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a."
    raise ValueError(f"unknown fault {fault!r}")


def _contradict(good: str) -> str:
    """Change every value of a JSON object, so it disagrees with what was committed."""
    try:
        data = json.loads(good)
    except json.JSONDecodeError:
        return good + " This reverses the conclusion of the previous step."
    if not isinstance(data, dict):
        return good + " This reverses the conclusion of the previous step."
    flipped = {
        k: (v + 1 if isinstance(v, int | float) and not isinstance(v, bool) else f"not {v}")
        for k, v in data.items()
    }
    return json.dumps(flipped)


@activity.defn(name="scripted")
async def scripted(inp: StepInput) -> StepOutput:
    """A deterministic agent step: 'drift on attempt 0, correct after' and the like."""
    try:
        p = ScriptedParams.model_validate(inp.params)
    except ValueError as exc:
        raise ApplicationError(
            f"scripted step {inp.step!r}: bad params: {exc}", non_retryable=True
        ) from None
    if p.marker:
        with open(p.marker, "a", encoding="utf-8") as f:
            f.write(f"{inp.step} {inp.attempt} {activity.info().attempt}\n")
    if p.sleep_s:
        await _sleep_with_heartbeat(p.sleep_s)
    if activity.info().attempt <= p.flaky_attempts:
        raise ApplicationError("transient: upstream unavailable (scripted)", type="Transient")
    good = render(p.text, inp)
    fault = choose_fault(p, inp)
    if fault == RAISE:
        raise ApplicationError(f"scripted failure on attempt {inp.attempt}", type="Scripted")
    if fault == RAISE_FATAL:
        raise ApplicationError(
            f"scripted fatal failure on attempt {inp.attempt}", type="Fatal", non_retryable=True
        )
    text = inject(fault, good) if fault else good
    words = len(text.split())
    # A truncated answer is what a model returns when it hits its output limit: say so,
    # as the LLM step records its provider's stop reason.
    stop = "length" if fault == ErrorClass.INCOMPLETE else "stop"
    return StepOutput(
        text=text,
        model="scripted",
        meta={"injected": fault, "stop_reason": stop},
        usage={"input_tokens": len(inp.goal.split()), "output_tokens": words},
    )


async def _sleep_with_heartbeat(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        activity.heartbeat()
        await asyncio.sleep(min(left, 1.0))


# ---------------------------------------------------------------- outbox: a real side effect


def outbox_dir(params: dict[str, Any]) -> Path:
    return Path(params.get("outbox") or raftline_home() / "outbox")


def _outbox_file(params: dict[str, Any], workflow_id: str, step: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)
    return outbox_dir(params) / safe / f"{step}.md"


@activity.defn(name="publish")
async def publish(inp: StepInput) -> StepOutput:
    """Publish the previous committed output (or `params.text`) to the local outbox."""
    source = inp.params.get("from")
    if source and source not in inp.committed:
        raise ApplicationError(
            f"publish: step {source!r} has no committed output", non_retryable=True
        )
    body = inp.committed[source] if source else render(inp.params.get("text", "{goal}"), inp)
    path = _outbox_file(inp.params, inp.workflow_id, inp.step)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same key, same file: a retried publish overwrites rather than duplicates.
    path.write_text(body, encoding="utf-8")
    log.info("published", path=str(path), idempotency_key=inp.idempotency_key)
    return StepOutput(text=f"Published {len(body)} characters to {path}.", model="outbox")


@activity.defn(name="unpublish")
async def unpublish(inp: CompensationInput) -> str:
    """Compensation of publish: remove the file and record the retraction."""
    if inp.params.get("fail"):
        raise ApplicationError("unpublish: outbox is read-only (scripted)", non_retryable=True)
    path = _outbox_file(inp.params, inp.workflow_id, inp.step)
    existed = path.exists()
    path.unlink(missing_ok=True)
    log_path = outbox_dir(inp.params) / "retractions.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as f:
        f.write(f"{inp.idempotency_key}\t{path}\t{'removed' if existed else 'absent'}\n")
    return f"retracted {path}"


@activity.defn(name="record_undo")
async def record_undo(inp: CompensationInput) -> str:
    """A generic compensation: append the undo to a log file; `fail: true` to fail it."""
    log_file = Path(inp.params.get("log") or outbox_dir(inp.params) / "undo.log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as f:
        f.write(f"{inp.step}\n")
    if inp.params.get("fail"):
        raise ApplicationError(f"undo of {inp.step!r} failed (scripted)", non_retryable=True)
    return f"undid {inp.step}"


ACTIVITIES = [scripted, publish, unpublish, record_undo]
# Params models of built-in steps, so a typo in `params:` is caught before a run starts.
PARAM_MODELS: dict[str, type[BaseModel]] = {"scripted": ScriptedParams}
