"""Eval `sae_probes`: sae-probes' benchmark on its shipped datasets through the shared prep.

Parity: our per-SAE half against sae-probes' own ``run_sae_eval`` on the same activations (its cache
loader is handed our prepared activations instead of a torch.load of its .pt cache)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from evals.contract import EvalEnv, prepare_in_memory
from evals.sae_probes import prepare as sprobes
from evals.sae_probes.config import SaeProbesConfig
from evals.sae_probes.evaluate import evaluate
from pipeline.models.cache import get_model
from pipeline.plan import stage
from pipeline.progress import Reporter
from pipeline.stages.context import StageContext
from pipeline.stages.eval_stages import load_trained_sae

# the package re-exports functions under its modules' names: fetch the modules themselves
generate_sae_activations = importlib.import_module("sae_probes.generate_sae_activations")
run_sae_evals = importlib.import_module("sae_probes.run_sae_evals")
QUIET = Reporter(enabled=False)
EASY = "96_spam_is"
PARAMS = SaeProbesConfig(enabled=True, datasets=[EASY], ks=[1, 2, 5], num_train=100, num_test=60, max_seq_len=64)


@pytest.fixture(scope="module")
def setup(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cfg, store, train = tiny_run
    probe = stage("eval_sae_probes", "eval_sae_probes:btk-s0", {}, {"sae": train})
    ctx = StageContext(probe, cfg, store, store.staging_dir(probe.kind, probe.key), store.work_dir(probe.kind, probe.key), QUIET)
    sae = load_trained_sae(ctx, cfg.model.device)
    env = EvalEnv(cfg.model, cfg.data.prepend_bos, QUIET, "btk-s0", "tiny")
    prepared = prepare_in_memory(sprobes.prepare, env, PARAMS, tmp_path_factory.mktemp("sae_probes"))
    return cfg, sae, env, prepared


def test_prepare_keeps_last_token_activations_and_a_real_baseline(setup) -> None:
    cfg, _, _, prepared = setup
    x = prepared.tensor(f"{EASY}/train/acts")
    y = prepared.tensor(f"{EASY}/train/labels")
    assert x.shape == (100, 576) and y.tolist().count(1) == 50  # balanced
    assert prepared.meta[EASY]["llm"]["test_accuracy"] > 0.85  # spam vs ham from the model's activations
    model, tokenizer = get_model(cfg.model)
    assert (tokenizer.truncation_side, tokenizer.padding_side) == ("right", "right")  # sae-probes' change undone
    texts = sprobes.load_split(EASY, PARAMS)[0][:3]
    assert torch.allclose(sprobes.last_token_activations(model, texts, cfg.model.hook, PARAMS, "cpu"), x[:3], atol=1e-4)


def test_matches_sae_probes_run_sae_eval(setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg, sae, env, prepared = setup
    output, summary = evaluate({EASY: prepared}, sae, env, PARAMS)
    ours = json.loads(output.to_json())

    xy = [prepared.tensor(f"{EASY}/{s}/{k}") for s in ("train", "test") for k in ("acts", "labels")]
    monkeypatch.setattr(generate_sae_activations, "get_xy_traintest", lambda *a, **kw: (xy[0], xy[1].numpy(), xy[2], xy[3].numpy()))
    run_sae_evals.run_sae_eval(
        sae, EASY, cfg.model.hook, "l1", "normal", "smollm2", tmp_path, ks=[1, 2, 5], device="cpu", results_path=tmp_path, seed=42
    )
    ref = {e["k"]: e for e in json.loads(next(tmp_path.rglob("*.json")).read_text())}
    detail = ours["eval_result_details"][0]
    for k in (1, 2, 5):
        assert detail["sae_metrics_by_k"][str(k)]["test_accuracy"] == pytest.approx(ref[k]["test_acc"], abs=1e-9)
        assert detail["sae_metrics_by_k"][str(k)]["test_auc"] == pytest.approx(ref[k]["test_auc"], abs=1e-9)
        assert ours["eval_result_unstructured"]["selected_latents"][EASY][str(k)] == ref[k]["indices"]
    assert ours["eval_type_id"] == "sparse_probing_sae_probes"
    assert 0.5 < summary["sae_top_5_test_accuracy"] <= 1.0
    assert ours["eval_result_metrics"]["llm"]["llm_test_accuracy"] == prepared.meta[EASY]["llm"]["test_accuracy"]
