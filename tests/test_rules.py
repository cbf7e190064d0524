"""L1 rules verifier: one failing and one passing case per check, plus the order."""

from __future__ import annotations

from typing import Any

import pytest

from raftline.models import ErrorClass, Verdict, VerifyInput
from raftline.verifiers.rules import RULE_NAMES, check_rules, json_equal, strip_fence
from raftline.verifiers.taxonomy import HINTS

LONG_OK = (
    "Third-quarter sales grew in every region, led by strong demand in the north, "
    "and returns stayed low throughout the quarter."
)


def verify(
    text: str,
    *,
    fmt: str = "text",
    checks: dict[str, Any] | None = None,
    committed: dict[str, str] | None = None,
    inputs: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    goal: str = "Summarise the sales report",
    task_goal: str = "Analyse quarterly sales",
) -> Verdict:
    return check_rules(
        VerifyInput(
            workflow_id="wf-1",
            step={
                "name": "summary",
                "goal": goal,
                "format": fmt,
                "checks": checks or {},
                "params": params or {},
            },
            task={"goal": task_goal, "inputs": inputs or {}},
            output=text,
            committed=committed or {},
        )
    )


def failed(v: Verdict, error_class: ErrorClass, check: str) -> bool:
    """A failed L1 verdict of the given class whose last check run is the failing one."""
    return (
        not v.passed
        and v.error_class is error_class
        and v.checks_run[-1] == check
        and v.tier == "L1"
        and v.verifier == "rules"
        and bool(v.reason)
        and bool(v.hint)
    )


# ---------------------------------------------------------------- pass verdict and order


def test_rule_names_are_in_the_documented_order() -> None:
    assert RULE_NAMES == (
        "empty",
        "error_signatures",
        "refusal",
        "format",
        "truncation",
        "min_length",
        "required",
        "secrets",
        "forbidden",
        "consistent_keys",
        "grounded_numbers",
        "topic",
        "out_of_scope",
        "max_length",
    )


def test_default_checks_pass_a_good_output() -> None:
    v = verify(LONG_OK)
    assert v.passed
    assert v.error_class is None and v.hint is None
    assert v.checks_run == ["empty", "error_signatures", "refusal", "truncation", "secrets"]
    assert v.reason == "all 5 rules passed"
    assert (v.tier, v.verifier) == ("L1", "rules")


def test_every_check_runs_in_order_when_all_are_configured() -> None:
    out = '{"total": 4200, "region": "north", "note": "sales report"}'
    v = verify(
        out,
        fmt="json",
        checks={
            "json_schema": {"type": "object", "required": ["total"]},
            "min_length": 10,
            "max_length": 500,
            "required": ["total"],
            "forbidden": [r"\bssn\b"],
            "consistent_keys": ["total"],
            "grounded_numbers": True,
            "topic": ["sales"],
            "out_of_scope": [r"\bemail(ed)?\b"],
        },
        committed={"extract": '{"total": 4200}'},
    )
    assert v.passed, v.reason
    assert v.checks_run == list(RULE_NAMES)
    assert v.reason == f"all {len(RULE_NAMES)} rules passed"


def test_empty_beats_everything() -> None:
    v = verify(
        "   ",
        fmt="json",
        checks={
            "json_schema": {"type": "object"},
            "min_length": 50,
            "required": ["total"],
            "topic": ["sales"],
            "grounded_numbers": True,
        },
    )
    assert failed(v, ErrorClass.INCOMPLETE, "empty")
    assert v.checks_run == ["empty"]


