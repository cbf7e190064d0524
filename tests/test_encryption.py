"""Payload encryption: history holds ciphertext only; the CLI and the codec server decrypt."""

from __future__ import annotations

import base64
import binascii
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from raftline.activities.registry import collect
from raftline.client import ConfigError, RaftlineClient, temporal_client
from raftline.codec import (
    ENCODING,
    DecryptionError,
    EncryptionCodec,
    KeyConfigError,
    codec_from_env,
    codec_server,
    default_key_id,
    new_key,
    parse_key,
    serve_in_thread,
)
from raftline.embedded import EmbeddedServer, free_port, temporal_binary
from raftline.models import Task
from raftline.worker import build_worker
from tests.conftest import PYTHON, ROOT, cli_env, spec

SECRET = "the launch codeword is PURPLE-OTTER-42"
KEY = new_key()


def steps() -> list[dict[str, Any]]:
    # Each step repeats the task (and so the secret) in its output: it is in the
    # input, every output, the checkpoints, the trace's inputs and the result.
    return [
        {"name": "draft", "goal": "draft", "params": {"text": "Draft for {task}."}},
        {"name": "final", "goal": "final", "params": {"text": "Final memo: {task}."}},
    ]


def history_json(server: EmbeddedServer, workflow_id: str) -> str:
    out = subprocess.run(
        [temporal_binary(), "workflow", "show", "--workflow-id", workflow_id,
         "--address", server.address, "--output", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(ROOT / "starter.py"), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def contains_anywhere(doc: str, needle: str) -> bool:
    """The needle as text, or inside any base64 field (how history JSON carries payloads)."""
    if needle in doc:
        return True

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        if isinstance(node, str) and len(node) >= 8:
            try:
                return needle.encode() in base64.b64decode(node, validate=True)
            except (binascii.Error, ValueError):
                return False
        return False

    return walk(json.loads(doc))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))
    return tmp_path


@pytest_asyncio.fixture
async def encrypted(
    temporal_server: EmbeddedServer, queue: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RaftlineClient]:
    """A client and an in-process worker, both with RAFTLINE_ENCRYPTION_KEY set."""
    monkeypatch.setenv("RAFTLINE_ENCRYPTION_KEY", f"test-1:{KEY}")
    client = await temporal_client(temporal_server.address)
    async with build_worker(client, queue, collect()):
        yield RaftlineClient(client, queue)


async def test_history_is_ciphertext_and_the_cli_decrypts(
    temporal_server: EmbeddedServer, encrypted: RaftlineClient, home: Path
) -> None:
    result = await encrypted.run(spec(steps()), Task(goal=f"Plan Q3: {SECRET}"))
    assert result.success and SECRET in (result.output or "")

    raw = history_json(temporal_server, result.workflow_id)
    assert base64.b64encode(ENCODING).decode() in raw  # payloads are sealed ...
    assert base64.b64encode(b"test-1").decode() in raw  # ... naming their key id
    assert not contains_anywhere(raw, SECRET)
    assert not contains_anywhere(raw, "PURPLE-OTTER")

    env = cli_env(temporal_server, home, RAFTLINE_ENCRYPTION_KEY=f"test-1:{KEY}")
    for command in ("result", "trace"):
        out = cli(command, result.workflow_id, "--json", env=env)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        if command == "result":
            assert SECRET in doc["output"]
        else:
            assert [e["type"] for e in doc["events"]][-1] == "run_completed"

    # Without the key: a clear one-line error, no traceback, no plaintext.
    out = cli("result", result.workflow_id, "--json", env=cli_env(temporal_server, home))
    assert out.returncode == 2, out.stderr
    assert "test-1" in out.stderr and "RAFTLINE_ENCRYPTION_KEY" in out.stderr
    assert "Traceback" not in out.stderr and SECRET not in out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


async def test_failed_runs_keep_their_messages_encrypted(
    temporal_server: EmbeddedServer, encrypted: RaftlineClient
) -> None:
    """Failure messages (which may quote outputs) are sealed too; the client reads them."""
    pipeline = spec(
        [
            {"name": "draft", "goal": "draft", "params": {"text": "Draft for {task}."}},
            {"name": "send", "goal": "send", "params": {"faults": {0: "RAISE_FATAL"}}},
        ]
    )
    result = await encrypted.run(pipeline, Task(goal=SECRET))
    assert not result.success and "scripted fatal failure" in (result.error or "")
    raw = history_json(temporal_server, result.workflow_id)
    assert not contains_anywhere(raw, "scripted fatal failure")
    assert not contains_anywhere(raw, SECRET)


async def test_without_a_key_the_same_check_finds_the_secret(
    temporal_server: EmbeddedServer, client: RaftlineClient, queue: str, home: Path
) -> None:
    """The control: the history check above would catch a plaintext secret."""
    plain = await temporal_client(temporal_server.address)
    async with build_worker(plain, queue, collect()):
        result = await RaftlineClient(plain, queue).run(spec(steps()), Task(goal=SECRET))
    assert contains_anywhere(history_json(temporal_server, result.workflow_id), SECRET)


