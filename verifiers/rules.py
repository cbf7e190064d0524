"""L1 rules, version 3 ("rules-3"): deterministic, cheap checks of one step output.

Pure logic (no Temporal, no I/O, no clock, no environment), so it runs inside the
workflow and a replay reaches the same verdict from the same output. Runs that decided
under rules-1 replay verifiers/rules_v1.py, which never changes; a change here that can
flip a verdict is a new RULES_VERSION behind a named patch. rules-3 (patch raftline-rules-3)
only adds patterns, each marked "rules-3" below; `check_rules(..., version="rules-2")` leaves
them out, so runs that started under rules-2 replay the verdicts they reached.

`check_rules` runs the enabled checks in a fixed order and the first failure wins. Secrets
come first, so an output that leaks a key says so whatever else is wrong with it; then the
order goes from "this is not an answer at all" to "this answer does too much":

 #  check             fails when                                                class
 1  secrets           a credential (verifiers/secrets.py: API keys, tokens,     UNSAFE
                      private keys, passwords, connection strings)
 2  empty             the output is empty or whitespace only                    INCOMPLETE
 3  error_signatures  the output IS an error: a traceback or exception line,     INCOMPLETE
                      an HTTP error status or page, a provider's error body or
                      message; not an error quoted, in code, in data or in docs
 4  refusal           the output IS a refusal, in English, Spanish, French,     INCOMPLETE
                      German, Italian, Portuguese, Dutch, Russian, Chinese,
                      Japanese, Korean or Hindi, or the provider's stop reason
                      says so; not a refusal quoted, translated, in code, in
                      data, in a dialogue, or a decline of a domain request
 5  format            JSON steps (format: json, or any step with a json_schema):  FORMAT
                      the output (one ```json fence stripped) does not parse, or
                      does not match checks.json_schema (the JSON path is named)
 6  truncation        the recorded stop reason says the model hit its token      INCOMPLETE
                      limit or a content filter; with no stop reason, the text
                      ends mid-sentence (on an article, conjunction, preposition
                      or auxiliary; a dangling comma or colon; a long unfinished
                      clause), with an open code fence or bracket, or with an
                      ellipsis that does not end a sequence
 7  min_length        fewer stripped characters than checks.min_length          INCOMPLETE
 8  required          a required phrase is missing (case-insensitive)           INCOMPLETE
 9  forbidden         a forbidden regex matches (case-insensitive)              UNSAFE
10  consistent_keys   a key (any depth) or dotted path differs from the same    CONTRADICTION
                      key in a committed output
11  grounded_numbers  a number is not in, nor derivable by simple arithmetic     HALLUCINATION
                      from, the task, the step's goal and params, or the
                      committed outputs
12  topic             fewer than topic_min topic keywords appear                 GOAL_DRIFT
13  out_of_scope      an out-of-scope regex matches (case-insensitive)           SCOPE_CREEP
14  max_length        more stripped characters than checks.max_length           SCOPE_CREEP

A check runs only when it is configured (a flag on, a list non-empty, a limit set);
`empty` always runs. The verdict lists the checks that ran in `checks_run`.

No reason or hint quotes the output: they name the kind of problem and where it is
("line 3, column 14", "character 1,203"), since outputs may hold keys or personal data and
reasons travel into traces and retry prompts. Numbers are the exception: a
grounded_numbers reason names the numbers it could not ground.

Cost: a workflow task must finish within seconds, so every check is a linear scan, and the
expensive ones look at a bounded part of the output: refusal and error signatures read its
first 4 KiB, truncation its last 2 KiB (and counts code fences in all of it),
grounded_numbers the first 2,048 numbers of its first 256 KiB (at most 1,000 distinct);
consistent_keys walks at most 200,000 JSON nodes; facts keep at most 256 numbers and 256
values per key. secrets reads all of it (with the per-format bounds of verifiers/secrets.py),
as do the user's forbidden, out_of_scope, topic and required patterns, whose cost is theirs
(a pattern starting with a literal is cheap; one starting with \b is ~30 ms a megabyte).
`python -m benchmarks rules --speed` prints the timings.

Stop reasons: `output.meta["stop_reason"]` is read case-insensitively. "length",
"max_tokens" (MAX_TOKENS), "max_output_tokens", "model_context_window_exceeded" mean cut
off; "content_filter", "safety", "recitation", "guardrail_intervened"... mean stopped by a
filter; "refusal" is a refusal; "stop", "end_turn", "stop_sequence", "tool_use"... are a
normal end, after which the text is never judged cut off on heuristics alone. With no stop
reason (or an unknown one) truncation judges by the text.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from raftline.models import ErrorClass, Verdict, VerifyInput
from raftline.verifiers.secrets import first_secret
from raftline.verifiers.taxonomy import hint_for

__all__ = [
    "RULES_VERSION",
    "RULE_NAMES",
    "OutputFacts",
    "check_rules",
    "extract_facts",
    "json_equal",
    "schema_error",
    "strip_fence",
]

RULES_VERSION = "rules-3"
VERSIONS = ("rules-2", "rules-3")  # what check_rules can still decide as (rules-1: rules_v1)

# Bounds on the work of the expensive checks (see the module docstring).
HEAD = 4096  # characters read for error signatures and refusals
TAIL = 2048  # characters read for a mid-sentence ending
NUMBERS_SCAN = 256 * 1024  # characters of an output whose numbers are checked or kept
MAX_FACT_NUMBERS = 256  # distinct numbers kept from one committed output
MAX_NUMBERS_SEEN = 2048  # numbers read from one output or source text
MAX_CLAIMS = 1000  # distinct numbers of an output checked by grounded_numbers
MAX_SOURCE_NUMBERS = 10_000  # distinct numbers matched directly
MAX_SCALED = 2000  # source numbers also tried scaled (thousands, millions, percent, hours)
MAX_DERIVE = 32  # source numbers combined pairwise (sums, ratios, ...)
MAX_TRIPLES = 16  # source numbers summed three at a time
MAX_JSON_NODES = 200_000  # JSON nodes walked for consistent_keys
MAX_KEY_PATHS = 256  # values kept per consistent key and output
BIG_VALUE = 1024  # a kept value larger than this (as JSON) is kept as its digest


# ---------------------------------------------------------------- facts


class OutputFacts(BaseModel):
    """What L1 needs later from one committed output, extracted once when it is committed
    (the workflow no longer keeps committed texts)."""

    step: str
    numbers: list[str] = Field(
        default_factory=list,
        description="the distinct numbers in the output, normalized (Decimal str), capped",
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON path -> value for the keys/paths some step's consistent_keys names",
    )


def extract_facts(step: str, text: str, keys: Iterable[str]) -> OutputFacts:
    """The facts of one committed output: its numbers (for grounded_numbers) and, when it is
    JSON, the values at `keys` (for consistent_keys; a plain key at any depth, a dotted path
    from the root). Values larger than 1 KiB as JSON are kept as {"$sha256": digest}."""
    keys = [k for k in dict.fromkeys(keys) if k]
    values: dict[str, Any] = {}
    if keys:
        ok, value, _ = _parse_json(strip_fence(text.strip()))
        if ok:
            values = {path: _keep(v) for path, v in _key_values(value, keys).items()}
    every, _, _ = _scan_numbers(text[:NUMBERS_SCAN])
    numbers = _distinct(every, MAX_FACT_NUMBERS)
    return OutputFacts(step=step, numbers=[_dec_str(n) for n in numbers], values=values)


# ---------------------------------------------------------------- the context of one check


@dataclass(frozen=True)
class _Failure:
    error_class: ErrorClass
    reason: str
    hint: str | None = None  # a specific hint; None falls back to the class hint


class _Ctx:
    """One output under check, with the derived views that several rules share."""

    def __init__(
        self, inp: VerifyInput, facts: Sequence[OutputFacts] | None, version: str = RULES_VERSION
    ) -> None:
        self.inp = inp
        self.v3 = version != "rules-2"
        self.checks = inp.step.checks
        self.text = inp.output.text
        self.stripped = self.text.strip()
        self._facts = facts
        raw = inp.output.meta.get("stop_reason") if inp.output.meta else None
        self.stop_reason = raw.strip().lower() if isinstance(raw, str) and raw.strip() else None

    @cached_property
    def facts(self) -> list[OutputFacts]:
        if self._facts is not None:
            return list(self._facts)
        keys = self.checks.consistent_keys
        return [extract_facts(step, text, keys) for step, text in self.inp.committed.items()]

    @cached_property
    def json_body(self) -> str:
        return strip_fence(self.stripped)

    @cached_property
    def parsed(self) -> tuple[bool, Any, str]:
        """(ok, value, error) of parsing the output as JSON; parsed once, used by 4 rules."""
        return _parse_json(self.json_body)

    @cached_property
    def is_data(self) -> bool:
        """The whole output is a JSON object or array: data, not prose."""
        ok, value, _ = self.parsed
        return ok and isinstance(value, dict | list)

    @cached_property
    def head(self) -> str:
        """The first HEAD characters with code, blockquotes and HTML comments blanked out
        (same length, so positions still point into the output)."""
        return _blank_code(self.text[:HEAD])

    @cached_property
    def answer_start(self) -> int:
        """Where the answer begins in `head`: the first non-blank character."""
        m = re.search(r"\S", self.head)
        return m.start() if m else len(self.head)

    @cached_property
    def subject(self) -> str:
        """The task and the step's own words (case-folded): what the output may be about."""
        inp = self.inp
        parts = [inp.task.goal, *inp.task.inputs.values(), inp.step.goal]
        parts += [_render(v) for v in inp.step.params.values()]
        return "\n".join(p[:65536] for p in parts).casefold()

    def where(self, index: int) -> str:
        return _where(self.text, index)


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _where(text: str, index: int) -> str:
    """A position for a reason: "line 3, column 14", or "character 1,203" in one-line text."""
    index = max(0, min(index, len(text)))
    if "\n" not in text:
        return f"character {index + 1:,}"
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line:,}, column {column:,}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _spec_quote(text: str, limit: int = 60) -> str:
    """Quote words from the spec (phrases, patterns, keywords, step names): never the output."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f"'{flat}'"


def _spec_quote_all(items: Iterable[str]) -> str:
    return ", ".join(_spec_quote(item) for item in items)


# ---------------------------------------------------------------- prose views

# Each starts with a literal (a newline, a backtick, "<!--"), so a scan skips ahead in C.
_FENCED = re.compile(r"\n[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:\n[ \t]*\1[ \t]*(?=\n|\Z)|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_BLOCKQUOTE = re.compile(r"\n[ \t]*>[^\n]*")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


def _blank(m: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def _blank_code(text: str) -> str:
    """text with fenced and inline code, blockquotes and HTML comments replaced by spaces."""
    view = "\n" + text  # so the first line starts after a newline too
    for pattern, needles in ((_FENCED, ("```", "~~~")), (_INLINE_CODE, ("`",)),
                             (_BLOCKQUOTE, (">",)), (_HTML_COMMENT, ("<!--",))):  # fmt: skip
        if any(n in view for n in needles):
            view = pattern.sub(_blank, view)
    return view[1:]


_PAIRS = (("\u201c", "\u201d"), ("\u00ab", "\u00bb"), ("\u300c", "\u300d"), ("\u300e", "\u300f"),
          ("\u2039", "\u203a"), ("\uff62", "\uff63"))  # fmt: skip
_SINGLE_OPEN = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=[(\[:]))'(?=\S)")
_SINGLE_CLOSE = re.compile(r"(?<=\S)'(?=[\s.,;:!?)\]]|$)")


def _quoted(text: str, index: int) -> bool:
    """Is index inside a quotation opened earlier in its paragraph? Straight, curly, German
    („…“), French («…»), CJK (「…」, 『…』) and single quotes."""
    start = text.rfind("\n\n", 0, index)
    start = start + 1 if start >= 0 else 0
    before = text[start:index]
    if before.count('"') % 2:
        return True
    german = before.count("\u201e")
    if german and german > before.count("\u201c"):
        return True
    if not german and before.count("\u201c") > before.count("\u201d"):
        return True
    if any(before.count(o) > before.count(c) for o, c in _PAIRS[1:]):
        return True
    # Matched on the text itself: an opening quote is told by the character after it.
    opened = len(_SINGLE_OPEN.findall(text, start, index + 1))
    return opened > len(_SINGLE_CLOSE.findall(text, start, index))


# A line of a script or dialogue: "Agent: ...", "Customer: ...".
_SPEAKER = re.compile(r"^[ \t]*[A-Z][\w .'-]{0,29}:[ \t]+\S", re.M)


def _dialogue_line(text: str, index: int) -> bool:
    """Is index on a speaker's line of a dialogue (two or more speaker lines)?"""
    if len(_SPEAKER.findall(text)) < 2:
        return False
    line_start = text.rfind("\n", 0, index) + 1
    return bool(_SPEAKER.match(text, line_start))


