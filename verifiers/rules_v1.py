"""L1 rules version 1 ("rules-1"), FROZEN: kept byte-for-byte in behaviour for runs in flight.

Runs that started under rules-1 replay their L1 decisions from this module (the
`raftline.rules` local activity of very old runs, and the workflow's in-workflow rules
before the rules-2 patch). A changed verdict here would make those replays diverge, so
this file must never change: fix or improve the rules in verifiers/rules.py (a new
RULES_VERSION behind a named patch) instead. Its description follows unchanged.

L1 rules verifier: deterministic, cheap checks of one step output.

Pure logic (no Temporal, no I/O, no clock), so it runs inside the workflow and a replay
reaches the same verdict from the same output (see RULES_VERSION for changing it).
`check_rules` runs the enabled checks in a fixed order and the first failure wins. The
order goes from "this is not an answer at all" to "this answer does too much", so the
retry hint addresses the most basic problem first:

 #  check             fails when                                                class
 1  empty             the output is empty or whitespace only                    INCOMPLETE
 2  error_signatures  the output is an error message: a traceback, "Error       INCOMPLETE
                      code: 429", "Internal Server Error", "rate limit
                      exceeded", "ValueError: ..." at the start, {"error": ...}
 3  refusal           a model refusal near the start ("I'm sorry, but I can't",  INCOMPLETE
                      "As an AI language model", "I am unable to", ...)
 4  format            JSON steps (format: json, or any step with a json_schema):  FORMAT
                      the output (one ```json fence stripped) does not parse, or
                      does not match checks.json_schema (the JSON path is named)
 5  truncation        ends with "..." or "…", an unclosed code fence, unbalanced  INCOMPLETE
                      brackets/strings in JSON-ish text, or (text steps, >= 80
                      chars) a last line without terminal punctuation that is not
                      a list item or heading
 6  min_length        fewer stripped characters than checks.min_length          INCOMPLETE
 7  required          a required phrase is missing (case-insensitive)           INCOMPLETE
 8  secrets           API keys, tokens, private keys, passwords; the reason      UNSAFE
                      names the kind, never the value
 9  forbidden         a forbidden regex matches (case-insensitive); the reason    UNSAFE
                      names the pattern, not the matched text (it may be PII)
10  consistent_keys   a key of the output's JSON object differs from the same    CONTRADICTION
                      key in an earlier committed JSON object
11  grounded_numbers  a number is in none of: task goal and inputs, step goal    HALLUCINATION
                      and params, committed outputs
12  topic             fewer than topic_min topic keywords appear                 GOAL_DRIFT
13  out_of_scope      an out-of-scope regex matches (case-insensitive)           SCOPE_CREEP
14  max_length        more stripped characters than checks.max_length           SCOPE_CREEP

A check runs only when it is configured (a flag on, a list non-empty, a limit set);
`empty` always runs. The verdict lists the checks that ran in `checks_run`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from raftline.models import ErrorClass, Verdict, VerifyInput
from raftline.verifiers.taxonomy import hint_for

__all__ = [
    "RULES_VERSION",
    "RULE_NAMES",
    "check_rules",
    "json_equal",
    "schema_error",
    "strip_fence",
]

# The rules run inside the workflow, so what they decide is part of the commit loop:
# bump this with any change that can flip a verdict, and guard the change with
# workflow.patched so runs in flight replay the old decision. Every L1 verdict names it.
RULES_VERSION = "rules-1"


@dataclass(frozen=True)
class _Failure:
    error_class: ErrorClass
    reason: str
    hint: str | None = None  # a specific hint; None falls back to the class hint


class _Ctx:
    """One output under check, with the derived views that several rules share."""

    def __init__(self, inp: VerifyInput) -> None:
        self.inp = inp
        self.checks = inp.step.checks
        self.text = inp.output.text
        self.stripped = self.text.strip()

    @cached_property
    def json_body(self) -> str:
        return strip_fence(self.stripped)

    @cached_property
    def parsed(self) -> tuple[bool, Any, str]:
        """(ok, value, error) of parsing the output as JSON; parsed once, used by 3 rules."""
        return _parse_json(self.json_body)


# ---------------------------------------------------------------- small helpers

_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n(?P<body>.*?)\n?[ \t]*```\Z", re.S | re.I)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})


def strip_fence(text: str) -> str:
    """The body of one surrounding ```json (or bare ```) fence; other text unchanged."""
    match = _FENCE.match(text.strip())
    return match.group("body").strip() if match else text


def _parse_json(body: str) -> tuple[bool, Any, str]:
    try:
        return True, json.loads(body), ""
    except json.JSONDecodeError as exc:
        return False, None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, RecursionError) as exc:  # absurd nesting must not crash the verifier
        return False, None, type(exc).__name__


def _quote(text: str, limit: int = 60) -> str:
    """A short, single-line quotation of text for a one-sentence reason."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"'{flat}'"