@pytest.mark.parametrize(
    ("text", "fmt", "checks", "error_class", "check"),
    [
        # an error message that is also a refusal: the error wins
        (
            "Traceback (most recent call last): I'm sorry, but I can't.",
            "text",
            {},
            ErrorClass.INCOMPLETE,
            "error_signatures",
        ),
        # a refusal in a JSON step: refusal comes before format
        ("I'm sorry, but I can't produce that JSON.", "json", {}, ErrorClass.INCOMPLETE, "refusal"),
        # invalid JSON that is also cut off with "...": format comes first
        ('{"a": "b"...', "json", {}, ErrorClass.FORMAT, "format"),
        # too short and missing a phrase: min_length first
        (
            "Done.",
            "text",
            {"min_length": 20, "required": ["total"]},
            ErrorClass.INCOMPLETE,
            "min_length",
        ),
        # a missing phrase (INCOMPLETE) before a leaked key (UNSAFE)
        (
            "Key AKIAIOSFODNN7EXAMPLE.",
            "text",
            {"required": ["summary"]},
            ErrorClass.INCOMPLETE,
            "required",
        ),
        # a secret before a forbidden pattern
        (
            "Key AKIAIOSFODNN7EXAMPLE for ACME.",
            "text",
            {"forbidden": ["acme"]},
            ErrorClass.UNSAFE,
            "secrets",
        ),
        # an unsupported number (HALLUCINATION) before drift (GOAL_DRIFT)
        (
            "About 99 birds flew by.",
            "text",
            {"grounded_numbers": True, "topic": ["sales"]},
            ErrorClass.HALLUCINATION,
            "grounded_numbers",
        ),
        # drift before scope creep
        (
            "I emailed the team about the weather.",
            "text",
            {"topic": ["sales"], "out_of_scope": ["emailed"]},
            ErrorClass.GOAL_DRIFT,
            "topic",
        ),
        # an out-of-scope pattern before max_length
        (
            "Sales rose. I also emailed the team.",
            "text",
            {"out_of_scope": ["emailed"], "max_length": 5},
            ErrorClass.SCOPE_CREEP,
            "out_of_scope",
        ),
    ],
)
def test_first_failing_check_wins(
    text: str, fmt: str, checks: dict[str, Any], error_class: ErrorClass, check: str
) -> None:
    v = verify(text, fmt=fmt, checks=checks)
    assert failed(v, error_class, check), v


# ---------------------------------------------------------------- 1. empty


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_output_is_incomplete_with_the_class_hint(text: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "empty")
    assert "empty" in v.reason or "whitespace" in v.reason
    assert v.hint == HINTS[ErrorClass.INCOMPLETE]


def test_non_empty_output_passes_empty() -> None:
    v = verify("Paris")
    assert v.passed and "empty" in v.checks_run


# ---------------------------------------------------------------- 2. error signatures


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        (
            'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: "a"',
            "Traceback (most recent call last)",
        ),
        ("<html><title>500 Internal Server Error</title></html>", "Internal Server Error"),
        ("Error code: 429 - {'error': {'message': 'slow down'}}", "Error code: 429"),
        ("openai.RateLimitError: you hit it", "openai.RateLimitError:"),
        ("Exception: boom", "Exception:"),
        ("Request failed: rate limit exceeded, retry in 20s.", "rate limit exceeded"),
        ("HTTP/1.1 503 Service Unavailable", "HTTP/1.1 503"),
    ],
)
def test_error_message_output_is_incomplete(text: str, quoted: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "error_signatures")
    assert "error message" in v.reason
    assert quoted in v.reason


def test_json_error_body_is_an_error_message() -> None:
    v = verify('{"error": {"message": "overloaded", "type": "server_error"}}', fmt="json")
    assert failed(v, ErrorClass.INCOMPLETE, "error_signatures")
    assert "error fields" in v.reason


@pytest.mark.parametrize(
    "text",
    [
        "Error handling matters: retry with backoff, then alert the on-call engineer.",
        '{"error_rate": 0.02, "status": "ok"}',
        LONG_OK + "\n" + "More detail follows. " * 20 + "A 500 Internal Server Error was fixed.",
    ],
)
def test_text_about_errors_is_not_an_error_message(text: str) -> None:
    v = verify(text)
    assert v.passed, v.reason
    assert "error_signatures" in v.checks_run


def test_error_signatures_can_be_turned_off() -> None:
    v = verify("Internal Server Error.", checks={"error_signatures": False})
    assert v.passed
    assert "error_signatures" not in v.checks_run


