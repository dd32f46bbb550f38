"""Every model sae-lens can build, or has saved, runs as a `synthetic:` section: the keys form with a
forest larger than the features (filled breadth-first), the `sae_lens:` form with any
`SyntheticModelConfig`, and the `saved:` form keyed by the saved model's content."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from sae_lens.synthetic import (
    ExponentialMagnitudeConfig,
    HierarchyConfig,
    LinearFiringProbabilityConfig,
    SyntheticModel,
    SyntheticModelConfig,
)

from pipeline.artifacts import ArtifactStore
from pipeline.config.synthetic import HierarchySpec, SyntheticSpec
from pipeline.executors import stage_runner
from pipeline.plan import build_plan
from pipeline.synthetic.model import MODEL_DIR, load_model, model_config
from tests.synthetic_fixtures import QUIET, cfg_for


def _count(nodes: list) -> int:
    return sum(1 + _count(list(n.children)) for n in nodes)


def test_forest_larger_than_the_features_is_filled_breadth_first() -> None:
    """64 roots x (1 + 4 + 16 + 64) = 5,440 nodes wanted, 2,048 features: sae-lens stops when they run out."""
    spec = SyntheticSpec(num_features=2048, hidden_dim=16, hierarchy=HierarchySpec(n_roots=64, branching=4, depth=3),
                         correlation=None, orthogonalization=None)  # fmt: skip
    model = SyntheticModel(model_config(spec), device="cpu")
    assert model.hierarchy is not None and _count(model.hierarchy.roots) == 2048
    assert model.sample(8).shape == (8, 16)


def test_any_sae_lens_config_passes_through_unchanged() -> None:
    cfg = SyntheticModelConfig(
        num_features=40,
        hidden_dim=12,
        firing_probability=LinearFiringProbabilityConfig(max_prob=0.3, min_prob=0.02),
        hierarchy=HierarchyConfig(total_root_nodes=3, branching_factor=(2, 3), max_depth=2, mutually_exclusive_min_depth=1),
        mean_firing_magnitudes=ExponentialMagnitudeConfig(start=3.0, end=1.0),
        std_firing_magnitudes=0.2,
        bias=False,
        seed=5,
    )
    assert model_config(SyntheticSpec(sae_lens=cfg.to_dict())) == cfg
    unseeded = {**cfg.to_dict(), "seed": None}
    assert model_config(SyntheticSpec(sae_lens=unseeded, seed=9)).seed == 9  # never an unseeded model


def test_bad_sae_lens_values_fail_in_one_line_naming_the_field() -> None:
    base = {"num_features": 40, "hidden_dim": 12}
    with pytest.raises(ValueError, match=r"^synthetic\.sae_lens\.hierarchy: branching_factor must be at least 2$"):
        model_config(SyntheticSpec(sae_lens={**base, "hierarchy": {"total_root_nodes": 2, "branching_factor": 1}}))
    with pytest.raises(ValueError, match=r"^synthetic\.sae_lens\.firing_probability: .*nope"):
        model_config(SyntheticSpec(sae_lens={**base, "firing_probability": {"generator_name": "nope"}}))
    with pytest.raises(ValueError, match=r"^synthetic\.sae_lens\.hidden_dims: not a SyntheticModelConfig field"):
        model_config(SyntheticSpec(sae_lens={**base, "hidden_dims": 3}))
    with pytest.raises(ValidationError, match="sae_lens.hidden_dim: a positive integer"):
        SyntheticSpec(sae_lens={"num_features": 40})
    with pytest.raises(ValidationError, match="remove num_features"):
        SyntheticSpec(sae_lens=base, num_features=10)
    assert SyntheticSpec.model_validate(SyntheticSpec(sae_lens=base).model_dump()).sae_lens == base  # survives a dump


def test_saved_model_runs_as_saved_and_is_keyed_by_content(tmp_path: Path) -> None:
    saved = tmp_path / "benchmark_model"
    original = SyntheticModel(SyntheticModelConfig(num_features=24, hidden_dim=8, seed=1), device="cpu")
    original.save(saved)
    raw = cfg_for(SyntheticSpec(saved=str(saved), eval_samples=1000, probe_samples=1000)).model_dump()
    from pipeline.loading import parse_config

    cfg = parse_config(raw)
    model_stage = build_plan(cfg)[0]
    store = ArtifactStore(tmp_path / "artifacts")
    folder = stage_runner.execute(cfg, store, model_stage, QUIET)
    loaded = load_model(folder, "cpu")
    assert torch.equal(loaded.feature_dict.feature_vectors, original.feature_dict.feature_vectors)
    assert (folder / MODEL_DIR / "synthetic_model_config.json").exists()

    SyntheticModel(SyntheticModelConfig(num_features=24, hidden_dim=8, seed=2), device="cpu").save(saved)
    assert build_plan(cfg)[0].key != model_stage.key  # another saved model: another key
    with pytest.raises(ValueError, match="synthetic.saved: .* is not a folder"):
        build_plan(parse_config({**raw, "synthetic": {"saved": str(tmp_path / "missing")}}))
