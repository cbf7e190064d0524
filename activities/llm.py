"""Temporal activities that call LLMs: the `llm` agent step and the `raftline.llm_judge`.

Both raise `ApplicationError`s from activities.providers, so Temporal's RetryPolicy decides
about transient errors (retryable) while configuration errors fail fast (non-retryable).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from raftline.activities.providers import (
    BUDGET_EXCEEDED,
    DEFAULT_MODELS,
    FATAL,
    RETRYABLE,
    Completion,
    CompletionRequest,
    complete,
    configured_providers,
    default_model,
    detect,
)
from raftline.models import BudgetCap, StepInput, StepOutput, Usage, Verdict, VerifyInput
from raftline.verifiers.llm import (
    JudgeError,
    build_judge_prompt,
    injection_verdict,
    looks_like_injection,
    parse_verdict,
)
from raftline.verifiers.tiered import CircuitBreaker

log = structlog.get_logger(__name__)

JUDGE_UNPARSEABLE = "JudgeUnparseable"
JUDGE_UNAVAILABLE = "JudgeUnavailable"
JUDGE_NOT_CONFIGURED = "JudgeNotConfigured"


def _bad_params(what: str) -> ApplicationError:
    return ApplicationError(what, type=FATAL, non_retryable=True)


def _provider(name: Any, who: str) -> str:
    provider = str(name).strip().lower()
    if provider not in DEFAULT_MODELS:
        raise _bad_params(
            f"{who}: unknown provider {name!r}: use one of {', '.join(DEFAULT_MODELS)}"
        )
    return provider


# ---------------------------------------------------------------- the `llm` agent step

DEFAULT_SYSTEM = (
    "You are one step of a verified multi-step pipeline. Do exactly this step's goal, "
    "using only the information given. Reply with the step's result only."
)
DEFAULT_TEMPLATE = """Task: {task}

Your step: {goal}

Inputs:
{inputs}

