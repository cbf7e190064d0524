"""L1 rules (rules-3): one failing and one passing case per check, the order, reasons that
never quote the output, the facts interface, the shared secret formats; and a few pins of
rules-1 (verifiers/rules_v1.py), which runs in flight must keep."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from raftline.models import ErrorClass, StepOutput, StepSpec, Task, Verdict, VerifyInput
from raftline.verifiers import rules_v1, secrets
from raftline.verifiers.rules import (
    RULE_NAMES,
    RULES_VERSION,
    OutputFacts,
    check_rules,
    extract_facts,
    json_equal,
    strip_fence,
)
from raftline.verifiers.taxonomy import HINTS

LONG_OK = (
    "Third-quarter sales grew in every region, led by strong demand in the north, "
    "and returns stayed low throughout the quarter."
)
OPENAI_KEY = "sk-proj-" + "Zx81Qw0PlmN7vB3cX9aS2dF4gH6jK8lL4tRe"
AWS_SECRET = "Zx8/Kp2LmN4qRs6TuV8wXy0Az3Bc5De7Fg9Hi1Jk"  # 40 characters, mixed, with digits
JWT = (
    base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    + "."
    + base64.urlsafe_b64encode(b'{"sub":"svc-report","role":"admin"}').decode().rstrip("=")
    + ".c2lnbmF0dXJlLW5vdC1yZWFsbHktYS1zaWduYXR1cmU"
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
    stop_reason: str | None = None,
    facts: list[OutputFacts] | None = None,
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
            output={"text": text, "meta": {"stop_reason": stop_reason} if stop_reason else {}},
            committed=committed or {},
        ),
        facts,
    )


def failed(v: Verdict, error_class: ErrorClass, check: str) -> bool:
    """A failed L1 verdict of the given class whose last check run is the failing one."""
    return (
        not v.passed
        and v.error_class is error_class
        and v.checks_run[-1] == check
        and (v.tier, v.verifier, v.prompt_version) == ("L1", "rules", RULES_VERSION)
        and bool(v.reason)
        and bool(v.hint)
    )


# ---------------------------------------------------------------- pass verdict and order


def test_rule_names_are_in_the_documented_order_with_secrets_first() -> None:
    assert RULES_VERSION == "rules-3"
    assert RULE_NAMES == (
        "secrets",
        "empty",
        "error_signatures",
        "refusal",
        "format",
        "truncation",
        "min_length",
        "required",
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
    assert v.checks_run == ["secrets", "empty", "error_signatures", "refusal", "truncation"]
    assert v.reason == "all 5 rules passed"
    assert (v.tier, v.verifier, v.prompt_version) == ("L1", "rules", "rules-3")


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


@pytest.mark.parametrize(
    ("text", "fmt", "checks", "error_class", "check"),
    [
        # a leaked key in a refusal that is also cut off: secrets run first
        (
            f"I'm sorry, but I can't help with that. Key {OPENAI_KEY} and",
            "text",
            {},
            ErrorClass.UNSAFE,
            "secrets",
        ),
        # an error message that is also a refusal: the error wins
        (
            "Traceback (most recent call last): I'm sorry, but I can't.",
            "text",
            {},
            ErrorClass.INCOMPLETE,
            "error_signatures",
        ),
        # a refusal in a JSON step: refusal comes before format
        (
            "I'm sorry, but I can't produce that JSON.",
            "json",
            {},
            ErrorClass.INCOMPLETE,
            "refusal",
        ),
        # invalid JSON that is also cut off: format comes first
        ('{"a": "b", "c": [1, 2', "json", {}, ErrorClass.FORMAT, "format"),
        # too short and missing a phrase: min_length first
        (
            "Done.",
            "text",
            {"min_length": 20, "required": ["total"]},
            ErrorClass.INCOMPLETE,
            "min_length",
        ),
        # a missing phrase (INCOMPLETE) before a forbidden pattern (UNSAFE)
        (
            "Totals for ACME.",
            "text",
            {"required": ["summary"], "forbidden": ["acme"]},
            ErrorClass.INCOMPLETE,
            "required",
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


# ---------------------------------------------------------------- no output in reasons

MARK = "Quokka7731zebra"  # a distinctive token in each output below


@pytest.mark.parametrize(
    ("text", "kwargs", "check"),
    [
        (
            f"Traceback (most recent call last):\n  File 'x.py'\nKeyError: '{MARK}'",
            {},
            "error_signatures",
        ),
        (f"I'm sorry, but I can't help with that, {MARK}.", {}, "refusal"),
        (f"Sure! {MARK} here is the JSON: {{}}", {"fmt": "json"}, "format"),
        (
            f'{{"id": "{MARK}"}}',
            {
                "fmt": "json",
                "checks": {"json_schema": {"properties": {"id": {"enum": ["a", "b"]}}}},
            },
            "format",
        ),
        (
            f'{{"{MARK}": 1}}',
            {"fmt": "json", "checks": {"json_schema": {"additionalProperties": False}}},
            "format",
        ),
        (
            LONG_OK + f" The {MARK} report shows that the north grew because of",
            {},
            "truncation",
        ),
        (f"The {MARK} report shows growth in the north and...", {}, "truncation"),
        (f"The {MARK} is here.", {"checks": {"required": ["total revenue"]}}, "required"),
        (
            f"Customer {MARK} has SSN 123-45-6789.",
            {"checks": {"forbidden": [r"\d{3}-\d{2}"]}},
            "forbidden",
        ),
        (
            f"Done. I also emailed {MARK}.",
            {"checks": {"out_of_scope": [r"emailed \w+"]}},
            "out_of_scope",
        ),
        (
            f'{{"region": "{MARK}"}}',
            {
                "fmt": "json",
                "checks": {"consistent_keys": ["region"]},
                "committed": {"a": '{"region": "north"}'},
            },
            "consistent_keys",
        ),
        (f"{MARK} {OPENAI_KEY}", {}, "secrets"),
    ],
)
def test_no_reason_or_hint_quotes_the_output(text: str, kwargs: dict[str, Any], check: str) -> None:
    v = verify(text, **kwargs)
    assert not v.passed and v.checks_run[-1] == check, v
    for said in (v.reason, v.hint or ""):
        assert MARK not in said
        assert MARK[:7] not in said and MARK[-6:] not in said
        assert OPENAI_KEY[-10:] not in said


def test_positions_are_lines_and_columns_or_characters() -> None:
    v = verify(f"Config:\n\nexport OPENAI_API_KEY={OPENAI_KEY}\n")
    assert "line 3, column 23" in v.reason
    v = verify(f"{'x' * 1500} {OPENAI_KEY}")
    assert "character 1,502" in v.reason


# ---------------------------------------------------------------- 1. secrets


SECRETS = [
    (OPENAI_KEY, "sk- API key"),
    ("sk-ant-api03-" + "Qw3rTy7uIoP1aSdF5gHjK9lZxCv2bNm4QwEr", "sk- API key"),
    ("AKIA2OGYBAH4QWERTY7Z", "AWS access key ID"),
    (f"aws_secret_access_key = {AWS_SECRET}", "AWS secret access key"),
    (f"Your AWS secret key is {AWS_SECRET}.", "AWS secret access key"),
    (
        "https://hooks.slack.com/services/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",
        "Slack webhook",
    ),
    ("xoxb-730481926654-5938271640392-Qm7rT2xK9pLw4ZsV8nHd3Jy6", "Slack token"),
    ("postgres://report_user:Xk29!vLp7q@db.internal:5432/sales", "password in a URL"),
    ("https://deploy:tr0ub4dor3x@artifacts.acme.io/latest.tar.gz", "password in a URL"),
    ("Authorization: Basic " + base64.b64encode(b"admin:Sup3rS3cret!").decode(), "basic"),
    (
        "AccountKey="
        + "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dE1fG3hI5"
        + "jK7lM9nO1pQ3rS5tU7vW9xY1zA3bC5dE7fG9h==",
        "Azure storage account key",
    ),
    ("hf_" + "QmrTxKpLwZsVnHdJyRcGbFaEuWoYtIkMqP", "Hugging Face token"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "private key"),
    (JWT, "JSON Web Token"),
    ("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "GitHub token"),
    ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "Stripe live key"),
    ("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "Google API key"),
    ("Authorization: Bearer 8f2k3l4m5n6o7p8q9r0s1t2u3v4w5x6y", "bearer token"),
    ("password: hunter2hunter2", "password"),
    ("DB_PASSWORD='S3cr3t!pass'", "password"),
    ('{"api_key": "k-9f8e7d6c5b4a"}', "API key or token"),
]


@pytest.mark.parametrize(("secret", "kind"), SECRETS)
def test_secrets_are_unsafe_named_by_kind_and_never_echoed(secret: str, kind: str) -> None:
    v = verify(f"Config for the job: {secret} (use it).")
    assert failed(v, ErrorClass.UNSAFE, "secrets"), v
    assert kind in v.reason and "value withheld" in v.reason
    for leak in (secret, secret[-8:]):
        assert leak not in v.reason
        assert leak not in (v.hint or "")


@pytest.mark.parametrize(
    "text",
    [
        "Set password: ******** in the vault.",
        "Use password: <your password> here.",
        "Export pwd=$DB_PASSWORD before running.",
        "Set OPENAI_API_KEY=sk-... (replace sk-... with your key).",
        "export API_KEY=${API_KEY}",
        "The sk- prefix marks an API key; ask-them politely.",
        "postgres://user:password@localhost:5432/mydb",
        "Authorization: Bearer <token>",
        "Fixed in commit 3f786850e387550fdab836ed7e6dc881de23001b (the AWS secret rotation).",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "PEM files begin with -----BEGIN PRIVATE KEY----- and end with an END line.",
        'password = os.environ["DB_PASSWORD"]',
        "max_tokens: 4096\ntoken_budget: 200000",
        "Rotate keys every 90 days.",
    ],
)
def test_placeholders_and_mentions_of_credentials_pass(text: str) -> None:
    v = verify(text)
    assert v.passed, v.reason
    assert "secrets" in v.checks_run


def test_documented_example_keys_are_not_leaks_but_are_masked() -> None:
    """Decision: AWS's documented AKIAIOSFODNN7EXAMPLE / wJalr...EXAMPLEKEY, jwt.io's sample
    token and the Azurite key are published examples: an output may quote them (tutorials
    do); redaction still masks them in logs."""
    doc = (
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    )
    assert verify(doc).passed
    masked = secrets.mask(doc, "[X]")
    assert "AKIAIOSFODNN7EXAMPLE" not in masked and "EXAMPLEKEY" not in masked


def test_mask_keeps_prefixes_and_first_secret_is_the_earliest() -> None:
    text = f"Authorization: Bearer {JWT}\npassword=hunter2hunter2 and {OPENAI_KEY}"
    assert secrets.mask(text, "[X]") == "Authorization: Bearer [X]\npassword=[X] and [X]"
    found = secrets.first_secret(text)
    assert found is not None and found.start == text.index(JWT)
    assert found.kind == "a JSON Web Token"


def test_secrets_can_be_turned_off() -> None:
    v = verify(f"Key {OPENAI_KEY}.", checks={"secrets": False})
    assert v.passed and "secrets" not in v.checks_run


def test_detect_secrets_regexes_are_the_pinned_ones() -> None:
    """The formats read detect-secrets' plugin regexes at import: a new version that changed
    one would change verdicts under runs in flight. Bump RULES_VERSION with it."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.stripe import StripeDetector

    assert AWSKeyDetector.denylist[0].pattern == "(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}"
    assert StripeDetector.denylist[0].pattern == "(?:r|s)k_live_[0-9a-zA-Z]{24}"
    from importlib.metadata import version

    assert version("detect-secrets") == "1.5.0"


