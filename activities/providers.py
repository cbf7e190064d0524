"""One adapter per LLM wire API, behind one call: `await complete(CompletionRequest(...))`.

- `openai`: OpenAI Chat Completions, any OpenAI-compatible server (vLLM, Ollama, LM Studio)
  through `base_url` / OPENAI_BASE_URL, and Gemini through its OpenAI-compatible endpoint.
- `anthropic`: the Messages API.
- `bedrock`: the Bedrock Runtime Converse API, so every Bedrock chat model works by id.

Retries belong to Temporal, not to the SDKs: every client is built with its own retries off,
and every failure leaves as a `temporalio.exceptions.ApplicationError` that says whether
retrying can help (429, 5xx, timeouts, connection errors) or not (401/403/400/404, missing
credentials), with a one-line message naming the provider and what to do.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import ssl
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from raftline.models import BudgetCap, Usage

log = structlog.get_logger(__name__)

Provider = Literal["openai", "anthropic", "bedrock", "gemini"]
PROVIDERS: tuple[str, ...] = ("bedrock", "openai", "anthropic", "gemini")  # detection order

RETRYABLE = "ProviderRetryable"
FATAL = "ProviderFatal"

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
JSON_INSTRUCTION = "Respond with a single JSON object and nothing else."

# Tier -> default model. L2 is the small, cheap judge; L3 the large one.
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "openai": {"L2": "gpt-4.1-mini", "L3": "gpt-4.1"},
    "anthropic": {"L2": "claude-haiku-4-5", "L3": "claude-sonnet-4-6"},
    # Nova models answer on demand by plain id (no inference profile needed).
    "bedrock": {"L2": "amazon.nova-lite-v1:0", "L3": "amazon.nova-pro-v1:0"},
    "gemini": {"L2": "gemini-2.5-flash", "L3": "gemini-2.5-pro"},
}

# USD per 1M tokens (input, output), list prices. An entry matches the id itself or the id
# followed by "-" or ":" (dated versions), longest entry first, so "gpt-5" does not price
# "gpt-5.4-mini". Unknown models cost 0; extend with RAFTLINE_PRICES='{"id": [in, out]}'.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4-0": (15.00, 75.00),
    "claude-opus-4-20250514": (15.00, 75.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4-5": (5.00, 25.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-pro": (1.25, 10.00),
    "amazon.nova-micro": (0.035, 0.14),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-pro": (0.80, 3.20),
    "amazon.nova-premier": (2.50, 12.50),
}
_BEDROCK_PREFIX = re.compile(r"^(?:us|eu|apac|us-gov|jp|au|ca|global)\.")


class CompletionRequest(BaseModel):
    provider: Provider
    model: str
    system: str = ""
    prompt: str
    temperature: float | None = 0.0
    max_tokens: int = Field(default=1024, ge=1)
    json_mode: bool = False
    timeout_s: float = Field(default=60.0, gt=0)
    base_url: str | None = None  # OpenAI-compatible servers; None = env or the provider's own


class Completion(BaseModel):
    text: str
    usage: Usage
    model: str
    provider: str
    latency_ms: float
    stop_reason: str | None = None


# ---------------------------------------------------------------- prices, detection


def _price_key(model: str) -> str:
    m = model.lower().removeprefix("models/")
    m = _BEDROCK_PREFIX.sub("", m)
    return m.removeprefix("anthropic.")  # Bedrock's Claude ids share Anthropic's prices


@functools.cache
def _price_overrides(raw: str) -> dict[str, tuple[float, float]]:
    try:
        return {k.lower(): (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, IndexError, AttributeError):
        log.warning("invalid RAFTLINE_PRICES ignored")
        return {}


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when the model is not in the table."""
    table = PRICES | _price_overrides(os.environ.get("RAFTLINE_PRICES", "{}"))
    key = _price_key(model)
    best = max(
        (p for p in table if key == p or key.startswith((f"{p}-", f"{p}:"))), key=len, default=None
    )
    return table[best] if best else None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    price = price_of(model)
    if price is None:
        return 0.0
    return round((input_tokens * price[0] + output_tokens * price[1]) / 1_000_000, 8)


def make_usage(model: str, input_tokens: int | None, output_tokens: int | None) -> Usage:
    i, o = int(input_tokens or 0), int(output_tokens or 0)
    return Usage(input_tokens=i, output_tokens=o, cost_usd=cost_usd(model, i, o))


