"""Payload encryption: an AES-256-GCM PayloadCodec and the codec server for the Web UI.

With RAFTLINE_ENCRYPTION_KEY set on the client and the workers, every payload raftline
writes to Temporal (task, step outputs, checkpoints, trace, memo, summaries, failure
messages) is encrypted before it leaves the process; Temporal's history holds only
ciphertext. Each payload names the id of the key that sealed it, so keys rotate: put
the new key in RAFTLINE_ENCRYPTION_KEY and the old ones in RAFTLINE_ENCRYPTION_KEYS
(decrypt only) until the runs they sealed have aged out of retention.

A key is 32 random bytes, written as base64 or hex, optionally prefixed with its id:
`RAFTLINE_ENCRYPTION_KEY=2026-05:q0J0...=`. Without an id, the id is a hash of the key.
`python codec.py keygen` prints a new one.

Never imported inside the workflow sandbox: the data converter runs outside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
CIPHER = b"AES-256-GCM"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_ENV = "RAFTLINE_ENCRYPTION_KEY"
OLD_KEYS_ENV = "RAFTLINE_ENCRYPTION_KEYS"
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyConfigError(ValueError):
    """An encryption key setting is malformed."""


class DecryptionError(ValueError):
    """A payload cannot be decrypted: unknown key id, or tampered ciphertext."""


def parse_key(text: str) -> tuple[str, bytes]:
    """`[ID:]KEY` with KEY 32 bytes as hex or base64 → (id, key bytes)."""
    text = text.strip()
    key_id, sep, material = text.partition(":")
    if not sep:
        key_id, material = "", text
    elif not _ID.match(key_id):
        raise KeyConfigError("a key id may only hold letters, digits, '.', '_' and '-'")
    key = _decode_key_material(material)
    if len(key) != 32:
        raise KeyConfigError(f"an AES-256 key is 32 bytes, this one is {len(key)}")
    return key_id or default_key_id(key), key


def _decode_key_material(material: str) -> bytes:
    if re.fullmatch(r"[0-9a-fA-F]{64}", material):
        return bytes.fromhex(material)
    padded = material + "=" * (-len(material) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError("a key is 32 bytes as 64 hex digits or base64") from None


def default_key_id(key: bytes) -> str:
    """A stable, non-secret name for a key: a domain-separated hash prefix."""
    return "k" + hashlib.sha256(b"raftline-key-id\0" + key).hexdigest()[:12]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the whole serialized payload; the key id travels in metadata.

    Without a current key it passes payloads through (a guard that still explains an
    encrypted payload it cannot open, instead of 'unknown encoding').
    """

    def __init__(self, current: tuple[str, bytes] | None, old: Iterable[tuple[str, bytes]] = ()):
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in old:
            self._keys[key_id] = AESGCM(key)
        self.key_id: str | None = None
        if current is not None:
            self.key_id = current[0]
            self._keys[current[0]] = AESGCM(current[1])

    @property
    def encrypting(self) -> bool:
        return self.key_id is not None

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def encode_one(self, payload: Payload) -> Payload:
        if self.key_id is None or payload.metadata.get("encoding") == ENCODING:
            return payload
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.key_id].encrypt(
            nonce, payload.SerializeToString(), self.key_id.encode()
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode(), "cipher": CIPHER},
            data=nonce + sealed,
        )

    def decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        aes = self._keys.get(key_id)
        if aes is None:
            have = ", ".join(self.key_ids) or "none"
            raise DecryptionError(
                f"payload is encrypted with key id {key_id!r}, which is not configured "
                f"(configured: {have}): set {KEY_ENV}, or add the old key to {OLD_KEYS_ENV}"
            )
        data = payload.data
        try:
            plain = aes.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"payload sealed with key id {key_id!r} fails authentication: wrong key "
                "or tampered data"
            ) from None
        out = Payload()
        out.ParseFromString(plain)
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]


def codec_from_env(env: Mapping[str, str] | None = None) -> EncryptionCodec:
    """The codec configured by RAFTLINE_ENCRYPTION_KEY(S); a pass-through guard without."""
    env = os.environ if env is None else env
    current_text = env.get(KEY_ENV, "").strip()
    try:
        current = parse_key(current_text) if current_text else None
    except KeyConfigError as exc:
        raise KeyConfigError(f"{KEY_ENV}: {exc}") from None
    old: list[tuple[str, bytes]] = []
    for i, item in enumerate(re.split(r"[\s,]+", env.get(OLD_KEYS_ENV, "").strip())):
        if item:
            try:
                old.append(parse_key(item))
            except KeyConfigError as exc:
                raise KeyConfigError(f"{OLD_KEYS_ENV}[{i}]: {exc}") from None
    return EncryptionCodec(current, old)


# ---------------------------------------------------------------- the codec server


def transform_json(body: bytes, fn: Any) -> bytes:
    """Temporal's codec server protocol: {"payloads": [Payload as proto JSON, ...]}."""
    message = json_format.Parse(body or b"{}", Payloads())
    out = Payloads(payloads=[fn(p) for p in message.payloads])
    return json_format.MessageToJson(out).encode()


def make_handler(
    codec: EncryptionCodec, origins: Sequence[str], token: str | None
) -> type[BaseHTTPRequestHandler]:
    allowed = {o.rstrip("/") for o in origins}

    class Handler(BaseHTTPRequestHandler):
        server_version = "raftline-codec/1"

        def _cors(self) -> None:
            origin = self.headers.get("Origin", "").rstrip("/")
            if "*" in allowed:
                self.send_header("Access-Control-Allow-Origin", origin or "*")
            elif origin in allowed:
                self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization"
            )
            self.send_header("Access-Control-Max-Age", "600")

        def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(204)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") in ("/health", ""):
                self._reply(200, b'{"ok": true}')
            else:
                self._reply(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            if token is not None and self.headers.get("Authorization", "") != f"Bearer {token}":
                self._reply(401, b'{"error": "unauthorized"}')
                return
            if path.endswith("/encode"):
                fn = codec.encode_one
            elif path.endswith("/decode"):
                fn = codec.decode_one
            else:
                self._reply(404, b'{"error": "POST /encode or /decode"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = transform_json(self.rfile.read(length), fn)
            except (json_format.ParseError, DecryptionError, ValueError) as exc:
                self._reply(400, json.dumps({"error": str(exc)}).encode())
                return
            self._reply(200, body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # payload traffic is nobody's log material

    return Handler


def codec_server(
    codec: EncryptionCodec,
    host: str = "127.0.0.1",
    port: int = 8081,
    origins: Sequence[str] = ("http://localhost:8233", "http://localhost:8080"),
    token: str | None = None,
) -> ThreadingHTTPServer:
    """A codec server (not yet serving): call serve_forever(), or serve_in_thread()."""
    server = ThreadingHTTPServer((host, port), make_handler(codec, origins, token))
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="codec-server", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["keygen"]:
        print(new_key())
        return 0
    print("usage: python codec.py keygen", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
