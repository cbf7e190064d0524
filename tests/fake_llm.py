"""A local fake LLM server speaking three wire formats, scripted per test.

- OpenAI Chat Completions: POST .../chat/completions (any prefix: /v1, /v1beta/openai, ...)
- Anthropic Messages: POST /v1/messages
- Bedrock Converse: POST /model/{modelId}/converse (the SigV4 signature is not checked)

Responses come from a queue (`script(...)`) in order, then from `responder` (a function of
the request, for judges that must read the prompt) or `default`. Every request is recorded
(path, headers, JSON body) for assertions.

    with FakeLLM() as fake:
        fake.script(Reply(status=429), Reply(text="hello", usage=(12, 3)))
        os.environ["OPENAI_BASE_URL"] = fake.url("/v1")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class Reply:
    text: str = "ok"
    status: int = 200
    delay: float = 0.0  # seconds before answering: longer than the client's timeout = timeout
    usage: tuple[int, int] = (10, 5)  # input, output tokens
    body: Any = None  # raw JSON body instead of the wire-format one
    raw: str | None = None  # a body that is not JSON at all (an HTML proxy page, say)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    path_contains: str | None = None  # only for requests whose path contains this


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def api(self) -> str:
        if self.path.endswith("/chat/completions"):
            return "openai"
        if self.path.endswith("/messages"):
            return "anthropic"
        return "bedrock" if self.path.endswith("/converse") else "unknown"

    @property
    def system(self) -> str:
        """The system prompt, whatever the wire format."""
        body = self.body if isinstance(self.body, dict) else {}
        if self.api == "openai":
            return "".join(m["content"] for m in body.get("messages", []) if m["role"] == "system")
        if self.api == "anthropic":
            return body.get("system") or ""
        return "".join(b.get("text", "") for b in body.get("system", []))

    @property
    def prompt(self) -> str:
        """The user message, whatever the wire format."""
        body = self.body if isinstance(self.body, dict) else {}
        texts: list[str] = []
        for m in body.get("messages", []):
            if m["role"] != "user":
                continue
            content = m["content"]
            if isinstance(content, str):
                texts.append(content)
            else:
                texts.extend(b.get("text", "") for b in content)
        return "".join(texts)


_BEDROCK_CODES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _success(api: str, model: str, reply: Reply) -> dict[str, Any]:
    i, o = reply.usage
    if api == "openai":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o},
        }
    if api == "anthropic":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": i, "output_tokens": o},
        }
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": i, "outputTokens": o, "totalTokens": i + o},
        "metrics": {"latencyMs": 1},
    }


def _error(api: str, reply: Reply) -> tuple[dict[str, Any], dict[str, str]]:
    message = reply.text if reply.text != "ok" else f"fake error {reply.status}"
    if api == "anthropic":
        kind = _ANTHROPIC_TYPES.get(reply.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}, {}
    if api == "bedrock":
        code = _BEDROCK_CODES.get(reply.status, "InternalServerException")
        return {"message": message}, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"}
    return {"error": {"message": message, "type": "fake_error", "code": reply.status}}, {}


class FakeLLM:
    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self.responder: Callable[[Recorded], Reply] | None = None
        self.requests: list[Recorded] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ scripting

    def script(self, *replies: Reply | str) -> FakeLLM:
        with self._lock:
            self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)
        return self

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self.default = Reply()
        self.responder = None

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            for i, reply in enumerate(self._queue):
                if reply.path_contains is None or reply.path_contains in rec.path:
                    del self._queue[i]
                    return reply
        return self.responder(rec) if self.responder else self.default

    def of(self, api: str) -> list[Recorded]:
        """The recorded requests of one wire API: openai, anthropic or bedrock."""
        return [r for r in self.requests if r.api == api]

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.server_address[1]

    def url(self, prefix: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                path = unquote(self.path.split("?", 1)[0])
                rec = Recorded("POST", path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(rec)
                reply = fake._next(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                if rec.api == "unknown":
                    self._send(404, {"error": {"message": f"no route {path}"}}, {})
                    return
                if reply.raw is not None:
                    self._send_raw(reply.status, reply.raw.encode(), reply.content_type)
                elif reply.body is not None:
                    self._send(reply.status, reply.body, reply.headers)
                elif reply.status >= 400:
                    payload, headers = _error(rec.api, reply)
                    self._send(reply.status, payload, headers | reply.headers)
                else:
                    model = body.get("model", "") if isinstance(body, dict) else ""
                    if rec.api == "bedrock":
                        model = path.removeprefix("/model/").removesuffix("/converse")
                    self._send(reply.status, _success(rec.api, model, reply), reply.headers)

            def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a sleeping handler must not hold up stop()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def verdict_json(
    verdict: str = "PASS",
    error_class: str | None = None,
    confidence: float = 0.9,
    reason: str = "meets the goal",
    hint: str | None = None,
) -> str:
    """A judge reply in the strict verdict format."""
    return json.dumps(
        {
            "verdict": verdict,
            "error_class": error_class,
            "confidence": confidence,
            "reason": reason,
            "hint": hint,
        }
    )


# Every variable through which a provider SDK could find real credentials or endpoints.
PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_PROFILE",
    "GEMINI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "RAFTLINE_VERIFIER_PROVIDER",
    "RAFTLINE_VERIFIER_MODEL",
    "RAFTLINE_AGENT_PROVIDER",
    "RAFTLINE_AGENT_MODEL",
    "RAFTLINE_BEDROCK_ENDPOINT_URL",
    "RAFTLINE_GEMINI_BASE_URL",
    "RAFTLINE_PRICES",
)


def isolated_env(home: str) -> tuple[list[str], dict[str, str]]:
    """(variables to delete, variables to set) so no test reaches a real provider."""
    return list(PROVIDER_ENV), {
        "AWS_CONFIG_FILE": f"{home}/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": f"{home}/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1",
        "ANTHROPIC_CONFIG_DIR": f"{home}/anthropic",
    }


def isolate(monkeypatch: Any, home: str) -> None:
    """Apply isolated_env through pytest's monkeypatch (undone after the test)."""
    drop, put = isolated_env(home)
    for name in drop:
        monkeypatch.delenv(name, raising=False)
    for name, value in put.items():
        monkeypatch.setenv(name, value)


def provider_env(fake: FakeLLM, provider: str) -> dict[str, str]:
    """The environment that points one provider's real SDK at the fake server."""
    if provider == "openai":
        return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.url("/v1")}
    if provider == "anthropic":
        return {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": fake.url()}
    if provider == "gemini":
        return {
            "GEMINI_API_KEY": "gm-test",
            "RAFTLINE_GEMINI_BASE_URL": fake.url("/v1beta/openai/"),
        }
    if provider == "bedrock":
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "RAFTLINE_BEDROCK_ENDPOINT_URL": fake.url(),
        }
    raise ValueError(provider)
