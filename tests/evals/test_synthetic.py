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


CALIBRATION_SAMPLES = 4000


def eval_stage(built: dict[str, Any], train: Stage, loo_tau: float | None) -> dict[str, Any]:
    prep = prep_stage(built["model"])
    if not built["store"].is_complete(prep.kind, prep.key):  # once per module: the probe and its doubling check are the slow part
        stage_runner.execute(built["cfg"], built["store"], prep, QUIET)
    ev = stage(
        "eval_synthetic",
        f"eval_synthetic:tiny-s0{'' if loo_tau is None else '+loo'}",
        {"params": {"loo_tau": loo_tau, "match_l0_samples": CALIBRATION_SAMPLES}},
        {"sae": train, "prep:all": prep, "synthetic_model": built["model"]},
    )
    folder = stage_runner.execute(built["cfg"], built["store"], ev, QUIET)
    return json.loads((folder / "synthetic.json").read_text())


def test_eval_matches_sae_lens_own_eval(built: dict[str, Any], trained: Stage) -> None:
    """Our stage (saepipe coder, full recipe path) == sae-lens's eval of sae-lens's own load of the SAE, at
    the fitted threshold and at matched L0 (sae-lens's threshold scaled by the factor our stage found)."""
    from sae_lens import SAE
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    from evals.synthetic.evaluate import flat_metrics
    from pipeline.synthetic.model import chunk_rows, derive_seed, load_model, seeded

    ours = eval_stage(built, trained, None)
    assert ours["variant"] == "plain" and ours["sae_loader"] == "saepipe_coder" and ours["eval_samples"] == 4000
    store: ArtifactStore = built["store"]
    sae = SAE.load_from_disk(str(store.path("train", trained.key) / "sae"), device="cpu")
    model = load_model(store.path("synthetic_model", built["model"].key), "cpu")

    def theirs() -> dict[str, float]:
        with seeded(derive_seed(TINY.seed, "eval")):
            ref = eval_sae_on_synthetic_data(sae, model.feature_dict, model.activation_generator, 4000, chunk_rows(model))
        return flat_metrics(ref.to_dict())

    names = ("f1", "precision", "recall", "mcc", "uniqueness", "explained_variance", "l0", "true_l0", "dead_latents")
    fitted = theirs()
    for name in names:
        assert ours["fitted_metrics"][name] == pytest.approx(fitted[name], abs=1e-6), name
    cal = ours["calibration"]
    # the train stage here names no k: the coder's own k (6) is the target
    assert cal["method"] == "threshold_scale" and cal["target_l0"] == 6 and cal["samples"] == CALIBRATION_SAMPLES
    assert cal["reached"] and abs(cal["l0"] - 6) <= 6e-3 and cal["l0_fitted"] == pytest.approx(fitted["l0"], rel=0.05)
    assert cal["seed"] not in (derive_seed(TINY.seed, "eval"), derive_seed(TINY.seed, "probe"))  # its own stream
    assert abs(cal["factor"] - 1) > 1e-3 and abs(fitted["l0"] - 6) > 0.05  # the fitted threshold was off k
    with torch.no_grad():
        sae.threshold.mul_(cal["factor"])
    matched = theirs()
    for name in names:
        assert ours["metrics"][name] == pytest.approx(matched[name], abs=2e-3), name
    m = ours["metrics"]
    assert m["l0"] == pytest.approx(6, rel=0.02)  # matched on other samples, and it holds on the scored ones
    assert m["explained_variance"] > 0.5 and m["mcc"] > 0.3 and 0 < m["f1"] <= 1  # it learned something


def _coder(activation: dict[str, Any], seed: int = 0) -> Any:
    """A 16 -> 64 coder (k 5) whose inference thresholds are spread out, as training leaves them."""
    from pipeline.config.recipe import RecipeSpec
    from pipeline.recipes.activation import BatchTopK, JumpReLU
    from pipeline.recipes.coder import build_coder

    coder = build_coder(RecipeSpec.model_validate(activation), 16, 64, 5, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    spread = 0.05 + 0.3 * torch.rand(64, generator=gen)
    act = coder.activation
    with torch.no_grad():
        if isinstance(act, BatchTopK):
            act.threshold_global.fill_(0.2)
            act.threshold_latent.copy_(spread)
            act.latent_seen[: 48] = True  # the other 16 fall back to the global threshold
        elif isinstance(act, JumpReLU) and act.direct:
            act.direct_threshold.copy_(spread)
        elif isinstance(act, JumpReLU):
            act.log_threshold.copy_(spread.log())
    return coder


@pytest.mark.parametrize("activation", [{"activation": "batchtopk", "batchtopk": {"threshold": "per_latent"}},
                                        {"activation": "jumprelu"}, {"activation": "jumprelu", "jumprelu": {"threshold_param": "direct"}},
                                        {"activation": "jumprelu", "saved": True}])  # fmt: skip
def test_calibration_scales_every_threshold_by_one_factor_to_l0_k(activation: dict[str, Any], tmp_path: Path) -> None:
    """Saepipe's BatchTopK (global + per-latent) and JumpReLU (log and direct), and sae-lens's JumpReLU:
    one common factor, the mean L0 at k on the calibration samples, the ordering of thresholds kept."""
    from sae_lens import SAE

    from evals.synthetic.calibrate import REL_TOL, calibrate, mean_l0, thresholds_of
    from evals.synthetic.evaluate import CoderAsSAE
    from pipeline.recipes.saving import save_coder

    saved = activation.pop("saved", False)
    coder = _coder(activation)
    if saved:
        save_coder(coder, tmp_path / "sae")
        (tmp_path / "sae" / "saepipe_coder.safetensors").unlink()
        sae: Any = SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    else:
        sae = CoderAsSAE(coder)
    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(1)) * 0.5
    th = thresholds_of(sae)
    assert th is not None
    before = [t.detach().clone() for t in th.tensors]
    fitted_l0 = mean_l0(sae, x, 1000)
    cal = calibrate(sae, x, 5, rows=1000)
    assert cal.method == "threshold_scale" and cal.reached and cal.steps > 0
    assert cal.l0_fitted == pytest.approx(fitted_l0) and abs(fitted_l0 - 5) > 1  # far from k before
    assert abs(mean_l0(sae, x, 1000) - 5) <= REL_TOL * 5 and cal.l0 == pytest.approx(mean_l0(sae, x, 1000))
    for t, b, is_log in zip(th.tensors, before, th.logs, strict=True):
        after = t.detach().exp() / b.exp() if is_log else t.detach()[b > 0] / b[b > 0]
        assert torch.allclose(after.double(), torch.full_like(after.double(), cal.factor), rtol=1e-5), after