# ---------------------------------------------------------------- 2. empty


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_output_is_incomplete_with_the_class_hint(text: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "empty")
    assert v.hint == HINTS[ErrorClass.INCOMPLETE]


# ---------------------------------------------------------------- 3. error signatures


@pytest.mark.parametrize(
    "text",
    [
        'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: "a"',
        "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        "Error code: 429 - {'error': {'message': 'slow down'}}",
        "openai.RateLimitError: you hit it",
        "Exception: boom",
        "Request failed: rate limit exceeded, retry in 20s.",
        "HTTP/1.1 503 Service Unavailable",
        "429 Too Many Requests",
        "Internal Server Error",
        "The server had an error while processing your request. Sorry about that!",
        '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "panic: runtime error: index out of range [3] with length 3",
        "Fehler: Verbindung zum Server fehlgeschlagen.",
        "[object Object]",
    ],
)
def test_error_outputs_are_incomplete(text: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "error_signatures"), v
    assert "error" in v.reason


def test_a_provider_error_body_in_a_json_step_is_an_error() -> None:
    v = verify('{"error": {"message": "overloaded", "type": "server_error"}}', fmt="json")
    assert failed(v, ErrorClass.INCOMPLETE, "error_signatures")


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        (
            "When the provider returns 503 Service Unavailable, retry after the delay; a 429 "
            "Too Many Requests means back off.",
            {},
        ),
        (
            "503 Service Unavailable means the server is overloaded or down for maintenance; "
            "clients should retry later.",
            {"goal": "Explain what HTTP 503 means"},
        ),
        ('{"error": "card_declined", "code": 402}', {"fmt": "json"}),
        ('{"error_rate": 0.02, "status": "ok"}', {}),
        ("Error handling matters: retry with backoff, then alert the on-call engineer.", {}),
        ("```\nTraceback (most recent call last):\nKeyError: 'x'\n```\nThe key is missing.", {}),
        ("503 Service Unavailable", {"inputs": {"log": "GET /health 503 Service Unavailable"}}),
        (
            "<html><head><title>404 Not Found</title></head><body>Moved.</body></html>",
            {"goal": "Write a custom 404 page"},
        ),
    ],
)
def test_text_about_errors_is_not_an_error(text: str, kwargs: dict[str, Any]) -> None:
    v = verify(text, **kwargs)
    assert v.passed, v.reason
    assert "error_signatures" in v.checks_run


