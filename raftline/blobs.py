"""Committed outputs, stored once and addressed by the sha256 of their text.

A step sees the committed outputs of its ancestors. Sending them inside every step's
input made a 200-step pipeline store its content 70 times over (every input carried
every earlier output). Instead the worker that ran a step attempt puts its output here,
keyed by the output's sha256, and a later step's worker fetches what it needs by that
key: the history holds each output once (as the activity's result) and the store once.

The store is the one RAFTLINE_STORAGE names, like external payloads: files under
RAFTLINE_HOME/payloads by default (or a `file://` directory every worker shares), or
S3. With RAFTLINE_ENCRYPTION_KEY set it holds ciphertext only. A fetched text is
checked against its sha256, so a corrupt or substituted blob is an error, never input.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from temporalio.api.common.v1 import Payload

from raftline.codec import EncryptionCodec, codec_from_env
from raftline.storage import STORAGE_ENV, StorageConfigError, default_root


class BlobMissing(RuntimeError):
    """A committed output is not in the store this process sees (or is corrupt)."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Backend(Protocol):
    where: str

    def write(self, name: str, data: bytes) -> None: ...
    def read(self, name: str) -> bytes | None: ...


# Below this size a local file is written on the event loop: the thread hop costs more
# than the I/O (about 1 ms of CPU per step on a busy worker).
INLINE_IO_BYTES = 64 * 1024


class _Files:
    local = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if path.exists():
            return  # content-addressed: the same text is already there
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.{id(data):x}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader never sees a partial blob

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None


class _S3:
    local = False

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.s3, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/blobs/" if prefix.strip("/") else "blobs/"
        self.where = f"s3://{bucket}/{self.prefix}"

    def write(self, name: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def read(self, name: str) -> bytes | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except Exception as exc:  # botocore's ClientError, without importing botocore
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return bytes(body.read())


# Texts this process wrote or read lately. A step of a long sequential pipeline sees
# every earlier output: without the cache each step re-read them all (a thread hop, a
# read and a sha256 each), so the time per step grew with the step's position. The
# store is content-addressed, so a cached text never goes stale.
CACHE_BYTES = 64 * 1024 * 1024


class BlobStore:
    """put(text) -> sha256; get(sha256) -> text. Thread-safe, async (I/O on threads)."""

    def __init__(
        self,
        backend: _Backend,
        codec: EncryptionCodec | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self._backend = backend
        self._codec = codec
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cached = 0
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()

    def _remember(self, sha256: str, text: str) -> None:
        size = len(text)
        if size > self._cache_bytes // 8:
            return  # a few huge outputs would flush everything else
        with self._lock:
            if sha256 in self._cache:
                self._cache.move_to_end(sha256)
                return
            self._cache[sha256] = text
            self._cached += size
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def _recall(self, sha256: str) -> str | None:
        with self._lock:
            text = self._cache.get(sha256)
            if text is not None:
                self._cache.move_to_end(sha256)
            return text

    @property
    def where(self) -> str:
        return self._backend.where

    def _seal(self, text: str) -> bytes:
        data = text.encode("utf-8")
        if self._codec is None or not self._codec.encrypting:
            return data
        return self._codec.encode_one(Payload(data=data)).SerializeToString()

    def _open(self, data: bytes) -> str:
        if self._codec is not None and self._codec.key_ids:
            payload = Payload()
            try:
                payload.ParseFromString(data)
            except Exception:  # noqa: BLE001 - plain text written without a key
                payload = None
            if payload is not None and payload.metadata.get("encoding"):
                return self._codec.decode_one(payload).data.decode("utf-8")
        return data.decode("utf-8")

    def put_sync(self, text: str) -> str:
        name = sha256_text(text)
        self._backend.write(name, self._seal(text))
        self._remember(name, text)
        return name

    def get_sync(self, sha256: str) -> str:
        cached = self._recall(sha256)
        if cached is not None:
            return cached
        data = self._backend.read(sha256)
        if data is None:
            raise BlobMissing(
                f"committed output {sha256[:16]}... is not in {self.where}: every worker and "
                f"client needs the same store (one RAFTLINE_HOME volume, or {STORAGE_ENV})"
            )
        text = self._open(data)
        if sha256_text(text) != sha256:
            raise BlobMissing(f"committed output {sha256[:16]}... in {self.where} is corrupt")
        self._remember(sha256, text)
        return text

    async def put(self, text: str) -> str:
        if getattr(self._backend, "local", False) and len(text) < INLINE_IO_BYTES:
            return self.put_sync(text)
        return await asyncio.to_thread(self.put_sync, text)

    async def get_many(self, names: list[str]) -> list[str]:
        """Texts by sha256, in order: cached ones at once, the others fetched together."""
        found = [self._recall(n) for n in names]
        missing = [i for i, text in enumerate(found) if text is None]
        if missing:
            fetched = await asyncio.gather(*(self.get(names[i]) for i in missing))
            for i, text in zip(missing, fetched, strict=True):
                found[i] = text
        return [text for text in found if text is not None]

    async def get(self, sha256: str) -> str:
        cached = self._recall(sha256)  # no thread hop for what this process has seen
        if cached is not None:
            return cached
        return await asyncio.to_thread(self.get_sync, sha256)


def blob_store(env: Mapping[str, str] | None = None) -> BlobStore:
    """The store RAFTLINE_STORAGE names (one per configuration, shared by the process)."""
    env = os.environ if env is None else env
    return _store(
        env.get(STORAGE_ENV, ""),
        env.get("RAFTLINE_HOME", ""),
        env.get("RAFTLINE_ENCRYPTION_KEY", ""),
        env.get("RAFTLINE_ENCRYPTION_KEYS", ""),
    )


@lru_cache(maxsize=8)
def _store(url: str, home: str, key: str, old: str) -> BlobStore:
    env = {
        STORAGE_ENV: url,
        "RAFTLINE_HOME": home,
        "RAFTLINE_ENCRYPTION_KEY": key,
        "RAFTLINE_ENCRYPTION_KEYS": old,
    }
    codec = codec_from_env(env)
    url = url.strip()
    backend: _Backend
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StorageConfigError(f"{STORAGE_ENV}={url!r}: expected s3://bucket/prefix")
        backend = _S3(parsed.netloc, parsed.path)
    elif url.startswith("file://"):
        backend = _Files(Path(urlparse(url).path) / "blobs")
    else:  # unset or "off": committed outputs still need a store; files under the home
        backend = _Files(default_root({"RAFTLINE_HOME": home} if home else {}) / "blobs")
    return BlobStore(backend, codec)