# ---------------------------------------------------------------- JSON helpers

_FENCE_OPENING = re.compile(r"[ \t]*(?:json)?[ \t]*", re.I)


def strip_fence(text: str) -> str:
    """The body of one surrounding ```json (or bare ```) fence; other text unchanged.

    What `\\A```[ \t]*(?:json)?[ \t]*\n(.*?)\n?[ \t]*```\\Z` (re.S, re.I) matches, done with
    string operations: the lazy regex retries its end at every character of a long body."""
    body = text.strip()
    newline = body.find("\n")
    if not body.startswith("```") or newline < 0 or not body.endswith("```") or len(body) < 7:
        return text
    if newline > len(body) - 4 or not _FENCE_OPENING.fullmatch(body, 3, newline):
        return text
    return body[newline + 1 : -3].strip()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(body: str) -> tuple[bool, Any, str]:
    """(ok, value, error). Strict JSON: NaN and Infinity are not JSON (a consumer in another
    language would reject them), so they fail too."""
    try:
        return True, json.loads(body, parse_constant=_no_constant), ""
    except json.JSONDecodeError as exc:
        return False, None, f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except ValueError as exc:
        return False, None, str(exc)
    except RecursionError:  # absurd nesting must not crash the verifier
        return False, None, "nesting too deep"


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


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


# ---------------------------------------------------------------- JSON Schema (a subset)

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


def _num(value: Any) -> str:
    """A JSON number as the output wrote it; numbers are not secrets."""
    return json.dumps(value)