def configured_providers(env: Mapping[str, str] | None = None) -> list[str]:
    """Providers with credentials in the environment, in detection order."""
    env = os.environ if env is None else env
    found = {
        "bedrock": bool(
            env.get("AWS_ACCESS_KEY_ID")
            or env.get("AWS_PROFILE")
            or env.get("AWS_BEARER_TOKEN_BEDROCK")
        ),
        "openai": bool(env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL")),
        "anthropic": bool(env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN")),
        "gemini": bool(env.get("GEMINI_API_KEY")),
    }
    return [p for p in PROVIDERS if found[p]]


def default_model(provider: str, tier: str = "L2") -> str:
    models = DEFAULT_MODELS[provider]
    return models.get(tier, models["L2"])


def detect(
    tier: str = "L2", env: Mapping[str, str] | None = None, prefix: str = "RAFTLINE_VERIFIER"
) -> tuple[str, str] | None:
    """(provider, model) from the environment, or None when no LLM is configured.

    {prefix}_PROVIDER / {prefix}_MODEL force the choice; otherwise the first provider with
    credentials wins and the tier picks its small (L2) or large (L3) default model.
    """
    env = os.environ if env is None else env
    forced = (env.get(f"{prefix}_PROVIDER") or "").strip().lower()
    if forced and forced not in DEFAULT_MODELS:
        raise ApplicationError(
            f"{prefix}_PROVIDER={forced!r} is unknown: use one of {', '.join(PROVIDERS)}",
            type=FATAL,
            non_retryable=True,
        )
    provider = forced or next(iter(configured_providers(env)), None)
    if provider is None:
        return None
    model = (env.get(f"{prefix}_MODEL") or "").strip() or default_model(provider, tier)
    return provider, model


# ---------------------------------------------------------------- errors


KEY_HINT = {
    "openai": "check OPENAI_API_KEY",
    "anthropic": "check ANTHROPIC_API_KEY",
    "gemini": "check GEMINI_API_KEY",
    "bedrock": "check the AWS credentials and the model access granted in the Bedrock console",
}


def _retry_after(headers: Mapping[str, str] | None) -> timedelta | None:
    """The server's Retry-After as Temporal's next retry delay, capped at a minute."""
    try:
        value = float((headers or {}).get("retry-after", ""))
    except ValueError:
        return None
    return timedelta(seconds=min(max(value, 0.0), 60.0))


def classify_status(
    provider: str,
    status: int,
    detail: str = "",
    model: str = "",
    headers: Mapping[str, str] | None = None,
) -> ApplicationError:
    """An HTTP status from a provider as a retryable or non-retryable ApplicationError."""
    detail = " ".join(detail.split())[:200]
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return ApplicationError(
            f"{provider}: rate limited (429){suffix}",
            type=RETRYABLE,
            next_retry_delay=_retry_after(headers),
        )
    if status >= 500 or status in (408, 409):
        return ApplicationError(f"{provider}: server error ({status}){suffix}", type=RETRYABLE)
    if status == 401:
        msg = f"{provider}: authentication failed (401): {KEY_HINT[provider]}"
    elif status == 403:
        msg = f"{provider}: permission denied (403): {KEY_HINT[provider]}{suffix}"
    elif status == 404:
        msg = f"{provider}: model {model!r} or endpoint not found (404): check the model name"
    else:
        msg = f"{provider}: request rejected ({status}){suffix}: check the step's params"
    return ApplicationError(msg, type=FATAL, non_retryable=True)


def _retryable(provider: str, what: str) -> ApplicationError:
    return ApplicationError(f"{provider}: {what}", type=RETRYABLE)


def _fatal(provider: str, what: str) -> ApplicationError:
    return ApplicationError(f"{provider}: {what}", type=FATAL, non_retryable=True)


# ---------------------------------------------------------------- OpenAI wire (OpenAI, Gemini)


def _openai_settings(req: CompletionRequest) -> tuple[str | None, str | None]:
    """(api_key, base_url) for OpenAI, OpenAI-compatible servers and Gemini."""
    if req.provider == "gemini":
        key = os.environ.get("GEMINI_API_KEY")
        if not key:
            raise _fatal("gemini", "no API key: set GEMINI_API_KEY")
        return key, req.base_url or os.environ.get("RAFTLINE_GEMINI_BASE_URL") or GEMINI_BASE_URL
    base_url = req.base_url or os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY")
    if not key and not base_url:
        raise _fatal("openai", "no API key: set OPENAI_API_KEY (or OPENAI_BASE_URL)")
    # Local OpenAI-compatible servers (Ollama, vLLM) take any key.
    return key or "not-needed", base_url


@functools.lru_cache(maxsize=4)
def _tls_context(_cafile: str | None, _capath: str | None) -> ssl.SSLContext:
    """The TLS context the SDKs' httpx would build for every new client, built once.

    Loading the CA bundle costs 20-70 ms of CPU, on the worker's event loop, so a context
    per call made every OpenAI/Anthropic call that much slower and stalled every other
    activity meanwhile. Cached per SSL_CERT_FILE/SSL_CERT_DIR, which httpx reads for it.
    """
    try:
        import httpx2 as httpx_lib  # what the current SDKs use
    except ImportError:  # older SDKs: httpx
        import httpx as httpx_lib  # type: ignore[no-redef]
    return httpx_lib.create_ssl_context()


def _http_client(sdk: Any) -> Any:
    """A fresh async HTTP client for one call (they are bound to the loop that made them),
    with the SDK's defaults and the shared TLS context."""
    ctx = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return sdk.DefaultAsyncHttpxClient(verify=ctx)


def _reasoning_model(model: str) -> bool:
    # o-series and gpt-5 onwards reject `temperature` and `max_tokens`.
    return bool(re.match(r"^(o\d|gpt-[5-9])", model))


async def _openai(req: CompletionRequest) -> Completion:
    import openai

    key, base_url = _openai_settings(req)
    messages = []
    system = f"{req.system}\n\n{JSON_INSTRUCTION}" if req.json_mode else req.system
    if system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": req.prompt})
    args: dict[str, Any] = {"model": req.model, "messages": messages}
    if _reasoning_model(req.model):
        args["max_completion_tokens"] = req.max_tokens
    else:
        args["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            args["temperature"] = req.temperature
    if req.json_mode:
        args["response_format"] = {"type": "json_object"}

    started = time.perf_counter()
    # A client per call: async clients are bound to the loop that created them.
    try:
        async with openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=req.timeout_s,
            http_client=_http_client(openai),
        ) as client:
            resp = await client.chat.completions.create(**args)
    except openai.APITimeoutError:
        raise _retryable(req.provider, f"timed out after {req.timeout_s}s") from None
    except openai.APIConnectionError as exc:
        raise _retryable(req.provider, f"connection failed: {exc}") from None
    except openai.APIStatusError as exc:
        raise classify_status(
            req.provider, exc.status_code, _error_detail(exc.body), req.model, exc.response.headers
        ) from None
    except openai.OpenAIError as exc:  # bad local configuration
        raise _fatal(req.provider, str(exc)) from None
    latency = (time.perf_counter() - started) * 1000
    if not resp.choices:
        raise ValueError("the reply has no choices")
    choice = resp.choices[0]
    usage = resp.usage
    model = resp.model or req.model
    return Completion(
        text=_openai_text(choice.message.content),
        usage=_reported(
            req, model, usage and usage.prompt_tokens, usage and usage.completion_tokens
        ),
        model=model,
        provider=req.provider,
        latency_ms=round(latency, 2),
        stop_reason=choice.finish_reason,
    )


def _reported(req: CompletionRequest, model: str, prompt: Any, output: Any) -> Usage:
    """The usage the server reported; a server that reports none (some OpenAI-compatible
    ones) is charged the request's worst case, so a budget never counts a call as free."""
    if prompt is None or output is None:
        return worst_case(req)
    return make_usage(model, prompt, output)


def _openai_text(content: Any) -> str:
    """The message text; some OpenAI-compatible servers send a list of content parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [
            x.get("text") if isinstance(x, dict) else getattr(x, "text", None) for x in content
        ]
        if all(isinstance(t, str) for t in parts):
            return "".join(parts)  # type: ignore[arg-type]
    raise TypeError(f"message content is a {type(content).__name__}, not text")


def _error_detail(body: Any) -> str:
    """The server's error message out of an OpenAI- or Anthropic-style error body."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or "")
        return str(err)
    return "" if body is None else str(body)


# ---------------------------------------------------------------- Anthropic Messages


async def _anthropic(req: CompletionRequest) -> Completion:
    import anthropic

    system = f"{req.system}\n\n{JSON_INSTRUCTION}" if req.json_mode else req.system
    args: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": [{"role": "user", "content": req.prompt}],
    }
    if system.strip():
        args["system"] = system
    # No temperature: the API version that SDK 2.x speaks rejects sampling parameters.
    client_args: dict[str, Any] = {
        "max_retries": 0,
        "timeout": req.timeout_s,
        "http_client": _http_client(anthropic),
    }
    if req.base_url:
        client_args["base_url"] = req.base_url

    started = time.perf_counter()
    try:
        async with anthropic.AsyncAnthropic(**client_args) as client:
            resp = await client.messages.create(**args)
    except anthropic.APITimeoutError:
        raise _retryable("anthropic", f"timed out after {req.timeout_s}s") from None
    except anthropic.APIConnectionError as exc:
        raise _retryable("anthropic", f"connection failed: {exc}") from None
    except anthropic.APIStatusError as exc:
        raise classify_status(
            "anthropic", exc.status_code, _error_detail(exc.body), req.model, exc.response.headers
        ) from None
    except anthropic.CredentialsError:
        raise _fatal("anthropic", "no credentials: set ANTHROPIC_API_KEY") from None
    except anthropic.AnthropicError as exc:  # bad local configuration
        raise _fatal("anthropic", str(exc)) from None
    latency = (time.perf_counter() - started) * 1000
    text = "".join(getattr(b, "text", "") for b in resp.content if b.type == "text")
    model = resp.model or req.model
    return Completion(
        text=text,
        usage=make_usage(model, resp.usage.input_tokens, resp.usage.output_tokens),
        model=model,
        provider="anthropic",
        latency_ms=round(latency, 2),
        stop_reason=resp.stop_reason,
    )


# ---------------------------------------------------------------- Bedrock Converse

_BEDROCK_RETRYABLE_CODES = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelNotReadyException",
}