# ---------------------------------------------------------------- 3. refusal


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("I'm sorry, but I can't help with that.", "I'm sorry, but I can't"),
        ("I\u2019m sorry, but I can\u2019t do that.", "I'm sorry, but I can't"),
        ("As an AI language model, I do not have opinions.", "As an AI language model"),
        ("i cannot help with this request.", "i cannot help"),
        ("I am unable to access the attached file.", "I am unable to"),
        ("Sure. I must decline this one.", "I must decline"),
    ],
)
def test_refusal_is_incomplete(text: str, quoted: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "refusal")
    assert "refusal" in v.reason and quoted in v.reason


def test_non_refusal_passes_and_refusal_can_be_turned_off() -> None:
    assert verify("We cannot ship on Sundays, so orders wait until Monday.").passed
    v = verify("I'm sorry, but I can't.", checks={"refusal": False})
    assert v.passed and "refusal" not in v.checks_run


# ---------------------------------------------------------------- 4. format


def test_invalid_json_is_format_and_quotes_the_start() -> None:
    v = verify("Sure! Here is what you asked for: {}", fmt="json")
    assert failed(v, ErrorClass.FORMAT, "format")
    assert "not valid JSON" in v.reason and "'Sure! Here is" in v.reason


def test_cut_off_json_is_format_and_says_so() -> None:
    v = verify('{"items": [1, 2', fmt="json")
    assert failed(v, ErrorClass.FORMAT, "format")
    assert "cut off" in v.reason and "complete JSON" in (v.hint or "")


@pytest.mark.parametrize(
    "text", ['{"a": 1}', '```json\n{"a": 1}\n```', "```\n[1, 2]\n```", '  "just a string"  ']
)
def test_valid_json_passes_with_one_fence_stripped(text: str) -> None:
    v = verify(text, fmt="json")
    assert v.passed, v.reason
    assert "format" in v.checks_run


def test_text_step_without_schema_does_not_check_json() -> None:
    v = verify("Not JSON at all.")
    assert v.passed and "format" not in v.checks_run


def test_schema_on_a_text_step_still_validates() -> None:
    v = verify("plain words", checks={"json_schema": {"type": "object"}})
    assert failed(v, ErrorClass.FORMAT, "format")


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 3, "maxLength": 8},
        "status": {"enum": ["open", "closed"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer"},
        "note": {"type": ["string", "null"]},
        "first name": {"type": "string"},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            },
        },
    },
}


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ('{"items": [{"sku": "a"}]}', "$.id", "required key is missing"),
        ('{"id": "ab", "items": [{"sku": "a"}]}', "$.id", "fewer than minLength 3"),
        ('{"id": "abcdefghij", "items": [{"sku": "a"}]}', "$.id", "more than maxLength 8"),
        ('{"id": "abc", "items": []}', "$.items", "fewer than minItems 1"),
        ('{"id": "abc", "items": [{"sku": "a"}, {"qty": 1}]}', "$.items[1].sku", "missing"),
        ('{"id": "abc", "items": [{"sku": "a", "qty": "2"}]}', "$.items[0].qty", "got string"),
        ('{"id": "abc", "items": [{"sku": "a"}], "status": "done"}', "$.status", "not one of"),
        ('{"id": "abc", "items": [{"sku": "a"}], "score": 1.5}', "$.score", "maximum 1"),
        ('{"id": "abc", "items": [{"sku": "a"}], "score": -1}', "$.score", "minimum 0"),
        ('{"id": "abc", "items": [{"sku": "a"}], "count": true}', "$.count", "got boolean"),
        ('{"id": "abc", "items": [{"sku": "a"}], "note": 3}', "$.note", "string or null"),
        ('{"id": "abc", "items": [{"sku": "a"}], "first name": 1}', '$["first name"]', "string"),
        ('{"id": "abc", "items": [{"sku": "a"}], "extra": 1}', "$.extra", "not allowed"),
        ('["not", "an", "object"]', "$", "expected object, got array"),
    ],
)
def test_schema_errors_name_the_json_path(doc: str, path: str, message: str) -> None:
    v = verify(doc, fmt="json", checks={"json_schema": SCHEMA})
    assert failed(v, ErrorClass.FORMAT, "format")
    assert f"at {path}:" in v.reason, v.reason
    assert message in v.reason
    assert path in (v.hint or "")


