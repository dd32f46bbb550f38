"""SAEBench's absorption eval (first-letter spelling): evals/absorption/.

(a) hand-made checks (params, vocabulary split, the absorption arithmetic on a toy SAE); (b) the real
SmolLM2 layer-3 model and a trained tiny SAE: prepare's tensors and probe, the word-position activations,
parity of the cached-activation calculator with sae-bench's ``FeatureAbsorptionCalculator`` running the
model itself, parity of the false-negative selection with sae-bench's, and evaluate end to end without
the model. Small sizes (16 words per letter, 2 ICL examples) keep the module near a minute.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sae_bench.evals.absorption import k_sparse_probing as ksp
from sae_bench.evals.absorption import feature_absorption as fa
from sae_bench.evals.absorption import feature_absorption_calculator as fac
from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
from sae_bench.evals.absorption.eval_output import AbsorptionEvalOutput
from sae_bench.evals.absorption.prompting import first_letter_formatter
from sae_bench.evals.absorption.vocab import LETTERS
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from evals.absorption import EVAL as ABSORPTION
from evals.absorption.activations import activations_at, tokenize_prompts
from evals.absorption.calculator import absorption_scores
from evals.absorption.config import AbsorptionParams
from evals.absorption.evaluate import evaluate
from evals.absorption.k_sparse import average_ranks, k_sparse_metrics, likely_false_negatives, metrics_table, raw_scores
from evals.absorption.prepare import prepare
from evals.absorption.probe import letters_passing, probe_from_tensors
from evals.absorption.prompts import alpha_vocab, icl_prompts, letter_of, seeded_global_random, split_vocab
from evals.contract import EvalEnv, Prepared, prepare_in_memory
from pipeline.models.cache import get_model
from pipeline.progress import Reporter
from tests.conftest import planned_prep_bytes, written_bytes

QUIET = Reporter(enabled=False)
PARAMS = AbsorptionParams(words_per_letter=16, min_feats_for_eval=2, min_GT_probe_f1=0.4)
"""12 train + 4 test words per letter. The F1 gate is lowered: 4 test words per letter make F1 coarse."""


# --- (a) hand-made --------------------------------------------------------------------------------------


def test_params_keep_saebench_names_and_reject_unknown_keys() -> None:
    p = AbsorptionParams()
    cfg = AbsorptionEvalConfig()
    for name in ("f1_jump_threshold", "max_k_value", "prompt_template", "prompt_token_pos", "k_sparse_probe_l1_decay",
                 "k_sparse_probe_batch_size", "k_sparse_probe_num_epochs", "min_GT_probe_f1", "random_seed",
                 "eval_k_sparse_probe_batch_size"):  # fmt: skip
        assert getattr(p, name) == getattr(cfg, name), name
    # the documented small-run departures (the real config sets SAEBench's values)
    assert (p.min_feats_for_eval, cfg.min_feats_for_eval) == (8, 20)
    assert (p.words_per_letter, p.max_icl_examples) == (32, 2)
    with pytest.raises(ValueError, match="extra"):
        AbsorptionParams(max_k=3)
    with pytest.raises(ValueError, match="word"):
        AbsorptionParams(prompt_template="{token} starts with:")
    with pytest.raises(ValueError):
        AbsorptionParams(prompt_token_pos=2)
    with pytest.raises(ValueError):  # frozen
        p.max_k_value = 3  # type: ignore[misc]


def test_split_covers_every_letter_in_both_splits_and_is_deterministic() -> None:
    vocab = [f"{c}{s}" for c in LETTERS for s in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")] + [" Zed", "Zoo"]
    train, test = split_vocab(vocab, 5, seed=1)
    assert len(train) == 26 * 4 and len(test) == 26  # 5 picked per letter (z has 12): 4 + 1
    assert not set(train) & set(test)
    for split in (train, test):
        assert {LETTERS[letter_of(w)] for w in split} == set(LETTERS)
    assert split_vocab(vocab, 5, seed=1) == (train, test)
    assert split_vocab(vocab, 5, seed=2) != (train, test)
    whole_train, whole_test = split_vocab(vocab, None, seed=1)  # sae-bench's plain 80/20 cut
    assert len(whole_train) == int(len(vocab) * 0.8) and sorted(whole_train + whole_test) == sorted(vocab)
    assert letter_of(" Zed") == LETTERS.index("z") == letter_of("zoo")


def toy_sae() -> JumpReLUSAE:
    """d_in 3, d_sae 4. Probe direction e0. Latent 0 (main) reads 0.5*x0 and fires above 1; latent 1 reads
    x1 and writes (e0+e1)/sqrt2 (cos 0.707 with the probe: an absorber); latent 2 is orthogonal;
    latent 3 anti-aligned."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=3, d_sae=4))
    r = 1 / math.sqrt(2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[0.5, 0.0, 0.0, -1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 0.0], [r, r, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    return sae


def test_absorption_arithmetic_on_a_toy_sae() -> None:
    acts = torch.tensor(
        [
            [0.5, 2.0, 0.0],  # main silent (0.25 < 1), absorber carries the probe: full absorption, fraction 1
            [4.0, 0.5, 0.0],  # main fires (2 of 4); the absorber's 0.35 < 0.4*4: fraction 0
            [3.0, 3.0, 0.0],  # main 1.5 of 3; absorber 2.12 > 0.4*3, capped at the 1.5 unaccounted: fraction 0.5
            [3.0, 1.0, 0.0],  # absorber 0.707 < 0.4*3 of the probe projection: not absorption
        ]
    )
    res = absorption_scores(toy_sae(), acts, ["a", "b", "c", "d"], torch.tensor([2.0, 0.0, 0.0]), [0], topk_feats=4)
    assert [r.absorption_fraction for r in res] == pytest.approx([1.0, 0.0, 0.5, 0.0], abs=1e-6)
    assert [r.is_full_absorption for r in res] == [True, False, False, False]
    assert [r.probe_projection for r in res] == pytest.approx([0.5, 4.0, 3.0, 3.0])
    assert res[0].top_projection_feature_scores[0].feature_id == 1
    assert res[0].main_feature_scores[0].activation == 0.0 and res[2].main_feature_scores[0].activation == 1.5


def test_average_ranks_equal_scipy_rankdata_with_ties() -> None:
    import scipy.stats

    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 50, 301):
        values = rng.integers(0, 4, size).astype(np.float32)  # many ties
        assert np.array_equal(average_ranks(values), scipy.stats.rankdata(values))


def test_too_few_letters_passing_the_probe_gate_raises_like_saebench_stops() -> None:
    stats = {letter: {"f1": 0.9 if letter in "abc" else 0.1} for letter in LETTERS}
    assert letters_passing(stats, AbsorptionParams(min_feats_for_eval=3), "h") == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match=r"for 3 letters \(abc\), fewer than min_feats_for_eval=4"):
        letters_passing(stats, AbsorptionParams(min_feats_for_eval=4), "h")


