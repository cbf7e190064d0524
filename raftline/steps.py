"""Plain Python functions as pipeline steps: each becomes a Temporal activity.

A step function is an ordinary function, async (preferred) or not, that takes
- a `StepInput` (annotate the parameter with it): the task, goal, params, committed
  outputs, attempt, correction hint and idempotency key;
- or one parameter of any other (or no) annotation: the committed outputs of the earlier
  steps, a dict of step name -> output text;
- or nothing,

and returns a `str`, a pydantic model (sent on as its JSON text), a dict or list (JSON
text), or a `StepOutput` (to report token usage). A compensation function takes a
`CompensationInput` (or, annotated `str`, just the committed output it undoes).

The wrapper is an `@activity.defn` function named after the function's module and
qualified name (`my_service.steps.research`), so any worker that imports the module
can serve it; `registered(module)` lists the wrappers made for a module's functions.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.models import CompensationInput, SpecError, StepInput, StepOutput

StepFunction = Callable[..., Any]

# Wrappers by activity name (latest wins: a notebook cell run again replaces its function),
# and the wrapper made for each (function, name), so a function keeps one wrapper.
_BY_NAME: dict[str, Callable[..., Any]] = {}
_BY_FUNCTION: dict[tuple[Any, str], Callable[..., Any]] = {}
_MODULE_OF: dict[str, str] = {}


def defined_name(fn: Callable[..., Any]) -> str | None:
    """The activity name of an @activity.defn function, None for a plain function."""
    defn = activity._Definition.from_callable(fn)
    return defn.name if defn is not None else None


def default_name(fn: Callable[..., Any]) -> str:
    """`module.qualname`: what a worker importing the module registers the function as."""
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not qualname:
        raise SpecError(f"step function {fn!r} has no name; pass name=")
    return f"{module}.{qualname}"


def _positional(fn: Callable[..., Any], what: str) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise SpecError(f"{what} {fn!r}: cannot read its signature") from None
    required = [
        p
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if any(p.kind is p.KEYWORD_ONLY for p in required):
        raise SpecError(f"{what} {_label(fn)}: keyword-only parameters are not supported")
    if len(required) > 1:
        one = "a CompensationInput" if "compensation" in what else "a StepInput or a dict"
        raise SpecError(
            f"{what} {_label(fn)} takes {len(required)} arguments; it must take one ({one}) or none"
        )
    return required


def _annotation(fn: Callable[..., Any], param: inspect.Parameter) -> Any:
    """The parameter's annotation, resolved (also under `from __future__ import annotations`)."""
    try:
        return typing.get_type_hints(fn).get(param.name, param.annotation)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: use the raw text
        return param.annotation


def _is(annotation: Any, cls: type) -> bool:
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == cls.__name__
    return isinstance(annotation, type) and issubclass(annotation, cls)


def input_mode(fn: Callable[..., Any]) -> str:
    """How a step function is called: "input" (a StepInput), "context" (a dict) or "none"."""
    params = _positional(fn, "step function")
    if not params:
        return "none"
    return "input" if _is(_annotation(fn, params[0]), StepInput) else "context"


def returns_model(fn: Callable[..., Any]) -> bool:
    """Whether the function is annotated to return a pydantic model (so its output is JSON)."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:  # noqa: BLE001
        return False
    return isinstance(ret, type) and issubclass(ret, BaseModel) and not issubclass(ret, StepOutput)


def to_output(value: Any, label: str) -> StepOutput:
    """A step function's return value as the StepOutput the workflow verifies."""
    if isinstance(value, StepOutput):
        return value
    if value is None:
        return StepOutput(text="")  # the verifier calls it INCOMPLETE, with a hint
    if isinstance(value, str):
        return StepOutput(text=value)
    if isinstance(value, BaseModel):
        return StepOutput(text=value.model_dump_json())
    if isinstance(value, dict | list):
        try:
            return StepOutput(text=json.dumps(value, ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            raise ApplicationError(
                f"step function {label} returned a {type(value).__name__} that is not JSON: {exc}",
                non_retryable=True,
            ) from None
    raise ApplicationError(
        f"step function {label} returned {type(value).__name__}; return a str, a pydantic "
        "model, a dict or a StepOutput",
        non_retryable=True,
    )


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    ):
        return await fn(*args)
    # A plain (blocking) function runs in a thread, so the worker's event loop stays free.
    value = await asyncio.to_thread(fn, *args)
    return await value if inspect.isawaitable(value) else value


async def _heartbeating(fn: Callable[..., Any], *args: Any) -> Any:
    """Call fn; with a heartbeat timeout on the step (heartbeat_timeout_s), heartbeat for it
    meanwhile, so a dead worker is noticed sooner and a cancellation reaches the step."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await _call(fn, *args)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(max(timeout.total_seconds() / 3, 0.05))

    beating = asyncio.create_task(beat())
    try:
        return await _call(fn, *args)
    finally:
        beating.cancel()


def _label(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _remember(fn: Callable[..., Any], name: str, wrapper: Callable[..., Any]) -> None:
    _BY_FUNCTION[(fn, name)] = wrapper
    _BY_NAME[name] = wrapper
    _MODULE_OF[name] = getattr(fn, "__module__", None) or "__main__"


def step_activity(fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """The activity that runs a step function (the function itself if it is one already)."""
    if not callable(fn):
        raise SpecError(f"step {fn!r} is neither an activity name nor a function")
    if defined_name(fn) is not None:
        return fn
    name = name or default_name(fn)
    if (fn, name) in _BY_FUNCTION:
        return _BY_FUNCTION[(fn, name)]
    mode = input_mode(fn)
    label = _label(fn)

    async def run_step(inp: StepInput) -> StepOutput:
        args: tuple[Any, ...] = ()
        if mode == "input":
            args = (inp,)
        elif mode == "context":
            args = (dict(inp.committed),)
        return to_output(await _heartbeating(fn, *args), label)

    run_step.__name__ = getattr(fn, "__name__", "run_step")
    run_step.__qualname__ = label
    run_step.__doc__ = fn.__doc__
    wrapper = activity.defn(name=name)(run_step)
    _remember(fn, name, wrapper)
    return wrapper


def compensation_activity(fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """The activity that runs a compensation function."""
    if not callable(fn):
        raise SpecError(f"compensation {fn!r} is neither an activity name nor a function")
    if defined_name(fn) is not None:
        return fn
    name = name or default_name(fn)
    if (fn, name) in _BY_FUNCTION:
        return _BY_FUNCTION[(fn, name)]
    params = _positional(fn, "compensation function")
    wants_text = bool(params) and _is(_annotation(fn, params[0]), str)

    async def run_compensation(inp: CompensationInput) -> None:
        args: tuple[Any, ...] = ()
        if params:
            args = (inp.output,) if wants_text else (inp,)
        await _call(fn, *args)

    run_compensation.__name__ = getattr(fn, "__name__", "run_compensation")
    run_compensation.__qualname__ = _label(fn)
    run_compensation.__doc__ = fn.__doc__
    wrapper = activity.defn(name=name)(run_compensation)
    _remember(fn, name, wrapper)
    return wrapper


def registered(module: str | None = None) -> list[Callable[..., Any]]:
    """The activities made for step functions so far (of one module, if given), one per
    name: what a worker registers to serve code-defined pipelines."""
    return [w for n, w in _BY_NAME.items() if module is None or _MODULE_OF[n] == module]