def test_error_signatures_can_be_turned_off() -> None:
    v = verify("Internal Server Error", checks={"error_signatures": False})
    assert v.passed and "error_signatures" not in v.checks_run


# ---------------------------------------------------------------- 4. refusal


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, but I can\u2019t do that.",
        "As an AI language model, I cannot browse the internet for live prices.",
        "I must respectfully decline to write this content.",
        "That's not something I can help with.",
        "I won't write that. Fabricated reviews mislead buyers.",
        "Lo siento, pero no puedo ayudarte con esa solicitud.",
        "Je suis désolé, mais je ne peux pas répondre à cette demande.",
        "Es tut mir leid, aber dabei kann ich Ihnen nicht helfen.",
        "抱歉，我无法协助完成这个请求。",
        "申し訳ありませんが、このリクエストにはお応えできません。",
        "Извините, но я не могу помочь с этим запросом.",
    ],
)
def test_refusals_in_any_phrasing_or_language_are_incomplete(text: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "refusal"), v
    assert "refusal" in v.reason


def test_the_providers_refusal_stop_reason_is_a_refusal() -> None:
    v = verify("This falls outside what I do.", stop_reason="refusal")
    assert failed(v, ErrorClass.INCOMPLETE, "refusal")
    assert "stop reason is 'refusal'" in v.reason


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        (
            "I'm sorry, but I can't find order 1234. Could you check the number?",
            {"goal": "Draft a reply to the customer"},
        ),
        (
            "I am unable to attend on Friday.",
            {"goal": "Translate into English", "inputs": {"t": "Je ne pourrai pas venir."}},
        ),
        (
            "I'm sorry, but I can't help you with that.",
            {
                "goal": "Translate the message into English",
                "inputs": {"m": "Lo siento, pero no puedo ayudarte con eso."},
            },
        ),
        ("The bot answers \"I'm sorry, but I can't help with that.\" Route those to a human.", {}),
        ('```python\nREFUSAL = "I can\'t help with that."\n```', {}),
        ('[{"reply": "I can\'t help with that.", "label": "refusal"}]', {"fmt": "json"}),
        (
            "Customer: Can I get a discount?\nAgent: I'm sorry, but I can't offer one on sale "
            "items.",
            {},
        ),
        (
            "Unfortunately, I can't offer a refund after 30 days, but store credit is fine.",
            {"goal": "Reply to the customer's refund request"},
        ),
        (
            "As an AI, I have no opinions, but here is a comparison: "
            + "Vendor A is cheaper. " * 12,
            {},
        ),
        ("I cannot stress enough how important backups are.", {}),
    ],
)
def test_refusal_look_alikes_pass(text: str, kwargs: dict[str, Any]) -> None:
    v = verify(text, **kwargs)
    assert v.passed, v.reason