def schema_error(value: Any, schema: Any, path: str = "$") -> tuple[str, str] | None:
    """The first (JSON path, message) where value breaks schema, or None.

    A small subset of JSON Schema: type (a name or a list), enum, minLength, maxLength,
    minimum, maximum, required, properties, additionalProperties (false or a schema),
    items (a schema, or a list for tuples), minItems, maxItems. Other keywords are
    ignored, so an unsupported constraint never fails an output. Messages never quote a
    string from the output; a key the schema does not know is named by its position.
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
    return f"the {_type_name(value)} is not one of {shown}"


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
        return f"{_num(value)} is less than minimum {low}"
    if high is not None and value > high:
        return f"{_num(value)} is greater than maximum {high}"
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
    for position, key in enumerate(value, 1):
        if key in properties or extra_schema is True:
            continue
        if extra_schema is False:
            allowed = ", ".join(properties) or "none"
            return path, f"key #{position} is not allowed (allowed keys: {allowed})"
        if found := schema_error(value[key], extra_schema, f"{path}[key #{position}]"):
            return found
    return None


# ---------------------------------------------------------------- 1. secrets


def _check_secrets(ctx: _Ctx) -> _Failure | None:
    found = first_secret(ctx.text)
    if found is None:
        return None
    return _Failure(
        ErrorClass.UNSAFE,
        f"output contains {found.kind} at {ctx.where(found.start)} (value withheld); "
        "credentials must never appear in an output",
        f"Your previous output contained {found.kind}. Remove it and never include credentials; "
        "use a placeholder such as <API_KEY> if the reader needs to know where one goes.",
    )


# ---------------------------------------------------------------- 2. empty


def _check_empty(ctx: _Ctx) -> _Failure | None:
    if ctx.stripped:
        return None
    what = "empty" if not ctx.text else f"whitespace only ({_plural(len(ctx.text), 'character')})"
    return _Failure(ErrorClass.INCOMPLETE, f"output is {what}")


# ---------------------------------------------------------------- 3. error signatures

# An error counts when it IS the output: its first line is an error line, the whole output
# is a bare status or a provider's error body. Not when the output quotes or explains one,
# shows it in code, holds it as data, or the task is about it (the subject check below).
_ERROR_FIRST_LINE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a Python traceback", re.compile(r"Traceback \(most recent call last\)")),
    (
        "an exception",
        re.compile(
            r"(?:PHP )?(?:Fatal error|Parse error|Unhandled exception|Uncaught \w+"
            r"|Exception in thread \"[^\"\n]*\")"
            r"|(?:[a-z_][\w]*\.)*(?:\w*(?:Error|Exception)|\w+(?:Exit|Fault|Interrupt))"
            r"(?:\s*\[[^\]\n]*\])?:(?:\s|\Z)"
            r"|(?:[a-z_]\w*\.)+(?:exceptions?|errors?)\.[A-Z]\w*:(?:\s|\Z)"
            r"|(?:[a-z]+\.)+[A-Z]\w*(?:Error|Exception)\b"
        ),
    ),
    (
        "an error message",
        re.compile(
            r"(?:error|ERROR|Error|fatal|FATAL|Fatal|Fehler|Erreur|Errore|Erro|Ошибка"
            r"|错误|錯誤|エラー|오류)"
            r"(?:[ \t]+\d{1,5})?(?:[ \t]*\([\w-]{1,20}\))?[ \t]*[:：]"
            r"|(?i:error code):?[ \t]*\d+|Error[ \t]+\d{3,4}\b"
            r"|panic: |thread '[^'\n]*' panicked at|Segmentation fault|Killed\Z"
            r"|\[(?:ERROR|FATAL|CRITICAL|SEVERE|PANIC|E)\]"
            r"|\d{4}-\d\d-\d\d[T ][\d:.,]+Z?\s+(?:\[[\w-]+\]\s+)?(?:ERROR|FATAL|CRITICAL)\b"
            r"|curl: \(\d+\)|\w+: [^\n]{1,60}: command not found"
        ),
    ),
    (
        "an HTTP error",
        re.compile(
            r"HTTP/\d(?:\.\d)? [45]\d\d\b|HTTP [45]\d\d(?::|\s*-\s|\s+(?:error\b|[A-Z][a-z]))"
            r"|(?:upstream connect error|upstream request timeout|no healthy upstream)"
        ),
    ),
    (
        "a connection failure",
        re.compile(
            r"(?:Request|Connection|Read|Gateway|Upstream) (?:timed out|timeout)\b"
            r"|Connection (?:refused|reset|error|aborted|closed)\b|Request failed\b"
            r"|Time-?out(?: error)?:\s+(?!\d)"
            r"|\[Errno \d+\]",
            re.I,
        ),
    ),
    (
        "a provider's error message",
        re.compile(
            r"(?:(?:Sorry|Oops)[,!.]? )?(?:something went wrong|an? (?:unexpected |internal"
            r" |unknown )?error (?:has )?occurred)"
            r"(?=[.!]| on our end| on the server| while|,? please| \(|\Z)"
            r"|The server had an error while processing your request"
            r"|This model's maximum context length is"
            r"|You exceeded your current quota|Your credit balance is too low"
            r"|Rate limit (?:reached|exceeded)\b|(?:Model|Service|API|Server) (?:is )?overloaded"
            r"|Overloaded\Z|Too many requests\b",
            re.I,
        ),
    ),
)
# rules-3: an agent's tool call that failed, reported as the answer (a short output).
_SHORT_ERROR = 300

_ERROR_FIRST_LINE_3: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a failed tool call",
        re.compile(
            r"\[?(?:tool|function|plugin|action)[:/ ][\w.-]{1,60}\]?:? (?:call )?(?:failed|errored"
            r"|timed out)\b"
            r"|(?:[\w.-]{1,60} )?failed after \d+ (?:attempts|retries|tries)\b",
            re.I,
        ),
    ),
)
# A whole output (one or two short lines) that is a bare HTTP status.
_BARE_STATUS = re.compile(
    r"(?:HTTP/\d(?:\.\d)? )?(?:[45]\d\d[ \t:-]*)?"
    r"(?:Bad Request|Unauthorized|Forbidden|Not Found|page not found|Request Time-?out"
    r"|Too Many Requests|Internal Server Error|Bad Gateway|Service (?:Temporarily )?Unavailable"
    r"|Gateway Time-?out|Overloaded)[.!]?(?:\s*\n\s*[\w./ -]{1,40})?",
    re.I,
)
_ERROR_PAGE_TEXT = re.compile(
    r"try again later|temporarily unable|please retry|retry later|capacity problems"
    r"|maintenance downtime|could not be (?:processed|completed)|contact (?:the )?(?:site )?admin",
    re.I,
)
_SENTINELS = frozenset({"undefined", "null", "nan", "[object object]", "<nil>"})
_HTML_ERROR = re.compile(
    r"\A\s*(?:<!DOCTYPE html[^>]*>\s*)?<html\b.{0,2000}?<title>\s*(?P<title>[^<]{0,120})</title>",
    re.I | re.S,
)
_HTML_ERROR_TITLE = re.compile(r"\b(?:[45]\d\d|error|unavailable|bad gateway|forbidden)\b", re.I)
# The visible text of an error or bot-challenge page (Cloudflare, WAFs, load balancers).
_HTML_ERROR_TEXT = re.compile(
    r"\berror (?:code:? )?\d{3,4}\b|\baccess denied\b|checking your browser|enable javascript"
    r" and cookies|attention required|\bray id\b|request blocked|service unavailable",
    re.I,
)
_ERROR_BODY_KEYS = frozenset(
    {"error", "errors", "message", "code", "status", "type", "detail", "request_id", "param"}
)
_INFRA = re.compile(
    r"server_error|internal[ _](?:server[ _])?error|overloaded|rate.?limit|service unavailable"
    r"|temporarily unavailable|timed out|timeout_error|quota|resource.?exhausted|throttl"
    r"|too many requests|bad gateway|api_error|gateway time-?out",
    re.I,
)
_INFRA_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})


def _check_error_signatures(ctx: _Ctx) -> _Failure | None:
    found = _error_output(ctx)
    if found is None:
        return None
    kind, index = found
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output is an error message, not a result: {kind} at {ctx.where(index)}",
        "Your previous output was an error message instead of a result. "
        "Produce the result the step's goal asks for.",
    )


def _error_output(ctx: _Ctx) -> tuple[str, int] | None:
    start = ctx.answer_start
    if (
        ctx.inp.step.format == "text"
        and len(ctx.stripped) < 20
        and ctx.stripped.casefold() in _SENTINELS
    ):
        return "a placeholder value instead of a result", start
    if ctx.parsed[0]:
        return _error_body(ctx)
    head = ctx.head
    line_end = head.find("\n", start)
    first = head[start : line_end if line_end >= 0 else len(head)].strip()
    if not first:
        return None
    if len(ctx.stripped) <= 200 and _BARE_STATUS.fullmatch(ctx.stripped):
        return _unless_subject(ctx, "an HTTP error status", start, ctx.stripped)
    if (
        _BARE_STATUS.fullmatch(first)
        and len(ctx.stripped) <= 600
        and _ERROR_PAGE_TEXT.search(ctx.stripped)
    ):
        return _unless_subject(ctx, "an HTTP error page", start, first)
    if m := _HTML_ERROR.match(ctx.text[:HEAD]):
        visible = re.sub(r"<[^>]*>", " ", ctx.text[:HEAD])
        if _HTML_ERROR_TITLE.search(m.group("title")) or _HTML_ERROR_TEXT.search(visible):
            return _unless_subject(ctx, "an HTML error page", start, m.group("title"))
    for kind, pattern in _ERROR_FIRST_LINE:
        if pattern.match(first):
            return _unless_subject(ctx, kind, start, first[:200])
    if ctx.v3 and len(ctx.stripped) <= _SHORT_ERROR:  # a report of it, with results, is not
        for kind, pattern in _ERROR_FIRST_LINE_3:
            if pattern.match(first):
                return _unless_subject(ctx, kind, start, first[:200])
    return None


def _unless_subject(ctx: _Ctx, kind: str, index: int, line: str) -> tuple[str, int] | None:
    """An error the task itself is about is the answer, not a failure: the task quotes the
    line, names its HTTP status or its exception, or asks for an error page."""
    if line.strip().casefold() in ctx.subject:
        return None
    codes = re.findall(r"\b[45]\d\d\b", line)
    if codes and any(re.search(rf"\b{c}\b", ctx.subject) for c in codes):
        return None
    names = re.findall(r"\w*(?:Error|Exception)\b", line)
    if names and any(n.casefold() in ctx.subject for n in names if n not in ("Error", "Exception")):
        return None
    return kind, index


def _error_body(ctx: _Ctx) -> tuple[str, int] | None:
    """A provider's error body passed through as the output; `{"error": "card_declined"}`
    extracted from a payment log is data."""
    ok, value, _ = ctx.parsed
    if not ok or not isinstance(value, dict) or not value:
        return None
    error = value.get("error")
    start = ctx.text.find("{")
    if value.get("type") == "error" and isinstance(error, dict):
        return "a provider's error body", start  # Anthropic
    if not set(value) <= _ERROR_BODY_KEYS:
        return None
    if not (error or value.get("errors") or value.get("message") or value.get("detail")):
        return None
    if isinstance(error, dict) and ({"message", "type", "code", "status"} & set(error)):
        return "a provider's error body", start  # OpenAI, Google, most gateways
    statuses = [v for v in (value.get("status"), value.get("code")) if isinstance(v, int)]
    texts = json.dumps(value, ensure_ascii=False)[:2048]
    if any(s in _INFRA_STATUS for s in statuses) or _INFRA.search(texts):
        return _unless_subject(ctx, "an error body", start, texts)
    return None


# ---------------------------------------------------------------- 4. refusal

# A refusal declines the request itself: its object is the request ("that", "this request",
# "such content") or its reason is the model's nature or policy. "I can't find order 1234",
# "I can't offer a refund on this order", "I am unable to attend on Friday" decline or
# report something in the task's world: they are answers.
_EN_NEG = (
    r"(?:I|we)(?:'m| am| are|'re)? ?(?:"
    r"can(?:not|'t| not)|won't|will not|(?:won't|will not) be able to|(?:won't|will not) be"
    r"|(?:am|'m|are|'re) (?:unable|not able|not going|not allowed|not permitted) to"
    r"|must(?: respectfully)?|have to|(?:am|'m) afraid I can(?:not|'t))"
)
_EN_DEICTIC = (
    r"(?:that|this|it|such|these|those|any (?:of )?(?:that|this)|your request|the request"
    r"|what you(?:'re| are) asking(?: for)?|(?:that|this|such|the|your) (?:request|query|task"
    r"|content|information|kind|type|sort|material|topic|question)"
    r"|(?:content|something|anything|material|text|stories|images|requests?|tasks?"
    r"|questions?) (?:like (?:that|this)|of (?:that|this) (?:kind|sort|type)"
    r"|that (?:involve|promote|target|could|would|might)|involving|which involve))"
)
_STRONG: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a refusal",
        re.compile(
            rf"\b{_EN_NEG} (?:"
            rf"(?:help|assist)(?: you)?(?: (?:with|in|on))? {_EN_DEICTIC}\b"
            r"|(?:help|assist)(?: you)? (?:create|write|generate|make|produce|draft|build"
            r"|develop|design|provide|bypass|hack|with (?:creating|writing|generating|making))\b"
            r"|(?:help|assist|comply|do (?:that|this|it)|proceed|continue)\s*(?:[.!]|\Z)"
            r"|comply\b|fulfil+\b|(?:respectfully )?(?:decline|refuse)\b"
            rf"|(?:provide|give|share|offer|create|write|generate|produce|draft|complete|answer"
            rf"|continue|engage|participate|process|support|do|translate) (?:with )?{_EN_DEICTIC}\b"
            r"|(?:write|create|generate|produce|draft|compose|make) (?:that|this|those|these)"
            r" \w+\s*(?:[.!,;]|\Z)"
            r"|(?:provide|give|offer|share) (?:any )?(?:assistance|help|instructions|guidance"
            r"|advice|information|details) (?:on|for|with|about|to|regarding)\b"
            r")",
            re.I,
        ),
    ),
    (
        "a refusal",
        re.compile(
            r"\bI(?:'m| am) not comfortable (?:with|writing|creating|providing|generating|helping"
            r"|doing|sharing|producing)\b"
            r"|\b(?:that|this|it|this request|that request|which)(?:'s| is)(?: not|n't)? ?(?:not )?"
            r"something (?:I|we)(?:'m| am|'re| are)?(?: able to| allowed to| permitted to| can"
            r"| could| will| would)? (?:help|assist|do|provide|support|write|create)\b"
            r"|\boutside (?:of )?(?:what|the scope of what) (?:I|we)(?:'m| am|'re| are)? ?(?:can"
            r"|could|allowed|able|permitted|designed)\b"
            r"|\b(?:going to|have to|must|will) pass on (?:this|that)(?: one| request| task)?\b"
            r"|\b(?:my|our) (?:guidelines|policies|policy|rules|programming|instructions)"
            r" (?:do(?:n't| not)|does(?:n't| not)) (?:allow|permit|let) me\b"
            r"|\bI\b(?:(?!\b(?:you|they|he|she|users?|customers?|people)\b)[^.!?\n]){1,60}?"
            r"\band (?:can(?:not|'t| not)|won't|will not) (?:help|assist|create|write|generate"
            r"|produce|provide|share|do)(?: with)? (?:that|this|it|such)\b"
            r"|\b(?:would|could|may|might|does|do) (?:violate|breach|go against|be against"
            r"|contravene) (?:the |my |our |OpenAI's |Anthropic's )?(?:usage |content |safety"
            r" |acceptable use )?(?:polic(?:y|ies)|guidelines|terms)"
            r"|\b(?:provide|give|offer) (?:a |any )?(?:medical|legal|financial|tax|professional)"
            r" (?:advice|diagnos\w+|opinions?|guidance|recommendations?)\b(?=[^.!?\n]{0,80}"
            r"(?:[.!]\s*(?:please )?(?:consult|see|talk to|speak (?:to|with))|\Z))"
            r"|\bI(?:'m| am)? ?(?:won't|will not|am not|'m not|not) (?:be )?(?:generating|writing"
            r"|creating|producing|providing|sharing|helping|doing|drafting|answering)"
            r" (?:with )?(?:that|this|those|these|it|such|any|you with that)\b"
            r"|\bI(?:'d| would) (?:prefer|rather) not (?:to )?(?:write|create|generate|help|answer"
            r"|provide|do|share|produce|engage)\b"
            r"|\b(?:goes|go|is|are) against (?:my|our|the) (?:guidelines|policies|policy"
            r"|principles|content policy|usage policies)\b"
            r"|\bviolates? (?:my|our|the|OpenAI's|Anthropic's) (?:content |usage )?polic",
            re.I,
        ),
    ),
    (
        "a refusal in Spanish",
        re.compile(
            r"\bno (?:puedo|podré|voy a|me es posible) (?:ayudar(?:te|le|les)?|asistir(?:te|le)"
            r"|cumplir|proporcionar|generar|crear|escribir|completar|responder|atender|hacer"
            r"|realizar|redactar|traducir)\b[^.!?\n]{0,30}?(?:\b(?:eso|esto|ello|esa|esta|ese"
            r"|este|tu|su) ?(?:solicitud|petición|pedido|tarea|contenido|información|tipo)?\b"
            r"|[.!]|\Z)",
            re.I,
        ),
    ),
    (
        "a refusal in French",
        re.compile(
            r"\bje ne (?:peux|pourrai|suis pas en mesure de|vais) (?:pas )?(?:vous |t'|t’)?"
            r"(?:aider|assister|répondre|fournir|générer|créer|écrire|rédiger|faire|traiter"
            r"|satisfaire|donner suite|accéder|traduire)\b[^.!?\n]{0,30}?(?:\b(?:à cette|cette"
            r"|avec (?:ça|cela|ceci)|ça|cela|ceci|ce (?:contenu|type|genre))\b|[.!]|\Z)",
            re.I,
        ),
    ),
    (
        "a refusal in German",
        re.compile(
            r"\b(?:ich kann|kann ich|ich werde|werde ich|ich darf|darf ich)\b[^.!?\n]{0,40}?"
            r"\b(?:dabei|damit|hierbei|hierzu|diese[rnms]? (?:Anfrage|Bitte|Aufgabe)|das|dies"
            r"|solche[nrs]?)\b[^.!?\n]{0,30}?\b(?:nicht|keine)\b[^.!?\n]{0,20}?\b(?:helfen"
            r"|behilflich|erfüllen|nachkommen|erstellen|schreiben|bereitstellen|liefern|geben"
            r"|beantworten|unterstützen|tun|machen|übersetzen)\b"
            r"|\b(?:dabei|damit|hierbei|hierzu|dazu|bei dieser Anfrage|das|dies)\s+(?:kann|darf"
            r"|werde)\s+ich\b[^.!?\n]{0,30}?\bnicht\b[^.!?\n]{0,20}?\b(?:helfen|behilflich"
            r"|erfüllen|nachkommen|unterstützen|tun|machen|schreiben|erstellen|liefern|geben)\b"
            r"|\b(?:ich kann|kann ich)\b[^.!?\n]{0,30}?\b(?:nicht|keine)\b[^.!?\n]{0,20}?"
            r"\b(?:dabei|damit|hierbei|hierzu|diese[rnms]? (?:Anfrage|Bitte|Aufgabe))\b"
            r"[^.!?\n]{0,20}?\b(?:helfen|behilflich|erfüllen|nachkommen|unterstützen)\b",
            re.I,
        ),
    ),
    (
        "a refusal in Italian",
        re.compile(
            r"\bnon (?:posso|potrò|sono in grado di) (?:aiutarti|aiutarla|aiutarvi|aiutare"
            r"|assisterti|fornire|generare|creare|scrivere|soddisfare|rispondere|tradurre)\b"
            r"[^.!?\n]{0,30}?(?:\b(?:questa|quest[ao]|ciò|tale|la tua|la sua)\b|[.!]|\Z)",
            re.I,
        ),
    ),
    (
        "a refusal in Portuguese",
        re.compile(
            r"\bnão (?:posso|consigo|poderei|sou capaz de) (?:ajudar|ajudá-l[oa]|te ajudar"
            r"|auxiliar|fornecer|gerar|criar|escrever|atender|cumprir|responder|traduzir)\b"
            r"[^.!?\n]{0,30}?(?:\b(?:isso|isto|ess[ae]|est[ae]|sua|tua)\b|[.!]|\Z)",
            re.I,
        ),
    ),
    (
        "a refusal in Dutch",
        re.compile(
            r"\b(?:daar|hier|dat|dit) (?:kan|mag) ik (?:je|u|jullie)? ?(?:helaas )?niet"
            r"(?: mee)? (?:helpen|bij helpen|doen|maken|schrijven)\b"
            r"|\bik kan (?:je|u)? ?(?:helaas )?niet helpen met (?:dit|dat|deze|die)\b",
            re.I,
        ),
    ),
    (
        "a refusal in Russian",
        re.compile(
            r"\bя не (?:могу|смогу|буду|в состоянии) (?:помочь|выполнить|предоставить|создать"
            r"|написать|сгенерировать|ответить|перевести)\b[^.!?\n]{0,30}?"
            r"(?:\b(?:с этим|этот|эту|это|такой|такую|такое|ваш|вашу)\b|[.!]|\Z)",
            re.I,
        ),
    ),
    (
        "a refusal in Chinese",
        re.compile(
            r"我(?:无法|不能|不可以|没办法|无权|不会)(?:协助|帮助|帮你|帮您|提供|满足|完成|回答|处理"
            r"|生成|创作|撰写|执行|翻译)(?:[^。！？\n]{0,6}?(?:这|该|此|您的|你的|这类|此类|相关)"
            r"|[。！]|$)"
        ),
    ),
    (
        "a refusal in Japanese",
        re.compile(
            r"(?:この|その|こちらの|ご依頼|リクエスト|ご要望|ご質問)[^。！\n]{0,20}?"
            r"(?:お手伝い|ご協力|お応え|お答え|対応|回答|提供|作成|生成)(?:すること|いたすこと)?"
            r"(?:は|が)?(?:でき(?:ません|ない)|いたしかねます|できかねます)"
        ),
    ),
    (
        "a refusal in Korean",
        re.compile(
            r"(?:그|이|해당|그런|이런) ?(?:요청|요구|질문|내용)[은는에을를]?[^.!?\n]{0,20}?"
            r"(?:도와드릴|도움을 드릴|도와 드릴|도와줄|응할|제공할|작성할|생성할|답변할"
            r"|처리할|지원할) 수 없"
        ),
    ),
    (
        "a refusal in Hindi",
        re.compile(r"मैं[^।\n]{0,30}?(?:मदद|सहायता) नहीं कर (?:सकता|सकती)"),
    ),
)
# rules-3: refusals phrased in ways rules-2 missed (holdout4, written before these).
_STRONG_3: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a refusal",
        re.compile(
            r"\b(?:that|this|it|which)(?:'s| is) not something (?:I|we)(?:'m| am|'re| are)?"
            r" (?:going to|gonna|willing to|prepared to|happy to|in a position to) (?:help|assist"
            r"|do|provide|support|write|create|produce|make)\b"
            r"|\b(?:conflicts? with|goes against|go against|runs? (?:counter to|against)"
            r"|violates?|breaches?) my (?:guidelines|policies|policy|programming|content policy"
            r"|usage policy|safety guidelines)\b",
            re.I,
        ),
    ),
    (
        "a refusal in German",
        re.compile(
            r"\b(?:das|dies|dabei|damit|hierbei|hierzu|dazu)\s+(?:kann|darf|werde|möchte|will)"
            r"\s+ich\b[^.!?\n]{0,30}?\bnicht\b[^.!?\n]{0,20}?\b(?:übernehmen|verfassen"
            r"|anfertigen|ausführen|bearbeiten|erledigen|produzieren|generieren|beantworten)\b"
            r"|\bsolche (?:Texte|Inhalte|Anfragen|Dokumente|Nachrichten|Aufgaben|Briefe)"
            r" (?:verfasse|erstelle|schreibe|generiere|produziere|beantworte|übernehme|bearbeite)"
            r" ich nicht\b",
            re.I,
        ),
    ),
    (
        "a refusal in French",
        re.compile(
            r"\bje (?:préfère|préférerais|prefere|prefererais|dois|vais) (?:ne pas|refuser de"
            r"|décliner|decliner) ?(?:répondre|repondre|donner suite|aider|traiter|rédiger"
            r"|rediger|écrire|ecrire|fournir|produire|cette|votre)\b",
            re.I,
        ),
    ),
)
# Weak: a statement about the model's nature or reach. It is a refusal when little else
# follows; "As an AI I have no opinions, but here is a comparison: ..." is an answer.
_WEAK: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a refusal",
        re.compile(
            r"\bas an? (?:AI|artificial intelligence|(?:large )?language model|LLM"
            r"|AI (?:language )?model|AI assistant|chatbot)\b[^.!?\n]{0,60}?\b(?:I|we)"
            r"(?:'m| am|'re| are)? (?:can(?:not|'t| not)|do(?:n't| not)|not|unable|have no|lack)",
            re.I,
        ),
    ),
    (
        "a refusal",
        re.compile(
            r"\bI (?:can(?:not|'t| not)|am unable to|'m unable to|am not able to|'m not able to"
            r"|do(?:n't| not) have (?:the ability|access) to) (?:browse|access|retrieve|open|view"
            r"|read|see|fetch|look up|search)\s+(?:the )?(?:internet|web|real-time|live|external"
            r"|attach\w*|(?:the |your |this |that )?(?:file|document|link|url|image|pdf"
            r"|spreadsheet|website|page|attachment)s?)\b"
            r"|\bI do(?:n't| not) have (?:access to (?:real-time|the internet|external|live|your"
            r" (?:company|internal|private))|the ability to (?:browse|access))",
            re.I,
        ),
    ),
    (
        "a refusal",
        re.compile(
            r"\bcomo (?:un )?(?:modelo de lenguaje|asistente de IA|IA|inteligencia artificial)\b"
            r"|\ben tant qu[e'’] ?(?:modèle de langage|IA|intelligence artificielle)\b"
            r"|\bals (?:KI|KI-Sprachmodell|Sprachmodell|künstliche Intelligenz)\b"
            r"|\bкак (?:языковая модель|ИИ|искусственный интеллект)\b"
            r"|作为(?:一个|一名)?(?:人工智能|AI|语言模型)",
            re.I,
        ),
    ),
)
_REFUSAL_WINDOW = 400  # a refusal starts the answer: within its first 400 characters
_ANSWER_AFTER_WEAK = 200  # this much prose after a weak refusal makes it an answer
_TRANSLATE = re.compile(
    r"translat|traduc|tradui|traduz|übersetz|vertaal|перев|翻译|翻譯|翻訳|번역|अनुवाद", re.I
)
_ABOUT_REFUSALS = re.compile(r"\brefus|\bdeclin|\brejection", re.I)
_REFUSAL_STOPS = frozenset({"refusal"})


def _check_refusal(ctx: _Ctx) -> _Failure | None:
    found = _refusal(ctx)
    if found is None:
        return None
    kind, index = found
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output is {kind}, not a result, at {ctx.where(index)}",
        "Your previous output declined instead of doing the step. "
        "Produce the result the step's goal asks for.",
    )


def _refusal(ctx: _Ctx) -> tuple[str, int] | None:
    if ctx.stop_reason in _REFUSAL_STOPS:
        return f"a refusal (the provider's stop reason is '{ctx.stop_reason}')", 0
    if ctx.is_data:
        return None  # refusal texts inside JSON are data (a labelled set, a transcript)
    goals = f"{ctx.inp.task.goal}\n{ctx.inp.step.goal}"
    if _ABOUT_REFUSALS.search(goals):
        return None  # the step is about refusals: examples, templates, classifiers
    translating = bool(_TRANSLATE.search(goals))
    head = ctx.head
    window = head[: ctx.answer_start + _REFUSAL_WINDOW].translate(_APOSTROPHES)
    strongest = _STRONG + _STRONG_3 if ctx.v3 else _STRONG
    for strong, patterns in ((True, strongest), (False, _WEAK)):
        for kind, pattern in patterns:
            for m in pattern.finditer(window):
                if _refusal_counts(ctx, m, strong, translating):
                    return kind, m.start()
    if translating or _IN_CHARACTER.search(goals):
        return None  # a reply written for someone may decline their request
    for m in _DECLINE.finditer(window, 0, ctx.answer_start + _DECLINE_WINDOW):
        if _decline_counts(ctx, window, m):
            return "a refusal", m.start()
    return None


# The general shape of a refusal, in English: "I can't / won't / am unable to / would rather
# not" + a verb of doing the task. It counts when it is the whole answer: the output is
# short or goes on to offer something else instead; "I'm not able to share salaries, but
# the bands are: ..." is an answer, and so is a reply written for a customer.
_DECLINE = re.compile(
    r"\b(?:I|we)(?:'m| am|'re| are)?(?: (?:really|truly|afraid|sorry))?,?(?: but| that)?"
    r" ?(?:can(?:not|'t| not)|won't|will not|(?:won't|will not) be able to|(?:am|'m|are|'re)"
    r" (?:unable|not able|not going|not allowed|not permitted|not comfortable)(?: to)?"
    r"|(?:must|have to|need to)(?: respectfully)? (?:decline|refuse) to|decline to|refuse to"
    r"|(?:'d|would) (?:rather|prefer) not(?: to)?|do(?:n't| not) (?:feel comfortable|think I"
    r" (?:can|should))(?: \w+ing)?) (?:(?:help|assist)(?: you)?(?= with|,|\.| in| on|\Z)"
    r"|(?:provide|give|share|create|write|generate|produce|draft|compose|build|develop|design"
    r"|answer|respond|complete|fulfil+|comply|continue|engage|participate|process|support"
    r"|discuss|advise|explain|describe|list|summari[sz]e|reveal|disclose|perform|carry"
    r" out|take part|role-?play|pretend|impersonate|simulate|browse|look up|retrieve)\b)",
    re.I,
)
_DECLINE_WINDOW = 300  # the first sentence or two of the answer
_SHORT_REFUSAL = 600  # refusals are short; a long output after one is an answer
_IN_CHARACTER = re.compile(
    r"\b(?:customer|client|reply|respond|response to|email|e-mail|letter|message to|dialog"
    r"|dialogue|script|role-?play|character|story|scene|note to|apology)",
    re.I,
)
_BUT_CONTENT = re.compile(r"[,;—–-]\s*(?:but|however|though)\b\s*(?!(?:I|we)\b)", re.I)
_OFFER = re.compile(
    r"(?:however|instead|that said|but|if you)[^.!?\n]{0,40}?\b(?:I|we)(?:'d| would| can"
    r"| could|'m happy| am happy| will)\b|\bplease (?:consult|contact|see|talk to|reach out)"
    r"|\b(?:consult|contact) (?:a|your) (?:doctor|lawyer|professional|physician|attorney"
    r"|advisor|accountant)",
    re.I,
)


def _decline_counts(ctx: _Ctx, window: str, m: re.Match[str]) -> bool:
    if _quoted(ctx.head, m.start()) or _dialogue_line(ctx.head, m.start()):
        return False
    if m.group(0).casefold() in ctx.subject:
        return False
    end = _sentence_end(window, m.end())
    if _BUT_CONTENT.search(window, m.end(), end):
        return False  # "..., but the pay bands are: ..." answers after all
    if len(ctx.stripped) <= _SHORT_REFUSAL:
        return True
    return bool(_OFFER.search(ctx.head, end, end + 300))


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})


def _refusal_counts(ctx: _Ctx, m: re.Match[str], strong: bool, translating: bool) -> bool:
    head = ctx.head
    if _quoted(head, m.start()) or _dialogue_line(head, m.start()):
        return False
    if m.group(0).casefold() in ctx.subject:
        return False  # the output repeats what the task says: a translation, a quote
    if translating and not re.search(r"translat|traduc|übersetz|翻译|AI|IA|KI", m.group(0), re.I):
        return False  # a translated sentence that declines something is the translation
    if strong:
        return True
    end = _sentence_end(head, m.end())
    rest = re.sub(r"\s+", " ", head[end:]).strip()
    return len(rest) < _ANSWER_AFTER_WEAK


def _sentence_end(text: str, index: int) -> int:
    m = re.compile(r"[.!?。！？](?:\s|$)|\n\s*\n").search(text, index)
    return m.end() if m else len(text)


# ---------------------------------------------------------------- 5. format (JSON + schema)


def _format_enabled(ctx: _Ctx) -> bool:
    # A schema on a text step still means "this output is JSON": never ignore it silently.
    return ctx.inp.step.format == "json" or ctx.checks.json_schema is not None


def _check_format(ctx: _Ctx) -> _Failure | None:
    ok, value, error = ctx.parsed
    if not ok:
        return _json_parse_failure(ctx, error)
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


def _json_parse_failure(ctx: _Ctx, error: str) -> _Failure:
    body = ctx.json_body
    if body.startswith(("{", "[")) and _balance_problem(body):
        # Cut off mid-JSON: still FORMAT (the step's contract), but say why.
        return _Failure(
            ErrorClass.FORMAT,
            f"output is not valid JSON, it looks cut off: {error}",
            "Your previous output stopped before the JSON was complete. "
            "Return the complete JSON, shorter if needed.",
        )
    where = "" if body.startswith(("{", "[", '"')) else "; it starts with text, not JSON"
    return _Failure(
        ErrorClass.FORMAT,
        f"output is not valid JSON ({error}){where}",
        "Your previous output was not valid JSON. Return only the JSON, with no text around it.",
    )


_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _balance_problem(text: str) -> str | None:
    """Why JSON-ish text is unbalanced (a string or brackets left open), or None. Strings go
    first (a regex, in C), then brackets are counted: linear, and fast on megabytes."""
    rest = _JSON_STRING.sub("", text)
    if '"' in rest:
        return "an unterminated string"
    opened = rest.count("{") + rest.count("[")
    closed = rest.count("}") + rest.count("]")
    if closed > opened:
        return "an unmatched closing bracket"
    if opened > closed:
        return _plural(opened - closed, "unclosed bracket")
    return None


# ---------------------------------------------------------------- 6. truncation

# Stop reasons as providers record them (lower-cased): OpenAI finish_reason, Anthropic and
# Bedrock stop_reason, Gemini finishReason, Cohere finish_reason.
_CUT_STOPS = frozenset(
    {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded",
     "token_limit", "max_length", "max_tokens_reached"}
)  # fmt: skip
_FILTER_STOPS = frozenset(
    {"content_filter", "content_filtered", "safety", "recitation", "blocklist",
     "prohibited_content", "spii", "image_safety", "guardrail_intervened", "error_toxic"}
)  # fmt: skip
_NORMAL_STOPS = frozenset(
    {"stop", "end_turn", "stop_sequence", "tool_use", "tool_calls", "function_call", "eos",
     "end", "finish", "complete", "completed", "pause_turn", "refusal", "complete_stop"}
)  # fmt: skip


def _check_truncation(ctx: _Ctx) -> _Failure | None:
    problem = _cut_by_stop_reason(ctx) if ctx.stop_reason else None
    if problem is None and ctx.stop_reason not in _NORMAL_STOPS | _CUT_STOPS | _FILTER_STOPS:
        problem = _looks_cut_off(ctx)
    if problem is None:
        return None
    return _Failure(ErrorClass.INCOMPLETE, problem)


def _cut_by_stop_reason(ctx: _Ctx) -> str | None:
    reason = ctx.stop_reason
    if reason in _CUT_STOPS:
        return f"output was cut off: the model stopped at its token limit (stop reason '{reason}')"
    if reason in _FILTER_STOPS:
        return f"output was cut off by the provider's content filter (stop reason '{reason}')"
    return None  # a normal stop: the text is as the model meant it, whatever it looks like


_FENCE_LINE = re.compile(r"\n[ \t]*(?:```|~~~)")


def _fence_lines(text: str) -> int:
    """How many lines open or close a code fence (counted in C: subn, no match objects)."""
    first = 1 if text.lstrip(" \t").startswith(("```", "~~~")) else 0
    return first + _FENCE_LINE.subn("", text)[1]


def _looks_cut_off(ctx: _Ctx) -> str | None:
    """With no stop reason recorded (a custom step, an old run), judge by the text."""
    text = ctx.stripped
    if ("```" in text or "~~~" in text) and _fence_lines(text) % 2:
        last = max(text.rfind("```"), text.rfind("~~~"))
        opened = text.rfind("\n", 0, last) + 1
        return f"output has an unclosed code fence (opened at {ctx.where(_offset(ctx, opened))})"
    if ctx.json_body.startswith(("{", "[")) and not ctx.parsed[0]:
        if bad := _balance_problem(ctx.json_body):
            return f"output looks cut off: its JSON has {bad}"
    if ctx.inp.step.format != "text" or ctx.parsed[0]:
        return None
    ending = _unfinished_ending(text)
    if ending is None:
        return None
    return f"output ends {ending} at {ctx.where(_offset(ctx, len(text) - 1))}"


def _offset(ctx: _Ctx, index_in_stripped: int) -> int:
    """A position in the stripped text, as a position in the output."""
    return index_in_stripped + (len(ctx.text) - len(ctx.text.lstrip()))


# Words a sentence does not end on, by language: articles, conjunctions, prepositions,
# auxiliaries, possessives. Words that do end phrases ("in", "on", "up", "this", "it",
# "all", "more", "not", "so", "there") are left out.
_FUNCTION_WORDS = frozenset(
    """a an the and or but nor of to for with from into onto than as because although though
    while if whether which who whom whose where when since unless until whereas via per
    versus is are was were be been being am will would shall should can could may might must
    has have had do does did their its our your my his her every each some any such very
    including like between among through during before after without within upon toward
    towards against despite at they we he she
    der die das den dem des ein eine einen einem einer eines und oder aber sondern denn weil
    dass ob wenn als wie mit von zu zum zur im an am auf aus bei nach seit über unter vor
    für gegen ohne um durch ist sind war waren wird werden hat haben kann können muss
    el la los las un una unos unas y o pero del al en con por para que como si cuando donde
    porque sin sobre entre hasta desde es son fue era está están ha han se su sus lo le les
    muy más
    le les l' un une des du de d' et ou mais à au aux dans sur sous avec pour par qui dont où
    quand comme car sans est sont était ont ce cette ces son sa ses leur leurs très plus
    il lo gli i e ma di della dello degli delle alla nel nella che per tra fra
    os as um uma em no na nos nas com ao à pelo pela
    het een en maar van op voor dat die om te
    и в во на с со по для что как но или из к о об от за до при без под над у""".split()
)
_CJK_PARTICLES = frozenset("的和与及或在是把被对从而并但因为将向于以之の、はがをにでとへや")
_NO_PUNCTUATION_SCRIPTS = ("THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")
# Characters a finished text may end with: sentence punctuation in many scripts, closing
# quotes and brackets (English, German, French, CJK), code, markdown and HTML closers.
_TERMINAL = frozenset(
    ".!?;:)\"'`]}*_|>~" "\u201d\u201c\u2019\u2018\u00bb\u203a\u300d\u300f\u3011\uff09\uff3d"
    "\uff5d\u3015\u3009\u300b\u3002\uff01\uff1f\uff0e\uff61\u061f\u06d4\u0964\u0965\u1362"
    "\u2026\uff1b\u2014"
)  # fmt: skip
_SIGN_OFF = re.compile(
    r"(?:best|kind|warm|warmest)(?: regards| wishes)?|regards|sincerely|cheers|thanks|thank you"
    r"|many thanks|yours(?: truly| sincerely)?|respectfully|take care|best wishes"
    r"|saludos(?: cordiales)?|atentamente|un saludo|cordialement|bien à vous|amicalement"
    r"|mit freundlichen grüßen|viele grüße|beste grüße|liebe grüße|lg|cordiali saluti"
    r"|distinti saluti|atenciosamente|abraços|met vriendelijke groet(?:en)?|с уважением"
    r"|此致(?:敬礼)?|敬上|よろしくお願いします|敬具",
    re.I,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)]|[a-z][.)])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+\S")
_LABEL_LINE = re.compile(r"^\s*[\w][\w /()&'.-]{0,40}\s?[:：]\s+\S")
_NUMBER_END = re.compile(r"[-+]?[$€£¥]?\d[\d,.]*\s?(?:%|[a-zA-Z]{1,3}\b)?\Z")
_PATH_OR_URL = re.compile(r"(?:\w+://\S+|\S*[/\\]\S+|\S+\.[A-Za-z0-9]{1,6})\Z")
_OPEN_LAST = re.compile(r"[(\[{]")
_EMOTICON = re.compile(r"[:;=]-?[()\[\]DPp]\Z")
_SEQUENCE = re.compile(r"(?:[^,\n]{1,30},\s*){2,}[^,\n]{0,30}\Z")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")


def _unfinished_ending(text: str) -> str | None:
    """How a text step's output ends unfinished, or None. Reads only the last TAIL chars."""
    tail = text[-TAIL:]
    last_line = tail.rsplit("\n", 1)[-1].strip()
    end = tail[-1]
    if _EMOTICON.search(last_line):
        return None
    if end in ".…" and (tail.endswith("...") or end == "…"):
        return _ellipsis_ending(tail)
    if end == "," and not _SIGN_OFF.fullmatch(last_line.rstrip(",").strip()):
        return "with a dangling comma"
    if end in ":：" and len(_WORD.findall(last_line)) >= 3 and not _LIST_ITEM.match(last_line):
        return "with a colon and nothing after it"
    if end in "-\u2010\u2013\u2014" and not re.search(r"\s[-\u2013\u2014]{2,}\Z|^-{3,}\Z", tail):
        return "with a dash, mid-word or mid-thought"
    if re.fullmatch(r"(?:[-*+•]|\d{1,3}[.)])", last_line):
        return "with an empty list item"
    if last_line.startswith("|") and (not last_line.endswith("|") or _short_row(tail, last_line)):
        return "in the middle of a table row"
    if _unclosed_on_last_line(last_line):
        return "inside an open bracket"
    if end in _TERMINAL or unicodedata.category(end)[0] == "S" or end in "\u200d\ufe0f":
        return None
    return _mid_sentence(tail, last_line)


