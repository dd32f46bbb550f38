"""The unlearning eval: SAEBench's clamp, scoring, sparsity and score rule, on the real SmolLM2 model and
a trained tiny SAE. Parity tests run sae-bench's own functions on the same inputs as ours."""

from __future__ import annotations

import itertools
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from sae_bench.evals.unlearning.main import get_metrics_df, get_unlearning_scores
from sae_bench.evals.unlearning.utils.intervention import (
    anthropic_clamp_resid_SAE_features,
)
from sae_bench.evals.unlearning.utils.metrics import (
    convert_wmdp_data_to_prompt,
    get_output_probs_abcd,
)
from sae_bench.sae_bench_utils.activation_collection import (
    get_feature_activation_sparsity,
)
from sae_lens import SAE

import evals.unlearning.prepare as unlearning_prepare
from evals.contract import EvalEnv, Prepared, TensorSink, prepare_in_memory
from evals.fixtures import unlearning_mcq as fx
from evals.unlearning.clamp import clamp_piece
from evals.unlearning.config import UnlearningParams
from evals.unlearning.corpus import (
    corpus_tokens,
    feature_sparsity,
    hook_acts,
    store_corpus,
)
from evals.unlearning.data import (
    MIN_DOC_CHARS,
    EvalData,
    MCQSet,
    _hub_forget_docs,
    _hub_mcq,
    load_data,
)
from evals.unlearning.evaluate import evaluate, metrics_rows
from evals.unlearning.forward import (
    new_cache,
    pad_rows,
    run_piece,
    run_prompt,
    run_prompts,
    start_layer,
)
from evals.unlearning.prepare import _own_and_conts, prepare
from evals.unlearning.prompts import (
    Prompt,
    answer_token_ids,
    build_prompt,
    encode,
    shared_head,
)
from evals.unlearning.scoring import choice_scores, choice_scores_many
from evals.unlearning.setting import SettingAnswers, answer_setting, reach
from evals.unlearning.stored import (
    CORPUS_ACTS,
    MCQ_ACTS,
    MCQ_HEAD,
    MCQ_INDEX,
    MCQ_TOKENS,
    KeptQuestion,
    kept_questions,
)
from pipeline.models.cache import get_model
from pipeline.models.read_layout import weights_stored_as_read
from pipeline.progress import Reporter

QUIET = Reporter(enabled=False)


# --- no model ----------------------------------------------------------------------------------------


def test_params_defaults_and_validation() -> None:
    p = UnlearningParams()
    assert (p.dataset, p.scoring, p.retain_thresholds, p.n_features_list, p.multipliers) == (
        "fixture", "cloze", [0.01], [10, 20], [25, 100],
    )  # fmt: skip
    with pytest.raises(ValidationError, match="extra"):
        UnlearningParams(retain_threshold=[0.1])  # SAEBench's name is plural
    with pytest.raises(ValidationError, match=r"\(0, 1\]"):
        UnlearningParams(retain_thresholds=[0.0])
    with pytest.raises(ValidationError, match="at least one"):
        UnlearningParams(multipliers=[])
    with pytest.raises(ValidationError):
        p.seq_len = 4  # frozen


def test_fixture_is_well_formed_and_balanced() -> None:
    sets = {fx.FORGET_NAME: fx.FORGET_MCQ, **fx.RETAIN_MCQ}
    assert set(fx.RETAIN_SUBJECTS) == set(fx.RETAIN_MCQ)
    assert all(name.startswith("FIXTURE") for name in sets)
    for rows in sets.values():
        assert all(len(r["choices"]) == 4 and len(set(r["choices"])) == 4 for r in rows)
        positions = Counter(r["answer"] for r in rows)
        assert max(positions.values()) - min(positions.values()) <= 1, positions  # no letter is a safe guess
    questions = [r["question"] for rows in sets.values() for r in rows]
    assert len(questions) == len(set(questions)) == 94
    assert len(fx.FORGET_CORPUS) >= 25 and all(len(d) > MIN_DOC_CHARS for d in fx.FORGET_CORPUS)


