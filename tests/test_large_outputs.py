"""A 10 MB agent output runs through a pipeline: external storage keeps it out of history."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverClaim, StorageDriverStoreContext
from temporalio.converter import StorageDriverWorkflowInfo as WorkflowTarget

from raftline.activities.registry import collect
from raftline.client import RaftlineClient, temporal_client
from raftline.codec import new_key
from raftline.embedded import EmbeddedServer
from raftline.models import RunStatus, Task
from raftline.storage import (
    DEFAULT_THRESHOLD,
    FileStorageDriver,
    PayloadMissing,
    StorageConfigError,
    external_storage_from_env,
    s3_driver,
)
from raftline.verifiers.rules import RULES_VERSION
from raftline.worker import build_worker
from raftline.workflows.pipeline import VerifiedPipeline
from tests.conftest import spec
from tests.deploy_steps import big_text

MB = 1024 * 1024


@pytest_asyncio.fixture
async def stored(
    temporal_server: EmbeddedServer,
    queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[RaftlineClient]:
    """Client and worker with the default store (files under RAFTLINE_HOME)."""
    monkeypatch.setenv("RAFTLINE_HOME", str(tmp_path))
    monkeypatch.delenv("RAFTLINE_STORAGE", raising=False)
    monkeypatch.delenv("RAFTLINE_STORAGE_THRESHOLD", raising=False)
    if getattr(request, "param", None) == "encrypted":
        monkeypatch.setenv("RAFTLINE_ENCRYPTION_KEY", new_key())
    client = await temporal_client(temporal_server.address)
    async with build_worker(client, queue, collect(["tests.deploy_steps"])):
        yield RaftlineClient(client, queue)


def pipeline() -> Any:
    return spec(
        [
            {"name": "draft", "goal": "write the archive", "activity": "big_output",
             "params": {"mb": 10}},
            {"name": "check", "goal": "measure the archive", "activity": "measure_committed"},
        ]
    )  # fmt: skip


@pytest.fixture
def cpu_hogs() -> Iterator[None]:
    """Two processes that keep both cores busy: the worker's workflow tasks must still
    yield in time (the L1 rules on a 10 MB output run outside the workflow task)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("stored", ["plain", "encrypted"], indirect=True)
async def test_ten_megabyte_output_runs_through(
    stored: RaftlineClient, tmp_path: Path, cpu_hogs: None
) -> None:
    expected = big_text(10 * MB)
    digest = hashlib.sha256(expected.encode()).hexdigest()
    handle = await stored.start(pipeline(), Task(goal="archive the observations"))
    result = await handle.result()

    assert result.status is RunStatus.COMPLETED, result.error
    draft, check = result.checkpoints
    assert draft.sha256 == digest and draft.output == expected
    # The next step's activity got the full committed output, not a reference.
    assert f"draft has {len(expected)} characters, sha256 {digest}" in check.output

    # History holds references only: far below Temporal's 2 MB payload limit. No workflow
    # task failed (the deadlock detector fires after 2 s without a yield).
    history = await stored.client.get_workflow_handle(handle.id).fetch_history()
    sizes = [len(e.SerializeToString()) for e in history.events]
    assert max(sizes) < 64 * 1024, max(sizes)
    assert not [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    # The L1 rules checked it in a local activity, named by their version.
    verdict = next(e.verdict for e in result.trace if e.type == "verdict" and e.step == "draft")
    assert verdict is not None and verdict.prompt_version == RULES_VERSION
    stored_files = [p for p in (tmp_path / "payloads").rglob("*") if p.is_file()]
    assert stored_files and max(p.stat().st_size for p in stored_files) > 10 * MB
    encrypted = stored.client.data_converter.payload_codec.encrypting  # type: ignore[union-attr]
    if encrypted:  # the store holds ciphertext only
        big = max(stored_files, key=lambda p: p.stat().st_size)
        assert b"records observation" not in big.read_bytes()

    # Queries (answered by a worker replaying the history) and the trace still work.
    checkpoints = await handle._handle.query(VerifiedPipeline.checkpoints)
    assert checkpoints[0].sha256 == digest
    trace = await handle.trace()
    committed = [e for e in trace if e.type == "committed"]
    assert [e.sha256 for e in committed][0] == digest


# ---------------------------------------------------------------- the drivers


async def test_file_driver_round_trip_and_clear_errors(tmp_path: Path) -> None:
    driver = FileStorageDriver(tmp_path)
    ctx = StorageDriverStoreContext(target=WorkflowTarget(namespace="ns/../x", id="wf"))
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 1000 + b'"')
    [claim] = await driver.store(ctx, [payload])
    [again] = await driver.store(ctx, [payload])
    assert claim == again  # content-addressed: stored once
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].is_relative_to(tmp_path)  # no path escape
    assert (await driver.retrieve(None, [claim]))[0] == payload  # type: ignore[arg-type]

    elsewhere = FileStorageDriver(tmp_path / "other")
    with pytest.raises(PayloadMissing, match="RAFTLINE_STORAGE"):
        await elsewhere.retrieve(None, [claim])  # type: ignore[arg-type]
    files[0].write_bytes(b"tampered")
    with pytest.raises(PayloadMissing, match="corrupt"):
        await driver.retrieve(None, [claim])  # type: ignore[arg-type]
    bad = StorageDriverClaim(claim_data={"namespace": "ns", "sha256": "../../etc/passwd"})
    with pytest.raises(PayloadMissing, match="malformed"):
        await driver.retrieve(None, [bad])  # type: ignore[arg-type]


def test_storage_settings(tmp_path: Path) -> None:
    default = external_storage_from_env({"RAFTLINE_HOME": str(tmp_path)})
    assert default is not None and default.payload_size_threshold == DEFAULT_THRESHOLD
    assert isinstance(default.drivers[0], FileStorageDriver)
    assert default.drivers[0].root == tmp_path / "payloads"
    custom = external_storage_from_env(
        {"RAFTLINE_STORAGE": f"file://{tmp_path}/p", "RAFTLINE_STORAGE_THRESHOLD": "1000"}
    )
    assert custom is not None and custom.payload_size_threshold == 1000
    assert custom.drivers[0].root == tmp_path / "p"  # type: ignore[attr-defined]
    assert external_storage_from_env({"RAFTLINE_STORAGE": "off"}) is None
    for bad in ({"RAFTLINE_STORAGE": "ftp://x"}, {"RAFTLINE_STORAGE_THRESHOLD": "big"}):
        with pytest.raises(StorageConfigError):
            external_storage_from_env(bad)


class FakeS3:
    """The three boto3 calls the S3 adapter makes, in memory."""

    class Missing(Exception):
        response = {"Error": {"Code": "404"}}

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803
        self.objects[(Bucket, Key)] = Body

    def head_object(self, Bucket: str, Key: str) -> None:  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise self.Missing()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        import io

        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


async def test_s3_driver_uses_bucket_and_prefix() -> None:
    fake = FakeS3()
    driver = s3_driver("s3://raft-payloads/prod/runs", client=fake)
    ctx = StorageDriverStoreContext(target=WorkflowTarget(namespace="default", id="wf-1"))
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b"1" * 5000)
    [claim] = await driver.store(ctx, [payload])
    [(bucket, key)] = fake.objects
    assert bucket == "raft-payloads" and key.startswith("prod/runs/v0/ns/default/")
    assert (await driver.retrieve(None, [claim]))[0] == payload  # type: ignore[arg-type]
