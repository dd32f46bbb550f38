"""The synthetic eval: parity with sae-lens's own synthetic eval, the LOO variant, the supervised probe
baseline (the eval's prep), and a whole synthetic comparison through the local executor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.artifacts import ArtifactStore
from pipeline.config.synthetic import (
    HierarchySpec,
    SyntheticSpec,
    ZipfFiringSpec,
)
from pipeline.dag import Stage
from pipeline.executors import stage_runner
from pipeline.loading import parse_config
from pipeline.plan import build_plan, stage
from pipeline.progress import Reporter
from tests.synthetic_fixtures import QUIET, TINY, built, cfg_for, model_stage  # noqa: F401  (built: a fixture)

# -- (c)/(d) eval parity with sae-lens, LOO variant ------------------------------------------------


def train_tiny_sae(store: ArtifactStore, model_key: str, folder: Path) -> None:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.recipes.coder import build_coder
    from pipeline.recipes.saving import save_coder
    from pipeline.synthetic.model import load_model

    model = load_model(store.path("synthetic_model", model_key), "cpu")
    torch.manual_seed(0)
    coder = build_coder(RecipeSpec(), 32, 128, 6, seed=0)
    opt = torch.optim.Adam(coder.parameters(), lr=3e-3)
    for step in range(300):
        x = model.sample(256)
        if step == 0:
            coder.init_b_dec(x)
        out = coder.training_loss(x, step, 300)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        coder.normalize_decoder()
    save_coder(coder, folder)


@pytest.fixture(scope="module")
def trained(built: dict[str, Any]) -> Stage:
    """A committed `train` artifact holding a tiny BatchTopK SAE trained on the tiny model."""
    store: ArtifactStore = built["store"]
    train = stage("train", "train:tiny-s0", {"tiny": 1, "seed": 0}, {"activations": built["acts"]})
    staging = store.staging_dir("train", train.key)
    train_tiny_sae(store, built["model"].key, staging / "sae")
    store.commit("train", train.key, staging, {"label": train.label, "summary": {}})
    return train


def prep_stage(model: Stage) -> Stage:
    """The synthetic eval's prep (the probe baseline), as the plan builds it."""
    return stage("eval_prep", "eval_prep:synthetic", {"eval": "synthetic", "params": {}}, {"synthetic_model": model})


def eval_stage(built: dict[str, Any], train: Stage, loo_tau: float | None) -> dict[str, Any]:
    prep = prep_stage(built["model"])
    stage_runner.execute(built["cfg"], built["store"], prep, QUIET)
    ev = stage(
        "eval_synthetic",
        f"eval_synthetic:tiny-s0{'' if loo_tau is None else '+loo'}",
        {"params": {"loo_tau": loo_tau}},
        {"sae": train, "prep:all": prep, "synthetic_model": built["model"]},
    )
    folder = stage_runner.execute(built["cfg"], built["store"], ev, QUIET)
    return json.loads((folder / "synthetic.json").read_text())


def test_eval_matches_sae_lens_own_eval(built: dict[str, Any], trained: Stage) -> None:
    """Our stage (saepipe coder, full recipe path) == sae-lens's eval of sae-lens's own load of the SAE."""
    from sae_lens import SAE
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    from evals.synthetic.evaluate import flat_metrics
    from pipeline.synthetic.model import chunk_rows, derive_seed, load_model, seeded

    ours = eval_stage(built, trained, None)
    assert ours["variant"] == "plain" and ours["sae_loader"] == "saepipe_coder" and ours["eval_samples"] == 4000
    store: ArtifactStore = built["store"]
    sae = SAE.load_from_disk(str(store.path("train", trained.key) / "sae"), device="cpu")
    model = load_model(store.path("synthetic_model", built["model"].key), "cpu")
    with seeded(derive_seed(TINY.seed, "eval")):
        ref = eval_sae_on_synthetic_data(sae, model.feature_dict, model.activation_generator, 4000, chunk_rows(model))
    theirs = flat_metrics(ref.to_dict())
    for name in ("f1", "precision", "recall", "mcc", "uniqueness", "explained_variance", "l0", "true_l0", "dead_latents"):
        assert ours["metrics"][name] == pytest.approx(theirs[name], abs=1e-6), name
    m = ours["metrics"]
    assert m["explained_variance"] > 0.5 and m["mcc"] > 0.3 and 0 < m["f1"] <= 1  # it learned something
    assert 0 < m["l0"] < 20