def _quote_tail(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return _quote(flat if len(flat) <= limit else "…" + flat[-(limit - 1) :], limit)


def _quote_all(items: list[str]) -> str:
    return ", ".join(_quote(item) for item in items)


def _show(value: Any, limit: int = 60) -> str:
    """A JSON value as it would appear in the output, shortened for a reason."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold(text: str) -> str:
    """Case, whitespace and apostrophe-insensitive form for phrase matching."""
    return " ".join(text.translate(_APOSTROPHES).split()).casefold()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------- 1. empty


def _check_empty(ctx: _Ctx) -> _Failure | None:
    if ctx.stripped:
        return None
    what = "empty" if not ctx.text else f"whitespace only ({_plural(len(ctx.text), 'character')})"
    return _Failure(ErrorClass.INCOMPLETE, f"output is {what}")


# ---------------------------------------------------------------- 2. error signatures

# Errors are matched near the start only: an error message *is* the output, while a
# long answer that discusses errors further down is not one.
_HEAD = 300
_ERROR_START = re.compile(
    r"\A(?:[\w.]*(?:Error|Exception)|fatal error)(?:\s*\[[^\]\n]*\])?:(?=\s|\Z)", re.I
)
_ERROR_HEAD = (
    re.compile(r"^Traceback \(most recent call last\)", re.M),
    re.compile(r"\berror code:?\s*[45]\d\d\b", re.I),
    re.compile(r"\bHTTP/\d(?:\.\d)?\s+[45]\d\d\b"),
    re.compile(
        r"\b(?:Internal Server Error|Bad Gateway|Service (?:Temporarily )?Unavailable"
        r"|Gateway Time-?out)\b",
        re.I,
    ),
    re.compile(r"\b(?:rate[ _]limit(?:ed|[ _](?:exceeded|reached))|too many requests)\b", re.I),
    re.compile(r"\b(?:context_length_exceeded|insufficient_quota|invalid_request_error)\b"),
    re.compile(r"\A(?:Request timed out|Connection (?:error|refused))", re.I),
)
_ERROR_BODY_KEYS = frozenset(
    {"error", "errors", "message", "code", "status", "type", "detail", "request_id"}
)


def _check_error_signatures(ctx: _Ctx) -> _Failure | None:
    head = ctx.stripped[:_HEAD]
    match = _ERROR_START.match(head) or next(
        (m for p in _ERROR_HEAD if (m := p.search(head))), None
    )
    if match:
        found = f"it contains {_quote(match.group(0))}"
    elif _is_error_body(ctx):
        found = "it is a JSON object with only error fields"
    else:
        return None
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output looks like an error message, not a result: {found}",
        "Your previous output was an error message instead of a result. "
        "Produce the result the step's goal asks for.",
    )


def _is_error_body(ctx: _Ctx) -> bool:
    # An API error body passed through as the output: {"error": {...}} and nothing else.
    if not ctx.json_body.startswith("{"):
        return False
    ok, value, _ = ctx.parsed
    return (
        ok
        and isinstance(value, dict)
        and bool(value.get("error") or value.get("errors"))
        and set(value) <= _ERROR_BODY_KEYS
    )


# ---------------------------------------------------------------- 3. refusal

_REFUSAL_HEAD = 400
_REFUSAL = re.compile(
    "|".join(
        [
            r"\bI(?:'m| am) sorry,? but I(?: can't| cannot| can not| won't| will not"
            r"|'m unable| am unable|'m not able| am not able)",
            r"\bI (?:cannot|can't|can not|won't|will not) (?:help|assist|comply|provide"
            r"|fulfil|fulfill|complete|do that|create|generate|write)\b",
            r"\bas an AI(?: language model| assistant| model|, I)\b",
            r"\bI(?:'m| am) (?:unable|not able|not allowed|not permitted) to\b",
            r"\bI (?:must|have to) (?:decline|refuse)\b",
            r"\bI apologi[sz]e, but\b",
        ]
    ),
    re.I,
)


def _check_refusal(ctx: _Ctx) -> _Failure | None:
    # Curly apostrophes are folded so "I’m sorry" matches like "I'm sorry".
    match = _REFUSAL.search(ctx.stripped[:_REFUSAL_HEAD].translate(_APOSTROPHES))
    if not match:
        return None
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output looks like a refusal: {_quote(match.group(0))}",
        "Your previous output declined instead of doing the step. "
        "Produce the result the step's goal asks for.",
    )


# ---------------------------------------------------------------- 4. format (JSON + schema)


def _format_enabled(ctx: _Ctx) -> bool:
    # A schema on a text step still means "this output is JSON": never ignore it silently.
    return ctx.inp.step.format == "json" or ctx.checks.json_schema is not None


def _check_format(ctx: _Ctx) -> _Failure | None:
    ok, value, error = ctx.parsed
    if not ok:
        return _json_parse_failure(ctx.json_body, error)
    if ctx.checks.json_schema is None:
        return None
    found = schema_error(value, ctx.checks.json_schema)
    if found is None:
        return None
    path, message = found
    return _Failure(
        ErrorClass.FORMAT,
        f"JSON does not match the schema at {path}: {message}",
        f"Your previous output had the wrong format: at {path}, {message}. "
        "Return only JSON that matches the required schema.",
    )


def _json_parse_failure(body: str, error: str) -> _Failure:
    if body.startswith(("{", "[")) and _balance_problem(body):
        # Cut off mid-JSON: still FORMAT (the step's contract), but say why.
        return _Failure(
            ErrorClass.FORMAT,
            f"output is not valid JSON, it looks cut off: {error}",
            "Your previous output stopped before the JSON was complete. "
            "Return the complete JSON, shorter if needed.",
        )
    return _Failure(
        ErrorClass.FORMAT,
        f"output is not valid JSON ({error}); it starts {_quote(body, 40)}",
        "Your previous output was not valid JSON. Return only the JSON, with no text around it.",
    )


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def _is_type(value: Any, name: Any) -> bool:
    # An unknown type name is a schema typo, not the output's fault.
    check = _JSON_TYPES.get(name) if isinstance(name, str) else None
    return check is None or check(value)


def _limit(schema: dict[str, Any], key: str) -> int | float | None:
    """A numeric schema keyword; a malformed one is ignored rather than crashing the check."""
    value = schema.get(key)
    return value if _JSON_TYPES["number"](value) else None


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def schema_error(value: Any, schema: Any, path: str = "$") -> tuple[str, str] | None:
    """The first (JSON path, message) where value breaks schema, or None.

    A small subset of JSON Schema: type (a name or a list), enum, minLength, maxLength,
    minimum, maximum, required, properties, additionalProperties (false or a schema),
    items (a schema, or a list for tuples), minItems, maxItems. Other keywords are
    ignored, so an unsupported constraint never fails an output.
    """
    if schema is False:
        return path, "no value is allowed here"
    if not isinstance(schema, dict):
        return None
    for check in (_type_error, _enum_error, _string_error, _number_error):
        if (message := check(value, schema)) is not None:
            return path, message
    if isinstance(value, list):
        return _array_error(value, schema, path)
    if isinstance(value, dict):
        return _object_error(value, schema, path)
    return None


def _type_error(value: Any, schema: dict[str, Any]) -> str | None:
    expected = schema.get("type")
    if expected is None:
        return None
    names = expected if isinstance(expected, list) else [expected]
    if any(_is_type(value, name) for name in names):
        return None
    return f"expected {' or '.join(map(str, names))}, got {_type_name(value)}"


def _enum_error(value: Any, schema: dict[str, Any]) -> str | None:
    options = schema.get("enum")
    if not isinstance(options, list) or any(json_equal(value, o) for o in options):
        return None
    shown = ", ".join(json.dumps(o, ensure_ascii=False) for o in options)
    return f"{json.dumps(value, ensure_ascii=False)} is not one of {shown}"


def _string_error(value: Any, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, str):
        return None
    low, high = _limit(schema, "minLength"), _limit(schema, "maxLength")
    if low is not None and len(value) < low:
        return f"string has {_plural(len(value), 'character')}, fewer than minLength {low}"
    if high is not None and len(value) > high:
        return f"string has {_plural(len(value), 'character')}, more than maxLength {high}"
    return None


def _number_error(value: Any, schema: dict[str, Any]) -> str | None:
    if not _JSON_TYPES["number"](value):
        return None
    low, high = _limit(schema, "minimum"), _limit(schema, "maximum")
    if low is not None and value < low:
        return f"{value} is less than minimum {low}"
    if high is not None and value > high:
        return f"{value} is greater than maximum {high}"
    return None


def _array_error(value: list[Any], schema: dict[str, Any], path: str) -> tuple[str, str] | None:
    low, high = _limit(schema, "minItems"), _limit(schema, "maxItems")
    if low is not None and len(value) < low:
        return path, f"array has {_plural(len(value), 'item')}, fewer than minItems {low}"
    if high is not None and len(value) > high:
        return path, f"array has {_plural(len(value), 'item')}, more than maxItems {high}"
    items = schema.get("items")
    schemas = items if isinstance(items, list) else [items] * len(value)
    for index, (item, item_schema) in enumerate(zip(value, schemas, strict=False)):
        if item_schema is not None and (
            found := schema_error(item, item_schema, _child(path, index))
        ):
            return found
    return None


def _object_error(
    value: dict[str, Any], schema: dict[str, Any], path: str
) -> tuple[str, str] | None:
    required = schema.get("required")
    for key in required if isinstance(required, list) else []:
        if isinstance(key, str) and key not in value:
            return _child(path, key), "required key is missing"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    for key, sub in properties.items():
        if key in value and (found := schema_error(value[key], sub, _child(path, key))):
            return found
    extra_schema = schema.get("additionalProperties", True)
    for key in value:
        if key in properties or extra_schema is True:
            continue
        if extra_schema is False:
            return _child(path, key), "additional key is not allowed"
        if found := schema_error(value[key], extra_schema, _child(path, key)):
            return found
    return None


# ---------------------------------------------------------------- 5. truncation

_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)
_LIST_OR_HEADING = re.compile(r"^(?:[-*+•][ \t]|\d+[.)][ \t]|#{1,6}[ \t])")
# Where a finished text may end: sentence punctuation, closing quotes/brackets/code,
# and the closers of markdown emphasis, tables and HTML tags.
_TERMINAL = frozenset(".!?:)\"'`]}" + "\u201d\u2019\u00bb\u3002\uff01\uff1f" + "*_|>")
_MID_SENTENCE_MIN = 80
_CLOSERS = {"{": "}", "[": "]"}


def _check_truncation(ctx: _Ctx) -> _Failure | None:
    text = ctx.stripped
    if text.endswith(("...", "…")):
        problem = f"output ends with an ellipsis: {_quote_tail(text)}"
    elif len(_FENCE_LINE.findall(text)) % 2:
        problem = "output has an unclosed code fence (```)"
    elif ctx.json_body.startswith(("{", "[")) and (bad := _balance_problem(ctx.json_body)):
        problem = f"output looks cut off: its JSON has {bad}"
    elif ctx.inp.step.format == "text" and _ends_mid_sentence(text):
        problem = f"output ends mid-sentence: {_quote_tail(text)}"
    else:
        return None
    return _Failure(ErrorClass.INCOMPLETE, problem)


def _balance_problem(text: str) -> str | None:
    """Why JSON-ish text is unbalanced (a bracket or string left open), or None."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            # Inside a string only an unescaped quote matters.
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]" and (not stack or stack.pop() != ch):
            return f"an unmatched '{ch}'"
    if in_string:
        return "an unterminated string"
    if stack:
        return f"{_plural(len(stack), 'unclosed bracket')} (missing '{''.join(reversed(stack))}')"
    return None


