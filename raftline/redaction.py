"""Secrets never reach logs or traces.

`Redactor` replaces API keys, tokens, private keys, passwords and the values of
secret-named environment variables with `[REDACTED]`:
- every credential format of raftline.verifiers.secrets, the one definition the L1
  `secrets` rule also uses (OpenAI/Anthropic `sk-`, AWS key ids and secret keys, Google,
  GitHub, GitLab, Slack tokens and webhooks, Stripe, Hugging Face, Azure account keys,
  JWTs, bearer and basic credentials, passwords in URLs, PEM private keys, and
  `password=`/`api_key:`-style assignments), documented examples included: the rule lets
  an output quote AKIAIOSFODNN7EXAMPLE, a log masks it anyway;
- the value of every environment variable whose name ends in `_API_KEY` or contains
  `SECRET`, `TOKEN`, `PASSWORD` or `ENCRYPTION_KEY` (values of 8+ characters);
- your own regexes in RAFTLINE_REDACT_PATTERNS: a JSON list, or one regex per line (a
  pattern that is not a valid regex is matched literally).

It runs as a structlog processor in every raftline log (worker.configure_logging), and
as an activity interceptor on the worker, so an exception message or a judge's reason
that quotes a key is redacted before it is written to Temporal's history and the trace.
Step outputs are not rewritten: the L1 `secrets` rule fails them as UNSAFE instead.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, is_cancelled_exception
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from raftline.verifiers import secrets

MASK = "[REDACTED]"
PATTERNS_ENV = "RAFTLINE_REDACT_PATTERNS"
MIN_SECRET_LEN = 8

SECRET_ENV_NAME = re.compile(
    r"(_API_KEY$|^API_KEY$|SECRET|TOKEN|PASSWORD|PASSWD|ENCRYPTION_KEY|PRIVATE_KEY)", re.I
)


def configured_patterns(env: Mapping[str, str]) -> list[re.Pattern[str]]:
    raw = env.get(PATTERNS_ENV, "").strip()
    if not raw:
        return []
    items: list[str]
    if raw.startswith("["):
        try:
            items = [str(x) for x in json.loads(raw)]
        except (json.JSONDecodeError, TypeError):
            items = [raw]
    else:
        items = [line for line in raw.splitlines() if line.strip()]
    out = []
    for item in items:
        try:
            out.append(re.compile(item))
        except re.error:
            out.append(re.compile(re.escape(item)))
    return out


def secret_env_values(env: Mapping[str, str]) -> list[str]:
    values: set[str] = set()
    for name, value in env.items():
        if not SECRET_ENV_NAME.search(name):
            continue
        value = value.strip()
        if len(value) >= MIN_SECRET_LEN:
            values.add(value)
        # Lists of keys (RAFTLINE_ENCRYPTION_KEYS) and `id:key` forms: each part too.
        for part in re.split(r"[\s,:]+", value):
            if len(part) >= MIN_SECRET_LEN:
                values.add(part)
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


class Redactor:
    """Redacts secrets in strings and, recursively, in dicts, lists and tuples."""

    def __init__(self, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> None:
        env = os.environ if env is None else env
        literals = [*secret_env_values(env), *extra]
        # Known values first (a key in the environment is masked whatever its shape), then
        # the shared credential formats, then the user's patterns.
        self.literals = re.compile("|".join(re.escape(v) for v in literals)) if literals else None
        self.patterns = configured_patterns(env)

    def text(self, value: str) -> str:
        if self.literals is not None:
            value = self.literals.sub(MASK, value)
        value = secrets.mask(value, MASK)
        for pattern in self.patterns:
            value = pattern.sub(MASK, value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if value is None or isinstance(value, bool | int | float):
            return value
        text = str(value)  # what the JSON renderer would print (default=str)
        red = self.text(text)
        return value if red == text else red

    # structlog processor
    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("exc_info"):
            # Render the traceback now, so its messages are redacted like everything else.
            event = structlog.processors.format_exc_info(logger, method, event)
        for key, val in list(event.items()):
            if not key.startswith("_"):  # _record, _from_structlog: structlog's own
                event[key] = self.value(val)
        return event


# ---------------------------------------------------------------- the worker side


class RedactingInterceptor(Interceptor):
    """Redacts activity errors and verdict texts before they reach history and traces."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RedactingActivity(next, self.redactor)


class _RedactingActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, redactor: Redactor) -> None:
        super().__init__(next)
        self.redactor = redactor

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            result = await super().execute_activity(input)
        except Exception as err:
            if is_cancelled_exception(err) or activity.is_cancelled():
                raise
            clean = self.redact_error(err)
            if clean is err:
                raise
            raise clean from None
        return self.redact_result(result)

    def redact_error(self, err: Exception) -> Exception:
        message = str(err)
        red = self.redactor.text(message)
        cause = err.__cause__
        cause_dirty = cause is not None and self.redactor.text(str(cause)) != str(cause)
        if red == message and not cause_dirty:
            return err
        if isinstance(err, ApplicationError):
            return ApplicationError(
                self.redactor.text(err.message),
                *(self.redactor.value(d) for d in err.details),
                type=err.type,
                non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
                category=err.category,
            )
        # Same type name, so retry policies' non_retryable_error_types still match.
        return ApplicationError(red, type=type(err).__name__)

    def redact_result(self, result: Any) -> Any:
        from raftline.models import Verdict

        if isinstance(result, Verdict):
            reason = self.redactor.text(result.reason)
            hint = self.redactor.text(result.hint) if result.hint else result.hint
            if reason != result.reason or hint != result.hint:
                return result.model_copy(update={"reason": reason, "hint": hint})
        return result