# --- (b) the real model and a trained tiny SAE -------------------------------------------------------


@pytest.fixture(scope="module")
def sae(tiny_run) -> SAE:
    _, store, train = tiny_run
    return SAE.load_from_disk(str(store.path("train", train.key) / "sae"))


@pytest.fixture(scope="module")
def prepared(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    cfg, _, _ = tiny_run
    env = EvalEnv(model_spec=cfg.model, prepend_bos=cfg.data.prepend_bos)
    return prepare_in_memory(prepare, env, PARAMS, tmp_path_factory.mktemp("absorption_prep"), max_bytes=2**18)


def no_model_env(cfg) -> EvalEnv:
    def refuse() -> tuple:
        raise AssertionError("evaluate loaded the model")

    return EvalEnv(model_spec=cfg.model, prepend_bos=cfg.data.prepend_bos, label="btk-s0", run_name="tiny",
                   loader=refuse)  # fmt: skip


@pytest.fixture(scope="module")
def k_sparse(prepared: Prepared, sae: SAE) -> tuple:
    """sae-bench's k-sparse probing on the prepared tensors: (raw_df, metrics_df)."""
    probe, train, test = probe_and_splits(prepared)
    return k_sparse_metrics(sae, probe, train, test, PARAMS, "btk-s0", prepared.meta["layer"])


def probe_and_splits(prepared: Prepared) -> tuple:
    """The cached LLM probe and the (activations, [(word, letter)]) train and test splits, as evaluate reads them."""
    meta = prepared.meta
    probe = probe_from_tensors(prepared.tensor("probe_weight"), prepared.tensor("probe_bias"))
    train = (prepared.tensor("train_acts"), list(zip(meta["train_words"], prepared.tensor("train_labels").tolist())))
    test = (prepared.tensor("test_acts"), list(zip(meta["test_words"], prepared.tensor("test_labels").tolist())))
    return probe, train, test


def test_prepare_writes_aligned_tensors_and_a_probe_that_beats_chance(prepared: Prepared) -> None:
    meta = prepared.meta
    n_train, n_test = len(meta["train_words"]), len(meta["test_words"])
    assert (n_train, n_test) == (26 * 12, 26 * 4)
    assert set(prepared.names()) == {"train_acts", "train_labels", "test_acts", "test_labels", "absorption_acts",
                                     "probe_weight", "probe_bias"}  # fmt: skip
    assert prepared.tensor("train_acts").shape == (n_train, 576)
    assert prepared.tensor("test_acts").shape == prepared.tensor("absorption_acts").shape == (n_test, 576)
    assert len(prepared.reader("train_acts").index["parts"]) > 1  # really streamed in bounded parts
    labels = prepared.tensor("test_labels")
    assert labels.tolist() == [letter_of(w) for w in meta["test_words"]]
    assert meta["word_at_position_fraction"] == 1.0  # position -6 is the word's own token in every prompt
    assert len(meta["prompt_token_lengths"]) == 1  # every prompt has the same length, as sae-bench requires
    examples = meta["example_prompts"]
    assert examples["absorption"].startswith("\n") and examples["train"].count(" has the first letter: ") == 2
    # the calculator's prompts are fresh: same words, different context, so different activations
    assert not torch.allclose(prepared.tensor("test_acts"), prepared.tensor("absorption_acts"))

    probe = probe_from_tensors(prepared.tensor("probe_weight"), prepared.tensor("probe_bias"))
    with torch.no_grad():
        scores = probe(prepared.tensor("test_acts"))
    accuracy = (scores.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.3, accuracy  # chance is 1/26
    aucs = [s["auc"] for s in meta["probe_test_stats"].values()]
    assert sum(aucs) / 26 > 0.85, aucs
    assert "SUBSAMPLE of 16 words per letter" in meta["data_source"]
    json.dumps(meta)


def test_plan_size_bounds_what_prep_writes(tiny_run, prepared: Prepared) -> None:
    """The disk preflight's size of this prep (an upper bound: twice the words) against the bytes it wrote."""
    real, est = written_bytes(prepared.root), planned_prep_bytes(ABSORPTION, PARAMS, tiny_run[0].model, None)
    assert real <= est <= 2 * real, (real, est)


def test_truncated_batched_activations_equal_a_full_forward(tiny_run) -> None:
    cfg, _, _ = tiny_run
    model, tokenizer = get_model(cfg.model)
    vocab = alpha_vocab(tokenizer)
    assert {" cat", "cat", " Cat"} <= set(vocab) and all(w.strip().isalpha() for w in vocab)
    with seeded_global_random(0):
        prompts = icl_prompts([" cat", "dog", " zebra"], vocab, PARAMS.prompt_template, 4)
    prompts.append("\n cat has the first letter:")  # a shorter prompt: batched apart from the others
    ids = tokenize_prompts(prompts, tokenizer, prepend_bos=True)
    assert all(x[0] == tokenizer.bos_token_id for x in ids) and len({len(x) for x in ids}) == 2
    ours, found = activations_at(model, ids, cfg.model.hook, cfg.model.layer, -6, batch_size=2)
    assert tokenizer.convert_ids_to_tokens(found.tolist()) == ["Ġcat", "dog", "Ġzebra", "Ġcat"]
    with torch.no_grad():
        for i, x in enumerate(ids):
            _, cache = model.run_with_cache(torch.tensor([x]), names_filter=[cfg.model.hook])
            torch.testing.assert_close(ours[i], cache[cfg.model.hook][0, -6], rtol=1e-4, atol=1e-4)


def test_calculator_matches_saebench_running_the_model(
    tiny_run, prepared: Prepared, sae: SAE, k_sparse: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sae-bench's ``FeatureAbsorptionCalculator.calculate_absorption`` runs the model on its prompts; ours
    reads activations cached by ``activations_at``. Same words, same seeded ICL draws (so the same prompt
    strings), same probe direction and main latents. The model is told to prepend BOS, as our SAE's
    training contexts had it. Compared: the two letters where this SAE shows most absorption, and a
    direction one latent carries alone (its decoder row, with a silent latent as "main"), which makes
    full absorption happen. Tolerance: projections and activations 1e-4 (cut vs full forward), fractions
    1e-4; feature ids and the full-absorption flag identical."""
    cfg, _, _ = tiny_run
    model, tokenizer = get_model(cfg.model)
    monkeypatch.setattr(model.cfg, "default_prepend_bos", True)
    vocab = alpha_vocab(tokenizer)
    meta, (_, metrics_df), probe_w = prepared.meta, k_sparse, prepared.tensor("probe_weight")
    hook, layer, pos = cfg.model.hook, cfg.model.layer, PARAMS.prompt_token_pos

    cases: dict[str, tuple] = {}
    for li, letter in enumerate(LETTERS):
        words = [w for w in meta["train_words"] + meta["test_words"] if letter_of(w) == li][:8]
        with seeded_global_random(100 + li):
            prompts = icl_prompts(words, vocab, PARAMS.prompt_template, PARAMS.max_icl_examples)
        acts, _ = activations_at(model, tokenize_prompts(prompts, tokenizer, True), hook, layer, pos, 64)
        main = [int(f) for f in metrics_df[metrics_df["letter"] == letter]["split_feats"].iloc[0]]
        res = absorption_scores(sae, acts, words, probe_w[li], main)
        absorbed = sum(r.absorption_fraction > 0 or r.is_full_absorption for r in res)
        cases[letter] = (words, prompts, acts, main, absorbed)
    picked = sorted(LETTERS, key=lambda letter: -cases[letter][4])[:2]
    runs = [(letter, probe_w[LETTERS.index(letter)], cases[letter][3]) for letter in picked]
    words0, _, acts0, _, _ = cases[picked[0]]
    with torch.no_grad():
        lat = sae.encode(acts0)
    silent = int(torch.nonzero(lat.sum(0) == 0)[0])

    def fully_absorbs(latent: int) -> bool:
        return any(r.is_full_absorption for r in absorption_scores(sae, acts0, words0, sae.W_dec[latent].detach(), [silent]))

    # The most active latent whose decoder row, as the "probe", is fully absorbed somewhere (which latent
    # that is depends on the trained SAE; the comparison below is what must hold for it).
    carrier = next(c for c in lat.mean(0).argsort(descending=True)[:32].tolist() if fully_absorbs(c))
    runs.append((picked[0], sae.W_dec[carrier].detach().clone(), [silent]))

    compared: list[fac.WordAbsorptionResult] = []
    for letter, direction, main in runs:
        words, prompts, acts, _, _ = cases[letter]
        calc = fac.FeatureAbsorptionCalculator(
            model=model, icl_word_list=vocab, max_icl_examples=PARAMS.max_icl_examples,
            base_template=PARAMS.prompt_template, answer_formatter=first_letter_formatter(), word_token_pos=pos,
            batch_size=5, full_absorption_probe_cos_sim_threshold=fa.FULL_ABSORPTION_PROBE_COS_THRESHOLD,
            absorption_fraction_probe_cos_sim_threshold=fa.ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
            probe_projection_proportion_threshold=fa.ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
            absorption_fraction_max_absorbing_latents=fa.ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
        )  # fmt: skip
        with seeded_global_random(100 + LETTERS.index(letter)):
            ref = calc.calculate_absorption(sae, words, direction, main, layer=layer, show_progress=False)
        assert model.to_tokens(prompts[0])[0].tolist() == tokenize_prompts(prompts[:1], tokenizer, True)[0]
        ours = absorption_scores(sae, acts, words, direction, main, prompts=prompts)
        assert len(ours) == len(ref.word_results) == len(words) > 0
        for o, r in zip(ours, ref.word_results):
            assert (o.word, o.prompt) == (r.word, r.prompt)  # our prompt builder draws what sae-bench draws
            assert o.probe_projection == pytest.approx(r.probe_projection, rel=1e-4, abs=1e-4)
            assert o.absorption_fraction == pytest.approx(r.absorption_fraction, abs=1e-4)
            assert o.is_full_absorption == r.is_full_absorption
            for mine, theirs in ((o.main_feature_scores, r.main_feature_scores),
                                 (o.top_projection_feature_scores, r.top_projection_feature_scores)):  # fmt: skip
                assert [s.feature_id for s in mine] == [s.feature_id for s in theirs]
                assert [s.activation for s in mine] == pytest.approx([s.activation for s in theirs], rel=1e-4, abs=1e-4)
                assert [s.probe_cos_sim for s in mine] == pytest.approx([s.probe_cos_sim for s in theirs], abs=1e-6)
            compared.append(o)
    # the comparison covers every branch: no absorption, partial or whole fractions, full absorption
    fractions = [o.absorption_fraction for o in compared]
    assert 0.0 in fractions and any(f > 0 for f in fractions) and any(o.is_full_absorption for o in compared)
    assert sum(o.top_projection_feature_scores[0].activation > 0 for o in compared) > len(compared) // 2


def test_metrics_table_equals_saebench_build_metrics_df(k_sparse: tuple) -> None:
    """Our counts-based table against sae-bench's sklearn one: the fixture's raw scores, and the same rows
    with one letter never predicted (empty denominators) and every score tied at 0 for another (AUC 0.5)."""
    raw_df, _ = k_sparse
    rng = np.random.default_rng(0)
    metadata = pd.DataFrame([
        {"layer": 3, "sae_name": "btk-s0", "letter": letter, "k": k, "feats": rng.integers(0, 64, k),
         "cos_probe_sae_enc": rng.normal(size=k), "cos_probe_sae_dec": rng.normal(size=k),
         "weights": rng.normal(size=k), "bias": float(rng.normal())}
        for letter in LETTERS for k in range(1, PARAMS.max_k_value + 1)
    ])  # fmt: skip
    edited = raw_df.copy()
    for k in range(1, PARAMS.max_k_value + 1):
        edited[f"score_sparse_sae_a_k_{k}"] = -1.0
        edited[f"sum_sparse_sae_b_k_{k}"] = 0.0
    for raw in (raw_df, edited):
        ref = ksp.build_metrics_df(raw, metadata, max_k_value=PARAMS.max_k_value)
        ours = metrics_table(raw, metadata, max_k_value=PARAMS.max_k_value)
        assert list(ours.columns) == list(ref.columns)
        for column in ref.columns:
            for r, o in zip(ref[column], ours[column]):
                if column.startswith("auc"):
                    assert o == pytest.approx(r, abs=1e-12), column
                elif isinstance(r, np.ndarray):
                    assert np.array_equal(o, r), column
                else:
                    assert o == r, column
    assert ours.loc[ours["letter"] == "a", "f1_sparse_sae_1"].item() == 0.0
    assert ours.loc[ours["letter"] == "b", "auc_sum_sparse_sae_1"].item() == 0.5
    assert ref["f1_sparse_sae_1"].between(0.0, 1.0).all() and ref["f1_sparse_sae_3"].gt(0).any()


def test_raw_scores_equal_saebench_per_row_loop(prepared: Prepared, sae: SAE) -> None:
    """Our per-(letter, k) columns against sae-bench's per-row loop on the same k-sparse probes: sums exactly,
    k-sparse scores to float rounding (a matrix-vector product, not one dot product per row) with the same
    sign everywhere, so the metrics table built from either is the same."""
    probe, (train_acts, train_labels), (test_acts, test_labels) = probe_and_splits(prepared)
    torch.manual_seed(PARAMS.random_seed)
    with torch.enable_grad():
        probes = ksp.train_k_sparse_probes(sae, train_labels, train_acts, ks=[1, 2, 3], num_epochs=5, precalc_sae_acts=True)
    with torch.no_grad():
        ref = ksp.eval_probe_and_sae_k_sparse_raw_scores(sae, probe, probes, test_labels, test_acts, 24)
        ours = raw_scores(sae, probe, probes, test_labels, test_acts, batch_size=24)
    assert list(ours.columns) == [c for c in ref.columns if not c.endswith("_acts")]
    for column in ours.columns:
        if column.startswith("score_sparse_sae"):
            assert np.allclose(ours[column], ref[column], rtol=1e-6, atol=1e-6), column
            assert ((ours[column] > 0) == (ref[column] > 0)).all(), column
        else:
            assert ours[column].tolist() == ref[column].tolist(), column
    metadata = ksp.sae_k_sparse_metadata(sae, probe, probes, sae_name="btk-s0", layer=prepared.meta["layer"])
    tables = [metrics_table(raw, metadata, max_k_value=3) for raw in (ours, ref)]
    counted = [c for c in tables[1].columns if c.startswith(("f1_", "precision_", "recall_"))]
    assert tables[0][counted].equals(tables[1][counted])
    assert ours["score_sparse_sae_a_k_3"].abs().gt(0).any() and ours["sum_sparse_sae_a_k_1"].gt(0).any()


def test_false_negative_selection_matches_saebench(prepared: Prepared, k_sparse: tuple, tmp_path: Path) -> None:
    """Ours filters the in-memory raw scores; sae-bench's reads them back from its parquet file."""
    raw_df, metrics_df = k_sparse
    layer = prepared.meta["layer"]
    raw_df.to_parquet(tmp_path / f"layer_{layer}_btk_raw_results.parquet", index=False)
    ref = fa.get_stats_and_likely_false_negative_tokens(metrics_df, "btk", layer, tmp_path)
    ours = likely_false_negatives(metrics_df, raw_df)
    words = prepared.meta["test_words"]
    for letter in LETTERS:
        r, o = ref[letter], ours[letter]
        assert o["probe_true_positives"] == r.probe_true_positives
        assert o["split_feats_true_positives"] == r.split_feats_true_positives
        assert o["split_feats"] == [int(f) for f in r.split_feats]
        assert [words[i] for i in o["rows"]] == r.potential_false_negatives
    assert sum(o["probe_true_positives"] for o in ours.values()) > 26  # the probe finds positives


def test_evaluate_end_to_end_without_the_model(tiny_run, prepared: Prepared, sae: SAE) -> None:
    cfg, _, _ = tiny_run
    output, summary = evaluate(prepared, sae, no_model_env(cfg), PARAMS)
    assert isinstance(output, AbsorptionEvalOutput)
    data = json.loads(output.to_json())
    assert data["eval_type_id"] == "absorption_first_letter"
    assert data["eval_config"]["model_name"] == "SmolLM2-135M-Instruct" and data["sae_lens_id"] == "btk-s0"
    assert "SUBSAMPLE" in data["eval_result_unstructured"]["data_source"]
    per_letter = data["eval_result_unstructured"]["per_letter"]
    included = {d["first_letter"] for d in data["eval_result_details"]}
    assert included == {letter for letter, v in per_letter.items() if v["included"]} and len(included) >= 2
    for d in data["eval_result_details"]:
        assert 0.0 <= d["mean_absorption_fraction"] <= 1.0 and 0.0 <= d["full_absorption_rate"] <= 1.0
        assert 1 <= d["num_split_features"] <= PARAMS.max_k_value
        assert d["num_full_absorption"] <= d["num_probe_true_positives"]
        assert d["num_split_features"] == len(per_letter[d["first_letter"]]["split_feats"])
    mean = data["eval_result_metrics"]["mean"]
    fractions = [d["mean_absorption_fraction"] for d in data["eval_result_details"]]
    assert mean["mean_absorption_fraction_score"] == pytest.approx(sum(fractions) / len(fractions))
    assert set(summary) == {"mean_absorption_fraction_score", "mean_full_absorption_score", "mean_num_split_features",
                            "letters_evaluated", "llm_probe_mean_f1", "seconds"}  # fmt: skip
    assert summary["letters_evaluated"] == len(included)
    assert summary["mean_num_split_features"] == round(mean["mean_num_split_features"], 4)
    # seeded: a second evaluation of the same SAE gives the same numbers
    again, summary_again = evaluate(prepared, sae, no_model_env(cfg), PARAMS)
    summary_again.pop("seconds"), summary.pop("seconds")
    assert summary_again == summary
    assert [asdict(d) for d in again.eval_result_details] == [asdict(d) for d in output.eval_result_details]