@functools.lru_cache(maxsize=16)
def _bedrock_client(region: str, endpoint_url: str | None, timeout_s: float, _creds: str) -> Any:
    # boto3 clients are thread-safe and slow to build: one per configuration (and credentials).
    import boto3
    from botocore.config import Config

    config = Config(
        # total_max_attempts=1 is "no retry" (legacy max_attempts counts retries, not attempts).
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=min(timeout_s, 10.0),
        read_timeout=timeout_s,
    )
    session = boto3.session.Session()
    return session.client(
        "bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config
    )


def _bedrock_call(req: CompletionRequest) -> dict[str, Any]:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = (
        req.base_url
        or os.environ.get("RAFTLINE_BEDROCK_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        or None
    )
    creds = f"{os.environ.get('AWS_ACCESS_KEY_ID', '')}|{os.environ.get('AWS_PROFILE', '')}"
    client = _bedrock_client(region, endpoint, req.timeout_s, creds)
    system = f"{req.system}\n\n{JSON_INSTRUCTION}" if req.json_mode else req.system
    inference: dict[str, Any] = {"maxTokens": req.max_tokens}
    if req.temperature is not None:
        inference["temperature"] = req.temperature
    args: dict[str, Any] = {
        "modelId": req.model,
        "messages": [{"role": "user", "content": [{"text": req.prompt}]}],
        "inferenceConfig": inference,
    }
    if system.strip():
        args["system"] = [{"text": system}]
    return client.converse(**args)


async def _bedrock(req: CompletionRequest) -> Completion:
    from botocore import exceptions as bex

    started = time.perf_counter()
    try:
        resp = await asyncio.to_thread(_bedrock_call, req)
    except (bex.ReadTimeoutError, bex.ConnectTimeoutError):
        raise _retryable("bedrock", f"timed out after {req.timeout_s}s") from None
    except (bex.EndpointConnectionError, bex.ConnectionClosedError) as exc:
        raise _retryable("bedrock", f"connection failed: {exc}") from None
    except (bex.NoCredentialsError, bex.PartialCredentialsError):
        raise _fatal(
            "bedrock",
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        ) from None
    except bex.NoRegionError:
        raise _fatal("bedrock", "no AWS region: set AWS_REGION") from None
    except bex.ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{code}: {err.get('Message', '')}".strip(": ")
        # A transient code on an unusual status (e.g. ModelTimeoutException) is still transient.
        if code in _BEDROCK_RETRYABLE_CODES and status < 500 and status not in (408, 429):
            raise _retryable("bedrock", f"{detail} ({status})") from None
        if code in ("UnrecognizedClientException", "InvalidSignatureException"):
            status = 401
        raise classify_status("bedrock", status or 400, detail, req.model) from None
    except bex.BotoCoreError as exc:
        raise _retryable("bedrock", f"client error: {exc}") from None
    latency = (time.perf_counter() - started) * 1000
    content = (resp.get("output") or {}).get("message", {}).get("content")
    if not isinstance(content, list):
        raise ValueError("the reply has no output message content")
    text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    usage = resp.get("usage", {})
    return Completion(
        text=text,
        usage=_reported(req, req.model, usage.get("inputTokens"), usage.get("outputTokens")),
        model=req.model,
        provider="bedrock",
        latency_ms=round(latency, 2),
        stop_reason=resp.get("stopReason"),
    )


# ---------------------------------------------------------------- the one entry point

_ADAPTERS = {"openai": _openai, "gemini": _openai, "anthropic": _anthropic, "bedrock": _bedrock}


BUDGET_EXCEEDED = "BudgetExceeded"
# Tokenizers differ by provider; three bytes of UTF-8 per token over-counts English
# (about four) and matches CJK, so the worst case errs on the side of stopping early.
BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 16


def worst_case(req: CompletionRequest, seen_input_tokens: int = 0) -> Usage:
    """The most this request can cost: its prompt (estimated, never below the largest
    prompt a call of its kind reported in this run) plus all of its max output tokens."""
    size = len(req.system.encode("utf-8")) + len(req.prompt.encode("utf-8"))
    prompt = max(-(-size // BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS, seen_input_tokens)
    return make_usage(req.model, prompt, req.max_tokens)


def check_budget(req: CompletionRequest, cap: BudgetCap | None, spent: Usage) -> None:
    """Refuse (non-retryable BudgetExceeded) a request whose worst case does not fit what
    this call may still spend: its reservation minus what it already spent."""
    if cap is None:
        return
    worst = worst_case(req, cap.seen_input_tokens)
    if cap.max_tokens is not None and spent.tokens + worst.tokens > cap.max_tokens:
        raise ApplicationError(
            f"{req.provider}/{req.model}: the next call may use {worst.tokens} tokens "
            f"({worst.input_tokens} prompt + {worst.output_tokens} max output); "
            f"{max(cap.max_tokens - spent.tokens, 0)} are left of the budget",
            {"usage": spent.model_dump()},
            type=BUDGET_EXCEEDED,
            non_retryable=True,
        )
    if cap.max_cost_usd is not None and spent.cost_usd + worst.cost_usd > cap.max_cost_usd:
        raise ApplicationError(
            f"{req.provider}/{req.model}: the next call may cost ${worst.cost_usd:.6f}; "
            f"${max(cap.max_cost_usd - spent.cost_usd, 0):.6f} is left of the budget",
            {"usage": spent.model_dump()},
            type=BUDGET_EXCEEDED,
            non_retryable=True,
        )


async def complete(
    req: CompletionRequest, cap: BudgetCap | None = None, spent: Usage | None = None
) -> Completion:
    """One completion from the request's provider; errors as Temporal ApplicationErrors.
    With a budget `cap`, a request that might not fit is refused before it is sent."""
    check_budget(req, cap, spent or Usage())
    try:
        result = await _ADAPTERS[req.provider](req)
    except ApplicationError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        # A 200 whose body is not this provider's reply (an HTML proxy page, an SSE stream,
        # fields missing or of the wrong type): the server may have billed it, so it is
        # charged at its worst case, and it is a provider failure like a 5xx, with its why.
        charged = worst_case(req, cap.seen_input_tokens if cap else 0)
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ApplicationError(
            f"{req.provider}: the server's reply is not a valid completion ({detail})",
            {"usage": charged.model_dump()},
            type=RETRYABLE,
        ) from None
    log.debug(
        "llm completion",
        provider=result.provider,
        model=result.model,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        latency_ms=result.latency_ms,
    )
    return result
