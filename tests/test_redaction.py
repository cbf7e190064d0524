"""Secrets never reach logs or traces: the structlog processor and the worker interceptor."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.embedded import EmbeddedServer
from raftline.models import EventType, Task
from raftline.redaction import MASK, Redactor
from raftline.worker import build_worker, configure_logging
from tests.conftest import spec

OPENAI = "sk-proj-Zx81Qw0PlmN7vB3cX9aS2dF4gH6jK8lL"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
ENV = {
    "OPENAI_API_KEY": OPENAI,
    "PAYMENTS_API_KEY": "pay_live_51Habc123XYZ",
    "INTERNAL_SERVICE_TOKEN": "tok-7f3a9c2e1b",
    "DB_PASSWORD": "correct horse battery",
    "CLIENT_SECRET": "short",  # under 8 characters: not treated as a secret value
    "RAFTLINE_ENCRYPTION_KEYS": "old-1:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3,old-2:ZmFrZWtleQ==",
    "RAFTLINE_REDACT_PATTERNS": json.dumps([r"ACCT-\d{8}", "[unclosed"]),
    "HOME": "/home/raft",
    "RAFTLINE_TASK_QUEUE": "raftline",
}


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(env=ENV)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"calling OpenAI with {OPENAI}", OPENAI),
        (
            "anthropic key sk-ant-api03-abcdefghijklmnopqrstuv",
            "sk-ant-api03-abcdefghijklmnopqrstuv",
        ),
        (f"aws {AWS_ID} in us-east-1", AWS_ID),
        (f"Authorization: Bearer {JWT}", JWT),
        (
            "google AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        ),
        ("gh token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz"),
        ("config: password=hunter2hunter2 retries=3", "hunter2hunter2"),
        ('{"api_key": "k-9f8e7d6c5b4a"}', "k-9f8e7d6c5b4a"),
        ("payments via pay_live_51Habc123XYZ", "pay_live_51Habc123XYZ"),
        ("svc tok-7f3a9c2e1b", "tok-7f3a9c2e1b"),
        ("db correct horse battery ok", "correct horse battery"),
        (
            "old key QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3",
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3",
        ),
        ("account ACCT-12345678 overdue", "ACCT-12345678"),
        ("bad regex [unclosed is matched literally", "[unclosed"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
    ],
)
def test_secrets_are_masked(redactor: Redactor, text: str, gone: str) -> None:
    out = redactor.text(text)
    assert gone not in out and MASK in out


AWS_SECRET = "Zx8/Kp2LmN4qRs6TuV8wXy0Az3Bc5De7Fg9Hi1Jk"
AZURE_KEY = "Qm7rT2xK9pLw4ZsV8nHd3Jy6" * 3 + "Qm7rT2xK9pLw4Z=="


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (
            "alerts: https://hooks.slack.com/services/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",
            "Qm7rT2xK9pLw4ZsV8nHd3Jy6",
            "alerts: ",
        ),
        (
            "DATABASE_URL=postgres://report:Xk29!vLp7q@db.internal:5432/sales",
            "Xk29!vLp7q",
            "@db.internal",
        ),
        (
            "fetch https://deploy:tr0ub4dor3x@artifacts.acme.io/x.tgz",
            "tr0ub4dor3x",
            "https://deploy:",
        ),
        (
            "Authorization: Basic YWRtaW46U3VwM3JTM2NyZXQhMjAyNA==",
            "YWRtaW46U3Vw",
            "Authorization: Basic ",
        ),
        (
            f"AccountName=acme;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net",
            AZURE_KEY[:20],
            "AccountName=acme;",
        ),
        ("login --token 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", "hf_QmrTxKpLw", "login --token "),
        (f"the AWS secret key is {AWS_SECRET} for deploy", AWS_SECRET, "for deploy"),
        (f"session {JWT} expired", JWT, "session "),
        ("mysql -u report -p'Vx82!kLq0z' sales", "Vx82!kLq0z", "mysql -u report -p'"),
    ],
)
def test_the_shared_secret_formats_are_masked(
    redactor: Redactor, text: str, gone: str, kept: str
) -> None:
    """Redaction and the L1 secrets rule share one definition (raftline.verifiers.secrets):
    every format the rule fails an output for is masked in logs, prefixes kept."""
    out = redactor.text(text)
    assert gone not in out and MASK in out and kept in out


def test_ordinary_text_is_untouched(redactor: Redactor) -> None:
    for text in (
        "step analysis attempt 1: PASS [L1 rules] all 7 rules passed",
        "/home/raft/.local/share/raftline raftline short",
        "the token budget is 200000 and the key finding is payback in 3 years",
        "sk-short is not a key; AKIA alone is not either",
        "connect to postgres://user:password@localhost:5432/app or $DATABASE_URL",
        "fixed in commit 3f786850e387550fdab836ed7e6dc881de23001b (aws secret rotation)",
        "Authorization: Bearer <token>; password: ****; api_key=${API_KEY}",
        "request 123e4567-e89b-12d3-a456-426614174000 took 12 ms; max_tokens: 4096",
    ):
        assert redactor.text(text) == text


def test_structures_are_walked(redactor: Redactor) -> None:
    event = {
        "event": "calling provider",
        "headers": {"Authorization": f"Bearer {JWT}"},
        "keys": [OPENAI, ("nested", AWS_ID)],
        "count": 3,
        "ok": True,
        "_record": object(),  # structlog's own: left alone
    }
    out = redactor(None, "info", dict(event))
    flat = json.dumps({k: v for k, v in out.items() if k != "_record"})
    assert JWT not in flat and OPENAI not in flat and AWS_ID not in flat
    assert out["count"] == 3 and out["ok"] is True and out["_record"] is event["_record"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def test_log_lines_are_redacted(
    restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_VENDOR_API_KEY", "vendor-key-0123456789")
    configure_logging(json_logs=True)
    structlog.get_logger("raftline.test").info(
        "provider call", api_key=OPENAI, url="https://x?key=vendor-key-0123456789"
    )
    logging.getLogger("temporalio.activity").warning("retrying after 401 for key %s", AWS_ID)
    try:
        raise RuntimeError(f"auth failed with {OPENAI}")
    except RuntimeError:
        logging.getLogger("temporalio.worker").exception("activity failed")
        structlog.get_logger("raftline.test").exception("step failed")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == 4, err
    for secret in (OPENAI, AWS_ID, "vendor-key-0123456789"):
        assert secret not in err
    assert lines[0]["api_key"] == MASK
    assert "RuntimeError: auth failed with [REDACTED]" in lines[2]["exception"]
    assert "RuntimeError" in lines[3]["exception"]


async def test_step_errors_and_judge_reasons_are_redacted_in_trace_and_history(
    temporal_server: EmbeddedServer, queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))
    client = await temporal_client(temporal_server.address)
    pipeline = spec(
        [
            {"name": "fetch", "goal": "fetch", "activity": "leaky", "params": {"key": OPENAI}},
            {
                "name": "review",
                "goal": "review",
                "criticality": "MEDIUM",
                "verifier": {"judge": {"activity": "leaky_judge", "params": {"token": JWT}}},
            },
        ],
        activity_retry={"max_attempts": 1},
    )
    async with build_worker(client, queue, collect(["tests.deploy_steps"])):
        handle = await RaftlineClient(client, queue).start(pipeline, Task(goal="summarise"))
        result = await handle.result()
    assert result.success
    errors = [e for e in result.trace if e.type is EventType.STEP_ERROR]
    assert errors and "invalid api key [REDACTED]" in errors[0].message
    judged = [e for e in result.trace if e.verdict and e.verdict.verifier == "leaky_judge"]
    assert judged and "Bearer [REDACTED]" in judged[0].verdict.reason  # type: ignore[union-attr]
    # The error keeps its type name, so retry policies by type still match.
    history = await client.get_workflow_handle(handle.id).fetch_history()
    raw = history.to_json()
    assert "RuntimeError" in raw
    assert OPENAI not in raw and JWT not in raw and JWT not in result.model_dump_json()
