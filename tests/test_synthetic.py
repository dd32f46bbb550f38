"""Synthetic ground-truth benchmark: spec mapping, model/activation stages (resume), eval parity with
sae-lens's own synthetic eval, the LOO variant and the supervised probe baseline."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

import pipeline.executors.stage_runner as stage_runner
from pipeline.artifacts import ArtifactStore
from pipeline.config import ActivationsSpec, parse_config
from pipeline.data.shards import SHARD_DIR, ShardIndex, read_shard, write_shard
from pipeline.fsutil import atomic_write_json
from pipeline.plan import Stage, build_plan
from pipeline.progress import Reporter
from pipeline.stages.context import StageContext
from pipeline.synthetic.spec import CorrelationSpec, HierarchySpec, OrthogonalizationSpec, SyntheticSpec, ZipfFiringSpec

REPO = Path(__file__).resolve().parent.parent
QUIET = Reporter(enabled=False)
TINY = SyntheticSpec(
    num_features=64,
    hidden_dim=32,
    hierarchy=HierarchySpec(n_roots=2, branching=3, depth=2),
    correlation=CorrelationSpec(rank=4, scale=0.1),
    orthogonalization=OrthogonalizationSpec(steps=10, lr=3e-4),
    firing=ZipfFiringSpec(exponent=0.5, max_prob=0.4, min_prob=0.02),
    seed=7,
    eval_samples=4000,
    probe_samples=4000,
)
N_TOKENS = 2500  # three shards of 1 "context" (1024 rows): 1024 + 1024 + 452


def cfg_for(spec: SyntheticSpec, n_tokens: int = N_TOKENS) -> Any:
    """A synthetic run's PipelineConfig (the stages read `synthetic` and `activations`)."""
    return parse_config(
        {
            "name": "synth_test",
            "synthetic": spec.model_dump(),
            "activations": {"n_tokens": n_tokens, "contexts_per_shard": 1},
            "saes": [{"name": "btk", "d_sae": 128, "k": 6}],
        }
    )


def model_stage(spec: SyntheticSpec) -> Stage:
    return Stage("synthetic_model", "synthetic_model", {"synthetic": spec.model_dump()})


def acts_stage(spec: SyntheticSpec, model: Stage, n_tokens: int = N_TOKENS) -> Stage:
    params = {"synthetic": spec.model_dump(), "activations": ActivationsSpec(n_tokens=n_tokens, contexts_per_shard=1).model_dump()}
    return Stage("synthetic_activations", "activations", params, {"synthetic_model": model})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model and its activations, each committed through `execute` like a real run."""
    store = ArtifactStore(tmp_path_factory.mktemp("synth"))
    cfg = cfg_for(TINY)
    m = model_stage(TINY)
    a = acts_stage(TINY, m)
    stage_runner.execute(cfg, store, m, QUIET)
    stage_runner.execute(cfg, store, a, QUIET)
    return {"store": store, "cfg": cfg, "model": m, "acts": a}


# -- (a) spec -> SyntheticModelConfig ---------------------------------------------------------------


def test_published_spec_maps_onto_sae_lens_config() -> None:
    from sae_lens.synthetic import FoldedNormalMagnitudeConfig, LinearMagnitudeConfig, SyntheticModelConfig, ZipfianFiringProbabilityConfig

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
    with pytest.raises(ValidationError, match="hierarchy needs"):
        SyntheticSpec(num_features=100, hierarchy=HierarchySpec(n_roots=8, branching=4, depth=2))
    with pytest.raises(ValidationError, match="min_prob"):
        ZipfFiringSpec(max_prob=0.01, min_prob=0.1)
    code = "import sys, pipeline.synthetic.spec; assert 'torch' not in sys.modules, 'spec imports torch'"
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


# -- (c)/(d) eval parity with sae-lens, LOO variant ------------------------------------------------


def train_tiny_sae(store: ArtifactStore, model_key: str, folder: Path) -> None:
    from pipeline.recipes.coder import build_coder
    from pipeline.recipes.saving import save_coder
    from pipeline.recipes.spec import RecipeSpec
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
    train = Stage("train", "train:tiny-s0", {"tiny": 1, "seed": 0}, {"activations": built["acts"]})
    staging = store.staging_dir("train", train.key)
    train_tiny_sae(store, built["model"].key, staging / "sae")
    store.commit("train", train.key, staging, {"label": train.label, "summary": {}})
    return train


def eval_stage(built: dict[str, Any], train: Stage, loo_tau: float | None) -> dict[str, Any]:
    stage = Stage(
        "eval_synthetic",
        f"eval_synthetic:tiny-s0{'' if loo_tau is None else '-loo'}",
        {"synthetic": TINY.model_dump(), "loo_tau": loo_tau},
        {"sae": train, "synthetic_model": built["model"]},
    )
    folder = stage_runner.execute(built["cfg"], built["store"], stage, QUIET)
    return json.loads((folder / "synthetic.json").read_text())


def test_eval_matches_sae_lens_own_eval(built: dict[str, Any], trained: Stage) -> None:
    """Our stage (saepipe coder, full recipe path) == sae-lens's eval of sae-lens's own load of the SAE."""
    from sae_lens import SAE
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    from evals.synthetic import flat_metrics
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
    from evals.synthetic import evaluate, flat_metrics, load_sae_for_eval
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
    other = flat_metrics(evaluate(sae, model, 4000, derive_seed(TINY.seed, "eval")))
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
    probe = Stage("probe_baseline", "probe_baseline", {"synthetic": easy.model_dump()}, {"synthetic_model": m})
    folder = stage_runner.execute(cfg, store, probe, QUIET)
    result = json.loads((folder / "probe_baseline.json").read_text())
    assert result["metrics"]["f1"] > 0.9, result["metrics"]
    assert result["metrics"]["features_with_test_positives"] == 16
    assert len(result["per_feature_f1"]) == 16 and result["test_samples"] == 800
    summary = store.manifest("probe_baseline", probe.key)["summary"]
    assert summary["f1"] == result["metrics"]["f1"]


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
