"""Artifact store and shards: atomic commit, manifests, corruption detected on read."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipeline.artifacts import ArtifactStore, CorruptArtifactError
from pipeline.data.shards import CorruptShardError, ShardIndex, read_shard, write_shard
from pipeline.training.stream import ShardStream


def make_shards(folder: Path, n_shards: int = 5, rows: int = 40, d: int = 6) -> tuple[ShardIndex, np.ndarray]:
    rng = np.random.default_rng(0)
    infos, all_rows = [], []
    for i in range(n_shards):
        acts = rng.standard_normal((rows - (i == n_shards - 1) * 7, d)).astype(np.float32)
        all_rows.append(acts)
        n = len(acts)
        infos.append(write_shard(folder, i, acts, np.arange(n), np.full(n, i), np.arange(n)))
    index = ShardIndex(d_in=d, dtype="float32", hook="blocks.0.hook_resid_post", context_size=8, rows_per_context=7, shards=infos)
    index.save(folder)
    return index, np.concatenate(all_rows)


def test_commit_writes_manifest_and_verifies(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    staging = store.staging_dir("train", "abc")
    (staging / "sub").mkdir()
    (staging / "sub" / "w.bin").write_bytes(b"x" * 1000)
    final = store.commit("train", "abc", staging, {"params": {"lr": 1}})
    assert final == tmp_path / "train" / "abc" and not staging.exists()
    manifest = store.manifest("train", "abc")
    assert manifest["files"]["sub/w.bin"]["bytes"] == 1000
    assert manifest["versions"]["torch"].startswith("2.13")
    assert store.is_complete("train", "abc")
    assert store.verified_file("train", "abc", "sub/w.bin").read_bytes() == b"x" * 1000


def test_truncated_and_altered_files_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    staging = store.staging_dir("train", "k")
    (staging / "w.bin").write_bytes(bytes(range(256)) * 4)
    store.commit("train", "k", staging, {})
    f = tmp_path / "train" / "k" / "w.bin"
    f.write_bytes(f.read_bytes()[:100])
    assert store.problems("train", "k") == [f"{f}: 100 bytes, manifest says 1024"]
    f.write_bytes(bytes(reversed(range(256))) * 4)  # same size, other content
    assert store.is_complete("train", "k")  # size check is the cheap test...
    assert "sha256 differs" in store.problems("train", "k", full=True)[0]  # ...the full one sees it
    with pytest.raises(CorruptArtifactError, match="checksum mismatch"):
        store.verified_file("train", "k", "w.bin")
    moved = store.quarantine("train", "k")
    assert moved is not None and moved.exists() and not (tmp_path / "train" / "k").exists()


def test_a_file_is_hashed_once_per_process_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grouped eval job reads the same prep tensors for every SAE: the second read must not re-hash,
    and a file changed since (new mtime) must be hashed again and caught."""
    import os

    from pipeline import artifacts

    store = ArtifactStore(tmp_path)
    staging = store.staging_dir("eval_prep", "p")
    (staging / "t.bin").write_bytes(b"y" * 4096)
    store.commit("eval_prep", "p", staging, {})
    hashed: list[Path] = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda path: hashed.append(path) or real(path))
    for _ in range(3):
        store.verified_file("eval_prep", "p", "t.bin")
    assert len(hashed) == 1
    f = tmp_path / "eval_prep" / "p" / "t.bin"
    f.write_bytes(b"z" * 4096)  # same size, other content, so only the hash can tell
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(CorruptArtifactError, match="checksum mismatch"):
        store.verified_file("eval_prep", "p", "t.bin")
    assert len(hashed) == 2


def test_shards_roundtrip_and_open_with_pyarrow_dataset(tmp_path: Path) -> None:
    index, rows = make_shards(tmp_path)
    loaded = np.concatenate([read_shard(tmp_path, s) for s in ShardIndex.load(tmp_path).shards])
    np.testing.assert_array_equal(loaded, rows)
    (tmp_path / "shards.json").unlink()  # an artifact keeps the index beside the shards folder
    table = pads.dataset(str(tmp_path), format="parquet").to_table()
    assert table.num_rows == index.total_rows == len(rows)
    assert table.schema.field("act").type.list_size == 6


def test_corrupt_shard_detected_on_read(tmp_path: Path) -> None:
    index, _ = make_shards(tmp_path, n_shards=1)
    f = tmp_path / index.shards[0].file
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="corrupt"):
        read_shard(tmp_path, index.shards[0])
    f.write_bytes(bytes(data[:50]))
    with pytest.raises(CorruptShardError, match="50 bytes"):
        read_shard(tmp_path, index.shards[0])


def test_stream_is_seekable_and_covers_every_row_once_per_epoch(tmp_path: Path) -> None:
    index, rows = make_shards(tmp_path)
    stream = ShardStream(tmp_path, index, seed=3, window=2)
    full = list(itertools.islice(stream.batches(0, 16), 24))  # the stream is endless: 24 batches > 1 epoch
    epoch = np.concatenate(full)[: index.total_rows]
    # every row exactly once in the first epoch
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, rows))
    # resuming at any batch boundary gives the same batches as the uninterrupted stream
    for start in (0, 3, 7, 11):
        resumed = stream.batches(start * 16, 16)
        for expected in full[start : start + 4]:
            np.testing.assert_array_equal(next(resumed), expected)
    # a different seed gives a different order
    other = next(ShardStream(tmp_path, index, seed=4, window=2).batches(0, 16))
    assert not np.array_equal(other, full[0])


def test_shards_open_with_hf_datasets(tmp_path: Path) -> None:
    import datasets

    index, rows = make_shards(tmp_path, n_shards=2)
    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "shard-*.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == index.total_rows
    np.testing.assert_allclose(np.asarray(ds[0]["act"], dtype=np.float32), rows[0])
