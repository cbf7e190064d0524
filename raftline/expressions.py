"""`when:` conditions: CEL over earlier steps' committed outputs and the task's inputs.

A condition is parsed and checked when the spec is loaded (`check`) and evaluated during the
run (`evaluate`), by cel-python's interpreter: no Python `eval` or `exec` anywhere.

Names:
- a step is a top-level identifier (`analysis.risk == 'high'`), or `steps["my-step"]` /
  `steps.name` (names with '-', or that clash with a CEL word, need the quoted form);
- a task input is `inputs.NAME` or `inputs["NAME"]`, always a string.

Values: a step's output that parses as JSON is bound as that value (objects are maps, arrays
lists, numbers int or double); any other text is a string. A skipped step is `null`, so
`draft == null` tells it apart; reading a field of it is an error (`has(draft.x)` is false).

Semantics beyond cel-python 0.5.0, as the CEL spec has them today: numbers compare across
int, uint and double (`score > 5` holds for 7 and 7.5); `==` between different kinds is false,
not an error (`analysis != null` works). CEL's error rules stand: `a || b` is true when
either side is true even if the other fails, and an error that decides the result fails
the condition.

Deterministic: `timestamp()` takes only a full RFC 3339 time (cel-python would read the clock
for 'now' or '10:00'); timestamp getters take a fixed offset, not a zone name (zone rules
come from the machine's tz database); `matches` is RE2 (linear time). Guards: an expression
has at most MAX_CHARS characters, a step's output at most MAX_OUTPUT_CHARS, and evaluation
at most MAX_STEPS node visits (macros over large lists stop there, the same way every time).
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import operator
import re
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Evaluator, base_functions

MAX_CHARS = 2_000
MAX_OUTPUT_CHARS = 256 * 1024
MAX_STEPS = 50_000

# cel-python logs whole activations (every output) at DEBUG and function arguments at ERROR.
logging.getLogger("celpy").setLevel(logging.CRITICAL)


class ExpressionError(ValueError):
    """One line: what is wrong with a condition, and where."""


# ------------------------------------------------------------------ names a condition may use

MACROS = {"all", "exists", "exists_one", "map", "filter"}
STRING_METHODS = {"contains", "startsWith", "endsWith", "matches", "size"}
TIME_GETTERS = {
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getMonth",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getSeconds",
}
METHODS = MACROS | STRING_METHODS | TIME_GETTERS
FUNCTIONS = {"has", "size", "type", "dyn", "matches"}
FUNCTIONS |= {"int", "uint", "double", "string", "bytes", "bool", "duration", "timestamp"}
# Type names a condition may compare with `type(x) == int`; a step named so needs steps["int"].
TYPE_NAMES = {"int", "uint", "double", "string", "bytes", "bool", "list", "map", "null_type"}
TYPE_NAMES |= {"type"}
ROOTS = {"steps", "inputs"}  # the maps of steps and of task inputs
# cel-python resolves `google.x` in its protobuf package, before any variable of that name.
SHADOWED = {"google"}


# ------------------------------------------------------------------ the public API


def check(expr: str, steps: Collection[str], inputs: Collection[str] | None = None) -> set[str]:
    """Parse `expr`; raise ExpressionError if it does not parse, or names a step that is not in
    `steps` (the step's ancestors) or (when `inputs` is given) a task input that is not in it.
    Returns the step names it reads."""
    program = _compile(expr)
    for name in sorted(program.steps):
        if name not in steps:
            raise ExpressionError(_unknown_step(name, steps, quoted=name not in program.idents))
    if inputs is not None:
        for name in sorted(program.inputs):
            if name not in inputs:
                known = ", ".join(sorted(inputs)[:10]) or "the task has none"
                raise ExpressionError(f"inputs.{name} is not a task input (known: {known})")
    if program.problem:
        raise ExpressionError(program.problem)
    return set(program.steps)


def evaluate(expr: str, outputs: Mapping[str, str | None], inputs: Mapping[str, str]) -> bool:
    """The condition's value. `outputs`: committed output text of each step it reads (None for a
    step that was skipped). A JSON output is bound as its parsed value, any other text as a
    string. Raise ExpressionError when the value is not a bool or evaluation fails (e.g. a field
    that is missing), with a one-line message."""
    program = _compile(expr)
    if program.problem:
        raise ExpressionError(program.problem)
    bound = {name: _output(name, outputs) for name in sorted(program.steps)}
    context: dict[str, Any] = {name: bound[name] for name in program.idents}
    context["steps"] = celtypes.MapType({celtypes.StringType(k): v for k, v in bound.items()})
    context["inputs"] = celtypes.MapType(
        {celtypes.StringType(k): celtypes.StringType(v) for k, v in inputs.items()}
    )
    try:
        value = program.run(context)
    except CELEvalError as err:
        raise ExpressionError(_eval_message(expr, err)) from None
    except _OverBudget:
        raise ExpressionError(
            f"stopped after {MAX_STEPS:,} evaluation steps: the condition does too much work "
            "(nested macros over large lists?)"
        ) from None
    except RecursionError:
        raise ExpressionError("nests too deeply to evaluate") from None
    except Exception as err:  # cel-python raises plain TypeErrors on some odd inputs
        raise ExpressionError(f"cannot be evaluated: {_one_line(str(err))}") from None
    if isinstance(value, CELEvalError):
        raise ExpressionError(_eval_message(expr, value))
    if value is None:
        raise ExpressionError("is null, not a bool (a skipped step is null): compare it, x == null")
    if not isinstance(value, bool | celtypes.BoolType):
        raise ExpressionError(
            f"is {_kind(value)} ({_one_line(repr(_plain(value)), 60)}), not a bool: "
            "a condition must be true or false"
        )
    return bool(value)


def clear_cache() -> None:
    """Forget compiled programs (tests and benchmarks)."""
    _compile.cache_clear()


# ------------------------------------------------------------------ compiling


@dataclass(frozen=True)
class _Program:
    runner: celpy.Runner
    steps: frozenset[str]  # every step read, however named
    idents: frozenset[str]  # steps read as a top-level identifier
    inputs: frozenset[str]  # inputs named statically (inputs.x, inputs["x"])
    problem: str | None  # why it can never be a bool, reported after the names

    def run(self, context: dict[str, Any]) -> Any:
        return self.runner.evaluate(context)


class _OverBudget(Exception):
    pass


class _Evaluator(Evaluator):
    """cel-python's interpreter with a node-visit budget shared with its macro sub-evaluators.
    It hooks lark's Interpreter._visit_tree and celpy's sub_evaluator (both pinned: cel-python
    0.5.0, lark via it); test_runaway_evaluation_stops_at_a_fixed_step_budget fails if they move.
    """

    def __init__(self, ast: lark.Tree, activation: Any, budget: list[int]) -> None:
        super().__init__(ast, activation)
        self._budget = budget

    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _Evaluator(ast, self.activation, self._budget)

    def _visit_tree(self, tree: lark.Tree) -> Any:
        self._budget[0] -= 1
        if self._budget[0] < 0:
            raise _OverBudget
        return super()._visit_tree(tree)


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(self.ast, self.new_activation(), [MAX_STEPS]).evaluate(context)


# Environment() raises the recursion limit to 2,500 (CEL's nesting minimums); never lower it.
_limit = sys.getrecursionlimit()
_ENV = celpy.Environment(runner_class=_Runner)
sys.setrecursionlimit(max(_limit, sys.getrecursionlimit()))
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _compile(expr: str) -> _Program:
    if not isinstance(expr, str) or not expr.strip():
        raise ExpressionError("is empty: write a condition such as analysis.risk == 'high'")
    if len(expr) > MAX_CHARS:
        raise ExpressionError(
            f"is {len(expr):,} characters long; a condition has at most {MAX_CHARS:,}"
        )
    try:
        with _LOCK:  # one shared lark parser, which keeps the text it parses
            ast = _ENV.compile(expr)
        refs = _References()
        refs.walk(ast, frozenset())
        runner = _ENV.program(ast, functions=_FUNCTIONS)
    except CELParseError as err:
        raise ExpressionError(_parse_message(expr, err)) from None
    except RecursionError:
        raise ExpressionError("nests too deeply to parse") from None
    return _Program(
        runner=runner,
        steps=frozenset(refs.steps),
        idents=frozenset(refs.idents),
        inputs=frozenset(refs.inputs),
        problem=_not_a_condition(ast),
    )


class _References:
    """Walks a parsed condition: collects the steps and inputs it reads, rejects names and
    calls it cannot mean (unknown functions, dynamic `steps[...]`, message construction)."""

    def __init__(self) -> None:
        self.steps: set[str] = set()
        self.idents: set[str] = set()
        self.inputs: set[str] = set()

    def fail(self, tree: lark.Tree, message: str) -> ExpressionError:
        column = getattr(tree.meta, "column", None)
        return ExpressionError(f"{message} (column {column})" if column else message)

    def walk(self, tree: lark.Tree, bound: frozenset[str]) -> None:
        kind = tree.data
        if kind == "ident":
            self.ident(tree, _token(tree, 0), bound)
        elif kind in ("member_dot", "member_index") and self.root_access(tree, bound):
            return
        elif kind == "member_dot_arg":
            self.method(tree, bound)
        elif kind == "ident_arg":
            self.function(tree, bound)
        elif kind in ("dot_ident", "dot_ident_arg"):
            raise self.fail(tree, f"a leading '.' (.{_token(tree, 0)}) is not supported")
        elif kind == "member_object":
            raise self.fail(tree, "message construction (Name{field: ...}) is not supported")
        else:
            for child in _subtrees(tree):
                self.walk(child, bound)

    def ident(self, tree: lark.Tree, name: str, bound: frozenset[str]) -> None:
        if name in bound or name in TYPE_NAMES:
            return
        if name == "steps":
            raise self.fail(tree, 'steps must be followed by a step name: steps["name"]')
        if name == "inputs":
            return  # the whole map, e.g. 'lang' in inputs: nothing to check statically
        if name in SHADOWED:
            raise self.fail(tree, f"a step named {name!r} is read as steps[{json.dumps(name)}]")
        self.steps.add(name)
        self.idents.add(name)

    def root_access(self, tree: lark.Tree, bound: frozenset[str]) -> bool:
        """steps.x, steps["x"], inputs.x, inputs["x"]; False when `tree` is none of these."""
        target = _unwrap(tree.children[0])
        if target.data != "ident":
            return False
        root = _token(target, 0)
        if root not in ROOTS or root in bound:
            return False
        if tree.data == "member_dot":
            name: str | None = str(tree.children[1])
        else:
            name = _string_literal(tree.children[1])
        if name is None:
            if root == "steps":
                raise self.fail(tree, 'steps[...] takes a quoted step name: steps["name"]')
            self.walk(tree.children[1], bound)  # inputs[expr]: read at run time
            return True
        (self.steps if root == "steps" else self.inputs).add(name)
        return True

    def method(self, tree: lark.Tree, bound: frozenset[str]) -> None:
        name = str(tree.children[1])
        args = list(_subtrees(tree.children[2])) if len(tree.children) > 2 else []
        if name not in METHODS:
            raise self.fail(
                tree,
                f"unknown method .{name}() (known: {', '.join(sorted(METHODS - TIME_GETTERS))} "
                "and the timestamp getters)",
            )
        self.walk(tree.children[0], bound)
        if name in MACROS:
            variable = _unwrap(args[0]) if len(args) == 2 else None
            if variable is None or variable.data != "ident":
                raise self.fail(
                    tree, f".{name}() takes a variable and an expression: .{name}(x, x > 0)"
                )
            bound = bound | {_token(variable, 0)}
            args = args[1:]
        for arg in args:
            self.walk(arg, bound)

    def function(self, tree: lark.Tree, bound: frozenset[str]) -> None:
        name = _token(tree, 0)
        args = list(_subtrees(tree.children[1])) if len(tree.children) > 1 else []
        if name not in FUNCTIONS:
            raise self.fail(
                tree, f"unknown function {name}() (known: {', '.join(sorted(FUNCTIONS))})"
            )
        if name == "has" and (len(args) != 1 or _unwrap(args[0]).data != "member_dot"):
            raise self.fail(tree, "has() takes a field selection: has(analysis.risk)")
        for arg in args:
            self.walk(arg, bound)


def _not_a_condition(ast: lark.Tree) -> str | None:
    """Why `ast` can never be true or false, for what a check can see before the run."""
    top = _unwrap(ast)
    if top.data == "literal" and getattr(top.children[0], "type", "") != "BOOL_LIT":
        return f"is a constant ({top.children[0]}), not a condition"
    computes = {"list_lit": "a list", "map_lit": "a map"}
    computes |= {"addition": "arithmetic", "multiplication": "arithmetic"}
    if top.data in computes:
        return f"computes {computes[top.data]}, not a condition (true or false)"
    return None


def _subtrees(tree: Any) -> Iterator[lark.Tree]:
    return (child for child in tree.children if isinstance(child, lark.Tree))


def _token(tree: lark.Tree, index: int) -> str:
    return str(tree.children[index])


def _unwrap(tree: Any) -> lark.Tree:
    """The first node with more than one child (or a leaf rule) under a chain of wrappers."""
    while (
        isinstance(tree, lark.Tree)
        and tree.data not in ("ident", "literal", "list_lit", "map_lit")
        and len(tree.children) == 1
        and isinstance(tree.children[0], lark.Tree)
    ):
        tree = tree.children[0]
    return tree


def _string_literal(tree: Any) -> str | None:
    node = _unwrap(tree)
    if node.data != "literal" or getattr(node.children[0], "type", "") != "STRING_LIT":
        return None
    value = celpy.InterpretedRunner(_ENV, node).evaluate({})  # decodes the escapes
    return str(value)


def _unknown_step(name: str, steps: Collection[str], quoted: bool) -> str:
    known = sorted(steps)
    listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    hint = ""
    if not quoted:
        dashed = [s for s in known if s.startswith(name + "-")]
        if dashed:
            hint = f"; a name with '-' is written steps[{json.dumps(dashed[0])}]"
    where = f"(it can read: {listed})" if known else "(it has no earlier steps)"
    return f"reads {name!r}, which is not a step before this one {where}{hint}"


# ------------------------------------------------------------------ values in, values out


def _output(name: str, outputs: Mapping[str, str | None]) -> Any:
    if name not in outputs:
        raise ExpressionError(f"no output given for step {name!r}, which the condition reads")
    text = outputs[name]
    if text is None:
        return None  # skipped
    if len(text) > MAX_OUTPUT_CHARS:
        raise ExpressionError(
            f"step {name!r}'s output is {len(text):,} characters; a condition reads outputs "
            f"of at most {MAX_OUTPUT_CHARS:,}"
        )
    try:
        value = json.loads(text)
    except ValueError:
        return celtypes.StringType(text)
    except RecursionError:
        raise ExpressionError(f"step {name!r}'s output nests too deeply to read") from None
    try:
        return _to_cel(value)
    except RecursionError:
        raise ExpressionError(f"step {name!r}'s output nests too deeply to read") from None


INT64 = range(-(2**63), 2**63)


def _to_cel(value: Any) -> Any:
    """A parsed JSON value as CEL values; integers past int64 become doubles."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value) if value in INT64 else celtypes.DoubleType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        return celtypes.ListType([_to_cel(v) for v in value])
    return celtypes.MapType({celtypes.StringType(k): _to_cel(v) for k, v in value.items()})


