"""Eval `sparse_probing`: SAEBench's sparse probing on sae-probes' shipped datasets.

(a) the k-sparse selection and the pooling on hand-made tensors; (b) parity with sae-bench's own
per-dataset runner on real prompts through the tiny SmolLM2 layer-3 model and a trained tiny SAE;
(c) the stage end to end. Small sizes (context 32, a few hundred prompts) keep the module near a minute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from sae_bench.evals.sparse_probing import main as saebench_main
from sae_bench.evals.sparse_probing import probe_training
from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
from sae_bench.sae_bench_utils import activation_collection
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from evals.contract import EvalEnv, prepare_in_memory
from evals.sparse_probing import data, probes
from evals.sparse_probing.config import SparseProbingConfig
from evals.sparse_probing.evaluate import evaluate
from evals.sparse_probing.prepare import prepare
from pipeline.artifacts import ArtifactStore
from pipeline.dag import Stage
from pipeline.models.cache import get_model
from pipeline.plan import stage
from pipeline.progress import Reporter
from pipeline.stages.context import StageContext
from pipeline.stages.eval_stages import load_trained_sae

QUIET = Reporter(enabled=False)
EASY = "96_spam_is"  # spam vs ham SMS: lexical, easy at layer 3 (LLM probe ~0.98 with 200 prompts)
SECOND = "139_news_class_Politics"  # harder (LLM probe ~0.83 at context 32): exercises the mean over datasets


# --- (a) unit: selection and pooling on hand-made tensors -----------------------------------------


def test_top_k_selection_ranks_by_absolute_difference_of_class_means() -> None:
    # 3 positives, 5 negatives: unequal class sizes, so sums and means rank differently.
    pos = torch.tensor(
        [
            # d0: +0.1  d1: -5 (largest, negative)  d2: +2 (mean; sum diff 6)  d3: big but equal  d4: -1.5 (sum diff -7.5)
            [1.0, 0.0, 2.0, 100.0, 0.0],
            [1.1, 0.0, 2.0, 90.0, 0.0],
            [0.9, 0.0, 2.0, 110.0, 0.0],
        ]
    )
    neg = torch.tensor([[0.9, 5.0, 0.0, 100.0, 1.5]] * 5)
    acts = torch.cat([pos, neg])
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    assert probes.top_k_latents(acts, labels, 1) == [1]  # |-5| beats +2: the sign must not matter
    assert sorted(probes.top_k_latents(acts, labels, 2)) == [1, 2]  # mean diff 2 > 1.5 (sums would say 7.5 > 6)
    assert sorted(probes.top_k_latents(acts, labels, 3)) == [1, 2, 4]
    assert 3 not in probes.top_k_latents(acts, labels, 4)  # huge magnitude, zero class difference
    # Label order in the batch must not matter.
    perm = torch.tensor([5, 0, 7, 2, 3, 1, 6, 4])
    assert sorted(probes.top_k_latents(acts[perm], labels[perm], 3)) == [1, 2, 4]


def toy_sae() -> JumpReLUSAE:
    """d_in 3, d_sae 4, with biases such that encode(0) != 0: a masked (zeroed) token still has latents."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=3, d_sae=4))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0]]))
        sae.b_enc.copy_(torch.tensor([0.5, 0.5, 0.5, 0.5]))
        sae.b_dec.copy_(torch.tensor([-0.2, 0.1, 0.0]))
        sae.threshold.copy_(torch.full((4,), 0.1))
    assert (sae.encode(torch.zeros(1, 3)) > 0).any()
    return sae


