"""Synthetic ground-truth benchmark, the pipeline side: spec mapping, the model and activation stages
(resume), deterministic sample streams."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from pipeline.artifacts import ArtifactStore
from pipeline.config.synthetic import (
    HierarchySpec,
    SyntheticSpec,
    ZipfFiringSpec,
)
from pipeline.data.shards import SHARD_DIR, ShardIndex, read_shard, write_shard
from pipeline.fsutil import atomic_write_json
from pipeline.stages.context import StageContext
from tests.synthetic_fixtures import N_TOKENS, QUIET, REPO, TINY, built  # noqa: F401  (built: a fixture)

# -- (a) spec -> SyntheticModelConfig ---------------------------------------------------------------


def test_published_spec_maps_onto_sae_lens_config() -> None:
    from sae_lens.synthetic import (
        FoldedNormalMagnitudeConfig,
        LinearMagnitudeConfig,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    from pipeline.synthetic.model import model_config

    c = model_config(SyntheticSpec.published_16k())
    assert (c.num_features, c.hidden_dim, c.seed, c.dtype) == (16_384, 768, 42, "float32")
    assert c.firing_probability == ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-4)
    h = c.hierarchy
    assert h is not None
    assert (h.total_root_nodes, h.branching_factor, h.max_depth) == (128, 4, 3)
    assert h.mutually_exclusive_portion == 1.0 and h.scale_children_by_parent and not h.compensate_probabilities
    assert c.correlation is not None and (c.correlation.rank, c.correlation.correlation_scale) == (25, 0.1)
    assert c.orthogonalization is not None and (c.orthogonalization.num_steps, c.orthogonalization.lr) == (100, 3e-4)
    assert c.mean_firing_magnitudes == LinearMagnitudeConfig(start=5.0, end=4.0)
    assert c.std_firing_magnitudes == FoldedNormalMagnitudeConfig(mean=0.5, std=0.5)
    assert SyntheticModelConfig.from_dict(c.to_dict()) == c  # it survives sae-lens's own save format

    plain = model_config(SyntheticSpec(hierarchy=None, correlation=None, orthogonalization=None, bias=0.0))
    assert plain.hierarchy is None and plain.correlation is None and plain.orthogonalization is None
    assert plain.bias is False


def test_spec_is_strict_and_torch_free() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SyntheticSpec.model_validate({"num_featurs": 10})
    with pytest.raises(ValidationError, match="min_prob"):
        ZipfFiringSpec(max_prob=0.01, min_prob=0.1)
    code = "import sys, pipeline.config.synthetic; assert 'torch' not in sys.modules, 'spec imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# -- (b) model + activation shards, resume --------------------------------------------------------


def test_model_and_shards(built: dict[str, Any]) -> None:
    from pipeline.synthetic.model import load_model

    store: ArtifactStore = built["store"]
    model = load_model(store.path("synthetic_model", built["model"].key), "cpu")
    assert model.feature_dict.feature_vectors.shape == (64, 32)
    summary = store.manifest("synthetic_model", built["model"].key)["summary"]
    assert 0 < summary["true_l0_estimate"] < summary["expected_l0_without_hierarchy"]

    folder = store.path("synthetic_activations", built["acts"].key)
    index = ShardIndex.load(folder)
    assert (index.d_in, index.hook, index.dtype) == (32, "synthetic", "float32")
    assert [s.rows for s in index.shards] == [1024, 1024, 452] and index.total_rows == N_TOKENS
    acts = [read_shard(folder / SHARD_DIR, s) for s in index.shards]
    assert all(a.shape[1] == 32 and np.isfinite(a).all() for a in acts)
    assert not np.allclose(acts[0][:452], acts[2])  # each shard its own stream
    table = pq.read_table(folder / SHARD_DIR / index.shards[2].file)
    sample_index = table.column("seq_id").to_numpy() * 1024 + table.column("pos").to_numpy()
    np.testing.assert_array_equal(sample_index, np.arange(2048, 2500))
    # the rows are samples of the model: their mean matches a fresh draw's mean (bias + E[a] @ F)
    fresh = model.sample(20_000).numpy()
    assert np.abs(np.concatenate(acts).mean(0) - fresh.mean(0)).max() < 0.15 * np.abs(fresh).mean()


def test_activations_resume_after_interruption(built: dict[str, Any], tmp_path: Path) -> None:
    """A work dir holding shard 0 (+ a torn shard 1) resumes at shard 1 and writes the same shards."""
    from pipeline.synthetic.stages import run_activations

    store: ArtifactStore = built["store"]
    ref_index = ShardIndex.load(store.path("synthetic_activations", built["acts"].key))
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    marker = np.full((1024, 32), 3.0, dtype=np.float32)  # not what the model would sample
    info0 = write_shard(work, 0, marker, np.zeros(1024), np.zeros(1024), np.arange(1024))
    atomic_write_json(work / "done.json", [vars(info0)])
    (work / "shard-00001.parquet").write_bytes(b"torn")
    ctx = StageContext(built["acts"], built["cfg"], store, out, work, QUIET)
    summary = run_activations(ctx)
    assert summary == {"tokens": N_TOKENS, "shards": 3, "d_in": 32}
    index = ShardIndex.load(out)
    assert index.shards[0].sha256 == info0.sha256  # kept, not resampled
    assert [s.sha256 for s in index.shards[1:]] == [s.sha256 for s in ref_index.shards[1:]]  # deterministic
    assert json.loads((work / "done.json").read_text())[-1]["file"] == "shard-00002.parquet"


def test_sample_streams_are_deterministic_and_leave_global_rng_alone() -> None:
    from pipeline.synthetic.model import build_model, sample

    spec = SyntheticSpec(num_features=32, hidden_dim=16, hierarchy=None, orthogonalization=None, correlation=None)
    model = build_model(spec, "cpu")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = sample(model, 300, 5)
    b, _ = sample(model, 300, 5)
    c, _ = sample(model, 300, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.rand(1), before)
    assert hashlib.sha256(a.numpy().tobytes()).hexdigest() == hashlib.sha256(b.numpy().tobytes()).hexdigest()




def test_sampling_device_defaults_to_the_cpu_and_stays_out_of_the_keys() -> None:
    from pipeline.synthetic.model import sampling_device

    spec = SyntheticSpec(num_features=32, hidden_dim=16)
    assert "sampling_device" not in spec.model_dump()  # keys written before the setting existed still hold
    assert sampling_device(spec, "auto") == "cpu"  # the same vectors on every machine
    on_device = SyntheticSpec(num_features=32, hidden_dim=16, sampling_device="device")
    assert SyntheticSpec.model_validate(on_device.model_dump()).sampling_device == "device"  # keyed, and read back
    assert sampling_device(on_device, "cpu") == "cpu"
    assert sampling_device(on_device, "auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValidationError, match="sampling_device"):
        SyntheticSpec(sampling_device="gpu")
