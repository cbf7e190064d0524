"""Large payloads: Temporal external storage, so a 10 MB agent output is no problem.

Temporal refuses payloads over 2 MB and histories over ~50 MB. raftline's data converter
moves every payload at or above a threshold (RAFTLINE_STORAGE_THRESHOLD, default
256 KiB) out of the history into a store, and leaves a small reference in its place.
The reference is resolved again on read by every client and worker, so the workflow,
its queries and the CLI see the full values.

RAFTLINE_STORAGE picks the store:
- unset: files under $RAFTLINE_HOME/payloads (the embedded default; on a cluster,
  give every worker and client the same volume, as docker-compose.yml does);
- `file:///path`: files under that directory;
- `s3://bucket/prefix`: Amazon S3 (or S3-compatible: AWS_ENDPOINT_URL_S3) through
  temporalio.contrib.aws.s3driver, with boto3's usual credentials;
- `off`: no external storage (payloads over 2 MB then fail).

Payloads are content-addressed (sha256 of the encoded bytes) and encrypted first when
RAFTLINE_ENCRYPTION_KEY is set, so the store only ever holds ciphertext. Nothing is
deleted: prune files older than your namespace's retention period.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from raftline.settings import raftline_home

STORAGE_ENV = "RAFTLINE_STORAGE"
THRESHOLD_ENV = "RAFTLINE_STORAGE_THRESHOLD"
DEFAULT_THRESHOLD = 256 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class StorageConfigError(ValueError):
    """RAFTLINE_STORAGE or its threshold is malformed."""


class PayloadMissing(RuntimeError):
    """A referenced payload is not in the store this process can see."""


class FileStorageDriver(StorageDriver):
    """Payloads as files: ROOT/NAMESPACE/ab/abcdef... (sha256 of the payload bytes)."""

    def __init__(self, root: str | Path, name: str = "raftline.files") -> None:
        self.root = Path(root)
        self._name = name

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return "raftline.files"

    def _path(self, namespace: str, digest: str) -> Path:
        if not _HEX64.match(digest):
            raise PayloadMissing(f"malformed payload reference {digest!r}")
        return self.root / (_SAFE.sub("_", namespace) or "_") / digest[:2] / digest

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        target = context.target
        namespace = getattr(target, "namespace", None) or "_"
        claims = []
        for payload in payloads:
            data = payload.SerializeToString()
            digest = hashlib.sha256(data).hexdigest()
            await asyncio.to_thread(self._write, self._path(namespace, digest), data)
            claims.append(
                StorageDriverClaim(
                    claim_data={"namespace": namespace, "sha256": digest, "size": str(len(data))}
                )
            )
        return claims

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists() and path.stat().st_size == len(data):
            return  # content-addressed: the same bytes are already there
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data):x}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: readers never see a partial payload

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return [await asyncio.to_thread(self._read, claim) for claim in claims]

    def _read(self, claim: StorageDriverClaim) -> Payload:
        digest = claim.claim_data.get("sha256", "")
        path = self._path(claim.claim_data.get("namespace", "_"), digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise PayloadMissing(
                f"external payload {digest[:16]}... is not in {self.root}: every client and "
                f"worker needs the same store (one RAFTLINE_HOME volume, or {STORAGE_ENV}="
                "s3://bucket/prefix)"
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise PayloadMissing(f"external payload {path} is corrupt (sha256 mismatch)")
        payload = Payload()
        payload.ParseFromString(data)
        return payload


class Boto3S3Client:
    """temporalio's S3StorageDriverClient over plain boto3 (in threads), with a key prefix.

    boto3 is already a raftline dependency (Bedrock); aioboto3 would be one more.
    """

    def __init__(self, prefix: str = "", client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self._s3 = client
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(
            self._s3.put_object, Bucket=bucket, Key=self._prefix + key, Body=data
        )

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        def head() -> bool:
            try:
                self._s3.head_object(Bucket=bucket, Key=self._prefix + key)
            except Exception as exc:  # botocore's ClientError, without importing botocore
                code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

        return await asyncio.to_thread(head)

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        def get() -> bytes:
            body = self._s3.get_object(Bucket=bucket, Key=self._prefix + key)["Body"]
            return bytes(body.read())

        return await asyncio.to_thread(get)

    def describe(self) -> Mapping[str, str]:
        region = getattr(getattr(self._s3, "meta", None), "region_name", None)
        return {"prefix": self._prefix, "region": str(region)}


def s3_driver(url: str, client: Any = None) -> StorageDriver:
    from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient

    parsed = urlparse(url)
    if not parsed.netloc:
        raise StorageConfigError(f"{STORAGE_ENV}={url!r}: expected s3://bucket/prefix")

    class _Client(Boto3S3Client, S3StorageDriverClient):
        pass

    return S3StorageDriver(client=_Client(parsed.path, client), bucket=parsed.netloc)


def default_root(env: Mapping[str, str]) -> Path:
    home = env.get("RAFTLINE_HOME")
    return (Path(home) if home else raftline_home()) / "payloads"


def external_storage_from_env(env: Mapping[str, str] | None = None) -> ExternalStorage | None:
    """The ExternalStorage RAFTLINE_STORAGE asks for (files under RAFTLINE_HOME by default)."""
    env = os.environ if env is None else env
    url = env.get(STORAGE_ENV, "").strip()
    raw_threshold = env.get(THRESHOLD_ENV, "").strip()
    try:
        threshold = int(raw_threshold) if raw_threshold else DEFAULT_THRESHOLD
    except ValueError:
        raise StorageConfigError(f"{THRESHOLD_ENV}={raw_threshold!r}: expected bytes") from None
    if threshold < 0:
        raise StorageConfigError(f"{THRESHOLD_ENV} must not be negative")
    if url.lower() in ("off", "none", "false", "0"):
        return None
    driver: StorageDriver
    if not url:
        driver = FileStorageDriver(default_root(env))
    elif url.startswith("file://"):
        driver = FileStorageDriver(Path(urlparse(url).path))
    elif url.startswith("s3://"):
        # New payloads go to S3; references written earlier to files stay readable.
        s3 = s3_driver(url)
        return ExternalStorage(
            drivers=[s3, FileStorageDriver(default_root(env))],
            driver_selector=lambda _ctx, _payload: s3,
            payload_size_threshold=threshold,
        )
    else:
        raise StorageConfigError(
            f"{STORAGE_ENV}={url!r}: expected s3://bucket/prefix, file:///path or off"
        )
    return ExternalStorage(drivers=[driver], payload_size_threshold=threshold)