async def test_rotated_key_still_reads_old_runs(
    temporal_server: EmbeddedServer, encrypted: RaftlineClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await encrypted.start(spec(steps()), Task(goal=SECRET))
    await handle.result()
    monkeypatch.setenv("RAFTLINE_ENCRYPTION_KEY", f"test-2:{new_key()}")
    monkeypatch.setenv("RAFTLINE_ENCRYPTION_KEYS", f"test-1:{KEY}")
    rotated: Client = await temporal_client(temporal_server.address)
    result = await RaftlineClient(rotated, encrypted.task_queue).get(handle.id).result()
    assert SECRET in (result.output or "")


# ---------------------------------------------------------------- the codec itself


async def test_codec_round_trip_rotation_and_tamper() -> None:
    old, new = parse_key(f"old:{new_key()}"), parse_key(new_key())
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(SECRET).encode())
    sealed = (await EncryptionCodec(old).encode([payload]))[0]
    assert (
        sealed.metadata["encoding"] == ENCODING and sealed.metadata["encryption-key-id"] == b"old"
    )
    assert SECRET.encode() not in sealed.data
    # A new current key with the old one kept for reading.
    assert (await EncryptionCodec(new, [old]).decode([sealed]))[0] == payload
    with pytest.raises(DecryptionError, match="'old'"):
        await EncryptionCodec(new).decode([sealed])
    with pytest.raises(DecryptionError, match="RAFTLINE_ENCRYPTION_KEY"):
        await EncryptionCodec(None).decode([sealed])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(DecryptionError, match="authentication"):
        await EncryptionCodec(old).decode([tampered])
    # No key: payloads pass through untouched.
    assert (await EncryptionCodec(None).encode([payload]))[0] == payload


def test_key_formats_and_bad_settings() -> None:
    raw = bytes(range(32))
    assert parse_key(raw.hex()) == (default_key_id(raw), raw)
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == (
        default_key_id(raw),
        raw,
    )
    assert parse_key(f"2026-05:{base64.b64encode(raw).decode()}") == ("2026-05", raw)
    with pytest.raises(KeyConfigError, match="32 bytes"):
        parse_key(base64.b64encode(b"short").decode())
    with pytest.raises(KeyConfigError, match="RAFTLINE_ENCRYPTION_KEYS\\[1\\]"):
        codec_from_env({"RAFTLINE_ENCRYPTION_KEYS": f"{KEY},nope"})
    assert not codec_from_env({}).encrypting


async def test_bad_key_is_a_config_error(
    temporal_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLINE_ENCRYPTION_KEY", "not-a-key")
    with pytest.raises(ConfigError, match="RAFTLINE_ENCRYPTION_KEY"):
        await temporal_client(temporal_server.address)


# ---------------------------------------------------------------- the codec server


@pytest.fixture
def codec_url() -> Iterator[str]:
    server = codec_server(
        EncryptionCodec(parse_key(f"test-1:{KEY}")),
        port=0,
        origins=["http://localhost:8233"],
        token="s3cret-token",
    )
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post(url: str, body: dict[str, Any], token: str | None = "s3cret-token") -> Any:
    headers = {"Content-Type": "application/json", "X-Namespace": "default"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_codec_server_protocol_cors_and_auth(codec_url: str) -> None:
    plain = {
        "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
        "data": base64.b64encode(json.dumps(SECRET).encode()).decode(),
    }
    sealed = post(f"{codec_url}/encode", {"payloads": [plain]})["payloads"][0]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
    opened = post(f"{codec_url}/decode", {"payloads": [sealed]})["payloads"][0]
    assert json.loads(base64.b64decode(opened["data"])) == SECRET

    # The Web UI's preflight from an allowed origin.
    req = urllib.request.Request(
        f"{codec_url}/decode",
        method="OPTIONS",
        headers={"Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
        assert "X-Namespace" in resp.headers["Access-Control-Allow-Headers"]
    with pytest.raises(urllib.error.HTTPError) as err:
        post(f"{codec_url}/decode", {"payloads": [sealed]}, token=None)
    assert err.value.code == 401


def test_codec_server_command(tmp_path: Path) -> None:
    """`python starter.py codec-server` serves /decode for the UI's origin."""
    port = free_port()
    env = cli_env(None, tmp_path, RAFTLINE_ENCRYPTION_KEY=f"test-1:{KEY}")
    proc = subprocess.Popen(
        [PYTHON, str(ROOT / "starter.py"), "codec-server", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f":{port}" in first and "test-1" in first, first + (
            proc.stderr.read() if proc.stderr else ""
        )
        sealed = EncryptionCodec(parse_key(f"test-1:{KEY}")).encode_one(
            Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')
        )
        body = {
            "payloads": [
                {
                    "metadata": {
                        k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()
                    },
                    "data": base64.b64encode(sealed.data).decode(),
                }
            ]
        }
        opened = post(f"http://127.0.0.1:{port}/decode", body, token=None)
        assert base64.b64decode(opened["payloads"][0]["data"]) == b'"hello"'
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Without a key it refuses to start, with a one-line reason.
    out = cli("codec-server", "--port", "0", env=cli_env(None, tmp_path))
    assert out.returncode == 2 and "RAFTLINE_ENCRYPTION_KEY" in out.stderr