def test_refusal_can_be_turned_off() -> None:
    v = verify("I'm sorry, but I can't.", checks={"refusal": False})
    assert v.passed and "refusal" not in v.checks_run


# ---------------------------------------------------------------- 5. format


def test_invalid_json_is_format_and_says_where_without_quoting() -> None:
    v = verify("Sure! Here is what you asked for: {}", fmt="json")
    assert failed(v, ErrorClass.FORMAT, "format")
    assert "not valid JSON" in v.reason and "line 1, column 1" in v.reason
    assert "starts with text" in v.reason and "Sure" not in v.reason


def test_cut_off_json_is_format_and_says_so() -> None:
    v = verify('{"items": [1, 2', fmt="json")
    assert failed(v, ErrorClass.FORMAT, "format")
    assert "cut off" in v.reason and "complete JSON" in (v.hint or "")


def test_nan_is_not_json() -> None:
    v = verify('{"ratio": NaN}', fmt="json")
    assert failed(v, ErrorClass.FORMAT, "format")


@pytest.mark.parametrize(
    "text", ['{"a": 1}', '```json\n{"a": 1}\n```', "```\n[1, 2]\n```", '  "just a string"  ']
)
def test_valid_json_passes_with_one_fence_stripped(text: str) -> None:
    v = verify(text, fmt="json")
    assert v.passed, v.reason
    assert "format" in v.checks_run


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 3, "maxLength": 8},
        "status": {"enum": ["open", "closed"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer"},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"qty": {"type": "integer"}},
            },
        },
    },
}


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ('{"items": [{"sku": "a"}]}', "$.id", "required key is missing"),
        ('{"id": "ab", "items": [{"sku": "a"}]}', "$.id", "fewer than minLength 3"),
        ('{"id": "abc", "items": []}', "$.items", "fewer than minItems 1"),
        ('{"id": "abc", "items": [{"sku": "a"}, {"qty": 1}]}', "$.items[1].sku", "missing"),
        ('{"id": "abc", "items": [{"sku": "a", "qty": "2"}]}', "$.items[0].qty", "got string"),
        (
            '{"id": "abc", "items": [{"sku": "a"}], "status": "done"}',
            "$.status",
            'the string is not one of "open", "closed"',
        ),
        ('{"id": "abc", "items": [{"sku": "a"}], "score": 1.5}', "$.score", "1.5 is greater"),
        ('{"id": "abc", "items": [{"sku": "a"}], "extra": 1}', "$", "key #3 is not allowed"),
    ],
)
def test_schema_errors_name_the_json_path(doc: str, path: str, message: str) -> None:
    v = verify(doc, fmt="json", checks={"json_schema": SCHEMA})
    assert failed(v, ErrorClass.FORMAT, "format")
    assert f"at {path}:" in v.reason and message in v.reason, v.reason
    assert '"done"' not in v.reason and "extra" not in v.reason


