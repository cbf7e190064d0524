"""The provider adapters against a local fake server, through the real SDK clients."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

from raftline.activities.providers import (
    FATAL,
    RETRYABLE,
    CompletionRequest,
    complete,
    configured_providers,
    cost_usd,
    default_model,
    detect,
    price_of,
)
from tests.fake_llm import FakeLLM, Reply, isolate, provider_env

# One priced model per provider, so cost accounting is checked on every wire API.
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-20241022",
    "bedrock": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "gemini": "gemini-2.0-flash",
}
PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "bedrock": f"/model/{MODELS['bedrock']}/converse",
    "gemini": "/v1beta/openai/chat/completions",
}
ALL = list(MODELS)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: FakeLLM, monkeypatch: pytest.MonkeyPatch, tmp_path) -> FakeLLM:
    fake.reset()
    isolate(monkeypatch, str(tmp_path))
    return fake


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeLLM, provider: str) -> None:
    for name, value in provider_env(fake, provider).items():
        monkeypatch.setenv(name, value)


def request(provider: str, **kw) -> CompletionRequest:
    args = {
        "provider": provider,
        "model": MODELS[provider],
        "prompt": "Say hi",
        "system": "Be brief",
    }
    return CompletionRequest(**(args | kw))


@pytest.mark.parametrize("provider", ALL)
async def test_completion_text_usage_and_cost(provider, fake, monkeypatch):
    use(monkeypatch, fake, provider)
    fake.script(Reply(text="hello there", usage=(1000, 200)))

    result = await complete(request(provider))

    assert result.text == "hello there"
    assert result.provider == provider
    assert (result.usage.input_tokens, result.usage.output_tokens) == (1000, 200)
    price_in, price_out = price_of(MODELS[provider])
    assert result.usage.cost_usd == pytest.approx((1000 * price_in + 200 * price_out) / 1e6)
    assert result.usage.cost_usd > 0
    assert result.latency_ms >= 0
    [sent] = fake.requests
    assert sent.path == PATHS[provider]
    assert sent.prompt == "Say hi"
    assert sent.system == "Be brief"


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_errors_are_retryable_and_not_retried_by_the_sdk(
    provider, status, fake, monkeypatch
):
    use(monkeypatch, fake, provider)
    fake.script(Reply(status=status))

    with pytest.raises(ApplicationError) as err:
        await complete(request(provider))

    assert err.value.type == RETRYABLE
    assert not err.value.non_retryable
    assert err.value.message.startswith(f"{provider}: ")
    assert str(status) in err.value.message
    # Temporal owns the retries: the SDK sent exactly one request.
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("provider", "what"),
    [
        ("openai", "check OPENAI_API_KEY"),
        ("anthropic", "check ANTHROPIC_API_KEY"),
        ("gemini", "check GEMINI_API_KEY"),
        ("bedrock", "check the AWS credentials"),
    ],
)
async def test_401_fails_fast_with_a_clear_message(provider, what, fake, monkeypatch):
    use(monkeypatch, fake, provider)
    fake.script(Reply(status=401))

    with pytest.raises(ApplicationError) as err:
        await complete(request(provider))

    assert err.value.non_retryable
    assert err.value.type == FATAL
    assert err.value.message.startswith(f"{provider}: authentication failed (401): {what}")
    assert "\n" not in err.value.message
    assert len(fake.requests) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic", "bedrock"])
@pytest.mark.parametrize(("status", "words"), [(400, "request rejected"), (404, "not found")])
async def test_client_errors_are_not_retryable(provider, status, words, fake, monkeypatch):
    use(monkeypatch, fake, provider)
    fake.script(Reply(status=status, text="bad thing"))

    with pytest.raises(ApplicationError) as err:
        await complete(request(provider))

    assert err.value.non_retryable
    assert words in err.value.message


@pytest.mark.parametrize("provider", ALL)
async def test_timeout_is_retryable(provider, fake, monkeypatch):
    use(monkeypatch, fake, provider)
    fake.script(Reply(text="too late", delay=1.5))

    with pytest.raises(ApplicationError) as err:
        await complete(request(provider, timeout_s=0.3))

    assert err.value.type == RETRYABLE
    assert not err.value.non_retryable
    assert "timed out" in err.value.message


async def test_connection_refused_is_retryable(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    closed = FakeLLM().start()
    url = closed.url("/v1")
    closed.stop()

    with pytest.raises(ApplicationError) as err:
        await complete(request("openai", base_url=url))

    assert err.value.type == RETRYABLE
    assert "connection failed" in err.value.message


async def test_retry_after_becomes_temporals_next_retry_delay(fake, monkeypatch):
    use(monkeypatch, fake, "openai")
    fake.script(Reply(status=429, headers={"Retry-After": "7"}))

    with pytest.raises(ApplicationError) as err:
        await complete(request("openai"))

    assert err.value.next_retry_delay == timedelta(seconds=7)


async def test_missing_key_is_a_configuration_error(monkeypatch):
    with pytest.raises(ApplicationError) as err:
        await complete(request("gemini"))
    assert err.value.non_retryable
    assert "set GEMINI_API_KEY" in err.value.message

    with pytest.raises(ApplicationError) as err:
        await complete(request("openai"))
    assert err.value.non_retryable
    assert "set OPENAI_API_KEY" in err.value.message

    with pytest.raises(ApplicationError) as err:
        await complete(request("anthropic", base_url="http://127.0.0.1:9"))
    assert err.value.non_retryable
    assert err.value.message == "anthropic: no credentials: set ANTHROPIC_API_KEY"


async def test_openai_compatible_server_needs_no_key(fake, monkeypatch):
    # Ollama / vLLM: only a base URL, any key.
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url("/v1"))
    fake.script("local answer")

    result = await complete(request("openai", model="qwen2.5:3b"))

    assert result.text == "local answer"
    assert result.usage.cost_usd == 0.0  # not in the price table
    assert fake.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_json_mode_on_each_wire(fake, monkeypatch):
    for provider in ALL:
        use(monkeypatch, fake, provider)
    fake.default = Reply(text='{"a": 1}')

    for provider in ALL:
        await complete(request(provider, json_mode=True))

    by_api = {r.path: r for r in fake.requests}
    assert by_api[PATHS["openai"]].body["response_format"] == {"type": "json_object"}
    assert by_api[PATHS["gemini"]].body["response_format"] == {"type": "json_object"}
    assert "single JSON object" in by_api[PATHS["anthropic"]].system
    assert "single JSON object" in by_api[PATHS["bedrock"]].system


async def test_request_parameters_reach_the_wire(fake, monkeypatch):
    for provider in ("openai", "anthropic", "bedrock"):
        use(monkeypatch, fake, provider)

    await complete(request("openai", temperature=0.3, max_tokens=77))
    await complete(request("anthropic", temperature=0.3, max_tokens=77))
    await complete(request("bedrock", temperature=0.3, max_tokens=77))
    await complete(request("openai", model="o4-mini", max_tokens=50))

    openai_body, anthropic_body, bedrock_body, reasoning_body = (r.body for r in fake.requests)
    assert (openai_body["temperature"], openai_body["max_tokens"]) == (0.3, 77)
    assert anthropic_body["max_tokens"] == 77
    assert "temperature" not in anthropic_body  # rejected by the API version SDK 2.x speaks
    assert bedrock_body["inferenceConfig"] == {"maxTokens": 77, "temperature": 0.3}
    # Reasoning models take max_completion_tokens and no temperature.
    assert reasoning_body["max_completion_tokens"] == 50
    assert "temperature" not in reasoning_body
    assert fake.requests[0].headers["authorization"] == "Bearer sk-test"
    assert fake.requests[1].headers["authorization"] == "Bearer sk-ant-test"  # SDK 2.x
    assert fake.requests[2].headers["authorization"].startswith("AWS4-HMAC-SHA256")


def test_price_table():
    assert price_of("gpt-4o") == (2.50, 10.00)
    assert price_of("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # longest prefix wins
    assert price_of("gpt-4.1-nano") == (0.10, 0.40)
    assert price_of("claude-sonnet-4-20250514") == (3.00, 15.00)
    assert price_of("eu.anthropic.claude-3-5-haiku-20241022-v1:0") == (0.80, 4.00)
    assert price_of("amazon.nova-lite-v1:0") == (0.06, 0.24)
    assert price_of("models/gemini-2.5-flash") == (0.30, 2.50)
    assert price_of("claude-sonnet-4-6") == (3.00, 15.00)
    assert price_of("gpt-5.4-mini") is None  # not "gpt-5": a different model, unpriced
    assert price_of("claude-opus-4-7") is None  # not the older Opus 4 price
    assert price_of("my-local-llama") is None
    assert cost_usd("my-local-llama", 1000, 1000) == 0.0
    assert cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)


def test_price_override_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAFTLINE_PRICES", '{"my-local-llama": [1, 2], "gpt-4o": [1, 1]}')
    assert cost_usd("my-local-llama-8b", 1_000_000, 500_000) == pytest.approx(2.0)
    assert cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"GEMINI_API_KEY": "g"}, ("gemini", "gemini-2.5-flash")),
        ({"GEMINI_API_KEY": "g", "ANTHROPIC_API_KEY": "a"}, ("anthropic", "claude-haiku-4-5")),
        ({"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o"}, ("openai", "gpt-4.1-mini")),
        ({"OPENAI_BASE_URL": "http://localhost:11434/v1"}, ("openai", "gpt-4.1-mini")),
        ({"OPENAI_API_KEY": "o", "AWS_PROFILE": "dev"}, ("bedrock", "amazon.nova-lite-v1:0")),
        ({"AWS_ACCESS_KEY_ID": "x", "RAFTLINE_VERIFIER_PROVIDER": "anthropic"},
         ("anthropic", "claude-haiku-4-5")),
        ({"RAFTLINE_VERIFIER_PROVIDER": "openai", "RAFTLINE_VERIFIER_MODEL": "qwen2.5:3b"},
         ("openai", "qwen2.5:3b")),
    ],
)  # fmt: skip
def test_detection_order_and_forcing(env, expected):
    assert detect("L2", env) == expected


def test_detection_tiers_and_errors():
    env = {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    assert detect("L3", env) == ("openai", default_model("openai", "L3"))
    assert default_model("openai", "L3") != default_model("openai", "L2")
    assert configured_providers(env) == ["openai", "anthropic"]
    with pytest.raises(ApplicationError) as err:
        detect("L2", {"RAFTLINE_VERIFIER_PROVIDER": "cohere"})
    assert err.value.non_retryable
    assert "unknown" in err.value.message