def test_schema_accepts_a_matching_document() -> None:
    doc = (
        '{"id": "abc", "status": "open", "score": 0.5, "count": 2.0, "note": null,'
        ' "first name": "Ada", "items": [{"sku": "a", "qty": 1}]}'
    )
    v = verify(doc, fmt="json", checks={"json_schema": SCHEMA})
    assert v.passed, v.reason


# ---------------------------------------------------------------- 5. truncation


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("The report shows growth in the north and...", "ellipsis"),
        ("The report shows growth\u2026", "ellipsis"),
        ("Here is the code:\n```python\nprint('hi')\n", "unclosed code fence"),
        ('{"summary": "growth", "regions": ["north"', "unclosed bracket"),
        ('{"summary": "growth in the no', "unterminated string"),
        (
            "The report shows that sales grew in every region and that the north led the "
            "growth because of",
            "mid-sentence",
        ),
    ],
)
def test_truncated_text_is_incomplete(text: str, phrase: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "truncation")
    assert phrase in v.reason
    assert v.hint == HINTS[ErrorClass.INCOMPLETE]


def test_mid_sentence_reason_quotes_the_ending() -> None:
    v = verify(LONG_OK[:-1] + " and then it stopped without")
    assert failed(v, ErrorClass.INCOMPLETE, "truncation")
    assert "then it stopped without'" in v.reason


@pytest.mark.parametrize(
    "text",
    [
        LONG_OK,
        "Paris",  # short answers need no punctuation
        LONG_OK + "\n\n- north: up\n- south: flat",  # ends with a list item
        LONG_OK + "\n\n## Next section",  # ends with a heading
        LONG_OK + "\n\n```python\nprint('hi')\n```",  # a closed fence
        '{"quote": "she said \\"hi\\" and left", "n": [1, {"a": 2}]}',  # escaped quotes
        LONG_OK + " (see appendix)",
    ],
)
def test_complete_text_passes_truncation(text: str) -> None:
    v = verify(text)
    assert v.passed, v.reason
    assert "truncation" in v.checks_run


def test_json_step_is_not_checked_for_mid_sentence_endings() -> None:
    assert verify('"' + "a long JSON string without a full stop " * 3 + '"', fmt="json").passed


def test_truncation_can_be_turned_off() -> None:
    v = verify("To be continued...", checks={"truncation": False})
    assert v.passed and "truncation" not in v.checks_run


# ---------------------------------------------------------------- 6. min_length


def test_min_length_counts_stripped_characters() -> None:
    v = verify("   abc   ", checks={"min_length": 4})
    assert failed(v, ErrorClass.INCOMPLETE, "min_length")
    assert "3 characters" in v.reason and "min_length 4" in v.reason
    assert verify("abcd", checks={"min_length": 4}).passed


# ---------------------------------------------------------------- 7. required


def test_missing_required_phrases_are_all_listed() -> None:
    v = verify("Sales grew.", checks={"required": ["sales", "Total revenue", "north region"]})
    assert failed(v, ErrorClass.INCOMPLETE, "required")
    assert "'Total revenue'" in v.reason and "'north region'" in v.reason
    assert "'sales'" not in v.reason
    assert "'Total revenue'" in (v.hint or "") and v.hint != HINTS[ErrorClass.INCOMPLETE]


def test_required_phrases_match_case_whitespace_and_apostrophe_insensitively() -> None:
    v = verify(
        "TOTAL   REVENUE was flat; the customer\u2019s view is positive.",
        checks={"required": ["total revenue", "customer's view"]},
    )
    assert v.passed, v.reason