def _last_token(line: str) -> str:
    """The last whitespace-separated token, lower-cased, if it is a plain word ("N/A" and
    "4,200" are not)."""
    token = line.rsplit(None, 1)[-1].strip("\"'“”‘’«»()[]*_.,;:!?…") if line.strip() else ""
    return token.casefold() if token.replace("'", "").isalpha() else ""


def _ellipsis_ending(tail: str) -> str | None:
    body = tail.rstrip(".… \u3000")
    line = body.rsplit("\n", 1)[-1]
    words = _WORD.findall(line)
    if not words:
        return None  # "…" alone, or after a number: a sequence or a pause
    if _last_token(line) in _FUNCTION_WORDS:
        return "with an ellipsis after an unfinished clause"
    if _SEQUENCE.search(line) or words[-1].casefold() in ("etc", "usw", "etc.", "等"):
        return None  # "2, 4, 8, 16, …", "apples, pears, …"
    sentence = re.split(r"[.!?。！？]\s", line)[-1]
    if len(_WORD.findall(sentence)) <= 3:
        return None  # "To be continued…", "Stay tuned..."
    return "with an ellipsis"


def _short_row(tail: str, row: str) -> bool:
    """A markdown table row with fewer cells than the table's header row."""
    rows = [ln.strip() for ln in tail.split("\n") if ln.strip().startswith("|")]
    return len(rows) >= 3 and row.count("|") < rows[0].count("|")


