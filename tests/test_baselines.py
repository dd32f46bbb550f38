"""Baselines as SAEs: `pca`'s decoder rows are the top principal directions of the rows an SAE of the
same spec trains on (against torch.linalg on those rows), `random` is a seeded untrained SAE, both open
as sae-lens TopK SAEs at the run's k, and both go through the synthetic eval (and core, on the real
model) in a pipeline run like any SAE."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipeline.artifacts import ArtifactStore
from pipeline.data.shards import SHARD_DIR, ShardIndex
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter
from pipeline.training.baselines import Moments
from pipeline.training.stream import ShardStream, as_tensor
from tests.tiny_shards import train_config, train_stage, write_activations

QUIET = Reporter(enabled=False)
D_IN, D_SAE, K, BATCH = 16, 64, 4, 64


def baseline(tmp_path: Path, trainer: str, **sae: Any) -> tuple[ArtifactStore, Any, Path]:
    cfg = parse_config(train_config(trainer=trainer, **sae))
    store = ArtifactStore(tmp_path / trainer)
    write_activations(store, cfg)
    train = train_stage(cfg)
    return store, train, execute(cfg, store, train, QUIET)


def training_rows(store: ArtifactStore, train: Any) -> torch.Tensor:
    acts = store.path("activations", train.inputs["activations"].key)
    stream = ShardStream(acts / SHARD_DIR, ShardIndex.load(acts), seed=train.params["seed"], window=train.params["shuffle_shards"])
    n_steps = train.params["train_tokens"] // BATCH
    return torch.cat(list(itertools.islice(stream.batches(0, BATCH, window_as=as_tensor), n_steps)))


def test_pca_rows_are_the_top_principal_directions_of_the_training_rows(tmp_path: Path) -> None:
    store, train, folder = baseline(tmp_path, "pca", train_tokens=3200)  # half the cached rows: it uses only those
    rows = training_rows(store, train).double()
    assert len(rows) == 3200 == store.manifest("train", train.key)["summary"]["tokens"]
    centred = rows - rows.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    assert (singular[:-1] / singular[1:]).min() > 1.01  # distinct variances: each direction is defined up to sign

    w = load_file(folder / "sae" / "sae_weights.safetensors")
    m = min(D_IN, D_SAE // 2)
    top = w["W_dec"][:m].double()
    cos = (top * vh[:m]).sum(-1)
    assert torch.allclose(cos.abs(), torch.ones(m, dtype=torch.float64), atol=1e-5), cos
    assert torch.equal(w["W_dec"][m : 2 * m], -w["W_dec"][:m])  # +v and -v: the code keeps both signs
    assert torch.equal(w["W_dec"][2 * m :], torch.zeros(D_SAE - 2 * m, D_IN))
    assert torch.equal(w["W_enc"], w["W_dec"].T) and torch.equal(w["b_enc"], torch.zeros(D_SAE))
    assert torch.allclose(w["b_dec"].double(), rows.mean(0), atol=1e-5)

    from sae_lens import SAE, TopKSAE

    sae = SAE.load_from_disk(str(folder / "sae"))
    assert isinstance(sae, TopKSAE) and sae.cfg.k == K
    x = rows[:500].float()
    with torch.no_grad():
        codes = sae.encode(x)
        err = (sae.decode(codes) - x).pow(2).sum()
    assert ((codes != 0).sum(-1) == K).all()  # L0 is the run's k, exactly
    # k of 2m signed directions, each sample's own best k: at most the error of the fixed top-k subspace
    fixed = (centred[:500] - centred[:500] @ vh[:K].T @ vh[:K]).pow(2).sum()
    assert err <= fixed * (1 + 1e-4), (err, fixed)


def test_pca_accumulates_moments_exactly_in_any_chunking() -> None:
    x = torch.randn(1000, 8, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64) + 3.0
    whole, parts = Moments(8), Moments(8)
    whole.add(x)
    for chunk in x.split(137):
        parts.add(chunk)
    var_w, dir_w = whole.principal_directions()
    var_p, dir_p = parts.principal_directions()
    assert torch.allclose(var_w, torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)) and torch.allclose(var_w, var_p)
    assert torch.allclose(dir_w, dir_p, atol=1e-10)


def test_random_is_seeded_untrained_and_the_same_shape(tmp_path: Path) -> None:
    store, train, folder = baseline(tmp_path, "random")
    w = load_file(folder / "sae" / "sae_weights.safetensors")
    assert w["W_dec"].shape == (D_SAE, D_IN) and torch.allclose(w["W_dec"].norm(dim=-1), torch.ones(D_SAE))
    _, _, again = baseline(tmp_path / "again", "random")
    _, _, other = baseline(tmp_path / "other", "random", seeds=[1])
    assert torch.equal(load_file(again / "sae" / "sae_weights.safetensors")["W_dec"], w["W_dec"])
    assert not torch.equal(load_file(other / "sae" / "sae_weights.safetensors")["W_dec"], w["W_dec"])
    summary = store.manifest("train", train.key)["summary"]
    assert (summary["trainer"], summary["steps"], summary["differs_from_reference"]) == ("random", 0, None)


def test_baselines_take_no_recipe() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(train_config(trainer="pca", recipe={"activation": "topk"}))
    [line] = err.value.problems
    assert "trainer 'pca' is a baseline and takes no recipe; remove recipe" in line


def test_baselines_run_through_the_synthetic_eval_beside_an_sae(tmp_path: Path) -> None:
    from pipeline.executors.local import run_local

    raw = {
        "name": "synth_baselines",
        "synthetic": {"num_features": 64, "hidden_dim": 32, "hierarchy": None, "correlation": None,
                      "orthogonalization": None, "eval_samples": 4000, "probe_samples": 4000},
        "activations": {"n_tokens": 40_960, "contexts_per_shard": 8},
        "saes": [
            {"name": "btk", "d_sae": 64, "k": 4, "lr": 3e-3, "batch_size": 512},
            {"name": "pca", "trainer": "pca", "d_sae": 64, "k": 4, "batch_size": 512},
            {"name": "random", "trainer": "random", "d_sae": 64, "k": 4},
        ],
        "evals": {"synthetic": {"enabled": True}},
    }
    cfg = parse_config(raw)
    store = ArtifactStore(tmp_path)
    outcomes = run_local(cfg, build_plan(cfg), store, set(), QUIET)
    assert {o.status for o in outcomes} == {"ran"}, [(o.stage.label, o.status, o.error[-300:]) for o in outcomes]
    by_sae = {r["sae"]: r for r in json.loads((tmp_path / "synth_baselines" / "summary.json").read_text())["saes"]}
    assert set(by_sae) == {"btk", "pca", "random"}
    for name in ("pca", "random"):
        assert by_sae[name]["l0"] == pytest.approx(4.0)  # matched L0: the TopK rule at the run's k
    ev = {n: by_sae[n]["explained_variance"] for n in by_sae}
    assert ev["random"] < ev["pca"] < ev["btk"], ev  # trained beats the best linear code beats chance


@pytest.mark.slow
def test_pca_runs_through_core_on_the_real_model(shared_artifacts: Path) -> None:
    """eval_core on SmolLM2 (activations shared with the other real-model tests through the store)."""
    from pipeline.executors.local import run_local
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(saes=[{"name": "pca", "trainer": "pca", "d_sae": 256, "k": 8, "batch_size": 256}]))
    stages = build_plan(cfg)
    store = ArtifactStore(shared_artifacts)
    outcomes = run_local(cfg, stages, store, set(), QUIET)
    assert {o.status for o in outcomes} <= {"ran", "cached"}, [(o.stage.label, o.status, o.error[-300:]) for o in outcomes]
    core = next(s for s in stages if s.kind == "eval_core")
    summary = store.manifest("eval_core", core.key)["summary"]
    assert summary["l0"] == pytest.approx(8.0)  # matched L0
    assert 0.5 < summary["explained_variance"] < 1.0 and 0.0 < summary["ce_loss_score"] < 1.0, summary  # measured: 0.88, 0.59