def _is_number(v: Any) -> bool:
    # cel-python's operators return plain int, float and str as often as its own types.
    return isinstance(v, int | float) and not isinstance(v, bool | celtypes.BoolType)


def _number(v: Any) -> int | float:
    return float(v) if isinstance(v, float) else int(v)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool | celtypes.BoolType):
        return "a bool"
    if _is_number(v):
        return "a number"
    for cls, name in (
        (str, "a string"),
        (bytes, "bytes"),
        (list, "a list"),
        (dict, "a map"),
        (datetime.datetime, "a timestamp"),
        (datetime.timedelta, "a duration"),
        (type, "a type"),
    ):
        if isinstance(v, cls):
            return name
    return type(v).__name__


def _plain(v: Any) -> Any:
    """A CEL value as plain Python, for messages."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    for cls in (bool, str, bytes, float, int):
        if isinstance(v, cls):
            return cls(v)
    return v


def _equal(a: Any, b: Any) -> bool:
    """CEL's heterogeneous equality: numbers by value, different kinds unequal, deep."""
    if a is None or b is None:
        return a is None and b is None
    if _is_number(a) and _is_number(b):
        return _number(a) == _number(b)
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "a list":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "a map":
        if len(a) != len(b):
            return False
        for key, value in a.items():
            match = next((k for k in b if _equal(key, k)), _MISSING)
            if match is _MISSING or not _equal(value, b[match]):
                return False
        return True
    return bool(a == b)