def _unclosed_on_last_line(line: str) -> bool:
    # ":(" is a face, not an opening; quotes hide their contents.
    line = re.sub(r"[:;=]-?[(\[]", "", _JSON_STRING.sub("", line))
    opened = len(_OPEN_LAST.findall(line))
    closed = line.count(")") + line.count("]") + line.count("}")
    return opened > closed


def _mid_sentence(tail: str, last_line: str) -> str | None:
    """The last line ends on a word or number without punctuation."""
    last_char = last_line[-1]
    script = unicodedata.name(last_char, "").split(" ")[0]
    if script in _NO_PUNCTUATION_SCRIPTS:
        return None  # Thai and its neighbours do not end sentences with a mark
    if last_char in _CJK_PARTICLES:
        return "on a particle, mid-sentence"
    words = _WORD.findall(last_line)
    if len(words) >= 2 and _last_token(last_line) in _FUNCTION_WORDS:
        return "mid-sentence, on a function word"
    if _is_complete_line(tail, last_line, words):
        return None
    return "mid-sentence, without closing punctuation"


def _is_complete_line(tail: str, last_line: str, words: list[str]) -> bool:
    """Lines that end without punctuation when finished: short answers, names after a
    sign-off, labels, titles, list items, headings, code, paths, numbers, verse."""
    lines = [ln.strip() for ln in tail.split("\n")]
    paragraph = []
    for ln in reversed(lines):
        if not ln:
            break
        paragraph.append(ln)
    paragraph.reverse()
    if (
        len(paragraph) == 1
        and (len(words) <= 6 or len(tail) < _SHORT_OUTPUT and (len(words) < 9 or "," not in tail))
        or _LIST_ITEM.match(last_line) or _HEADING.match(last_line)
        or _LABEL_LINE.match(last_line) or _NUMBER_END.search(last_line)
        or _PATH_OR_URL.search(last_line) or _is_title(words)
        or re.match(r"(?: {4}|\t|\$ |>>> )", tail.rsplit("\n", 1)[-1])
    ):  # fmt: skip
        return True
    previous = [ln for ln in lines[-4:-1] if ln]
    if any(_SIGN_OFF.fullmatch(p.rstrip(",.!").strip()) for p in previous) and len(words) <= 5:
        return True  # "Best regards,\nThe Support Team"
    if _SIGN_OFF.fullmatch(last_line.rstrip(",.!").strip()):
        return True
    if len(paragraph) >= 3 and all(len(ln.split()) <= 8 for ln in paragraph):
        return True  # verse: short lines without full stops
    if "," in last_line and " " not in last_line:
        return True  # CSV
    sentence = re.split(r"(?<=[.!?;。！？])\s+", " ".join(paragraph))[-1]
    if _SHORT_ITEMS.search(sentence):
        return True  # "...: realistic budget, achievable timeline, experienced team"
    return len(_WORD.findall(sentence)) <= 3