# ---------------------------------------------------------------- 6. truncation


@pytest.mark.parametrize("stop", ["length", "max_tokens", "MAX_TOKENS", "max_output_tokens"])
def test_a_token_limit_stop_reason_is_incomplete_however_the_text_ends(stop: str) -> None:
    v = verify(LONG_OK, stop_reason=stop)
    assert failed(v, ErrorClass.INCOMPLETE, "truncation")
    assert "token limit" in v.reason and stop.lower() in v.reason


@pytest.mark.parametrize("stop", ["stop", "end_turn", "STOP", "stop_sequence", "tool_use"])
def test_a_normal_stop_is_never_flagged_on_heuristics(stop: str) -> None:
    assert verify("We recommend the north and", stop_reason=stop).passed


@pytest.mark.parametrize(
    "text",
    [
        "The capital of Australia is",
        "Sales grew 12% in the",
        "Here are the three main risks:",
        "We recommend upgrading because...",
        "The top regions this quarter were North, South,",
        "Steps:\n1. Open the console.\n2.",
        "| Region | Sales |\n|---|---|\n| North | 4,200 |\n| South | 3,",
        "Here is the code:\n```python\nprint('hi')\n",
        '{"summary": "growth", "regions": ["north"',
        "第三季度销售额同比增长12%，主要原因是北方地区的",
        LONG_OK + " The north led the growth, and the main reason for the change was the new",
    ],
)
def test_cut_off_text_is_incomplete_even_when_short(text: str) -> None:
    v = verify(text)
    assert failed(v, ErrorClass.INCOMPLETE, "truncation"), v
    assert v.hint == HINTS[ErrorClass.INCOMPLETE]


@pytest.mark.parametrize(
    "text",
    [
        "42",
        "Paris",
        "Yes.",
        "New York City",
        "Hi team,\n\nThe report is attached.\n\nBest regards,\nMaria Lopez",
        "Thanks for flagging it, the refund is on its way.\n\nBest regards",
        "The changelog is here: https://github.com/acme/widgets/releases/tag/v2.4.0",
        "To install it, run:\n\n    pip install raftline",
        LONG_OK + "\n\n```python\nprint('hi')\n```",
        "Congrats to the whole team on a record quarter 🎉",
        "Der Vorstand erklärte: „Wir halten an der Prognose fest.“",
        "经理说：「我们会按时交付。」",
        "The sequence doubles each time: 2, 4, 8, 16, …",
        "Quarterly Sales Report: Northern Region Leads Growth",
        LONG_OK + "\n\n- north: up\n- south: flat",
        '{"quote": "she said \\"hi\\" and left", "n": [1, {"a": 2}]}',
    ],
)
def test_complete_text_passes_truncation(text: str) -> None:
    v = verify(text)
    assert v.passed, v.reason
    assert "truncation" in v.checks_run


def test_truncation_can_be_turned_off() -> None:
    v = verify("To be continued because...", checks={"truncation": False})
    assert v.passed and "truncation" not in v.checks_run


# ---------------------------------------------------------------- 7, 8. length and phrases


def test_min_length_counts_stripped_characters() -> None:
    v = verify("   abc   ", checks={"min_length": 4})
    assert failed(v, ErrorClass.INCOMPLETE, "min_length")
    assert "3 characters" in v.reason and "min_length 4" in v.reason
    assert verify("abcd", checks={"min_length": 4}).passed