def _ends_mid_sentence(text: str) -> bool:
    if len(text) < _MID_SENTENCE_MIN:
        return False  # short answers ("42", "Paris") legitimately lack punctuation
    last = text.splitlines()[-1].strip()
    return not _LIST_OR_HEADING.match(last) and last[-1] not in _TERMINAL


# ---------------------------------------------------------------- 6, 7. length and phrases


def _check_min_length(ctx: _Ctx) -> _Failure | None:
    n, low = len(ctx.stripped), ctx.checks.min_length or 0
    if n >= low:
        return None
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output has {_plural(n, 'character')}, fewer than min_length {low}",
        f"Your previous output was too short ({_plural(n, 'character')}). "
        f"Write at least {low} characters and include every required part.",
    )


def _check_required(ctx: _Ctx) -> _Failure | None:
    text = _fold(ctx.text)
    missing = [p for p in ctx.checks.required if _fold(p) not in text]
    if not missing:
        return None
    word = "phrase" if len(missing) == 1 else "phrases"
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output is missing the required {word} {_quote_all(missing)}",
        f"Your previous output was incomplete. It must include {_quote_all(missing)}.",
    )


# ---------------------------------------------------------------- 8, 9. unsafe content

# Letters may not precede, so DB_PASSWORD= counts but "mypassword:" does not.
_PASSWORD = re.compile(
    r"(?<![a-z])(?:password|passwd|pwd|passphrase)\s*[:=]\s*['\"]?(?P<value>[^\s'\"]{6,})", re.I
)
_PLACEHOLDERS = frozenset({"redacted", "hidden", "required", "optional", "omitted", "removed"})
# (kind, pattern): the kind is what the reason says; the secret itself is never echoed.
_SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key block", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("an AWS access key ID", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "an AWS secret access key",
        re.compile(r"aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}", re.I),
    ),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{22,})")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an sk- API key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    ("a Stripe key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{16,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a JSON Web Token", re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{20,}")),
)