# A one-line output this short, without commas, that ends on a word is a terse answer
# ("Price drops from 12 to 9 EUR at 50 seats"); other cut-off short outputs are caught by
# how they end (a function word, a comma, a colon, an open bracket).
_SHORT_OUTPUT = 80
# A fragment that ends in a list of three or more short items, without "and"/"or".
_SHORT_ITEMS = re.compile(
    r"(?:^|[:—–-]\s)(?:[^,:\s]+(?: [^,:\s]+){0,3}, ){2,}[^,:\s]+(?: [^,:\s]+){0,3}\Z"
)


def _is_title(words: list[str]) -> bool:
    long = [w for w in words if len(w) >= 4]
    return len(long) >= 2 and sum(w[0].isupper() for w in long) / len(long) >= 0.75


# ---------------------------------------------------------------- 7, 8. length and phrases


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


def _phrase(text: str) -> re.Pattern[str]:
    """A phrase matched case-, whitespace- and apostrophe-insensitively, without folding
    (and copying) a whole output first."""
    words = text.translate(_APOSTROPHES).split()
    body = r"\s+".join(re.escape(w).replace("'", "['\u2019\u2018\u02bc\u2032]") for w in words)
    return re.compile(body, re.I)


def _check_required(ctx: _Ctx) -> _Failure | None:
    missing = [p for p in ctx.checks.required if p.strip() and not _phrase(p).search(ctx.text)]
    if not missing:
        return None
    word = "phrase" if len(missing) == 1 else "phrases"
    return _Failure(
        ErrorClass.INCOMPLETE,
        f"output is missing the required {word} {_spec_quote_all(missing)}",
        f"Your previous output was incomplete. It must include {_spec_quote_all(missing)}.",
    )


