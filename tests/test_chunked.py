"""Bounded-chunk tensor files: nothing written is bigger than the bound, and what is read back is
bit-identical, whole or streamed. Also: no ``torch.save`` anywhere in the project's code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from evals.contract import Prepared, TensorSink
from pipeline.data.chunked import ChunkedReader, ChunkedWriter, write_tensor

REPO = Path(__file__).resolve().parent.parent


def test_tensor_larger_than_the_bound_is_cut_and_reloads_bit_identical(tmp_path: Path) -> None:
    bound = 1 << 20  # 1 MiB
    g = torch.Generator().manual_seed(0)
    big = torch.randn(700, 16, 64, generator=g)  # 2.87 MB of float32: at least 3 parts
    big[5, 3, 7] = float("nan")  # bit-identical must hold for NaN and -0.0 too
    big[6, 0, 0] = -0.0
    writer = ChunkedWriter(tmp_path, "acts", bound)
    for start in range(0, 700, 97):  # appends that straddle part boundaries
        writer.append(big[start : start + 97])
    writer.close()

    files = sorted((tmp_path / "acts").glob("part-*.safetensors"))
    assert len(files) >= 3
    assert all(f.stat().st_size <= bound + 1024 for f in files)  # + the safetensors header
    index = json.loads((tmp_path / "acts" / "index.json").read_text())
    assert index["shape"] == [700, 16, 64] and index["dtype"] == "float32"

    back = ChunkedReader(tmp_path, "acts").read()
    assert back.dtype == big.dtype and back.shape == big.shape
    assert torch.equal(back.view(torch.int32), big.view(torch.int32))  # bit for bit
    streamed = list(ChunkedReader(tmp_path, "acts").batches(64))
    assert [len(b) for b in streamed] == [64] * 10 + [60]
    assert torch.equal(torch.cat(streamed).view(torch.int32), big.view(torch.int32))
    for rows, sizes in ((300, [300, 300, 100]), (700, [700]), (1000, [700])):  # batches wider than a part
        streamed = list(ChunkedReader(tmp_path, "acts").batches(rows))
        assert [len(b) for b in streamed] == sizes
        assert torch.equal(torch.cat(streamed).view(torch.int32), big.view(torch.int32))
    for rows in (64, 300):  # reuse: the joined batches share one tensor, each valid until the next
        reused = [b.clone() for b in ChunkedReader(tmp_path, "acts").batches(rows, reuse=True)]
        plain = list(ChunkedReader(tmp_path, "acts").batches(rows))
        assert len(reused) == len(plain) and all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(reused, plain, strict=True))
    joined = [b for b in ChunkedReader(tmp_path, "acts").batches(300, reuse=True)]
    assert joined[0].data_ptr() == joined[1].data_ptr()  # both span parts: one tensor, overwritten


def test_dtypes_and_small_tensors_round_trip(tmp_path: Path) -> None:
    for name, t in {
        "ids": torch.arange(1000, dtype=torch.int64).reshape(100, 10),
        "half": torch.randn(33, 5).to(torch.bfloat16),
        "rng": torch.get_rng_state(),
        "scalar": torch.tensor(3.5),
    }.items():
        write_tensor(tmp_path, name, t, max_bytes=256)
        back = ChunkedReader(tmp_path, name).read()
        assert torch.equal(back, t.reshape(1) if t.dim() == 0 else t), name


def test_rows_bigger_than_the_bound_and_mixed_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"one row is 4000 bytes, over the chunk bound of 1000.*max_chunk_mib"):
        ChunkedWriter(tmp_path, "x", 1000).append(torch.zeros(2, 1000))
    writer = ChunkedWriter(tmp_path, "y", 1000)
    writer.append(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="differ from earlier"):
        writer.append(torch.zeros(2, 4))


def test_prepared_reads_through_a_verifying_opener(tmp_path: Path) -> None:
    sink = TensorSink(tmp_path, max_bytes=4096)
    for _ in range(5):
        sink.append("a/b", torch.ones(10, 50))
    sink.close()
    opened: list[str] = []

    def opener(rel: str) -> Path:
        opened.append(rel)
        return tmp_path / rel

    prepared = Prepared(tmp_path, {"k": 1}, opener)
    assert prepared.names() == ["a/b"]
    assert prepared.tensor("a/b").shape == (50, 50)
    assert "a/b/index.json" in opened and sum(r.startswith("a/b/part-") for r in opened) >= 3


def test_no_torch_save_in_the_project() -> None:
    """Unbounded ``torch.save`` writes are what kill long eval runs; the project never calls it."""
    pattern = re.compile(r"\btorch\.save\(|\bfrom torch import save\b")
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("pipeline", "evals", "bench", "slurm", "tests")
        for path in (REPO / folder).rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "test_chunked.py"
    ]
    assert offenders == []