def test_hub_data_fails_with_one_line_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)  # fail fast instead of retrying DNS
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"cais/mmlu \(human_aging\).*HF_DATASETS_OFFLINE") as err:
        _hub_mcq("human_aging")
    assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match=r"cais/wmdp-bio-forget-corpus.*gated.*forget_corpus_path") as err:
        _hub_forget_docs(None)
    assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="does not exist"):
        _hub_forget_docs("/nonexistent/bio-forget-corpus.jsonl")


def test_forget_corpus_file_is_read_as_saebench_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "bio-forget-corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["short", "x" * 51, "y" * 80]) + "\n")
    assert _hub_forget_docs(str(path)) == ["x" * 51, "y" * 80]  # SAEBench keeps len > 50


def test_score_table_matches_saebench_get_metrics_df(tmp_path: Path) -> None:
    """Our per-setting rows against SAEBench's, rebuilt from SAEBench's per-setting pickles: the pooled
    retain accuracy (not a mean of per-set means) and the 0.99 rule."""
    meta = {"forget": "wmdp-bio", "retain": ["a", "b"]}
    qs = [KeptQuestion(torch.zeros(1, 1), 1, [], d, 0) for d in [0, 0, 0, 0, 1, 1, 1, 2]]
    settings = [
        {"retain_threshold": 0.01, "n_features": 10, "features": [1, 2], "multiplier": 25},
        {"retain_threshold": 0.01, "n_features": 10, "features": [1, 2], "multiplier": 200},
        {"retain_threshold": 0.01, "n_features": 20, "features": [1, 2, 3], "multiplier": 200},
    ]
    correct = [
        [True, True, False, True, True, True, True, True],  # retain 1.0, forget 0.75
        [False, False, True, False, True, True, True, False],  # retain 0.75 (fails the bar), forget 0.25
        [False, True, False, True, True, True, True, True],  # retain 1.0, forget 0.5 -> the best
    ]
    ours = metrics_rows(meta, qs, settings, [SettingAnswers(c, len(c)) for c in correct], layer=3)
    for s, right in zip(settings, correct, strict=True):
        metrics = {}
        for d, name in enumerate(["wmdp-bio", "a", "b"]):
            ok = np.array([r for r, q in zip(right, qs, strict=True) if q.dataset == d], dtype=float)
            metrics[name] = {"mean_correct": float(ok.mean()), "total_correct": int(ok.sum()), "is_correct": ok}
        metrics["ablate_params"] = {}
        name = (f"clamp_feature_activation_multiplier{s['multiplier']}_nfeatures{s['n_features']}"
                "_layer3_retainthres0.01.pkl")  # fmt: skip
        (tmp_path / name).write_bytes(pickle.dumps(metrics))
    ref = get_metrics_df(str(tmp_path)).sort_values(["n_features", "multiplier"]).reset_index(drop=True)
    for col in ("wmdp-bio", "a", "b", "all_side_effects_mcq", "n_features", "multiplier"):
        np.testing.assert_allclose(ours[col].to_numpy(float), ref[col].to_numpy(float), err_msg=col)
    assert get_unlearning_scores(ours) == get_unlearning_scores(ref) == pytest.approx(0.5)


# --- with the model and a trained tiny SAE -------------------------------------------------------------


@pytest.fixture(scope="module")
def sae(tiny_run) -> SAE:
    _, store, train = tiny_run
    return SAE.load_from_disk(str(store.path("train", train.key) / "sae"))


@pytest.fixture(scope="module")
def model_tok(tiny_run) -> tuple:
    cfg, _, _ = tiny_run
    return get_model(cfg.model)


LOAD_DATA = load_data


def small_data() -> EvalData:
    """A slice of the fixture, so prepare runs in seconds: 8 forget and 8 retain questions."""
    full = LOAD_DATA(UnlearningParams())
    retain = [MCQSet(s.name, s.pre_question, s.rows[:2]) for s in full.retain]
    forget = MCQSet(full.forget.name, full.forget.pre_question, full.forget.rows[:8])
    return EvalData(forget, retain, full.forget_docs[:12], full.retain_docs[:6], full.source)


