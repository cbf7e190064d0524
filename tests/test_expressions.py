"""`when:` conditions: parsed and checked before a run, evaluated by CEL (never Python eval)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import pytest

    from raftline import expressions
    from raftline.expressions import ExpressionError, check, evaluate

if TYPE_CHECKING:
    from raftline.client import RaftlineClient

ANALYSIS = json.dumps(
    {
        "risk": "high",
        "score": 7,
        "ratio": 0.75,
        "tags": ["pii", "finance"],
        "owner": {"team": "risk", "oncall": None},
        "flags": {"urgent": True},
    }
)
OUTPUTS: dict[str, str | None] = {
    "analysis": ANALYSIS,
    "draft": "Dear customer, thank you.",
    "count": "42",
    "skipped": None,
    "my-step": json.dumps({"ok": True}),
}
STEPS = list(OUTPUTS)
INPUTS = {"lang": "en", "tier": "gold"}


def value(expr: str) -> bool:
    """Check (as the spec loader does) and evaluate (as the run does)."""
    reads = check(expr, STEPS, INPUTS)
    return evaluate(expr, {name: OUTPUTS[name] for name in reads}, INPUTS)


def failure(expr: str, outputs: dict[str, str | None] | None = None) -> str:
    with pytest.raises(ExpressionError) as err:
        check(expr, STEPS, INPUTS)
        evaluate(expr, OUTPUTS if outputs is None else outputs, INPUTS)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# ------------------------------------------------------------------ check: before the run


def test_check_returns_the_steps_read_however_named() -> None:
    expr = 'analysis.risk == "high" && steps["my-step"].ok && steps.draft != "" && count > 1'
    assert check(expr, STEPS, INPUTS) == {"analysis", "my-step", "draft", "count"}
    assert check("inputs.lang == 'en' && inputs['tier'] == 'gold'", STEPS, INPUTS) == set()
    # A macro's variable is not a step, even when a step has its name.
    assert check("analysis.tags.exists(draft, draft == 'pii')", STEPS) == {"analysis"}


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        (
            "analysis.risk = 'high'",
            "unexpected character '=' at column 15 (CEL compares with '==')",
        ),
        ("analysis.risk ==", "does not parse: it ends where more was expected"),
        ("(analysis.score > 1", "does not parse: it ends where more was expected"),
        ("analysis..risk", "does not parse: unexpected '.' at column 10"),
        ("analysis.risk == 'high", "does not parse: unexpected character"),
        ("a &&\n&& b", "does not parse: unexpected '&&' at line 2, column 1"),
        ("", "is empty"),
        ("   ", "is empty"),
    ],
)
def test_what_does_not_parse_is_refused_with_where(expr: str, says: str) -> None:
    assert says in failure(expr)


def test_a_step_that_is_not_an_ancestor_is_refused() -> None:
    message = failure("review.approved == true")
    assert message.startswith("reads 'review', which is not a step before this one")
    assert "(it can read: analysis, count, draft, my-step, skipped)" in message
    assert "not a step" in failure('steps["later"].x == 1')
    assert "it has no earlier steps" in str(_raises(lambda: check("analysis.x", [])))


def test_a_dashed_name_written_bare_gets_a_hint() -> None:
    message = failure("my-step.ok")
    assert "reads 'my'" in message and 'written steps["my-step"]' in message


def test_an_unknown_input_is_refused_only_when_inputs_are_given() -> None:
    assert (
        failure("inputs.region == 'eu'") == "inputs.region is not a task input (known: lang, tier)"
    )
    assert "known: the task has none" in str(_raises(lambda: check("inputs.x == ''", [], [])))
    assert check("inputs.region == 'eu'", STEPS) == set()  # inputs unknown yet: not checked


def test_names_cel_reads_otherwise_need_the_quoted_form() -> None:
    outputs = {"google": '{"x": 1}', "int": "3", "for": '{"x": 2}'}
    steps = list(outputs)
    assert 'read as steps["google"]' in str(_raises(lambda: check("google.x == 1", steps)))
    assert check('steps["google"].x == 1 && steps.int == 3 && for.x == 2', steps) == set(outputs)
    assert evaluate('steps["google"].x == 1 && steps.int == 3 && for.x == 2', outputs, {})
    # `int` alone is the type, not the step.
    assert check("type(3) == int", steps) == set()


def test_steps_must_be_named_statically() -> None:
    assert "steps[...] takes a quoted step name" in failure("steps[inputs.lang].ok")
    assert "steps must be followed by a step name" in failure("size(steps) > 0")
    # inputs may be read as a whole map: nothing to check before the run.
    assert check("'lang' in inputs && inputs[inputs.lang] == ''", STEPS, INPUTS) == set()


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("'high'", "is a constant ('high'), not a condition"),
        ("1 + 2", "computes arithmetic, not a condition"),
        ("[analysis.risk]", "computes a list, not a condition"),
        ("unknownfn(analysis)", "unknown function unknownfn()"),
        ("analysis.risk.upper() == 'HIGH'", "unknown method .upper()"),
        ("analysis.tags.exists(1, true)", ".exists() takes a variable and an expression"),
        ("has(analysis)", "has() takes a field selection"),
        (".analysis.risk == 'high'", "a leading '.' (.analysis) is not supported"),
        ("Msg{a: 1} == analysis", "message construction (Name{field: ...}) is not supported"),
    ],
)
def test_what_cannot_be_a_condition_is_refused_before_the_run(expr: str, says: str) -> None:
    assert says in str(_raises(lambda: check(expr, STEPS, INPUTS)))


def test_the_length_is_capped_and_the_error_says_so() -> None:
    expr = " || ".join(["analysis.score > 1"] * 120)
    assert len(expr) > expressions.MAX_CHARS
    assert failure(expr) == f"is {len(expr):,} characters long; a condition has at most 2,000"


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os')",
        "__import__('os').system('touch /tmp/raftline-pwned')",
        "open('/etc/passwd').read() == ''",
        "exec('1')",
        "eval('1 + 1') == 2",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        "import os",
        "globals()['x']",
    ],
)
def test_python_payloads_are_just_errors(payload: str) -> None:
    with pytest.raises(ExpressionError):
        check(payload, STEPS, INPUTS)  # most never get past the check
        evaluate(payload, OUTPUTS, INPUTS)
    assert not Path("/tmp/raftline-pwned").exists()


def test_dunder_fields_are_map_keys_not_python_attributes() -> None:
    assert check("analysis.__class__ == 1", STEPS) == {"analysis"}
    assert "no field '__class__'" in failure("analysis.__class__ == 1")
    assert evaluate("x.__class__ == 'ok'", {"x": '{"__class__": "ok"}'}, {})


# ------------------------------------------------------------------ evaluate: during the run


@pytest.mark.parametrize(
    "expr",
    [
        "analysis.risk == 'high'",
        "analysis.risk != 'low' && analysis.score >= 7 && analysis.score < 8",
        "analysis.score > 5.5 && analysis.ratio < 1 && analysis.ratio == 0.75",
        "analysis.score == 7.0 && 7u == analysis.score",
        "!(analysis.risk == 'low') || false",
        "analysis.risk == 'low' ? false : true",
        "'pii' in analysis.tags && !('gdpr' in analysis.tags) && 7 in [1.0, 7.0]",
        "'risk' in analysis && 'urgent' in analysis.flags",
        "analysis.owner.team == 'risk' && analysis.flags.urgent",
        "analysis.tags[0] == 'pii' && analysis['owner']['team'] == 'risk'",
        "size(analysis.tags) == 2 && analysis.tags.size() == 2 && size(draft) == 25",
        "draft.startsWith('Dear') && draft.endsWith('.') && draft.contains('thank')",
        "draft.matches('^Dear [a-z]+,') && matches(draft, 'thank')",
        "analysis.tags.exists(t, t.startsWith('fin')) && analysis.tags.all(t, size(t) > 2)",
        "analysis.tags.exists_one(t, t == 'pii')",
        "analysis.tags.filter(t, t != 'pii') == ['finance']",
        "analysis.tags.map(t, t + '!') == ['pii!', 'finance!']",
        "has(analysis.owner) && !has(analysis.missing) && has(analysis.owner.team)",
        "analysis.owner.oncall == null && skipped == null && analysis != null",
        "inputs.lang == 'en' && inputs['tier'] == 'gold' && 'lang' in inputs",
        'steps["my-step"].ok == true && steps.analysis.risk == "high"',
        "count == 42 && count > 40.5",
        "type(analysis.score) == int && type(draft) == string && type(skipped) == null_type",
        "int('12') == 12 && string(analysis.score) == '7' && double(analysis.score) == 7.0",
        "timestamp('2025-01-31T12:00:00Z') < timestamp('2025-02-01T00:00:00+01:00')",
        "duration('90m') > duration('1h')",
        "timestamp('2025-01-31T23:00:00Z').getHours('+02:00') == 1",
        "{'a': [1, 2]} == {'a': [1.0, 2.0]} && analysis.score != 'seven'",
        "analysis.missing == 1 || true",  # CEL: a true side decides, even beside an error
        "// why: only risky ones\nanalysis.risk\n  == 'high'",
    ],
)
def test_supported_forms_evaluate_true(expr: str) -> None:
    assert value(expr) is True


@pytest.mark.parametrize(
    "expr",
    [
        "analysis.risk == 'low'",
        "analysis.score > 7.5",
        "'gdpr' in analysis.tags",
        "skipped != null && skipped.x == 1",
        "analysis.score == '7'",  # different kinds are unequal, as in CEL
        "has(skipped.x)",
    ],
)
def test_supported_forms_evaluate_false(expr: str) -> None:
    assert value(expr) is False


def test_json_outputs_are_values_and_other_text_is_a_string() -> None:
    outputs = {
        "a": '{"n": 1}',
        "b": "not { json",
        "c": "true",
        "d": " 3.5\n",
        "e": '"quoted"',
        "f": "[1, 2]",
        "g": "```json\n{}\n```",
    }
    assert evaluate("a.n == 1 && b.startsWith('not')", outputs, {})
    assert evaluate("c && d > 3 && e == 'quoted' && size(f) == 2", outputs, {})
    assert evaluate("g.contains('json')", outputs, {})  # a fenced block is text
    assert evaluate("a == {'n': 1} && type(b) == string", outputs, {})
    # Integers past int64 become doubles rather than failing.
    assert evaluate("big.n > 1e20", {"big": '{"n": 123456789012345678901234567890}'}, {})


def test_a_skipped_step_is_null() -> None:
    outputs: dict[str, str | None] = {"review": None}
    assert evaluate("review == null", outputs, {})
    assert not evaluate("review != null && review.approved", outputs, {})
    assert evaluate("!has(review.approved)", outputs, {})
    message = str(_raises(lambda: evaluate("review.approved", outputs, {})))
    assert message == (
        "failed at 'review.approved' (column 1): reads a field of null "
        "(a skipped step is null: test x != null first)"
    )
    assert "(a skipped step is null)" in str(
        _raises(lambda: evaluate("review['approved']", outputs, {}))
    )


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("analysis.risk", "is a string ('high'), not a bool"),
        ("analysis.score", "is a number (7), not a bool"),
        ("analysis.tags", "is a list (['pii', 'finance']), not a bool"),
        ("skipped", "is null, not a bool (a skipped step is null)"),
        ("draft", "is a string ('Dear customer, thank you.'), not a bool"),
    ],
)
def test_a_value_that_is_not_a_bool_is_an_error(expr: str, says: str) -> None:
    assert says in failure(expr)


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("analysis.missing == 1", "failed at 'analysis.missing' (column 1): no field 'missing'"),
        ("analysis.owner.nope", "no field 'nope' (has(x.field) tests for one)"),
        ("analysis.tags[5] == 'x'", "failed at 'analysis.tags[5]' (column 1)"),
        ("analysis.score < 'x'", "cannot apply '<' to int and string"),
        ("analysis.risk + 1 == 2", "cannot apply '+' to string and int"),
        ("analysis.score / 0 > 1", "divide by zero"),
        ("int(draft) > 1", "invalid literal for int() with base 10: 'Dear customer, thank you.'"),
        ("draft.x == 1", "does not support field selection"),
        ("draft.matches('(')", "invalid regular expression: missing ): ("),
        ("9223372036854775807 + 1 > 0", "overflow"),
    ],
)
def test_evaluation_failures_are_one_line_errors(expr: str, says: str) -> None:
    assert says in failure(expr)


def test_an_output_the_condition_reads_must_be_given() -> None:
    message = str(_raises(lambda: evaluate("analysis.risk == 'x'", {}, {})))
    assert message == "no output given for step 'analysis', which the condition reads"
    # Outputs it does not read are not bound, parsed or size-checked.
    huge = "x" * (expressions.MAX_OUTPUT_CHARS + 1)
    assert evaluate("a.ok", {"a": '{"ok": true}', "other": huge}, {})


# ------------------------------------------------------------------ determinism and guards


def test_clock_and_time_zone_reads_are_refused() -> None:
    # cel-python's timestamp() would read the clock for these; zone names read the tz database.
    for expr in ("timestamp('now') > timestamp('2020-01-01T00:00:00Z')", "timestamp('10:00') == 1"):
        assert "timestamp() takes an RFC 3339 time" in failure(expr)
    zone = "timestamp('2025-01-01T00:00:00Z').getHours('Europe/Paris') == 1"
    assert "getHours() takes a fixed offset such as '+05:30' or 'UTC'" in failure(zone)


def test_same_inputs_same_result_and_programs_are_cached() -> None:
    expressions.clear_cache()
    expr = "analysis.tags.exists(t, t == 'pii') && analysis.score > 5"
    results = {evaluate(expr, OUTPUTS, INPUTS) for _ in range(20)}
    assert results == {True}
    info = expressions._compile.cache_info()
    assert info.misses == 1 and info.hits == 19


def test_huge_outputs_are_refused_with_the_cap() -> None:
    huge = json.dumps({"text": "x" * expressions.MAX_OUTPUT_CHARS})
    message = str(_raises(lambda: evaluate("a.text == ''", {"a": huge}, {})))
    assert message.startswith(f"step 'a''s output is {len(huge):,} characters")
    assert message.endswith(f"at most {expressions.MAX_OUTPUT_CHARS:,}")


def test_deeply_nested_outputs_and_expressions_are_errors_not_crashes() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert "nests too deeply" in str(_raises(lambda: evaluate("a == []", {"a": deep}, {})))
    parens = "(" * 150 + "true" + ")" * 150
    assert "nests too deeply" in str(_raises(lambda: evaluate(parens, {}, {})))
    lists = "[" * 600 + "]" * 600 + " == []"
    assert "nests too deeply" in str(_raises(lambda: check(lists, [])))


def test_runaway_evaluation_stops_at_a_fixed_step_budget() -> None:
    ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    expr = f"{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, a + b + c + d >= 0))))"
    message = str(_raises(lambda: evaluate(expr, {}, {})))
    assert message.startswith(f"stopped after {expressions.MAX_STEPS:,} evaluation steps")
    # The budget counts nodes, not time: the same input stops the same way every time.
    assert str(_raises(lambda: evaluate(expr, {}, {}))) == message


def test_import_does_not_lower_the_recursion_limit() -> None:
    assert sys.getrecursionlimit() >= 2500


# ------------------------------------------------------------------ inside a workflow


@workflow.defn(sandboxed=True)
class WhenProbe:
    """Evaluates conditions in workflow code, under the worker's sandbox."""

    @workflow.run
    async def run(self, cases: list[list[Any]]) -> list[str]:
        results = []
        for expr, outputs, inputs in cases:
            try:
                results.append(str(evaluate(expr, outputs, inputs)))
            except ExpressionError as err:
                results.append(f"error: {err}")
        return results


async def test_conditions_evaluate_in_the_workflow_sandbox(client: RaftlineClient) -> None:
    from raftline.worker import WORKFLOW_RUNNER  # the worker's sandbox settings, as deployed

    queue = f"q-{uuid.uuid4().hex[:10]}"
    cases = [
        ["analysis.risk == 'high' && analysis.tags.exists(t, t == 'pii')", OUTPUTS, INPUTS],
        ["draft.matches('^Dear') && inputs.lang == 'en'", OUTPUTS, INPUTS],
        ["timestamp('2025-01-31T12:00:00Z').getFullYear() == 2025", {}, {}],
        ["skipped == null", OUTPUTS, INPUTS],
        ["analysis.missing", OUTPUTS, INPUTS],
    ]
    async with Worker(
        client.client, task_queue=queue, workflows=[WhenProbe], workflow_runner=WORKFLOW_RUNNER
    ):
        results = await client.client.execute_workflow(
            WhenProbe.run, cases, id=f"when-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert results[:4] == ["True", "True", "True", "True"]
    assert results[4].startswith("error: failed at 'analysis.missing'")


def _raises(f: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as err:
        f()
    return err.value