def test_loo_variant(built: dict[str, Any], trained: Stage, tmp_path: Path) -> None:
    from evals.synthetic.evaluate import flat_metrics, load_sae_for_eval, score
    from pipeline.synthetic.model import derive_seed, load_model

    plain = eval_stage(built, trained, None)["metrics"]
    loo = eval_stage(built, trained, 0.0)
    assert loo["variant"] == "loo" and loo["loo_tau"] == 0.0
    m = loo["metrics"]
    assert m["l0"] <= plain["l0"] + 1e-9
    assert m["true_l0"] == plain["true_l0"]  # same samples
    assert all(np.isfinite(v) for v in m.values())
    assert 0 <= m["f1"] <= 1 and 0 <= m["explained_variance"] <= 1
    # the same pruning applied to sae-lens's load of the SAE (no saepipe coder file) agrees
    store: ArtifactStore = built["store"]
    folder = tmp_path / "sae"
    shutil.copytree(store.path("train", trained.key) / "sae", folder)
    (folder / "saepipe_coder.safetensors").unlink()
    sae, loader = load_sae_for_eval(folder, 0.0)
    assert loader == "sae_lens"
    model = load_model(store.path("synthetic_model", built["model"].key), "cpu")
    other = flat_metrics(score(sae, model, 4000, derive_seed(TINY.seed, "eval")))
    assert other["l0"] == pytest.approx(m["l0"], rel=1e-4)
    assert other["f1"] == pytest.approx(m["f1"], abs=1e-3)


# -- (e) probe baseline ----------------------------------------------------------------------------


def test_probe_baseline_on_easy_model(tmp_path: Path) -> None:
    """16 features in 32 dims, no hierarchy/correlation: nearly separable, so the probes must be good."""
    easy = SyntheticSpec(
        num_features=16,
        hidden_dim=32,
        hierarchy=None,
        correlation=None,
        orthogonalization=None,
        firing=ZipfFiringSpec(exponent=0.5, max_prob=0.3, min_prob=0.05),
        seed=3,
        probe_samples=4000,
    )
    store = ArtifactStore(tmp_path)
    cfg = cfg_for(easy)
    m = model_stage(easy)
    stage_runner.execute(cfg, store, m, QUIET)
    probe = prep_stage(m)
    folder = stage_runner.execute(cfg, store, probe, QUIET)
    result = json.loads((folder / "meta.json").read_text())
    assert result["metrics"]["f1"] > 0.9, result["metrics"]
    assert result["metrics"]["features_with_test_positives"] == 16
    assert len(result["per_feature_f1"]) == 16 and result["test_samples"] == 800
    assert "meta.json" in store.manifest("eval_prep", probe.key)["files"]  # checksummed like every artifact