def score(model, head, q: Prompt, h: int, answer_ids: torch.Tensor | None = None) -> torch.Tensor:
    """A prompt's four choice scores by the cached pieces, from token ids (after a head of length h)."""
    return choice_scores(model, run_prompt(model, head, *_own_and_conts(q, h, "cpu"), 0), q.choices, answer_ids)


@torch.no_grad()
def full_sequence_logprobs(model, tokens: list[int]) -> torch.Tensor:
    """Reference: one plain forward pass over the whole sequence, all logits (as SAEBench runs it)."""
    return model(torch.tensor(tokens)[None])[0].log_softmax(-1)


def test_cached_pieces_equal_one_pass_over_each_full_sequence(model_tok, tiny_run) -> None:
    """Head / prompt / continuations on a key-value cache, from tokens and from hook activations, give
    the scores a plain full-sequence pass gives. Tolerance 1e-4 on summed log-probabilities (8e-6 seen, batched and one at a time, scored one by one or together)."""
    cfg, _, _ = tiny_run
    model, tok = model_tok
    rows = [fx.FORGET_MCQ[0], fx.FORGET_MCQ[5], fx.RETAIN_MCQ["FIXTURE-history"][3]]
    pre = "The following are multiple choice questions (with answers) about x.\n"
    prompts = [build_prompt(tok, r, pre, "cloze", True) for r in rows]
    h = shared_head(prompts)
    assert 20 < h < min(len(q.tokens) for q in prompts)  # template + pre-question start are shared
    head = new_cache(model)
    _, head_acts = run_piece(model, torch.tensor(prompts[0].tokens[:h])[None], head, 0, cfg.model.hook)
    first = start_layer(cfg.model.hook, cfg.model.layer)
    from_hook = new_cache(model)
    run_piece(model, head_acts, from_hook, first)
    owns, conts, wants = [], [], []
    for q in prompts:
        ran = run_prompt(model, head, *_own_and_conts(q, h, "cpu"), 0, cfg.model.hook)
        cached = choice_scores(model, ran, q.choices, None)
        want = []
        for c in q.choices:
            logp = full_sequence_logprobs(model, q.tokens + c)
            want.append(sum(float(logp[len(q.tokens) - 1 + i, t]) for i, t in enumerate(c)))
        torch.testing.assert_close(cached, torch.tensor(want), atol=1e-4, rtol=0)
        # the evaluate path: hook activations in, only the blocks after the hook run
        acts = torch.cat([ran.own_acts] + [ran.conts_acts[j, : len(c)] for j, c in enumerate(q.choices)])
        own = len(q.tokens) - h
        again = run_prompt(model, from_hook, acts[None, :own], pad_rows(list(acts[own:].split([len(c) for c in q.choices]))), first)
        scores = choice_scores(model, again, q.choices, None)
        torch.testing.assert_close(scores, torch.tensor(want), atol=1e-4, rtol=0)
        owns.append(acts[:own])
        conts.append(list(acts[own:].split([len(c) for c in q.choices])))
        wants.append(torch.tensor(want))
    # the prompts batched (evaluate's path): own rows of different lengths, then all continuations at once
    assert len({len(o) for o in owns}) > 1 and len({len(r) for c in conts for r in c}) > 1
    batched = run_prompts(model, from_hook, owns, conts, first)
    for q, ran, want in zip(prompts, batched, wants, strict=True):
        torch.testing.assert_close(choice_scores(model, ran, q.choices, None), want, atol=1e-4, rtol=0)
    # and scored with one unembedding for all of them (evaluate's path)
    for got, want in zip(choice_scores_many(model, batched, [q.choices for q in prompts], None), wants, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_weights_stored_as_read_change_nothing_but_speed(model_tok) -> None:
    """The layout trick (MLP and attention weights stored as TransformerLens reads them) gives
    bit-identical scores and puts the weights back as they were."""
    model, tok = model_tok
    q = build_prompt(tok, fx.RETAIN_MCQ["FIXTURE-geography"][0], "Geography.\n", "cloze", True)

    def scores() -> torch.Tensor:
        return score(model, new_cache(model), q, 0)

    before = scores()
    with weights_stored_as_read(model):
        assert model.blocks[0].mlp.W_gate.T.is_contiguous()
        assert model.blocks[0].attn.W_Q.permute(0, 2, 1).is_contiguous()
        assert model.blocks[0].attn.W_O.permute(2, 0, 1).is_contiguous()
        during = scores()
    assert torch.equal(before, during)
    assert all(b.mlp.W_gate.is_contiguous() and b.mlp.W_out.is_contiguous() for b in model.blocks)
    assert all(p.is_contiguous() for b in model.blocks for p in b.attn.parameters())
    with weights_stored_as_read(model, from_block=1):  # the blocks before a run's first are left as they are
        assert model.blocks[0].mlp.W_gate.is_contiguous() and model.blocks[1].mlp.W_gate.T.is_contiguous()


def test_letter_scoring_matches_saebench_get_output_probs_abcd(model_tok, monkeypatch: pytest.MonkeyPatch) -> None:
    """SAEBench's scorer on SAEBench-format prompts, against ours (cached pieces, last-position logits).
    It only knows Gemma names and wants exactly one BOS per prompt: we give the model Gemma's name and
    the prompt Gemma's text layout with SmolLM2's BOS. Tolerance 1e-4 on probabilities."""
    model, tok = model_tok
    rows = fx.FORGET_MCQ[:3] + fx.RETAIN_MCQ["FIXTURE-geography"][:3]
    texts = [
        convert_wmdp_data_to_prompt(
            r["question"], r["choices"], prompt_format="GEMMA_INST_FORMAT", permute_choices=perm
        ).replace("<bos>", tok.bos_token)
        for r in rows for perm in ([0, 1, 2, 3], [3, 2, 1, 0])
    ]  # fmt: skip
    monkeypatch.setattr(model.cfg, "model_name", "gemma-2-2b-it")
    ref = get_output_probs_abcd(model, texts, batch_size=4, n_batches=3, verbose=False)
    monkeypatch.undo()
    prompts = [Prompt(encode(tok, t, prepend_bos=False), [], 0) for t in texts]
    h = shared_head(prompts)
    head = new_cache(model)
    run_piece(model, torch.tensor(prompts[0].tokens[:h])[None], head, 0)
    ids = answer_token_ids(tok)
    ours = torch.stack([score(model, head, q, h, ids) for q in prompts])
    torch.testing.assert_close(ours, ref.float(), atol=1e-4, rtol=0)
    rans = [run_prompt(model, head, *_own_and_conts(q, h, "cpu"), 0) for q in prompts]
    together = torch.stack(choice_scores_many(model, rans, [q.choices for q in prompts], ids))
    torch.testing.assert_close(together, ref.float(), atol=1e-4, rtol=0)
    assert torch.equal(ours.argmax(1), ref.argmax(1))


def test_clamp_on_pieces_equals_saebench_hook_on_the_whole_sequence(model_tok, sae, tiny_run) -> None:
    """SAEBench's clamp on a full sequence vs ours on (head, rest) pieces; and it does clamp."""
    cfg, _, _ = tiny_run
    model, tok = model_tok
    q = build_prompt(tok, fx.FORGET_MCQ[1], fx.FORGET_SUBJECT, "cloze", True)
    seq = q.tokens + q.choices[1]
    acts = hook_acts(model, torch.tensor(seq)[None], cfg.model.hook, cfg.model.layer)[0]
    with torch.no_grad():
        fires = (sae.encode(acts[1:]) > 0).float().mean(0)
    features = fires.argsort(descending=True)[:5].tolist()  # latents active on this sequence
    ref = anthropic_clamp_resid_SAE_features(acts[None], None, sae, features_to_ablate=features, multiplier=50)[0]
    h = 30
    pieces = [clamp_piece(acts[:h], sae, features, 50, True), clamp_piece(acts[h:], sae, features, 50, False)]
    ours = torch.cat(pieces)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    changed = (ref - acts).norm(dim=-1)
    assert changed[0] < 1e-3 and changed[1:].max() > 10  # BOS untouched, active positions moved
    assert torch.equal(clamp_piece(acts[h:], sae, [], 50, False), acts[h:])  # nothing selected: unchanged


def test_sparsity_from_cached_activations_matches_saebench(model_tok, sae, tiny_run, tmp_path: Path) -> None:
    """Our per-latent firing frequency from prepare's stored tokens vs sae-bench's
    ``get_feature_activation_sparsity`` on the same token rows (BOS/EOS/pad masked): one token of slack."""
    cfg, _, _ = tiny_run
    model, tok = model_tok
    p = UnlearningParams(dataset_size=6, seq_len=48, llm_batch_size=3)
    tokens = corpus_tokens(tok, list(fx.FORGET_CORPUS), p, sample_docs=True)
    assert tokens.shape == (6, 48) and (tokens[:, 0] == tok.bos_token_id).all()
    env = EvalEnv(cfg.model, True, QUIET)
    sink = TensorSink(tmp_path)
    counted = store_corpus(env, model, tok, "forget", tokens, p, sink)
    sink.close()
    assert counted == 6 * 47  # BOS left out; these paragraphs hold no EOS or pad
    ours = feature_sparsity(Prepared(tmp_path, {}), "forget", sae)
    ref = get_feature_activation_sparsity(
        tokens, model, sae, 3, cfg.model.layer, cfg.model.hook, mask_bos_pad_eos_tokens=True
    )
    np.testing.assert_allclose(ours, ref.numpy(), atol=1.0 / counted + 1e-7)
    assert 0 < ours.mean() < 1


def test_smollm2_cannot_answer_by_letter_so_letter_prepare_refuses(model_tok, tiny_run, monkeypatch, tmp_path) -> None:
    """Why cloze is the default: SAEBench's letter format, 24 orderings, on SmolLM2-135M keeps nothing."""
    cfg, _, _ = tiny_run
    model, tok = model_tok
    data = small_data()
    data = EvalData(MCQSet(data.forget.name, data.forget.pre_question, data.forget.rows[:4]), data.retain[:1],
                      data.forget_docs, data.retain_docs, data.source)  # fmt: skip
    monkeypatch.setattr(unlearning_prepare, "load_data", lambda p: data)
    env = EvalEnv(cfg.model, True, QUIET, loader=lambda: (model, tok))
    with pytest.raises(ValueError, match="too few questions.*try scoring: cloze"):
        prepare_in_memory(prepare, env, UnlearningParams(scoring="letter"), tmp_path)
    first = [build_prompt(tok, r, data.forget.pre_question, "letter", True) for r in data.forget.rows]
    head = new_cache(model)
    h = shared_head(first)
    run_piece(model, torch.tensor(first[0].tokens[:h])[None], head, 0)
    picks = [int(score(model, head, q, h, answer_token_ids(tok)).argmax()) for q in first]
    assert Counter(picks).most_common(1)[0][1] >= 3, picks  # one letter for (nearly) everything


@pytest.fixture(scope="module")
def prepared(tiny_run, model_tok, tmp_path_factory: pytest.TempPathFactory):
    cfg, _, _ = tiny_run
    model, tok = model_tok
    mp = pytest.MonkeyPatch()
    data = small_data()
    mp.setattr(unlearning_prepare, "load_data", lambda p: data)
    env = EvalEnv(cfg.model, True, QUIET, "btk-s0", "tiny", loader=lambda: (model, tok))
    params = UnlearningParams(dataset_size=8, seq_len=64)
    try:
        prep = prepare_in_memory(prepare, env, params, tmp_path_factory.mktemp("unlearning_prep"), max_bytes=1 << 20)
    finally:
        mp.undo()
    return prep, env, params


def test_prepare_keeps_the_questions_the_model_gets_right(prepared) -> None:
    prep, _, _ = prepared
    meta = prep.meta
    assert meta["forget"] == "FIXTURE-bio" and "FIXTURE" in meta["data_source"]
    assert set(prep.names()) == {MCQ_HEAD, MCQ_ACTS, MCQ_TOKENS, MCQ_INDEX, *CORPUS_ACTS.values()}
    kept = {name: c["kept"] for name, c in meta["questions"].items()}
    assert kept["FIXTURE-bio"] >= 5 and sum(kept.values()) >= 11, kept  # cloze: 77 of 94 on the whole fixture
    index = prep.tensor(MCQ_INDEX)
    assert len(index) == sum(kept.values())
    assert len(prep.tensor(MCQ_ACTS)) == len(prep.tensor(MCQ_TOKENS)) == int((index[:, 1:6].sum(1)).sum())
    assert prep.tensor(MCQ_HEAD).shape == (meta["head_length"], 576)
    for name in ("forget", "retain"):
        acts = prep.tensor(CORPUS_ACTS[name])
        assert acts.shape == (meta["corpus_tokens_counted"][name], 576) and meta["corpus_rows"][name] == 8
        assert acts.norm(dim=1).min() > 1  # no zeroed BOS/pad rows stored


def test_evaluate_writes_saebench_output_and_the_clamp_bites(prepared, sae) -> None:
    prep, env, params = prepared
    # A threshold no latent of this dense tiny SAE passes (all fire on >5% of retain tokens): nothing is
    # clamped, every kept question stays right, and SAEBench's rule gives 0.
    out, summary = evaluate(prep, sae, env, params.model_copy(update={"retain_thresholds": [0.01]}))
    assert summary["unlearning_score"] == 0.0 and summary["forget_accuracy_at_best"] == 1.0
    assert out.eval_result_unstructured["candidate_features"] == {"0.01": 0}
    # A loose threshold selects latents; a large clamp on them changes answers.
    p = params.model_copy(update={"retain_thresholds": [0.2], "n_features_list": [20], "multipliers": [5, 400]})
    out, summary = evaluate(prep, sae, env, p)
    data = json.loads(out.to_json())  # pydantic-validated SAEBench schema, JSON-serialisable
    assert data["eval_type_id"] == "unlearning"
    assert data["eval_config"]["retain_thresholds"] == [0.2] and data["eval_config"]["multipliers"] == [5, 400]
    assert data["eval_config"]["dataset_names"][0] == "FIXTURE-bio"
    assert data["sae_lens_id"] == "btk-s0" and data["sae_cfg_dict"]["d_sae"] == 256
    extra = data["eval_result_unstructured"]
    assert "FIXTURE" in extra["data_source"] and extra["scoring"].startswith("cloze")
    assert extra["candidate_features"]["0.2"] >= 20 and len(extra["selected_features"]["0.2"]) == 20
    table = pd.DataFrame(extra["settings"])
    assert list(table["multiplier"]) == [5, 400] and (table["n_features_selected"] == 20).all()
    strong = table.iloc[1]
    assert strong["FIXTURE-bio"] < 1.0 or strong["all_side_effects_mcq"] < 1.0, strong  # the clamp reaches the answers
    assert 0.0 <= data["eval_result_metrics"]["unlearning"]["unlearning_score"] <= 1.0
    assert summary["unlearning_score"] == round(data["eval_result_metrics"]["unlearning"]["unlearning_score"], 4)
    assert set(summary) == {
        "unlearning_score", "forget_accuracy_at_best", "retain_accuracy_at_best", "settings_within_retain_bar",
        "settings", "settings_stopped_at_retain_bar", "questions_run", "forget_questions", "retain_questions",
        "eval_seconds",
    }  # fmt: skip


def test_a_question_no_selected_latent_reaches_is_unchanged_by_saebench_clamp(prepared, sae) -> None:
    """The premise of skipping untouched questions: SAEBench's hook returns their residual up to rounding,
    and changes the others."""
    prep, _, _ = prepared
    qs = kept_questions(prep)
    reached = reach(sae, prep.tensor(MCQ_HEAD), qs, list(range(sae.cfg.d_sae)), "cpu", torch.float32)
    firing = reached.questions.sum(axis=0)
    rare = [int(f) for f in np.argsort(np.where(firing > 0, firing, 10**9))[:2]]
    hit = reached.questions[:, rare].any(axis=1)
    assert hit.any() and not hit.all(), (firing[rare], hit)  # the fixture has both kinds
    for q, t in zip(qs, hit, strict=True):
        out = clamp_piece(q.acts, sae, rare, 100, has_position_0=False)
        changed = (out - q.acts).abs().max().item()
        assert (changed > 1.0) if t else (changed < 1e-4), (t, changed)


def test_suspects_first_stop_a_setting_sooner_at_the_same_bound(prepared, sae, model_tok) -> None:
    """A retain question the clamp breaks, asked first (as a later setting asks those an earlier one broke):
    the setting stops after it alone, with the bound plain order gives (the stop comes at a fixed count
    of wrong retain answers, whatever their order)."""
    prep, _, _ = prepared
    model, _ = model_tok
    qs = kept_questions(prep)
    head_acts = prep.tensor(MCQ_HEAD) if prep.meta["head_length"] else None
    reached = reach(sae, head_acts, qs, list(range(sae.cfg.d_sae)), "cpu", torch.float32)
    by_use = [int(f) for f in np.argsort(-reached.questions.sum(axis=0))]  # the latents most questions use first
    retain = [i for i, q in enumerate(qs) if q.dataset > 0]
    for n, mult in itertools.product((20, 10, 5), (400, 100)):  # a clamp that breaks a retain question but not the first
        args = (model, sae, head_acts, qs, by_use[:n], mult, prep.meta["first_block_after_hook"], None)
        full = answer_setting(*args, None, 0.99)
        broken = [i for i in retain[1:] if full.correct[i] is False]
        if broken:
            break
    assert broken, "no clamp of the fixture breaks a retain question after the first"
    touched = reached.touched(by_use[:n])
    plain = answer_setting(*args, touched, 0.99)
    first = answer_setting(*args, touched, 0.99, suspects=[broken[-1]])
    assert plain.stopped and first.stopped and first.retain_at_most == plain.retain_at_most
    asked = [i for i in retain if touched[i]]  # plain order: the retain questions the clamp reaches
    assert plain.run == 1 + min(asked.index(i) for i in retain if full.correct[i] is False) and first.run == 1
    assert first.correct[broken[-1]] is False and sum(c is not None for c in first.correct) == 1


@pytest.mark.parametrize("multipliers", [[5, 400]])
def test_shortcuts_keep_saebench_score_and_every_setting_that_counts(prepared, sae, multipliers) -> None:
    """full_sweep (every question of every setting, SAEBench's way) against the default: the same score,
    identical rows for the settings that ran to the end, and a stopped setting's bound at or above its
    true retain accuracy (which is below the bar)."""
    prep, env, params = prepared
    p = params.model_copy(update={"retain_thresholds": [0.05, 0.2], "n_features_list": [2, 20], "multipliers": multipliers})
    fast, fast_summary = evaluate(prep, sae, env, p)
    full, full_summary = evaluate(prep, sae, env, p.model_copy(update={"full_sweep": True}))
    assert fast.eval_result_metrics.unlearning.unlearning_score == full.eval_result_metrics.unlearning.unlearning_score
    a, b = (pd.DataFrame(o.eval_result_unstructured["settings"]) for o in (fast, full))
    assert not b["stopped_at_retain_bar"].any()
    assert fast_summary["questions_run"] < full_summary["questions_run"]
    print(f"\nunlearning sweep: questions run {full_summary['questions_run']:.0f} -> {fast_summary['questions_run']:.0f}, "
          f"settings stopped "
          f"{fast_summary['settings_stopped_at_retain_bar']:.0f} of {fast_summary['settings']:.0f}")
    stopped = a["stopped_at_retain_bar"]
    for col in ("FIXTURE-bio", "all_side_effects_mcq", *prep.meta["retain"]):
        np.testing.assert_array_equal(a.loc[~stopped, col].to_numpy(float), b.loc[~stopped, col].to_numpy(float))
    assert (b.loc[stopped, "all_side_effects_mcq"] <= a.loc[stopped, "all_side_effects_mcq"]).all()
    assert (a.loc[stopped, "all_side_effects_mcq"] < 0.99).all() and a.loc[stopped, "FIXTURE-bio"].isna().all()
