"""The committed-output store: content-addressed, checked on read, cached per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftline.blobs import BlobMissing, BlobStore, _Files, sha256_text


def store(root: Path, cache_bytes: int = 1 << 20) -> BlobStore:
    return BlobStore(_Files(root), cache_bytes=cache_bytes)


async def test_round_trip_across_processes(tmp_path: Path) -> None:
    name = await store(tmp_path).put("committed text")
    assert name == sha256_text("committed text")
    # Another process (a fresh store on the same folder) reads it from the files.
    assert await store(tmp_path).get(name) == "committed text"


async def test_a_missing_or_corrupt_blob_is_an_error_never_input(tmp_path: Path) -> None:
    name = await store(tmp_path).put("the real output")
    with pytest.raises(BlobMissing, match="is not in"):
        await store(tmp_path).get(sha256_text("never stored"))
    for path in tmp_path.rglob(name):
        path.write_bytes(b"a substituted output")
    with pytest.raises(BlobMissing, match="corrupt"):
        await store(tmp_path).get(name)


async def test_reads_come_from_the_cache_once_seen(tmp_path: Path) -> None:
    s = store(tmp_path)
    name = await s.put("seen once")
    for path in tmp_path.rglob(name):
        path.unlink()  # gone from the files: only the cache can answer now
    assert await s.get(name) == "seen once"
    assert s.get_sync(name) == "seen once"


async def test_the_cache_is_bounded(tmp_path: Path) -> None:
    s = store(tmp_path, cache_bytes=8 * 100)
    names = [await s.put(f"{i:03d}" + "x" * 97) for i in range(20)]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(BlobMissing):
        await s.get(names[0])  # evicted long ago
    assert await s.get(names[-1]) == "019" + "x" * 97