def _check_secrets(ctx: _Ctx) -> _Failure | None:
    kind = next((k for k, p in _SECRETS if p.search(ctx.text)), None)
    if kind is None and any(_is_real_password(m["value"]) for m in _PASSWORD.finditer(ctx.text)):
        kind = "a password"
    if kind is None:
        return None
    return _Failure(
        ErrorClass.UNSAFE,
        f"output contains {kind} (value withheld); credentials must never appear in an output",
        f"Your previous output contained {kind}. Remove it and never include credentials.",
    )


def _is_real_password(value: str) -> bool:
    # "password: ******", "password: <your password>", "pwd=$DB_PASSWORD" are not leaks.
    return not (
        set(value) <= set("*•xX.")
        or value[0] in "<{[($%"
        or value.strip(".,;").casefold() in _PLACEHOLDERS
    )


def _check_forbidden(ctx: _Ctx) -> _Failure | None:
    pattern = next((p for p in ctx.checks.forbidden if re.search(p, ctx.text, re.I)), None)
    if pattern is None:
        return None
    # Name the pattern, not the match: forbidden content is often personal data.
    return _Failure(ErrorClass.UNSAFE, f"output matches the forbidden pattern {_quote(pattern)}")


# ---------------------------------------------------------------- 10. consistent keys


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 and "1" != 1. Iterative: depth cannot crash it."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif not _scalar_equal(x, y):
            return False
    return True