_MISSING = object()


def _errors_first(f: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(f)
    def wrapper(a: Any, b: Any) -> Any:
        if isinstance(a, CELEvalError):
            return a
        if isinstance(b, CELEvalError):
            return b
        return f(a, b)

    return wrapper


@_errors_first
def _eq(a: Any, b: Any) -> Any:
    return celtypes.BoolType(_equal(a, b))


@_errors_first
def _ne(a: Any, b: Any) -> Any:
    return celtypes.BoolType(not _equal(a, b))


@_errors_first
def _in(item: Any, container: Any) -> Any:
    if isinstance(container, celtypes.MapType):
        if isinstance(item, str) and item in container:
            return celtypes.BoolType(True)
        return celtypes.BoolType(any(_equal(item, key) for key in container))
    if isinstance(container, celtypes.ListType):
        return celtypes.BoolType(any(_equal(item, x) for x in container))
    return base_functions["_in_"](item, container)


def _ordering(name: str) -> Callable[[Any, Any], Any]:
    base = base_functions[name]
    compare = {"_<_": operator.lt, "_<=_": operator.le, "_>_": operator.gt, "_>=_": operator.ge}[
        name
    ]

    @_errors_first
    def order(a: Any, b: Any) -> Any:
        if _is_number(a) and _is_number(b) and type(a) is not type(b):
            return celtypes.BoolType(compare(_number(a), _number(b)))
        return base(a, b)

    return order


RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
FIXED_OFFSET = re.compile(r"UTC|[+-]\d{2}:\d{2}", re.ASCII)


def _timestamp(value: Any) -> Any:
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError(
            f"timestamp() takes an RFC 3339 time such as 2025-01-31T12:00:00Z, not {str(value)!r}"
        )
    return celtypes.TimestampType(value)


def _fixed_offset_only(name: str) -> Callable[..., Any]:
    getter = base_functions[name]

    def get(value: Any, tz: Any = None) -> Any:
        if tz is not None and not (isinstance(tz, str) and FIXED_OFFSET.fullmatch(tz)):
            raise ValueError(
                f"{name}() takes a fixed offset such as '+05:30' or 'UTC', not {str(tz)!r}: "
                "zone rules differ between machines"
            )
        return getter(value) if tz is None else getter(value, tz)

    return get


_FUNCTIONS: dict[str, Any] = {"_==_": _eq, "_!=_": _ne, "_in_": _in, "timestamp": _timestamp}
_FUNCTIONS |= {op: _ordering(op) for op in ("_<_", "_<=_", "_>_", "_>=_")}
_FUNCTIONS |= {name: _fixed_offset_only(name) for name in TIME_GETTERS}


# ------------------------------------------------------------------ messages


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_message(expr: str, err: CELParseError) -> str:
    cause = err.__cause__ or err.__context__  # cel-python raises it inside lark's except
    where = f"line {err.line}, column {err.column}" if "\n" in expr else f"column {err.column}"
    token = getattr(cause, "token", None)
    if token is not None and token.type == "$END":
        return "does not parse: it ends where more was expected (a missing operand or ')'?)"
    if token is not None:
        return f"does not parse: unexpected {str(token)!r} at {where}"
    char = getattr(cause, "char", None)
    if char is not None:
        hint = " (CEL compares with '==')" if char == "=" else ""
        return f"does not parse: unexpected character {char!r} at {where}{hint}"
    return f"does not parse at {where}"


_CLASS = re.compile(r"<class '(?:celpy\.celtypes\.)?(\w+)'>")
_VAGUE = {"return error for overflow", "no such overload", "invalid_argument", "match error"}
_OPS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}
_OVERLOAD = re.compile(
    r"found no matching overload for (?:Token\('RULE', '(\w+)'\)|(\S+)) applied to '\((.*?)\)'"
)
_WRAPPED = re.compile(r"\b(?:String|Int|Uint|Double|Bool|Bytes)Type\(([^()]*)\)")