Outputs of earlier steps:
{committed}
{hint}"""
_PLACEHOLDER = re.compile(r"\{(goal|task|inputs|committed|hint)\}")


def render_prompt(template: str, inp: StepInput) -> str:
    """Fill the known placeholders only, so JSON braces in a user template stay as written.

    {goal} is the step's goal, {task} the run's goal; a correction hint is appended even
    when the template has no {hint}, so a retry always knows what went wrong.
    """
    hint = ""
    if inp.hint:
        hint = f"\nYour previous attempt failed verification. Correction: {inp.hint}\n"
    values = {
        "goal": inp.goal,
        "task": inp.task.goal,
        "inputs": "\n".join(f"- {k}: {v}" for k, v in inp.task.inputs.items()) or "(none)",
        "committed": "\n\n".join(f"## {k}\n{v}" for k, v in inp.committed.items()) or "(none)",
        "hint": hint,
    }
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if hint and "{hint}" not in template:
        text = f"{text.rstrip()}\n{hint}"
    return text


@activity.defn(name="llm")
async def llm_step(inp: StepInput) -> StepOutput:
    """An agent step that is one LLM call.

    params: provider, model, system, prompt (template), temperature, max_tokens,
    response_format ("text" | "json"), timeout_s, base_url.
    """
    p = inp.params
    if p.get("provider"):
        provider = _provider(p["provider"], f"step {inp.step}")
        model = str(p.get("model") or default_model(provider, "L3"))
    else:
        found = detect("L3", prefix="RAFTLINE_AGENT")
        if found is None:
            raise _bad_params(
                f"step {inp.step}: no LLM provider configured: set OPENAI_API_KEY, "
                "ANTHROPIC_API_KEY, GEMINI_API_KEY or AWS credentials, or params.provider"
            )
        provider, model = found[0], str(p.get("model") or found[1])
    fmt = p.get("response_format", "text")
    if fmt not in ("text", "json"):
        raise _bad_params(f"step {inp.step}: response_format must be 'text' or 'json'")
    try:
        req = CompletionRequest(
            provider=provider,
            model=model,
            system=p.get("system", DEFAULT_SYSTEM),
            prompt=render_prompt(p.get("prompt") or DEFAULT_TEMPLATE, inp),
            temperature=p.get("temperature", 0.2),
            max_tokens=p.get("max_tokens", 2048),
            json_mode=fmt == "json",
            timeout_s=p.get("timeout_s", 120.0),
            base_url=p.get("base_url"),
        )
    except ValueError as exc:
        raise _bad_params(f"step {inp.step}: invalid llm params: {exc}") from None
    result = await complete(req, inp.budget)
    log.info("llm step", step=inp.step, attempt=inp.attempt, provider=provider, model=result.model)
    return StepOutput(
        text=result.text,
        usage=result.usage,
        model=result.model,
        meta={
            "provider": provider,
            "latency_ms": result.latency_ms,
            "stop_reason": result.stop_reason,
        },
    )


# ---------------------------------------------------------------- the judge

_BREAKERS: dict[str, CircuitBreaker] = {}


def breaker_for(key: str, threshold: int = 3, cooldown_s: float = 60.0) -> CircuitBreaker:
    """The per-process breaker of one provider endpoint (shared by every run of this worker)."""
    if key not in _BREAKERS:
        _BREAKERS[key] = CircuitBreaker(threshold=threshold, cooldown_s=cooldown_s)
    return _BREAKERS[key]


def reset_breakers() -> None:
    _BREAKERS.clear()


@dataclass(frozen=True)
class Candidate:
    provider: str
    model: str
    base_url: str | None = None

    @property
    def key(self) -> str:
        # One breaker per endpoint: a local Ollama and api.openai.com fail independently.
        return f"{self.provider}@{self.base_url or ''}"


def _model_for(spec: dict[str, Any], provider: str, tier: str, env_model: str | None) -> str:
    """models.{tier} > model > the environment's > the provider's default for the tier."""
    per_tier = spec.get("models") if isinstance(spec.get("models"), dict) else {}
    return str(
        per_tier.get(tier) or spec.get("model") or env_model or default_model(provider, tier)
    )


def judge_candidates(params: dict[str, Any], tier: str) -> list[Candidate]:
    """The judge's providers in order: the primary, then the fallbacks.

    Fallbacks are `params.fallback` (names or {provider, model, models, base_url}); without
    it, every other provider that has credentials in the environment, with its tier default.
    """
    if params.get("provider"):
        provider, env_model = _provider(params["provider"], "judge"), None
    else:
        found = detect(tier)
        if found is None:
            return []
        provider, env_model = found
    first = Candidate(
        provider, _model_for(params, provider, tier, env_model), params.get("base_url")
    )
    chain = [first]
    fallback = params.get("fallback")
    if fallback is None:
        fallback = [p for p in configured_providers() if p != first.provider]
    for item in fallback if isinstance(fallback, list) else [fallback]:
        spec = item if isinstance(item, dict) else {"provider": item}
        provider = _provider(spec.get("provider"), "judge fallback")
        chain.append(
            Candidate(provider, _model_for(spec, provider, tier, None), spec.get("base_url"))
        )
    return chain


async def _ask(
    c: Candidate, system: str, user: str, p: dict[str, Any], cap: BudgetCap | None, spent: Usage
) -> Completion:
    req = CompletionRequest(
        provider=c.provider,
        model=c.model,
        system=system,
        prompt=user,
        temperature=p.get("temperature", 0.0),
        max_tokens=p.get("max_tokens", 400),
        json_mode=True,
        timeout_s=p.get("timeout_s", 60.0),
        base_url=c.base_url,
    )
    return await complete(req, cap, spent)


def _charged(exc: ApplicationError) -> Usage:
    """What a failed call is charged (a provider error's details say, when it may have
    been billed); nothing otherwise."""
    details = exc.details[0] if exc.details else None
    if isinstance(details, dict) and isinstance(details.get("usage"), dict):
        return Usage.model_validate(details["usage"])
    return Usage()


@dataclass
class _Attempt:
    verdict: Verdict | None = None
    usage: Usage = field(default_factory=Usage)
    errors: list[str] = field(default_factory=list)
    rejected: int = 0  # replies that were not a valid verdict (they cost tokens all the same)


async def _judge(
    candidates: list[Candidate],
    system: str,
    user: str,
    tier: str,
    p: dict[str, Any],
    cap: BudgetCap | None,
) -> _Attempt:
    """The first valid verdict from the candidates whose breaker allows a call. A reply
    that is not a valid verdict is asked again (`reasks`, default 1) before moving on."""
    out = _Attempt()
    threshold = int(p.get("breaker_threshold", 3))
    cooldown = float(p.get("breaker_cooldown_s", 60.0))
    reasks = int(p.get("reasks", 1))
    for c in candidates:
        breaker = breaker_for(c.key, threshold, cooldown)
        for _ in range(1 + max(reasks, 0)):
            if not breaker.allow(time.monotonic()):
                out.errors.append(f"{c.provider}: circuit open")
                break
            try:
                result = await _ask(c, system, user, p, cap, out.usage)
            except ApplicationError as exc:
                if exc.type == BUDGET_EXCEEDED:
                    # What this call already spent on rejected replies still counts.
                    raise ApplicationError(
                        exc.message,
                        {"usage": out.usage.model_dump()},
                        type=BUDGET_EXCEEDED,
                        non_retryable=True,
                    ) from None
                if exc.non_retryable:
                    raise  # a configuration error: fail fast, never hide it behind a fallback
                charged = _charged(exc)
                if charged.tokens:
                    # A 200 that was not a reply (may have been billed): like a rejected
                    # reply, its cost reaches the workflow, which asks again later.
                    out.usage = out.usage + charged
                    out.rejected += 1
                breaker.record_failure(time.monotonic())
                out.errors.append(exc.message)
                log.warning("judge provider failed", provider=c.provider, error=exc.message)
                break
            breaker.record_success()
            out.usage = out.usage + result.usage  # a rejected reply still cost tokens
            try:
                out.verdict = parse_verdict(result.text, tier, f"llm:{c.provider}", result.model)
            except JudgeError as exc:
                out.rejected += 1
                out.errors.append(f"{c.provider}/{result.model}: {exc}")
                log.warning(
                    "judge reply rejected", provider=c.provider, error=str(exc), raw=exc.raw
                )
                continue
            return out
    return out


@activity.defn(name="raftline.llm_judge")
async def llm_judge(inp: VerifyInput) -> Verdict:
    """L2/L3 verdict on one step output.

    params: provider, model, models ({"L2": ..., "L3": ...}), fallback (list), base_url,
    temperature, max_tokens, timeout_s, reasks, breaker_threshold, breaker_cooldown_s
    (min_confidence is read by the workflow, which escalates low-confidence L2 passes).

    No verdict is never a pass: when no judge can give one, this raises, and the
    workflow decides (wait for the judge, then end the run; or degrade if the step opted
    in). Every reply counts against the budget, usable or not: a failure carries what it
    spent in its details.
    """
    started = time.perf_counter()
    verdict = await _verdict(inp)
    return verdict.model_copy(
        update={"latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    )


async def _verdict(inp: VerifyInput) -> Verdict:
    p = inp.params
    tier = inp.tier if inp.tier in ("L2", "L3") else "L2"
    if looks_like_injection(inp.output.text):
        log.warning("judge: injection pre-check failed the output", step=inp.step.name)
        return injection_verdict(tier)
    candidates = judge_candidates(p, tier)
    if not candidates:
        raise ApplicationError(
            "no LLM judge configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY "
            "or AWS credentials (or the judge's params.provider), or let the step commit "
            "unjudged with on_judge_unavailable: degrade",
            type=JUDGE_NOT_CONFIGURED,
            non_retryable=True,
        )
    system, user = build_judge_prompt(inp)
    got = await _judge(candidates, system, user, tier, p, inp.budget)
    if got.verdict is not None:
        # A low-confidence L2 pass is returned as it is: the workflow escalates it to L3
        # (verifiers.llm.should_escalate with params.min_confidence), so it is in the trace.
        return got.verdict.model_copy(update={"usage": got.usage})
    spent = {"usage": got.usage.model_dump()}
    if got.rejected:
        # Replies came, none usable: the workflow counts their cost and asks again later.
        raise ApplicationError(
            "judge gave no valid verdict: " + "; ".join(got.errors),
            spent,
            type=JUDGE_UNPARSEABLE,
            non_retryable=True,
        )
    now = time.monotonic()
    if all(breaker_for(c.key).is_open(now) for c in candidates):
        raise ApplicationError(
            "every judge provider is failing (circuit open): " + "; ".join(got.errors),
            spent,
            type=JUDGE_UNAVAILABLE,
            non_retryable=True,
        )
    # Transient (5xx, 429, timeouts): Temporal's retry policy asks again.
    raise ApplicationError("judge failed: " + "; ".join(got.errors), spent, type=RETRYABLE)


ACTIVITIES = [llm_step, llm_judge]