def _scalar_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _JSON_TYPES["number"](a) and _JSON_TYPES["number"](b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _committed_objects(committed: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for step, text in committed.items():
        ok, value, _ = _parse_json(strip_fence(text.strip()))
        if ok and isinstance(value, dict):
            yield step, value


def _check_consistent_keys(ctx: _Ctx) -> _Failure | None:
    ok, value, _ = ctx.parsed
    if not ok or not isinstance(value, dict):
        return None  # nothing to compare; JSON steps already failed `format`
    earlier = list(_committed_objects(ctx.inp.committed))
    for key in ctx.checks.consistent_keys:
        if key not in value:
            continue
        for step, obj in earlier:
            if key in obj and not json_equal(value[key], obj[key]):
                return _contradiction(key, value[key], step, obj[key])
    return None


def _contradiction(key: str, now: Any, step: str, before: Any) -> _Failure:
    return _Failure(
        ErrorClass.CONTRADICTION,
        f"key {_quote(key)} is {_show(now)} but committed step {_quote(step)} has {_show(before)}",
        f"Your previous output contradicted step {_quote(step)}: "
        f"{key} must stay {_show(before)}. Stay consistent with the earlier outputs.",
    )


# ---------------------------------------------------------------- 11. grounded numbers

# In the output: a standalone number, "1,234,567", "3.5", "12%"; not digits inside
# words or versions ("GPT4", "v1.2" give nothing, "1.2.3" gives 1.2).
_OUTPUT_NUMBER = re.compile(
    r"(?<![\w.])(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?%?"
)
# In the sources: every digit run, liberally, so a number quoted from them always counts.
_SOURCE_NUMBER = re.compile(r"[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?")
_LIST_MARKER = re.compile(r"^([ \t]*(?:#{1,6}[ \t]+)?)[0-9]+[.)](?=[ \t])", re.M)


def _number(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", "").rstrip("%"))
    except InvalidOperation:
        return None


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _source_numbers(inp: VerifyInput) -> set[Decimal]:
    texts = [
        inp.task.goal,
        *inp.task.inputs.values(),
        inp.step.goal,
        *map(_render, inp.step.params.values()),
        *inp.committed.values(),
    ]
    found: set[Decimal] = set()
    for match in _SOURCE_NUMBER.finditer("\n".join(texts)):
        raw = match.group(0)
        # "1,234" counts as 1234 and, in case it was a list, as 1 and 234.
        for part in [raw, *raw.split(",")]:
            if (n := _number(part)) is not None:
                found.add(n)  # Decimal equality: "1.50" == "1.5", "007" == "7"
    return found


def _check_grounded_numbers(ctx: _Ctx) -> _Failure | None:
    known = _source_numbers(ctx.inp)
    text = _LIST_MARKER.sub(r"\1", ctx.text)  # "1. First" is a list marker, not a claim
    for match in _OUTPUT_NUMBER.finditer(text):
        raw = match.group(0)
        if _number(raw) not in known:
            return _Failure(
                ErrorClass.HALLUCINATION,
                f"number {_quote(raw)} does not appear in the task, the step's goal or params, "
                "or any committed output",
                f"Your previous output used the number {raw}, which the inputs do not support. "
                "Use only numbers from the task and the earlier outputs.",
            )
    return None


# ---------------------------------------------------------------- 12. topic


def _keyword(word: str) -> re.Pattern[str]:
    # Whole words, any whitespace between words of a phrase, a plural "s"/"es" allowed.
    body = r"\s+".join(map(re.escape, word.split()))
    return re.compile(rf"(?<!\w){body}(?:e?s)?(?!\w)", re.I)


def _check_topic(ctx: _Ctx) -> _Failure | None:
    keywords = [k for k in ctx.checks.topic if k.strip()]
    need = min(ctx.checks.topic_min, len(keywords))  # topic_min above the list: all of them
    text = ctx.text.translate(_APOSTROPHES)
    found = [k for k in keywords if _keyword(k.translate(_APOSTROPHES)).search(text)]
    if len(found) >= need:
        return None
    return _Failure(
        ErrorClass.GOAL_DRIFT,
        f"output mentions {len(found)} of the topic keywords {_quote_all(keywords)} "
        f"(at least {need} expected)",
        "Your previous output drifted off the step's goal. Refocus on the stated goal only: "
        f"it is about {_quote_all(keywords)}.",
    )


# ---------------------------------------------------------------- 13, 14. scope


def _check_out_of_scope(ctx: _Ctx) -> _Failure | None:
    for pattern in ctx.checks.out_of_scope:
        if match := re.search(pattern, ctx.text, re.I):
            return _Failure(
                ErrorClass.SCOPE_CREEP,
                f"output goes beyond the step's scope: {_quote(match.group(0))} "
                f"matches the out-of-scope pattern {_quote(pattern)}",
                f"Your previous output did more than this step's scope "
                f"({_quote(match.group(0))}). Do only what this step requires.",
            )
    return None


def _check_max_length(ctx: _Ctx) -> _Failure | None:
    n, high = len(ctx.stripped), ctx.checks.max_length
    if high is None or n <= high:
        return None
    return _Failure(
        ErrorClass.SCOPE_CREEP,
        f"output has {_plural(n, 'character')}, more than max_length {high}",
        f"Your previous output was too long ({_plural(n, 'character')}). "
        f"Do only what this step requires, in at most {high} characters.",
    )


# ---------------------------------------------------------------- the verifier


@dataclass(frozen=True)
class _Rule:
    name: str
    enabled: Callable[[_Ctx], bool]
    check: Callable[[_Ctx], _Failure | None]


_RULES: tuple[_Rule, ...] = (
    _Rule("empty", lambda c: True, _check_empty),
    _Rule("error_signatures", lambda c: c.checks.error_signatures, _check_error_signatures),
    _Rule("refusal", lambda c: c.checks.refusal, _check_refusal),
    _Rule("format", _format_enabled, _check_format),
    _Rule("truncation", lambda c: c.checks.truncation, _check_truncation),
    _Rule("min_length", lambda c: c.checks.min_length is not None, _check_min_length),
    _Rule("required", lambda c: bool(c.checks.required), _check_required),
    _Rule("secrets", lambda c: c.checks.secrets, _check_secrets),
    _Rule("forbidden", lambda c: bool(c.checks.forbidden), _check_forbidden),
    _Rule("consistent_keys", lambda c: bool(c.checks.consistent_keys), _check_consistent_keys),
    _Rule("grounded_numbers", lambda c: c.checks.grounded_numbers, _check_grounded_numbers),
    _Rule("topic", lambda c: bool(c.checks.topic), _check_topic),
    _Rule("out_of_scope", lambda c: bool(c.checks.out_of_scope), _check_out_of_scope),
    _Rule("max_length", lambda c: c.checks.max_length is not None, _check_max_length),
)

RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in _RULES)
"""Every check, in the order it runs (the names used in `Verdict.checks_run`)."""


def _run(rule: _Rule, ctx: _Ctx) -> _Failure | None:
    try:
        return rule.check(ctx)
    except RecursionError:
        # Absurdly nested output: fail it, rather than fail the workflow task on every replay.
        return _Failure(ErrorClass.FORMAT, f"output is nested too deeply for the {rule.name} check")


def check_rules(inp: VerifyInput) -> Verdict:
    """Run the enabled L1 checks in order; the first failure is the verdict."""
    ctx = _Ctx(inp)
    checks_run: list[str] = []
    for rule in _RULES:
        if not rule.enabled(ctx):
            continue
        checks_run.append(rule.name)
        failure = _run(rule, ctx)
        if failure is not None:
            return Verdict(
                passed=False,
                error_class=failure.error_class,
                reason=failure.reason,
                hint=hint_for(failure.error_class, failure.hint),
                tier="L1",
                verifier="rules",
                prompt_version=RULES_VERSION,
                checks_run=checks_run,
            )
    return Verdict(
        passed=True,
        reason=f"all {len(checks_run)} rules passed",
        tier="L1",
        verifier="rules",
        prompt_version=RULES_VERSION,
        checks_run=checks_run,
    )