def _eval_message(expr: str, err: CELEvalError) -> str:
    args = err.args
    message = str(args[0]) if args else "failed"
    detail = args[2] if len(args) > 2 else None
    if message in _VAGUE and detail:
        first = detail[0] if isinstance(detail, tuple) else detail
        text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        message = f"invalid regular expression: {text}" if message == "match error" else text
    message = message.split(" (in activation", 1)[0]
    message = re.sub(
        r"no such member in mapping: ('.*')", r"no field \1 (has(x.field) tests for one)", message
    )
    message = message.replace("undeclared reference to", "unknown name")
    message = _CLASS.sub(lambda m: _type_name(m.group(1)), message)
    message = _OVERLOAD.sub(_overload, message)
    message = _WRAPPED.sub(r"\1", message)
    if message.startswith("None with type") or "NoneType" in message:
        message = "reads a field of null (a skipped step is null: test x != null first)"
    tree = getattr(err, "tree", None)
    meta = getattr(tree, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        part = _one_line(expr[meta.start_pos : meta.end_pos], 60)
        return f"failed at {part!r} (column {meta.column}): {_one_line(message)}"
    if getattr(err, "column", None):
        return f"failed at column {err.column}: {_one_line(message)}"
    return f"failed: {_one_line(message)}"


def _overload(m: re.Match[str]) -> str:
    op = _OPS.get(m[1], m[1]) if m[1] else {"_[_]": "[]", "_?_:_": "?:"}.get(m[2], m[2])
    types = m[3].split(", ")
    listed = " and ".join(types) if len(types) == 2 else ", ".join(types)
    hint = " (a skipped step is null)" if "null" in types else ""
    return f"cannot apply {op!r} to {listed}{hint}"


def _type_name(cls: str) -> str:
    plain = {"NoneType": "null", "str": "string", "float": "double", "dict": "map"}
    return plain.get(cls, cls.removesuffix("Type").lower())