def test_pooling_means_over_unmasked_tokens_only_for_llm_and_sae() -> None:
    # What get_llm_activations(mask_bos_pad_eos_tokens=True) returns: BOS / EOS / pad positions zeroed.
    tokens = torch.tensor([[1, 40, 41, 42, 2, 2], [1, 50, 2, 2, 2, 2]])  # bos=1, eos=pad=2
    tok = SimpleNamespace(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    mask = activation_collection.get_bos_pad_eos_mask(tokens, tok)
    raw = torch.tensor(
        [
            [[300.0, -200.0, 90.0], [1.0, -3.0, 1.0], [2.0, 2.0, -5.0], [0.5, 0.5, 0.5], [9.0, 9.0, 9.0], [7.0, 7.0, 7.0]],
            [[300.0, -200.0, 90.0], [-4.0, 1.0, 1.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0], [8.0, 8.0, 8.0]],
        ]
    )  # an outlier at BOS (as in real models), negative entries, different lengths (3 and 1 real tokens)
    acts = raw * mask[:, :, None]
    sae = toy_sae()
    llm, lat = probes.pool_llm_and_sae(acts, sae)

    want_llm = torch.stack([raw[0, 1:4].mean(0), raw[1, 1]])
    torch.testing.assert_close(llm, want_llm)
    with torch.no_grad():
        want_lat = torch.stack([sae.encode(raw[0, 1:4]).mean(0), sae.encode(raw[1, 1:2]).mean(0)])
        naive = sae.encode(acts).mean(1)  # mean over all positions, masked ones included
    torch.testing.assert_close(lat, want_lat)
    assert not torch.allclose(naive, want_lat)  # the masking matters for these numbers

    with pytest.raises(ValueError, match="no token left"):
        probes.pool_llm_and_sae(torch.zeros(1, 4, 3), sae)  # a prompt of special tokens only


def test_saebench_probe_loop_is_broken_under_installed_jaxtyping() -> None:
    """Why ``train_probes`` restates sae-bench's loop instead of calling it. If this starts failing,
    sae-bench (or jaxtyping) fixed it: call ``train_probe_on_activations`` directly."""
    g = torch.Generator().manual_seed(0)
    train = {"1": torch.randn(10, 6, generator=g) + 1, "0": torch.randn(10, 6, generator=g)}
    test = {"1": torch.randn(6, 6, generator=g) + 1, "0": torch.randn(6, 6, generator=g)}
    with pytest.raises(Exception, match="train_dataset_size"):
        probes._quiet(probe_training.train_probe_on_activations, train, test, select_top_k=2)
    assert set(probes.train_probes(train, test, select_top_k=2)) == {"1", "0"}


def test_params_are_validated_before_anything_loads() -> None:
    with pytest.raises(ValueError, match=r"unknown sae-probes dataset.*96_spam_is.*probing_datasets_MASTER"):
        data.check_dataset_names(["96_spam_is", "no_such_dataset"])
    with pytest.raises(ValidationError, match="even number"):
        SparseProbingConfig(datasets=[EASY], n_train=201)
    with pytest.raises(ValidationError, match="k_values"):
        SparseProbingConfig(datasets=[EASY], k_values=[3])
    with pytest.raises(ValidationError, match="repeated"):
        SparseProbingConfig(datasets=[EASY, EASY])
    with pytest.raises(ValidationError, match="n_trian"):
        SparseProbingConfig(datasets=[EASY], n_trian=10)


def test_split_is_balanced_disjoint_and_deterministic() -> None:
    train, test = data.load_split(EASY, 40, 20, seed=3)
    assert {c: len(v) for c, v in train.items()} == {"1": 20, "0": 20}
    assert {c: len(v) for c, v in test.items()} == {"1": 10, "0": 10}
    assert not (set(train["1"] + train["0"]) & set(test["1"] + test["0"]))
    assert data.load_split(EASY, 40, 20, seed=3) == (train, test)
    assert data.load_split(EASY, 40, 20, seed=4) != (train, test)


# --- shared: a trained tiny SAE ----------------------------------------------------------------------


def probing_stage(train: Stage, **params) -> Stage:
    return stage("eval_sparse_probing", "eval_sparse_probing:btk-s0", {"sparse_probing": params}, {"sae": train})


def make_ctx(cfg, store: ArtifactStore, stage: Stage) -> StageContext:
    """As stage_runner.execute builds it."""
    return StageContext(
        stage, cfg, store, store.staging_dir(stage.kind, stage.key), store.work_dir(stage.kind, stage.key), QUIET
    )


def test_tokenize_puts_one_bos_in_front_like_training_contexts(tiny_run) -> None:
    cfg, _, _ = tiny_run
    _, tokenizer = get_model(cfg.model)
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    split = {"1": ["Win a FREE prize now", "x " * 100], "0": ["ok see you at 5"]}
    with_bos = probes.tokenize(split, tokenizer, 16, "cpu", prepend_bos=True)
    plain = probes.tokenize(split, tokenizer, 16, "cpu", prepend_bos=False)
    tokenizer_adds_bos = tokenizer("a")["input_ids"][:1] == [bos]
    for cls in split:
        ids, mask = with_bos[cls]["input_ids"], with_bos[cls]["attention_mask"]
        assert ids.shape[1] == 16 and (ids[:, 0] == bos).all() and not (ids[:, 1:] == bos).any()  # exactly one
        assert (mask[:, 0] == 1).all()
        if not tokenizer_adds_bos:  # SmolLM2: the same tokens one place later, truncated one earlier
            assert torch.equal(ids[:, 1:], plain[cls]["input_ids"][:, :15])
            assert torch.equal(mask[:, 1:], plain[cls]["attention_mask"][:, :15])
    assert with_bos["1"]["input_ids"][1, -1] != pad  # the long prompt is truncated, not padded
    keep = activation_collection.get_bos_pad_eos_mask(with_bos["1"]["input_ids"], tokenizer)
    assert not keep[:, 0].any() and keep[1].sum() == 15  # BOS (and pad) never enter the mean


# --- (b) parity with sae-bench's own runner ----------------------------------------------------------


def test_matches_saebench_run_eval_single_dataset(tiny_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Same prompts, model, SAE and torch seed through sae-bench's ``run_eval_single_dataset`` and through
    ours. Two shims make sae-bench's runner run here, neither touching what it computes: its HF loader is
    replaced by the same activation collection on our prompts (its ``get_dataset_activations`` minus the
    download), and the beartype wrapper of ``train_sklearn_probe`` is peeled off (the jaxtyping clash
    above). Tolerance: pooled activations 1e-5; accuracies identical (<= 0.01 allowed, see the asserts)."""
    cfg, store, train = tiny_run
    model, tokenizer = get_model(cfg.model)
    sae = load_trained_sae(make_ctx(cfg, store, probing_stage(train, datasets=[EASY])), cfg.model.device)
    hook, layer, ctx_len, batch, seed, ks = cfg.model.hook, cfg.model.layer, 32, 8, 7, [1, 2, 5, 10, 20]
    train_text, test_text = data.load_split(EASY, 60, 40, seed)
    train_tok = probes.tokenize(train_text, tokenizer, ctx_len, "cpu", cfg.data.prepend_bos)
    test_tok = probes.tokenize(test_text, tokenizer, ctx_len, "cpu", cfg.data.prepend_bos)

    # ours
    (llm_tr, sae_tr), (llm_te, sae_te) = (
        probes.pooled_activations(t, model, sae, layer, hook, batch) for t in (train_tok, test_tok)
    )
    torch.manual_seed(seed)
    ours, ours_per_class = probes.probe_dataset(llm_tr, llm_te, sae_tr, sae_te, ks)

    # sae-bench's: its get_dataset_activations, minus the HF download (it tokenizes the same way)
    ref_bld = tuple(
        activation_collection.get_all_llm_activations(t, model, batch, layer, hook, mask_bos_pad_eos_tokens=True)
        for t in (train_tok, test_tok)
    )
    ref_llm = activation_collection.create_meaned_model_activations(ref_bld[0])
    ref_sae = activation_collection.get_sae_meaned_activations(ref_bld[0], sae, 125)
    # run_eval_single_dataset deletes the dict entries it is given: hand it copies
    monkeypatch.setattr(saebench_main, "get_dataset_activations", lambda *a: (dict(ref_bld[0]), dict(ref_bld[1])))
    monkeypatch.setattr(probe_training, "train_sklearn_probe", probe_training.train_sklearn_probe.__wrapped__)
    config = SparseProbingEvalConfig(
        random_seed=seed, dataset_names=[EASY], probe_train_set_size=60, probe_test_set_size=40,
        context_length=ctx_len, llm_batch_size=batch, llm_dtype="float32", model_name=cfg.model.name, k_values=ks,
    )  # fmt: skip
    torch.manual_seed(seed)
    ref, ref_per_class = saebench_main.run_eval_single_dataset(
        EASY, config, sae, model, layer, hook, "cpu", str(tmp_path), save_activations=False
    )

    for cls in ("1", "0"):
        torch.testing.assert_close(llm_tr[cls], ref_llm[cls], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae_tr[cls], ref_sae[cls], atol=1e-5, rtol=1e-5)
    assert list(ours) == list(ref)  # same metrics, same order
    diffs = {key: abs(ours[key] - ref[key]) for key in ref}
    assert max(diffs.values()) <= 0.01, diffs
    # Per class too (40 test prompts: one prompt is 0.025, so <= 0.01 means identical): same calls, same draws.
    assert ours_per_class.keys() == ref_per_class.keys()
    for key, accs in ref_per_class.items():
        assert accs.keys() == ours_per_class[key].keys()
        assert all(abs(ours_per_class[key][c] - a) <= 0.01 for c, a in accs.items()), (key, accs, ours_per_class[key])


# --- (c) the stage end to end ------------------------------------------------------------------------


def prepare_and_evaluate(cfg, sae, folder: Path, **params) -> tuple:
    """The two halves as the stages run them: one prep folder per dataset, then one SAE's evaluate."""
    p = SparseProbingConfig(enabled=True, **params)
    env = EvalEnv(cfg.model, cfg.data.prepend_bos, QUIET, "btk-s0", "tiny")
    prepared = {
        name: prepare_in_memory(prepare, env, p.model_copy(update={"datasets": [name]}), folder / name, max_bytes=1 << 20)
        for name in p.datasets
    }
    output, summary = evaluate(prepared, sae, env, p)
    return json.loads(output.to_json()), summary, prepared


def test_split_into_prepare_and_evaluate_draws_what_one_sequence_draws(tiny_run, tmp_path: Path) -> None:
    """The model-side probes run once in prepare, the SAE side per SAE; the stored RNG state makes the
    SAE probes draw exactly what SAEBench's single sequence (probe_dataset) draws."""
    cfg, store, train = tiny_run
    model, tokenizer = get_model(cfg.model)
    sae = load_trained_sae(make_ctx(cfg, store, probing_stage(train, datasets=[EASY])), cfg.model.device)
    out, _, prepared = prepare_and_evaluate(cfg, sae, tmp_path, datasets=[EASY], n_train=60, n_test=40, context_size=32, seed=5)
    assert len(list((tmp_path / EASY / EASY / "train" / "1" / "acts").glob("part-*"))) >= 2  # 1 MiB bound: chunked

    train_text, test_text = data.load_split(EASY, 60, 40, 5)
    pooled = [
        probes.pooled_activations(probes.tokenize(t, tokenizer, 32, "cpu", cfg.data.prepend_bos), model, sae, cfg.model.layer, cfg.model.hook, 8)
        for t in (train_text, test_text)
    ]
    torch.manual_seed(5)
    one_sequence, _ = probes.probe_dataset(pooled[0][0], pooled[1][0], pooled[0][1], pooled[1][1], [1, 2, 5, 10, 20])
    got = next(d for d in out["eval_result_details"] if d["dataset_name"] == f"{EASY}_results")
    assert {k: got[k] for k in one_sequence} == pytest.approx(one_sequence, abs=1e-9)


def test_stage_writes_saebench_sparse_probing_json(tiny_run, tmp_path: Path) -> None:
    cfg, store, train = tiny_run
    ks = [1, 2, 5, 10, 20]
    sae = load_trained_sae(make_ctx(cfg, store, probing_stage(train, datasets=[EASY])), cfg.model.device)
    out, summary, prepared = prepare_and_evaluate(
        cfg, sae, tmp_path, datasets=[EASY, SECOND], n_train=200, n_test=100, k_values=ks, context_size=32, batch_size=16, seed=0
    )
    json.dumps(summary)  # goes into the manifest
    assert out["eval_type_id"] == "sparse_probing"
    assert set(out) >= {
        "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics", "eval_result_details",
        "eval_result_unstructured", "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id",
        "sae_lens_version", "sae_cfg_dict",
    }  # fmt: skip
    assert out["eval_config"]["dataset_names"] == [EASY, SECOND]
    assert out["eval_config"]["k_values"] == ks and out["eval_config"]["probe_train_set_size"] == 200
    assert out["sae_lens_id"] == "btk-s0" and out["sae_cfg_dict"]["d_sae"] == 256
    assert "sae-probes" in out["eval_result_unstructured"]["data_source"]

    metrics = out["eval_result_metrics"]
    details = {d["dataset_name"]: d for d in out["eval_result_details"]}
    assert set(details) == {f"{EASY}_results", f"{SECOND}_results"}
    for side in ("llm", "sae"):
        for key in [f"{side}_test_accuracy"] + [f"{side}_top_{k}_test_accuracy" for k in ks]:
            values = [d[key] for d in details.values()]
            assert all(0.0 <= v <= 1.0 for v in values), key
            assert math.isclose(metrics[side][key], sum(values) / 2), key  # means over datasets
            assert summary[key] == round(metrics[side][key], 4)
        assert metrics[side][f"{side}_top_50_test_accuracy"] is None  # not asked for

    easy = details[f"{EASY}_results"]
    assert easy["llm_test_accuracy"] > 0.85, easy  # 0.985 seen
    assert out["eval_result_unstructured"]["per_dataset_extras"][EASY]["llm_sklearn_test_accuracy"] > 0.85
    assert easy["llm_top_20_test_accuracy"] > 0.7, easy
    assert easy["sae_top_20_test_accuracy"] > 0.6, easy  # a 6000-token SAE still finds spam latents
    latents = out["eval_result_unstructured"]["per_dataset_extras"][EASY]["sae_top_k_latents"]
    assert [len(latents[str(k)]) for k in ks] == ks and set(latents["1"]) <= set(latents["5"])
    # what prepare stored: per-token activations (masked positions zero) and the model-side results
    acts = prepared[EASY].tensor(probes.acts_name(EASY, "train", "1"))
    assert acts.shape == (100, 32, 576) and (acts[:, 0] == 0).all()  # BOS masked
    assert set(prepared[EASY].meta[EASY]) >= {"llm_per_class", "llm_sklearn_test_accuracy"}


def test_hub_dataset_offline_fails_with_one_line_naming_it() -> None:
    """SAEBench's own datasets come from the hub; here there is no network, and the error says so."""
    data.check_dataset_names(["LabHC/bias_in_bios_class_set1"])  # a known name passes the early check
    with pytest.raises(RuntimeError) as err:
        data.load_split("LabHC/bias_in_bios_class_set1", 40, 20, 0)
    msg = str(err.value)
    assert "\n" not in msg and "LabHC/bias_in_bios_class_set1" in msg and "HF_DATASETS_OFFLINE" in msg