def test_topk_and_thresholdless_saes_are_not_scaled(tmp_path: Path) -> None:
    """TopK (saepipe's and the pca/random baselines' sae-lens TopK) has L0 k by construction; ReLU + L1 has
    no threshold to scale: both are scored as they are and say why. A sae-lens JumpReLU records no k."""
    from sae_lens import SAE

    from evals.synthetic.calibrate import calibrate
    from evals.synthetic.evaluate import CoderAsSAE, target_l0
    from pipeline.config.recipe import RecipeSpec
    from pipeline.recipes.coder import build_coder
    from pipeline.recipes.saving import save_coder
    from pipeline.training.baselines import random_weights, save_topk

    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))
    save_topk(random_weights(16, 64, 0), 5, tmp_path / "random", {"model_name": "synthetic:t", "hook_name": "synthetic"})
    baseline = SAE.load_from_disk(str(tmp_path / "random"), device="cpu")
    topk = CoderAsSAE(build_coder(RecipeSpec.model_validate({"activation": "topk"}), 16, 64, 5))
    for sae in (baseline, topk):
        cal = calibrate(sae, x, target_l0(sae, None), rows=1000)
        assert cal.method.startswith("topk") and cal.factor is None and cal.l0 == cal.l0_fitted == pytest.approx(5.0)
    relu = CoderAsSAE(build_coder(RecipeSpec.model_validate({"activation": "relu_l1"}), 16, 64, 5))
    cal = calibrate(relu, x, 5, rows=1000)
    assert cal.method == "no inference threshold" and cal.factor is None and not cal.reached  # ReLU fires on ~half
    save_coder(_coder({"activation": "jumprelu"}), tmp_path / "jr")
    (tmp_path / "jr" / "saepipe_coder.safetensors").unlink()
    with pytest.raises(ValueError, match="match_l0_samples"):
        target_l0(SAE.load_from_disk(str(tmp_path / "jr"), device="cpu"), None)
    assert target_l0(baseline, 7) == 7  # the spec's k wins


def test_loo_variant(built: dict[str, Any], trained: Stage, tmp_path: Path) -> None:
    from evals.synthetic.evaluate import flat_metrics, load_sae_for_eval, score
    from pipeline.synthetic.model import derive_seed, load_model

    plain = eval_stage(built, trained, None)["fitted_metrics"]
    loo = eval_stage(built, trained, 0.0)
    assert loo["variant"] == "loo" and loo["loo_tau"] == 0.0
    assert loo["metrics"]["l0"] == pytest.approx(6, rel=0.02)  # matched through the pruning too
    m = loo["fitted_metrics"]
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
    # the doubling check, by hand: the same probe on 8,000 samples of the prep's stream
    from evals.synthetic.prepare import run_probes
    from pipeline.synthetic.model import build_model, derive_seed

    twice = run_probes(build_model(easy, "cpu"), 8000, derive_seed(easy.seed, "probe"))
    d = result["doubling"]
    assert d["probe_samples"] == 8000 and d["f1"] == pytest.approx(twice["f1"])
    assert d["change"] == pytest.approx(twice["f1"] - result["metrics"]["f1"]) and d["stable"] == (abs(d["change"]) < 0.01)
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
        "evals": {"synthetic": {"loo_tau": 0.0, "match_l0_samples": 2000}},  # 8 evals: few calibration samples
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
    for spec in ("btk", "mat"):  # matched L0 by default: L0 at k = 4, the fitted one beside it
        assert by_spec[spec]["l0"]["mean"] == pytest.approx(4, rel=0.03) and "l0_fitted" in by_spec[spec]
    report = (tmp_path / "synth_tiny" / "report.md").read_text()
    assert "Supervised probe baseline" in report and "±" in report
    assert "on twice the samples (8000)" in report and "at matched L0" in report


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