# ---------------------------------------------------------------- 8. secrets

SECRETS = [
    ("sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a", "sk- API key"),
    ("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx", "sk- API key"),
    ("AKIAIOSFODNN7EXAMPLE", "AWS access key ID"),
    ("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "GitHub token"),
    ("xoxb-1234567890-abcdefghij", "Slack token"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl", "private key"),
    ("password: hunter2hunter2", "password"),
    ("DB_PASSWORD='S3cr3t!pass'", "password"),
]


@pytest.mark.parametrize(("secret", "kind"), SECRETS)
def test_secrets_are_unsafe_and_never_echoed(secret: str, kind: str) -> None:
    v = verify(f"Config for the job: {secret} (use it).")
    assert failed(v, ErrorClass.UNSAFE, "secrets")
    assert kind in v.reason
    # Neither the secret nor its distinctive tail may leak into the trace or the retry prompt.
    for leak in (secret, secret[-8:]):
        assert leak not in v.reason
        assert leak not in (v.hint or "")


@pytest.mark.parametrize(
    "text",
    [
        "Set password: ******** in the vault.",
        "Use password: <your password> here.",
        "Export pwd=$DB_PASSWORD before running.",
        "The sk- prefix marks an API key; ask-them politely.",
        "Rotate keys every 90 days.",
    ],
)
def test_harmless_mentions_of_credentials_pass(text: str) -> None:
    v = verify(text)
    assert v.passed, v.reason
    assert "secrets" in v.checks_run


def test_secrets_can_be_turned_off() -> None:
    v = verify("Key AKIAIOSFODNN7EXAMPLE.", checks={"secrets": False})
    assert v.passed and "secrets" not in v.checks_run


# ---------------------------------------------------------------- 9. forbidden


def test_forbidden_pattern_is_unsafe_and_names_the_pattern_not_the_match() -> None:
    v = verify("Customer SSN is 123-45-6789.", checks={"forbidden": [r"\b\d{3}-\d{2}-\d{4}\b"]})
    assert failed(v, ErrorClass.UNSAFE, "forbidden")
    assert r"\b\d{3}-\d{2}-\d{4}\b" in v.reason
    assert "123-45-6789" not in v.reason
    assert v.hint == HINTS[ErrorClass.UNSAFE]


def test_forbidden_is_case_insensitive_and_passes_when_absent() -> None:
    assert not verify("GUARANTEED returns.", checks={"forbidden": ["guaranteed"]}).passed
    assert verify("Returns vary.", checks={"forbidden": ["guaranteed"]}).passed


# ---------------------------------------------------------------- 10. consistent_keys


def test_changed_key_contradicts_a_committed_json_output() -> None:
    v = verify(
        '{"total": 41, "region": "north"}',
        fmt="json",
        checks={"consistent_keys": ["region", "total"]},
        committed={"notes": "free text, not JSON", "extract": '```json\n{"total": 40}\n```'},
    )
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")
    assert "'total'" in v.reason and "'extract'" in v.reason
    assert "41" in v.reason and "40" in v.reason
    assert "40" in (v.hint or "")


@pytest.mark.parametrize(
    ("now", "before"),
    [
        ('{"total": 40}', '{"total": 40.0}'),  # 40 == 40.0 in JSON
        ('{"total": 40}', '{"other": 1}'),  # the earlier step never said
        ('{"other": 1}', '{"total": 40}'),  # this output does not say
        ('{"total": {"a": [1, "x"]}}', '{"total": {"a": [1, "x"]}}'),
    ],
)
def test_consistent_keys_pass(now: str, before: str) -> None:
    v = verify(
        now, fmt="json", checks={"consistent_keys": ["total"]}, committed={"extract": before}
    )
    assert v.passed, v.reason
    assert "consistent_keys" in v.checks_run


def test_json_equal_keeps_booleans_and_strings_apart_from_numbers() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal("1", 1)
    assert not json_equal([1, 2], [2, 1])


def test_deeply_nested_values_are_compared_without_crashing() -> None:
    depth = 900
    now = '{"total": ' + "[" * depth + "]" * depth + "}"
    before = '{"total": ' + "[" * depth + "1" + "]" * depth + "}"
    v = verify(now, fmt="json", checks={"consistent_keys": ["total"]}, committed={"a": before})
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")


# ---------------------------------------------------------------- 11. grounded_numbers


def test_numbers_from_the_task_inputs_are_grounded() -> None:
    v = verify(
        "Units rose 12% to 4,200 at $3.50 each.",
        checks={"grounded_numbers": True},
        inputs={"data": "units 4200; growth 12 percent; price 3.5"},
    )
    assert v.passed, v.reason


def test_unsupported_number_is_hallucination_naming_the_first_one() -> None:
    v = verify(
        "Units rose to 4,200, and analysts put the total at 7,340,112, maybe 9.",
        checks={"grounded_numbers": True},
        inputs={"data": "units 4200"},
    )
    assert failed(v, ErrorClass.HALLUCINATION, "grounded_numbers")
    assert "'7,340,112'" in v.reason and "'9'" not in v.reason
    assert "7,340,112" in (v.hint or "")


def test_numbers_may_come_from_goals_params_and_committed_outputs() -> None:
    v = verify(
        "Top 5 of Q3: 17 orders, 250 returns.",
        checks={"grounded_numbers": True},
        goal="List the top 5",
        task_goal="Review Q3",
        params={"limit": 250},
        committed={"extract": '{"orders": 17}'},
    )
    assert v.passed, v.reason


def test_list_markers_and_words_with_digits_are_not_claims() -> None:
    v = verify(
        "1. Use GPT4 and v2 tooling.\n2) Ship it.\n## 3. Done",
        checks={"grounded_numbers": True},
    )
    assert v.passed, v.reason


# ---------------------------------------------------------------- 12. topic


def test_off_topic_output_is_goal_drift_naming_the_keywords() -> None:
    v = verify(
        "Here is a short history of the printing press.",
        checks={"topic": ["sales", "revenue"]},
    )
    assert failed(v, ErrorClass.GOAL_DRIFT, "topic")
    assert "'sales', 'revenue'" in v.reason and "0 of" in v.reason


def test_topic_min_counts_distinct_keywords() -> None:
    checks = {"topic": ["sales", "revenue", "north region"], "topic_min": 2}
    v = verify("Sales grew strongly.", checks=checks)
    assert failed(v, ErrorClass.GOAL_DRIFT, "topic")
    assert "at least 2" in v.reason
    assert verify("Sales grew in the North  Region.", checks=checks).passed


def test_topic_matches_whole_words_with_plurals() -> None:
    assert verify("Refunds were processed.", checks={"topic": ["refund"]}).passed
    assert not verify("Salesforce migrated.", checks={"topic": ["sales"]}).passed


# ---------------------------------------------------------------- 13, 14. scope


def test_out_of_scope_is_scope_creep_quoting_the_match() -> None:
    v = verify(
        "Summary done. I also emailed the whole company.",
        checks={"out_of_scope": [r"\bemail(ed)?\b"]},
    )
    assert failed(v, ErrorClass.SCOPE_CREEP, "out_of_scope")
    assert "'emailed'" in v.reason
    assert verify("Summary done.", checks={"out_of_scope": [r"\bemail(ed)?\b"]}).passed


def test_max_length_is_scope_creep() -> None:
    v = verify("x" * 11, checks={"max_length": 10})
    assert failed(v, ErrorClass.SCOPE_CREEP, "max_length")
    assert "11 characters" in v.reason and "max_length 10" in v.reason
    assert verify("  " + "x" * 10 + "  ", checks={"max_length": 10}).passed


# ---------------------------------------------------------------- helpers


def test_strip_fence_strips_one_surrounding_fence_only() -> None:
    assert strip_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_fence('text ```json\n{"a": 1}\n```') == 'text ```json\n{"a": 1}\n```'