def test_missing_required_phrases_are_all_listed() -> None:
    v = verify("Sales grew.", checks={"required": ["sales", "Total revenue", "north region"]})
    assert failed(v, ErrorClass.INCOMPLETE, "required")
    assert "'Total revenue'" in v.reason and "'north region'" in v.reason
    assert "'sales'" not in v.reason


def test_required_phrases_match_case_whitespace_and_apostrophe_insensitively() -> None:
    v = verify(
        "TOTAL   REVENUE was flat; the customer\u2019s view is positive.",
        checks={"required": ["total revenue", "customer's view"]},
    )
    assert v.passed, v.reason


# ---------------------------------------------------------------- 9. forbidden


def test_forbidden_pattern_is_unsafe_naming_the_pattern_and_the_place() -> None:
    v = verify("Customer SSN is 123-45-6789.", checks={"forbidden": [r"\b\d{3}-\d{2}-\d{4}\b"]})
    assert failed(v, ErrorClass.UNSAFE, "forbidden")
    assert r"\b\d{3}-\d{2}-\d{4}\b" in v.reason and "character 17" in v.reason
    assert "123-45-6789" not in v.reason
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
    assert "41 here, 40 there" in v.reason


def test_a_plain_key_matches_at_any_depth_and_a_dotted_path_exactly() -> None:
    nested = '{"plan": {"budget": 6000, "owner": "ops"}}'
    v = verify(
        nested,
        fmt="json",
        checks={"consistent_keys": ["budget"]},
        committed={"draft": '{"budget": 5000}'},
    )
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")
    assert "$.plan.budget (there at $.budget)" in v.reason
    dotted = {"consistent_keys": ["plan.budget"]}
    assert verify(nested, fmt="json", checks=dotted, committed={"d": '{"budget": 9}'}).passed
    v = verify(nested, fmt="json", checks=dotted, committed={"d": '{"plan": {"budget": 5}}'})
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")


def test_string_values_are_not_quoted_in_a_contradiction() -> None:
    v = verify(
        '{"region": "south"}',
        fmt="json",
        checks={"consistent_keys": ["region"]},
        committed={"a": '{"region": "north"}'},
    )
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")
    assert "south" not in v.reason and "north" not in v.reason


@pytest.mark.parametrize(
    ("now", "before"),
    [
        ('{"total": 40}', '{"total": 40.0}'),  # 40 == 40.0 in JSON
        ('{"total": 40}', '{"other": 1}'),  # the earlier step never said
        ('{"other": 1}', '{"total": 40}'),  # this output does not say
        ('{"items": [{"total": 1}, {"total": 2}]}', '{"total": 1}'),  # ambiguous: not compared
    ],
)
def test_consistent_keys_pass(now: str, before: str) -> None:
    v = verify(now, fmt="json", checks={"consistent_keys": ["total"]}, committed={"x": before})
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


# ---------------------------------------------------------------- facts


def test_extract_facts_keeps_numbers_and_the_values_at_the_keys() -> None:
    text = '```json\n{"plan": {"budget": 4200000, "weeks": 6}, "revenue": "4.2 million"}\n```'
    facts = extract_facts("plan", text, ["budget", "plan.weeks", "budget"])
    assert facts.step == "plan"
    assert facts.values == {"$.plan.weeks": 6, "$.plan.budget": 4200000}
    assert {"4200000", "6", "4.2"} <= set(facts.numbers)
    assert extract_facts("p", "not json", ["budget"]).values == {}


def test_large_values_are_kept_as_digests_and_still_compare() -> None:
    big = {"rows": [{"n": i, "v": float(i)} for i in range(200)]}
    same = {"rows": [{"n": float(i), "v": i} for i in range(200)]}  # 1 == 1.0
    kept = extract_facts("a", json.dumps({"data": big}), ["data"]).values["$.data"]
    assert set(kept) == {"$sha256"}
    v = verify(
        json.dumps({"data": same}),
        fmt="json",
        checks={"consistent_keys": ["data"]},
        committed={"a": json.dumps({"data": big})},
    )
    assert v.passed, v.reason
    changed = {"rows": [*big["rows"][:-1], {"n": 0, "v": 0}]}
    v = verify(
        json.dumps({"data": changed}),
        fmt="json",
        checks={"consistent_keys": ["data"]},
        committed={"a": json.dumps({"data": big})},
    )
    assert failed(v, ErrorClass.CONTRADICTION, "consistent_keys")