def test_synthetic_comparison_end_to_end_with_seeds_and_loo(tmp_path: Path) -> None:
    """The whole synthetic DAG through the local executor: model, shards, 2 recipes x 2 seeds, plain and
    LOO evals, the probe baseline, and a report with intervals over seeds."""
    from pipeline.executors.local import run_local

    raw = {
        "name": "synth_tiny",
        "synthetic": {"num_features": 64, "hidden_dim": 32, "hierarchy": None, "correlation": None,
                      "orthogonalization": None, "eval_samples": 4000, "probe_samples": 4000},
        "activations": {"n_tokens": 40_960, "contexts_per_shard": 8},
        "saes": [
            {"name": "btk", "d_sae": 64, "k": 4, "lr": 3e-3, "batch_size": 512, "seeds": [0, 1]},
            {"name": "mat", "d_sae": 64, "k": 4, "lr": 3e-3, "batch_size": 512, "seeds": [0, 1],
             "recipe": {"matryoshka": {"levels": [16, 64]}}},
        ],
        "evals": {"synthetic": {"loo_tau": 0.0}},
    }
    cfg = parse_config(raw)
    store = ArtifactStore(tmp_path)
    outcomes = run_local(cfg, build_plan(cfg), store, set(), Reporter(enabled=False))
    assert {o.status for o in outcomes} == {"ran"}, [(o.stage.label, o.status, o.error[-300:]) for o in outcomes]
    summary = json.loads((tmp_path / "synth_tiny" / "summary.json").read_text())
    assert {r["sae"] for r in summary["saes"]} == {"btk", "btk+loo", "mat", "mat+loo"}
    by_spec = {a["sae"]: a for a in summary["by_spec"]}
    assert by_spec["btk"]["n_seeds"] == 2 and by_spec["btk"]["f1"]["ci95"] > 0
    assert by_spec["btk+loo"]["l0"]["mean"] <= by_spec["btk"]["l0"]["mean"] + 1e-9
    assert 0.5 < summary["probe_baseline"]["metrics"]["f1"] <= 1.0
    report = (tmp_path / "synth_tiny" / "report.md").read_text()
    assert "Supervised probe baseline" in report and "±" in report


# -- (f) the probe ceiling converges --------------------------------------------------------------

SMALL = SyntheticSpec(
    num_features=24,
    hidden_dim=16,
    hierarchy=HierarchySpec(n_roots=2, branching=3, depth=1),
    correlation=None,
    orthogonalization=None,
    firing=ZipfFiringSpec(exponent=0.5, max_prob=0.3, min_prob=0.02),
    seed=11,
)


def test_effective_rates_match_the_measured_firing_rates() -> None:
    """Children fire only under their parent and one at a time: the analytic rates track the samples."""
    from evals.synthetic.rates import effective_rates
    from pipeline.synthetic.model import build_model, sample

    model = build_model(SMALL, "cpu")
    rates = effective_rates(model)
    drawn = model.activation_generator.firing_probabilities
    _, feats = sample(model, 200_000, 1, with_features=True)
    assert feats is not None
    measured = (feats > 0).float().mean(0)
    children = [c.feature_index for r in model.hierarchy.roots for c in r.children]
    assert bool((rates[children] < 0.5 * drawn[children]).all())  # the hierarchy cuts them down...
    assert torch.allclose(rates, measured, rtol=0.15, atol=2e-3)  # ...to what is measured


def test_probe_sample_count_gives_every_feature_100_positives_and_converges() -> None:
    from evals.synthetic.prepare import TRAIN_FRACTION, run_probes
    from evals.synthetic.rates import probe_sample_count
    from pipeline.synthetic.model import build_model

    model = build_model(SMALL, "cpu")
    n = probe_sample_count(model, None, 10**7, TRAIN_FRACTION)
    assert probe_sample_count(model, 1234, 10**7, TRAIN_FRACTION) == 1234  # the config's count wins
    result = run_probes(model, n, 5)
    assert result["min_train_positives"] >= 100 and result["features_below_target"] == 0
    assert result["converged"] and result["lbfgs_max_iterations"] > 1


def test_doubling_the_probe_samples_moves_f1_by_less_than_001() -> None:
    """The ceiling is a property of the model, not of the sample budget."""
    from evals.synthetic.prepare import TRAIN_FRACTION, run_probes
    from evals.synthetic.rates import probe_sample_count
    from pipeline.synthetic.model import build_model

    model = build_model(SMALL, "cpu")
    n = probe_sample_count(model, None, 10**7, TRAIN_FRACTION)
    once, twice = run_probes(model, n, 5), run_probes(model, 2 * n, 6)
    assert abs(once["f1"] - twice["f1"]) < 0.01, (once["f1"], twice["f1"], n)