# ---------------------------------------------------------------- 9. forbidden


def _check_forbidden(ctx: _Ctx) -> _Failure | None:
    for pattern in ctx.checks.forbidden:
        if m := re.search(pattern, ctx.text, re.I):
            # Name the pattern and the place, not the match: it is often personal data.
            return _Failure(
                ErrorClass.UNSAFE,
                f"output matches the forbidden pattern {_spec_quote(pattern)} "
                f"at {ctx.where(m.start())}",
            )
    return None


# ---------------------------------------------------------------- 10. consistent keys


def _check_consistent_keys(ctx: _Ctx) -> _Failure | None:
    ok, value, _ = ctx.parsed
    if not ok or not isinstance(value, dict | list):
        return None  # nothing to compare; JSON steps already failed `format`
    keys = [k for k in ctx.checks.consistent_keys if k]
    now = {path: _keep(v) for path, v in _key_values(value, keys).items()}
    for key in keys:
        mine = {p: v for p, v in now.items() if _path_is_key(p, key)}
        if not mine:
            continue
        for fact in ctx.facts:
            theirs = {p: v for p, v in fact.values.items() if _path_is_key(p, key)}
            for here, there in _pairs(mine, theirs):
                if not json_equal(mine[here], theirs[there]):
                    return _contradiction(key, here, mine[here], fact.step, there, theirs[there])
    return None


def _pairs(mine: dict[str, Any], theirs: dict[str, Any]) -> list[tuple[str, str]]:
    """Which values to compare: the same path on both sides; or, when a key occurs once on
    each side at different depths (it moved), those two. Several occurrences at other
    paths are ambiguous (prices of different items) and are not compared."""
    same = [(p, p) for p in mine if p in theirs]
    if same:
        return same
    if len(mine) == 1 and len(theirs) == 1:
        return [(next(iter(mine)), next(iter(theirs)))]
    return []


def _contradiction(key: str, here: str, now: Any, step: str, there: str, before: Any) -> _Failure:
    step = _spec_quote(step)
    # Numbers, booleans and null say what differs without quoting text from an output.
    shown = f": {_show(now)} here, {_show(before)} there" if _showable(now, before) else ""
    where = here if there == here else f"{here} (there at {there})"
    return _Failure(
        ErrorClass.CONTRADICTION,
        f"key {_spec_quote(key)} at {where} differs from committed step {step}{shown}",
        f"Your previous output contradicted step {step}: keep {key} exactly as that step "
        "committed it. Stay consistent with the earlier outputs.",
    )


def _showable(*values: Any) -> bool:
    return all(v is None or isinstance(v, bool | int | float) for v in values)


def _show(value: Any) -> str:
    return json.dumps(value)


def _dotted(key: str) -> str:
    return "$" + "".join(_child("", part) for part in key.split("."))


def _path_is_key(path: str, key: str) -> bool:
    """Does a JSON path belong to a consistent key: a dotted path exactly, a plain key at
    any depth?"""
    if "." in key:
        return path == _dotted(key)
    return path.endswith(_child("", key))


def _key_values(value: Any, keys: Sequence[str]) -> dict[str, Any]:
    """JSON path -> value for each key: a dotted path from the root, a plain key at every
    depth (breadth-first, at most MAX_KEY_PATHS per key, MAX_JSON_NODES nodes walked)."""
    out: dict[str, Any] = {}
    plain = {k for k in keys if "." not in k}
    for key in keys:
        if "." in key:
            node, ok = value, True
            for part in key.split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    ok = False
                    break
            if ok:
                out[_dotted(key)] = node
    if not plain:
        return out
    counts = dict.fromkeys(plain, 0)
    queue: list[tuple[str, Any]] = [("$", value)]
    walked = 0
    while queue and walked < MAX_JSON_NODES:
        next_level: list[tuple[str, Any]] = []
        for path, node in queue:
            walked += 1
            if isinstance(node, dict):
                for k, v in node.items():
                    child = _child(path, k)
                    if k in counts and counts[k] < MAX_KEY_PATHS:
                        counts[k] += 1
                        out[child] = v
                    if isinstance(v, dict | list):
                        next_level.append((child, v))
            elif isinstance(node, list):
                next_level.extend(
                    (_child(path, i), v) for i, v in enumerate(node) if isinstance(v, dict | list)
                )
        queue = next_level
    return out