def test_facts_given_or_derived_from_texts_decide_alike() -> None:
    committed = {"extract": '{"total": 9000, "orders": 17}'}
    checks = {"consistent_keys": ["total"], "grounded_numbers": True}
    facts = [extract_facts(s, t, ["total"]) for s, t in committed.items()]
    for text in (
        '{"total": 9000, "note": "17 orders"}',
        '{"total": 9100}',
        '{"total": 9000, "n": 18}',
    ):
        a = verify(text, fmt="json", checks=checks, committed=committed)
        b = verify(text, fmt="json", checks=checks, facts=facts)
        assert (a.passed, a.error_class, a.reason) == (b.passed, b.error_class, b.reason)


# ---------------------------------------------------------------- 11. grounded_numbers


@pytest.mark.parametrize(
    ("text", "inputs"),
    [
        ("Revenue grew 25%, from 100 to 125.", {"d": "revenue 100 then 125"}),
        ("We have 4.2 million customers.", {"d": "customers 4,200,000"}),
        ("Customers: 4.2M", {"d": "customers 4200000"}),
        ("That is 4,200 thousand customers.", {"d": "customers 4,200,000"}),
        ("The outage lasted 37 minutes.", {"d": "down 14:02, up 14:39"}),
        ("The north had 33.3% of sales.", {"d": "north 100 of 300"}),
        ("Revenue was about 4.18 million.", {"d": "revenue 4,183,250"}),
        ("Total: 9,000 units.", {"d": "north 4200, south 3100, west 1700"}),
        ("Each costs $3.50.", {"d": "price 3.5"}),
        ("Here are the 3 takeaways:\n1. Sales grew.\n2. Churn fell.", {}),
    ],
)
def test_numbers_derivable_from_the_inputs_are_grounded(text: str, inputs: dict[str, str]) -> None:
    v = verify(text, checks={"grounded_numbers": True}, inputs=inputs)
    assert v.passed, v.reason


def test_ungrounded_numbers_are_hallucination_and_are_named() -> None:
    v = verify(
        "Units rose to 4,200, and analysts put the total at 7,340,112, maybe 9.5%.",
        checks={"grounded_numbers": True},
        inputs={"data": "units 4200"},
    )
    assert failed(v, ErrorClass.HALLUCINATION, "grounded_numbers")
    assert "7,340,112" in v.reason and "9.5%" in v.reason and "4,200" not in v.reason
    assert "2 numbers" in v.reason and "7,340,112" in (v.hint or "")


@pytest.mark.parametrize(
    ("text", "inputs"),
    [
        ("Revenue reached 4.2 billion.", {"d": "revenue 4,200,000"}),
        ("Revenue was about 4.3 million.", {"d": "revenue 4,183,250"}),
        ("The outage lasted 42 minutes.", {"d": "down 14:02, up 14:39"}),
        ("Orders grew 3.7x.", {"d": "orders 100 then 250"}),
    ],
)
def test_wrong_arithmetic_is_not_grounded(text: str, inputs: dict[str, str]) -> None:
    v = verify(text, checks={"grounded_numbers": True}, inputs=inputs)
    assert failed(v, ErrorClass.HALLUCINATION, "grounded_numbers"), v


def test_numbers_may_come_from_goals_params_and_committed_outputs() -> None:
    v = verify(
        "Top 25 of Q3: 17 orders, 250 returns in 2024.",
        checks={"grounded_numbers": True},
        goal="List the top 25",
        task_goal="Review 2024",
        params={"limit": 250},
        committed={"extract": '{"orders": 17}'},
    )
    assert v.passed, v.reason


def test_list_markers_versions_and_words_with_digits_are_not_claims() -> None:
    v = verify(
        "1. Use GPT4 and v2 tooling on Python 3.11.7.\n2) Ship it.\n## 3. Done [12]",
        checks={"grounded_numbers": True},
    )
    assert v.passed, v.reason


# ---------------------------------------------------------------- 12-14. topic and scope


def test_off_topic_output_is_goal_drift_naming_the_keywords() -> None:
    v = verify(
        "Here is a short history of the printing press.", checks={"topic": ["sales", "revenue"]}
    )
    assert failed(v, ErrorClass.GOAL_DRIFT, "topic")
    assert "'sales', 'revenue'" in v.reason and "0 of" in v.reason
    assert verify("Refunds were processed.", checks={"topic": ["refund"]}).passed
    assert not verify("Salesforce migrated.", checks={"topic": ["sales"]}).passed


def test_out_of_scope_is_scope_creep_naming_the_pattern_and_place() -> None:
    v = verify(
        "Summary done. I also emailed the whole company.",
        checks={"out_of_scope": [r"\bemail(ed)?\b"]},
    )
    assert failed(v, ErrorClass.SCOPE_CREEP, "out_of_scope")
    assert r"'\bemail(ed)?\b'" in v.reason and "character 22" in v.reason


def test_max_length_is_scope_creep() -> None:
    v = verify("x" * 11, checks={"max_length": 10})
    assert failed(v, ErrorClass.SCOPE_CREEP, "max_length")
    assert "11 characters" in v.reason and "max_length 10" in v.reason
    assert verify("  " + "x" * 10 + "  ", checks={"max_length": 10}).passed


# ---------------------------------------------------------------- bounds


def test_a_ten_megabyte_output_is_checked_whole_for_secrets() -> None:
    text = LONG_OK + "\n" + ("Sales grew in the north. " * 420_000) + f"\nKey: {OPENAI_KEY}\n"
    assert len(text) > 10_000_000
    v = verify(text)
    assert failed(v, ErrorClass.UNSAFE, "secrets")
    assert "line 3, column 6" in v.reason


def test_strip_fence_strips_one_surrounding_fence_only() -> None:
    assert strip_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_fence('text ```json\n{"a": 1}\n```') == 'text ```json\n{"a": 1}\n```'


# ---------------------------------------------------------------- rules-1, frozen


def _v1(text: str, **step: Any) -> Verdict:
    return rules_v1.check_rules(
        VerifyInput(
            workflow_id="wf-1",
            step={"name": "summary", "goal": "Summarise", **step},
            task={"goal": "Analyse", "inputs": {"data": "units 4200"}},
            output=text,
        )
    )


def test_rules_v1_is_frozen_for_runs_in_flight() -> None:
    """rules-1 decides as it always did, quoting included: runs that started under it replay
    these verdicts, so none of this may change."""
    assert rules_v1.RULES_VERSION == "rules-1"
    assert rules_v1.RULE_NAMES[:3] == ("empty", "error_signatures", "refusal")
    v = _v1("Sure! Here is what you asked for: {}", format="json")
    assert v.reason.startswith("output is not valid JSON") and "'Sure! Here is" in v.reason
    v = _v1("Key AKIAIOSFODNN7EXAMPLE for ACME.")
    assert (v.error_class, v.checks_run[-1]) == (ErrorClass.UNSAFE, "secrets")
    assert v.prompt_version == "rules-1"
    v = _v1(LONG_OK[:-1] + " and then it stopped without")
    assert "then it stopped without'" in v.reason
    v = _v1("The total is 7,340,112.", checks={"grounded_numbers": True})
    assert "'7,340,112'" in v.reason
    v = _v1("I'm sorry, but I can't find order 1234 in our system.")
    assert (v.passed, v.checks_run[-1]) == (False, "refusal")


def test_the_local_rules_activity_runs_rules_v1() -> None:
    from raftline.activities import verify as verify_activity

    assert verify_activity.check_rules is rules_v1.check_rules


# ---------------------------------------------------------------- rules-3 over rules-2


@pytest.mark.parametrize(
    "text, kind",
    [
        ("That's not something I'm going to help with. Fake invoices defraud people.", "refusal"),
        (
            "This request conflicts with my guidelines, so I won't be producing the review.",
            "refusal",
        ),
        ("Désolée, je préfère ne pas répondre à cette demande.", "refusal in French"),
        ("Das kann ich leider nicht übernehmen – solche Texte verfasse ich nicht.", "in German"),
        ("[tool:web_search] failed after 3 attempts: ConnectTimeout(30.0s)", "failed tool call"),
    ],
)
def test_rules_3_adds_shapes_that_rules_2_runs_in_flight_keep_passing(text, kind) -> None:
    """rules-3 only adds patterns; a run that started under rules-2 (no raftline-rules-3
    marker in its history) keeps deciding as rules-2, so its replay reaches its verdicts."""
    new = verify(text)
    assert not new.passed and kind in new.reason and new.prompt_version == "rules-3"
    inp = VerifyInput(
        workflow_id="wf-1",
        step=StepSpec(name="answer", goal="Write the product description"),
        task=Task(goal="Help the operations team"),
        output=StepOutput(text=text),
        attempt=0,
    )
    old = check_rules(inp, None, "rules-2")
    assert old.passed and old.prompt_version == "rules-2"


@pytest.mark.parametrize(
    "text",
    [
        "Cutting corners goes against our values, so the plan keeps the full QA cycle.",
        "Upload failed after 3 attempts; the figures below are from yesterday's export. "
        + "Revenue was 4.2M, up 12% on the quarter, driven by renewals in the north. " * 4,
    ],
)
def test_rules_3_leaves_answers_that_mention_the_same_words(text) -> None:
    assert verify(text).passed


def test_an_unknown_rules_version_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown rules version"):
        check_rules(
            VerifyInput(
                workflow_id="wf-1",
                step=StepSpec(name="a", goal="g"),
                task=Task(goal="g"),
                output=StepOutput(text="x"),
                attempt=0,
            ),
            None,
            "rules-9",
        )