def _keep(value: Any) -> Any:
    """A value as facts keep it: itself, or its digest when large (history stays small).
    The digest is of a canonical form, so 1 and 1.0 still compare equal."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        text = repr(value)
    if len(text) <= BIG_VALUE:
        return value
    canonical = _canonical(value)
    return {"$sha256": hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()}


def _canonical(value: Any) -> str:
    def fix(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    try:
        return json.dumps(fix(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return repr(value)


# ---------------------------------------------------------------- 11. grounded numbers

# A number as written: 4,200 / 3.5 / 12% / 4.2M / 4.2 million / 2.5x / 3rd.
_NUMBER = re.compile(
    r"(?P<num>\d(?:\d{0,2}(?:,\d{3})+|\d*)(?:\.\d+)?)"  # a digit first: the scan skips ahead
    r"(?P<suffix>"
    r"\s?(?:%|percent\b|per ?cent\b|pct\b|Prozent\b|por ?ciento\b|pour ?cent\b)"
    r"|\s?(?:k|K|M|MM|B|bn|mn|tn)(?![^\W\d_])"
    r"|\s(?:thousand|million|billion|trillion|mn|bn|Mio\.?|Mrd\.?|millones|millions|milliards"
    r"|Millionen|Milliarden|lakh|crore)\b"
    r"|[xX×](?![^\W\d_])"
    r"|(?:st|nd|rd|th)\b"
    r")?"
)
_SCALES = {
    "k": 10**3, "thousand": 10**3, "m": 10**6, "mm": 10**6, "mn": 10**6, "million": 10**6,
    "millions": 10**6, "millones": 10**6, "millionen": 10**6, "mio": 10**6, "b": 10**9,
    "bn": 10**9, "billion": 10**9, "milliards": 10**9, "milliarden": 10**9, "mrd": 10**9,
    "tn": 10**12, "trillion": 10**12, "lakh": 10**5, "crore": 10**7,
}  # fmt: skip
_SCALE_WORD = re.compile(
    r"\b(thousand|million|billion|trillion|mn|bn|Mio|Mrd|millions|millones|milliards"
    r"|Millionen|Milliarden|lakh|crore)\b",
    re.I,
)
_TIME_AFTER = re.compile(r":([0-5]\d)(?![\d.,]\d)")  # after the hour: 14:02
_DATE_AFTER = re.compile(r"-(\d{2})-(\d{2})(?!\d)")  # after the year: 2024-03-15
_URL = re.compile(r"://\S+")  # the scheme before it has no digits; www.x2.com is glued
_REFERENCE_WORDS = re.compile(
    r"(?:step|phase|section|chapter|figure|fig\.|table|appendix|page|p\.|pp\.|item|option"
    r"|part|version|v|no\.|line|rule|article|art\.|§)\s?\Z",
    re.I,
)
_UNIT_WORDS = frozenset(
    """% percent pct points point pts pp x times years year months month weeks week days day
    hours hour hrs minutes minute mins seconds second secs ms dollars euros pounds usd eur gbp
    million billion thousand k m bn km kg miles units""".split()
)
_SMALL = 10  # integers up to this, counting things ("3 options"), need no source


@dataclass(frozen=True)
class _Claim:
    raw: str
    value: Decimal
    tolerance: Decimal  # half the precision shown: "4.2 million" is 4,150,000 to 4,250,000
    percent: bool
    index: int
    scale: int = 1  # 10**6 for "4.2 million"


def _dec(raw: str) -> Decimal | None:
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return None


def _dec_str(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _scale_of(suffix: str) -> int:
    word = suffix.strip().rstrip(".").casefold()
    return _SCALES.get(word, 1) if word else 1


def _glued(text: str, start: int, end: int) -> bool:
    """Digits inside a word or an identifier (GPT4, Q3, v2, INV-2291, COVID-19, 2FA)."""
    before = text[start - 1] if start else " "
    if (
        before.isalpha()
        or before in "_./\\"
        or (before == "," and start > 1 and text[start - 2].isdigit())
    ):
        return True
    if before == "-" and start > 1 and text[start - 2].isalpha():
        return True
    after = text[end] if end < len(text) else " "
    return after.isalpha() or after == "_" or (after == "." and text[end + 1 : end + 2].isdigit())


def _scan_numbers(text: str) -> tuple[list[Decimal], list[Decimal], set[int]]:
    """The numbers a source states, liberally, in one pass over at most MAX_NUMBERS_SEEN of
    them: (every value, the values arithmetic may combine, the units of scale named just
    after a number, as in "125 (million EUR)"). Every value: as written, scaled
    ("4.2 million" also gives 4200000), the parts of "1,234" (a list?), times as minutes of
    the day (14:02-14:39 gives 37) and ISO dates as day numbers (two dates give the days
    between). Numbers glued to words (Q3, GPT4) are not combined."""
    every: list[Decimal] = []
    combine: list[Decimal] = []
    scales: set[int] = set()
    seen: set[str] = set()
    for m in itertools.islice(_NUMBER.finditer(text), MAX_NUMBERS_SEEN):
        raw = m.group("num")
        if raw in seen and not text.startswith((":", "-"), m.end("num")):
            continue  # a repeat adds nothing (times and dates differ by what follows)
        seen.add(raw)
        value = _dec(raw)
        if value is None:
            continue
        values = [value]
        if (scale := _scale_of(m.group("suffix") or "")) != 1:
            values.append(value * scale)
        end = m.end("num")
        if word := _SCALE_WORD.search(text, end, end + 24):
            scales.add(_scale_of(word.group(1)))
        if t := _TIME_AFTER.match(text, end):
            values.append(value * 60 + int(t.group(1)))  # 14:02 -> minute 842
        elif d := _DATE_AFTER.match(text, end):
            with contextlib.suppress(ValueError):
                values.append(Decimal(_dt.date(int(value), *map(int, d.groups())).toordinal()))
        every += values
        if "," in raw:
            every.extend(x for part in raw.split(",") if (x := _dec(part)) is not None)
        if not _glued(text, m.start(), m.end()):
            combine += values
    return every, combine, scales


def _list_marker(text: str, start: int, end: int) -> bool:
    """ "1. First", "## 3) Done": a number that only numbers a line."""
    if end - start > 3 or text[end : end + 1] not in (".", ")"):
        return False
    if text[end + 1 : end + 2] not in (" ", "\t"):
        return False
    line = text[text.rfind("\n", 0, start) + 1 : start]
    return not line.strip(" \t#-*+")


def _distinct(values: Iterable[Decimal], limit: int) -> list[Decimal]:
    seen: dict[Decimal, None] = {}
    for v in values:
        if v not in seen:
            seen[v] = None
            if len(seen) >= limit:
                break
    return list(seen)


def _claims(text: str) -> list[_Claim]:
    """The numbers an output asserts: not list markers, footnotes, versions, identifiers,
    section references, URLs or code."""
    view = _URL.sub(_blank, _blank_code(text[:NUMBERS_SCAN]))
    out: list[_Claim] = []
    seen: set[str] = set()
    for m in itertools.islice(_NUMBER.finditer(view), MAX_NUMBERS_SEEN):
        if len(out) >= MAX_CLAIMS:
            break
        if m.group(0) in seen:
            continue  # checked where it first appears
        seen.add(m.group(0))
        start, end = m.start(), m.end("num")
        raw_num = m.group("num")
        if _glued(view, start, m.end()) or view[max(0, start - 1) : start] == "[":
            continue
        if _list_marker(view, start, end):
            continue
        if (
            raw_num in ("24", "7")
            and view[start : end + 2] in ("24/7",)
            or view[end : end + 2] == "/7"
        ):
            continue
        if _REFERENCE_WORDS.search(view[max(0, start - 12) : start]):
            continue
        value = _dec(raw_num)
        if value is None:
            continue
        suffix = (m.group("suffix") or "").strip()
        percent = suffix.startswith(("%", "per", "pct", "Proz", "por", "pour"))
        scale = _scale_of(suffix) if not percent else 1
        decimals = len(raw_num.split(".")[1]) if "." in raw_num else 0
        precision = Decimal(1).scaleb(-decimals)
        if not decimals and not percent:
            digits = raw_num.replace(",", "")
            zeros = len(digits) - len(digits.rstrip("0"))
            if zeros and len(digits) - zeros >= 2:
                precision = Decimal(10) ** zeros  # "4,200": rounded to hundreds
        if not decimals and not percent and scale == 1 and value <= _SMALL:
            following = re.match(r"\s*([^\W\d]+|%)", view[m.end() : m.end() + 20])
            if not following or following.group(1).casefold() not in _UNIT_WORDS:
                continue  # "3 options", "2 regions": counting, not a figure
        claim = _Claim(
            m.group(0).strip(), value * scale, precision * scale / 2, percent, start, scale
        )
        out.append(claim)
    return out


class _Sources:
    """What numbers may come from: every number of the task, the step's goal and params and
    the committed outputs (matched directly), and simple arithmetic on the first MAX_DERIVE
    of them (pairs) and MAX_TRIPLES (triples): sums, differences, products, ratios,
    percentages, percent changes, means, unit scaling, and time and date differences."""

    def __init__(self, texts: Sequence[str], facts: Sequence[OutputFacts]) -> None:
        direct: list[Decimal] = []
        pool: list[Decimal] = []
        per_source: list[list[float]] = []
        self.scales: set[int] = set()  # units the sources speak in
        for text in texts:
            every, combine, scales = _scan_numbers(text[:NUMBERS_SCAN])
            self.scales |= scales
            direct += every
            pool += combine
            per_source.append([float(v) for v in combine[:1000]])
        for fact in facts:
            values = [d for raw in fact.numbers if (d := _dec(raw)) is not None]
            direct += values
            pool += values
            per_source.append([float(v) for v in values])
        distinct = _distinct(direct, MAX_SOURCE_NUMBERS)
        self.direct = set(distinct)
        base = [float(v) for v in _distinct((v for v in pool if v), MAX_DERIVE)]
        self.derived = sorted(_derive(base, [float(v) for v in distinct], per_source))

    def grounded(self, claim: _Claim) -> bool:
        if self._near(claim.value, claim.tolerance):
            return True
        if claim.scale != 1 and claim.scale in self.scales:
            return self._near(claim.value / claim.scale, claim.tolerance / claim.scale)
        return False

    def _near(self, target: Decimal, tolerance: Decimal) -> bool:
        if target in self.direct:
            return True
        value, tol = float(target), float(tolerance) + abs(float(target)) * 1e-9
        i = bisect.bisect_left(self.derived, value - tol)
        return i < len(self.derived) and self.derived[i] <= value + tol


def _derive(base: list[float], direct: list[float], per_source: list[list[float]]) -> set[float]:
    out: set[float] = set()
    for v in direct[:MAX_SCALED]:
        out.update((v, v / 1e3, v / 1e6, v / 1e9, v * 100, v / 100, v / 60, v * 60))
    for a, b in itertools.permutations(base, 2):
        diff = abs(a - b)
        out.update((a + b, diff, a * b, a / b, (a + b) / 2, diff / 60, diff * 100 / a))
        out.update((a * 100 / b, a * (1 + b / 100), abs(a * (1 - b / 100)), a * b / 100))
    for a, b, c in itertools.combinations(base[:MAX_TRIPLES], 3):
        out.update((a + b + c, (a + b + c) / 3))
    for numbers in per_source:
        if len(numbers) > 1:
            total = sum(numbers)
            out.update((total, total / len(numbers)))
    return out  # all positive: claims are read without their sign


def _check_grounded_numbers(ctx: _Ctx) -> _Failure | None:
    claims = _claims(ctx.text)
    if not claims:
        return None
    inp = ctx.inp
    texts = [inp.task.goal, *inp.task.inputs.values(), inp.step.goal]
    texts += [_render(v) for v in inp.step.params.values()]
    sources = _Sources(texts, ctx.facts)
    loose = [c for c in claims if not sources.grounded(c)]
    if not loose:
        return None
    shown = list(dict.fromkeys(c.raw for c in loose))
    listed = ", ".join(shown[:6]) + (f" and {len(shown) - 6} more" if len(shown) > 6 else "")
    return _Failure(
        ErrorClass.HALLUCINATION,
        f"{_plural(len(shown), 'number')} not grounded in the task, the step's goal or params, "
        f"or the committed outputs, nor derivable from them: {listed} "
        f"(first at {ctx.where(loose[0].index)})",
        f"Your previous output used numbers the inputs do not support ({listed}). "
        "Use only numbers from the task and the earlier outputs, or computed from them.",
    )


# ---------------------------------------------------------------- 12. topic


def _keyword(word: str) -> re.Pattern[str]:
    # Whole words, any whitespace between words of a phrase, a plural "s"/"es" allowed. The
    # word boundary is a look-behind after the first character, so the scan still skips
    # ahead to that character.
    body = r"\s+".join(map(re.escape, word.split()))
    first = re.escape(word.strip()[:1])
    return re.compile(rf"{first}(?<!\w{first}){body[len(first) :]}(?:e?s)?(?!\w)", re.I)


def _has_keyword(text: str, word: str) -> bool:
    return bool(word.strip()) and _keyword(word).search(text) is not None


def _check_topic(ctx: _Ctx) -> _Failure | None:
    keywords = [k for k in ctx.checks.topic if k.strip()]
    need = min(ctx.checks.topic_min, len(keywords))  # topic_min above the list: all of them
    text = ctx.text.translate(_APOSTROPHES) if "\u2019" in ctx.text[:4096] else ctx.text
    found = [k for k in keywords if _has_keyword(text, k.translate(_APOSTROPHES))]
    if len(found) >= need:
        return None
    return _Failure(
        ErrorClass.GOAL_DRIFT,
        f"output mentions {len(found)} of the topic keywords {_spec_quote_all(keywords)} "
        f"(at least {need} expected)",
        "Your previous output drifted off the step's goal. Refocus on the stated goal only: "
        f"it is about {_spec_quote_all(keywords)}.",
    )


# ---------------------------------------------------------------- 13, 14. scope


def _check_out_of_scope(ctx: _Ctx) -> _Failure | None:
    for pattern in ctx.checks.out_of_scope:
        if m := re.search(pattern, ctx.text, re.I):
            return _Failure(
                ErrorClass.SCOPE_CREEP,
                f"output goes beyond the step's scope: the out-of-scope pattern "
                f"{_spec_quote(pattern)} matches at {ctx.where(m.start())}",
                "Your previous output did more than this step's scope (it matched the "
                f"out-of-scope pattern {_spec_quote(pattern)}). Do only what this step requires.",
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
    _Rule("secrets", lambda c: c.checks.secrets, _check_secrets),
    _Rule("empty", lambda c: True, _check_empty),
    _Rule("error_signatures", lambda c: c.checks.error_signatures, _check_error_signatures),
    _Rule("refusal", lambda c: c.checks.refusal, _check_refusal),
    _Rule("format", _format_enabled, _check_format),
    _Rule("truncation", lambda c: c.checks.truncation, _check_truncation),
    _Rule("min_length", lambda c: c.checks.min_length is not None, _check_min_length),
    _Rule("required", lambda c: bool(c.checks.required), _check_required),
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


def check_rules(
    inp: VerifyInput, facts: Sequence[OutputFacts] | None = None, version: str = RULES_VERSION
) -> Verdict:
    """Run the enabled L1 checks in order; the first failure is the verdict.

    `facts` are the committed outputs this step saw (its ancestors), as extract_facts made
    them when each was committed. Without them they are extracted from `inp.committed`
    (step -> text), so a test or a local activity can pass texts instead."""
    if version not in VERSIONS:
        raise ValueError(f"unknown rules version {version!r}: one of {', '.join(VERSIONS)}")
    ctx = _Ctx(inp, facts, version)
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
                prompt_version=version,
                checks_run=checks_run,
            )
    return Verdict(
        passed=True,
        reason=f"all {len(checks_run)} rules passed",
        tier="L1",
        verifier="rules",
        prompt_version=version,
        checks_run=checks_run,
    )
