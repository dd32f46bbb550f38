"""SAEBench's feature-absorption eval (first-letter spelling), split into model work and per-SAE work.

What is measured (SAEBench ``absorption``, sae-bench 0.6.0): for each letter, how often the SAE's main
first-letter latents stay silent on a word that starts with that letter while other latents, aligned
with a first-letter probe, carry the probe's direction instead ("absorb" it). Steps, as SAEBench runs them:

1. vocabulary: every token of the model's own tokenizer that is alphabetic, with or without one leading
   space (sae-bench's ``get_alpha_tokens``, e.g. ``" cat"`` and ``"cat"``); no dataset is downloaded.
2. ICL spelling prompts (sae-bench's ``create_icl_prompt``): ``max_icl_examples`` (SAEBench: 10) examples
   ``"{word} has the first letter: W"`` separated by newlines, then the word's own line without the
   answer; the activation is read at ``prompt_token_pos`` (-6: the word's token) at the SAE's hook.
   Train/test words split 80/20; train prompts draw their examples from train words, test prompts from
   test words (``create_dataset_probe_training``).
3. a 26-way one-vs-rest linear probe on the LLM's train activations (sae-bench's ``train_multi_probe``
   with the settings of its ``train_and_save_probes``: batch 64, 50 epochs, lr 1e-2, weight decay 1e-4).
4. per SAE, k-sparse probing on SAE latents (sae-bench's ``train_k_sparse_probes``,
   ``eval_probe_and_sae_k_sparse_raw_scores``, ``sae_k_sparse_metadata``, ``build_metrics_df`` and
   ``add_feature_splits_to_metrics_df``): a letter's main latents are the top-k of an L1 probe for the
   largest k reached while the test F1 keeps rising by more than ``f1_jump_threshold``.
5. per SAE, absorption (``FeatureAbsorptionCalculator.calculate_absorption``) on the test words the LLM
   probe gets right, each in a fresh ICL prompt whose examples come from the whole vocabulary; results
   are aggregated by sae-bench's ``_aggregate_results_df`` and reported for the letters whose LLM probe
   F1 exceeds ``min_GT_probe_f1``.

Where this differs from running sae-bench's ``run_eval``:

* the calculator's prompts are built and run through the model once in ``prepare`` (for every test word,
  aligned with the test rows), and ``absorption_scores`` re-implements ``calculate_absorption`` on those
  cached activations, so ``evaluate`` never loads the model. The numbers are the same as sae-bench's
  calculator on the same prompts (parity test in ``tests/test_absorption.py``). Each test word gets one
  calculator prompt, drawn with the eval's seed, rather than prompts drawn from sae-bench's unseeded
  global random state per SAE.
* nothing is written to sae-bench's ``artifacts/absorption`` folders (no probe ``torch.save``, no parquet).
* prompts are tokenized here with one BOS in front when the SAE's training contexts had one
  (``env.prepend_bos``); sae-bench passes strings to TransformerLens, which adds BOS only when the model's
  ``default_prepend_bos`` says so (False for our SmolLM2). Prompts are batched by token length, so the
  position is always counted from each prompt's own end (sae-bench right-pads mixed lengths; for this
  template every prompt has the same length, so the two agree). Tokens after the read position are not
  run: attention is causal, so they cannot change the activation there.
* the activation is read at the SAE's hook (``env.model_spec.hook``); sae-bench's calculator hard-codes
  ``blocks.{layer}.hook_resid_post``.
* ``words_per_letter`` (ours) subsamples the vocabulary to that many words per letter, split 80/20 within
  each letter so every letter is in both splits (sae-bench's functions need all 26 letters in train and
  test). ``None`` uses the whole vocabulary with sae-bench's plain 80/20 split (the real config). The
  small default gives noisy per-letter F1 (7 test words per letter), which also makes the k-sparse
  "feature split" F1 jumps coarse.
* SAEBench stops with no result when fewer than ``min_feats_for_eval`` letters pass ``min_GT_probe_f1``;
  here ``prepare`` raises then (the check only involves the LLM probe), naming the counts.
* activations, the LLM probe and its scores stay float32; on a GPU sae-bench reloads its probe and probe
  data in bfloat16 (``DEFAULT_DTYPE``).

Defaults are sized for the 2-core CPU run and differ from SAEBench's in ``words_per_letter`` (32, ours),
``max_icl_examples`` (2, SAEBench 10), ``min_feats_for_eval`` (8, SAEBench 20), ``llm_batch_size`` and
``precalc_k_sparse_probe_sae_acts`` (speed only). SAEBench's setting: ``words_per_letter: null,
max_icl_examples: 10, min_feats_for_eval: 20``.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sae_bench.evals.absorption import feature_absorption_calculator as fac
from sae_bench.evals.absorption import k_sparse_probing as ksp
from sae_bench.evals.absorption import probing
from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
from sae_bench.evals.absorption.eval_output import (
    EVAL_TYPE_ID_ABSORPTION,
    AbsorptionEvalOutput,
    AbsorptionMeanMetrics,
    AbsorptionMetricCategories,
    AbsorptionResultDetail,
)
from sae_bench.evals.absorption.feature_absorption import (
    ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
    ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
    ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
    FULL_ABSORPTION_PROBE_COS_THRESHOLD,
)
from sae_bench.evals.absorption.prompting import create_icl_prompt, first_letter_formatter
from sae_bench.evals.absorption.vocab import LETTERS, get_alpha_tokens
from sklearn import metrics
from threadpoolctl import threadpool_limits

from evals.prepared import EvalEnv, Prepared, TensorSink

TRAIN_FRACTION = 0.8
"""sae-bench's ``create_dataset_probe_training`` default."""
PROBE_SETTINGS = {"batch_size": 64, "num_epochs": 50, "lr": 1e-2, "weight_decay": 1e-4}
"""The LLM probe's training settings in sae-bench's ``train_and_save_probes`` / ``train_linear_probe_for_task``."""
TOP_PROJECTION_FEATS = 10
"""``FeatureAbsorptionCalculator.topk_feats``."""
DATA_SOURCE = (
    "the model's own tokenizer vocabulary ({n_vocab} alphabetic tokens of {model}, sae-bench get_alpha_tokens); "
    "{selection}; ICL prompts '{template}' built with sae-bench create_icl_prompt (seed {seed}); no dataset download"
)


class AbsorptionParams(BaseModel):
    """SAEBench's ``AbsorptionEvalConfig`` fields (same names and defaults unless noted) plus ours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    random_seed: int = 42
    """Seeds the vocabulary split, the ICL examples, and torch before the LLM probe and the k-sparse probes."""
    f1_jump_threshold: float = 0.03
    max_k_value: int = Field(10, ge=1)
    prompt_template: str = "{word} has the first letter:"
    prompt_token_pos: int = Field(-6, lt=0)
    """Position counted from the prompt's end (-6: the word's token for the default template)."""
    llm_batch_size: int = Field(64, ge=1)
    """Prompts per forward pass (SAEBench: 64 for the probe data, 10 for the calculator)."""
    k_sparse_probe_l1_decay: float = 0.01
    k_sparse_probe_batch_size: int = Field(4096, ge=1)
    k_sparse_probe_num_epochs: int = Field(50, ge=1)
    min_GT_probe_f1: float = 0.6
    min_feats_for_eval: int = Field(8, ge=2)
    """Letters that must pass ``min_GT_probe_f1``. SAEBench: 20 (and allows 1, where its std-dev fails);
    8 here because with ~7 test words per letter the probe's F1 is coarse (14 letters pass at layer 11)."""
    eval_k_sparse_probe_batch_size: int = Field(24, ge=1)
    precalc_k_sparse_probe_sae_acts: bool = True
    """SAEBench's default is False; the numbers are the same, True is faster for small SAEs."""
    words_per_letter: int | None = Field(32, ge=5)
    """Ours: words sampled per letter (80/20 train/test within each letter): 32 gives 650 train and 182
    test words. None = SAEBench's whole vocabulary (47,078 words for SmolLM2)."""
    max_icl_examples: int = Field(2, ge=1)
    """ICL examples per prompt. SAEBench hard-codes 10 (~83 tokens a prompt); 2 (~19 tokens) keeps the
    default run's forward passes near 20k tokens."""

    @field_validator("prompt_template")
    @classmethod
    def _has_word(cls, template: str) -> str:
        if "{word}" not in template:
            raise ValueError("prompt_template must contain '{word}'")
        return template


# --- vocabulary and prompts ------------------------------------------------------------------------------


def letter_of(word: str) -> int:
    """The word's answer class, as sae-bench's ``create_dataset_probe_training`` derives it."""
    return LETTERS.index(first_letter_formatter()(word).strip().lower())


def alpha_vocab(tokenizer: Any) -> list[str]:
    """sae-bench's vocabulary, sorted: the tokenizer's dict order is not stable across loads."""
    return sorted(set(get_alpha_tokens(tokenizer)))


def split_vocab(vocab: Sequence[str], words_per_letter: int | None, seed: int) -> tuple[list[str], list[str]]:
    """Train/test words. ``None``: sae-bench's shuffle-and-cut of the whole vocabulary. Otherwise up to
    ``words_per_letter`` words of each letter, cut 80/20 within the letter."""
    rng = random.Random(seed)
    if words_per_letter is None:
        shuffled = rng.sample(list(vocab), len(vocab))
        cut = int(len(shuffled) * TRAIN_FRACTION)
        return shuffled[:cut], shuffled[cut:]
    by_letter: dict[int, list[str]] = {i: [] for i in range(len(LETTERS))}
    for word in vocab:
        by_letter[letter_of(word)].append(word)
    train: list[str] = []
    test: list[str] = []
    for words in by_letter.values():
        picked = rng.sample(words, min(words_per_letter, len(words)))
        cut = int(len(picked) * TRAIN_FRACTION)
        train += picked[:cut]
        test += picked[cut:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


@contextlib.contextmanager
def seeded_global_random(seed: int) -> Iterator[None]:
    """sae-bench's ``create_icl_prompt`` draws from the global ``random``: seed it, then put it back."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def icl_prompts(words: Sequence[str], examples: Sequence[str], template: str, max_icl_examples: int) -> list[str]:
    """One ICL prompt per word, as sae-bench builds them (separator also before the first example)."""
    examples = list(examples)
    return [
        create_icl_prompt(
            word, examples=examples, base_template=template, answer_formatter=first_letter_formatter(),
            max_icl_examples=max_icl_examples, prepend_separator_to_first_example=True,
        ).base
        for word in words
    ]  # fmt: skip


# --- LLM activations ----------------------------------------------------------------------------------


def tokenize_prompts(prompts: Sequence[str], tokenizer: Any, prepend_bos: bool) -> list[list[int]]:
    """Token ids, with one BOS in front when the SAE's training contexts had one."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if not prepend_bos:
        return [list(x) for x in ids]
    if tokenizer.bos_token_id is None:
        raise ValueError("prepend_bos is set but the tokenizer has no BOS token")
    return [[tokenizer.bos_token_id, *x] for x in ids]


@torch.no_grad()
def activations_at(
    model: Any, token_ids: Sequence[Sequence[int]], hook: str, layer: int, pos: int, batch_size: int,
    on_batch: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Activations at ``hook`` at position ``pos`` (from each prompt's end), float32 [n, d_model], and the
    token ids found there. Prompts are batched by equal length so no padding enters a forward pass, and
    cut just after ``pos``: attention is causal, so the tokens after it cannot change the activation
    there (for the default template this drops " has the first letter:", 5 of ~88 tokens)."""
    if any(len(ids) < -pos for ids in token_ids):
        raise ValueError(f"a prompt has fewer than {-pos} tokens: prompt_token_pos {pos} is out of range")
    order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), i))
    out: torch.Tensor | None = None
    found = torch.empty(len(token_ids), dtype=torch.long)
    start = 0
    while start < len(order):
        length = len(token_ids[order[start]])
        stop = start
        while stop < len(order) and stop - start < batch_size and len(token_ids[order[stop]]) == length:
            stop += 1
        rows = order[start:stop]
        tokens = torch.tensor([token_ids[i][: length + pos + 1] for i in rows], device=model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
        acts = cache[hook][:, -1, :].float().cpu()
        if out is None:
            out = torch.empty(len(token_ids), acts.shape[-1])
        out[rows] = acts
        found[rows] = tokens[:, -1].cpu()
        if on_batch is not None:
            on_batch(len(rows))
        start = stop
    assert out is not None
    return out, found


# --- the LLM probe -------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_saebench() -> Iterator[None]:
    """sae-bench's probe trainers open tqdm bars (not switchable) and sklearn warns about convergence;
    silence them for the call without touching stderr, where our own progress display lives."""
    orig = {mod: mod.tqdm for mod in (ksp, probing)}

    def silent(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return orig[ksp](*args, **kwargs)

    try:
        for mod in orig:
            mod.tqdm = silent  # type: ignore[attr-defined]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for mod, fn in orig.items():
            mod.tqdm = fn  # type: ignore[attr-defined]


def train_letter_probe(acts: torch.Tensor, labels: torch.Tensor, seed: int, device: str = "cpu") -> probing.LinearProbe:
    """sae-bench's first-letter probe (``train_linear_probe_for_task``'s call of ``train_multi_probe``),
    returned on the CPU."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.enable_grad(), quiet_saebench():
        torch.manual_seed(seed)
        probe = probing.train_multi_probe(
            x_train=acts.float().to(dev), y_train=torch.nn.functional.one_hot(labels, len(LETTERS)).to(dev),
            num_probes=len(LETTERS), show_progress=False, verbose=False, device=dev, **PROBE_SETTINGS,
        )  # fmt: skip
    return probe.cpu().eval()


def probe_from_tensors(weight: torch.Tensor, bias: torch.Tensor) -> probing.LinearProbe:
    probe = probing.LinearProbe(weight.shape[1], num_outputs=weight.shape[0])
    with torch.no_grad():
        probe.fc.weight.copy_(weight)
        probe.fc.bias.copy_(bias)
    return probe.eval()


def letter_probe_stats(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per letter, the LLM probe's test F1 / precision / recall / AUC at logit 0 (``build_metrics_df``)."""
    out: dict[str, dict[str, float]] = {}
    y_all, s_all = labels.numpy(), scores.numpy()
    for i, letter in enumerate(LETTERS):
        y, s = y_all == i, s_all[:, i]
        out[letter] = {
            "f1": float(metrics.f1_score(y, s > 0.0, zero_division=0.0)),
            "precision": float(metrics.precision_score(y, s > 0.0, zero_division=0.0)),
            "recall": float(metrics.recall_score(y, s > 0.0, zero_division=0.0)),
            "auc": float(metrics.roc_auc_score(y, s)),
            "n_test": int(y.sum()),
        }
    return out


def letters_passing(probe_stats: dict[str, dict[str, float]], p: AbsorptionParams, hook: str) -> list[str]:
    """Letters whose LLM probe test F1 exceeds ``min_GT_probe_f1``; raises when fewer than
    ``min_feats_for_eval`` do, where SAEBench's ``run_eval`` stops without a result."""
    passing = [letter for letter, s in probe_stats.items() if s["f1"] > p.min_GT_probe_f1]
    if len(passing) < p.min_feats_for_eval:
        raise RuntimeError(
            f"absorption: the first-letter probe at {hook} has test F1 > min_GT_probe_f1={p.min_GT_probe_f1} for "
            f"{len(passing)} letters ({''.join(passing) or 'none'}), fewer than "
            f"min_feats_for_eval={p.min_feats_for_eval}; SAEBench reports no absorption result then "
            "(use more words_per_letter, a later layer, or lower the bounds)"
        )
    return passing


# --- prepare ---------------------------------------------------------------------------------------------


def prepare(env: EvalEnv, params: AbsorptionParams, sink: TensorSink) -> dict[str, Any]:
    """Vocabulary, prompts, LLM activations at the word position, the letter probe; all SAE-independent.

    Tensors: ``train_acts`` / ``test_acts`` [n, d_model] float32 and ``train_labels`` / ``test_labels`` [n]
    (letter index) from the probe prompts; ``absorption_acts`` [n_test, d_model], row i from a fresh
    calculator prompt for test word i; ``probe_weight`` [26, d_model], ``probe_bias`` [26]."""
    started = time.perf_counter()
    model, tokenizer = env.model()
    hook, layer, p = env.model_spec.hook, env.model_spec.layer, params
    vocab = alpha_vocab(tokenizer)
    train_words, test_words = split_vocab(vocab, p.words_per_letter, p.random_seed)
    train_labels = torch.tensor([letter_of(w) for w in train_words])
    test_labels = torch.tensor([letter_of(w) for w in test_words])
    for name, labels in (("train", train_labels), ("test", test_labels)):
        missing = sorted(set(LETTERS) - {LETTERS[i] for i in labels.tolist()})
        if missing:
            raise ValueError(f"absorption: no {name} word starts with {missing}; raise words_per_letter")
    # sae-bench hands the calculator the test tokens read back through convert_tokens_to_string
    # (``_parse_probe_data_split``); an identity for byte-level BPE, kept for other tokenizers.
    absorption_words = [tokenizer.convert_tokens_to_string([w]) for w in test_words]
    with seeded_global_random(p.random_seed):
        prompts = {
            "train": icl_prompts(train_words, train_words, p.prompt_template, p.max_icl_examples),
            "test": icl_prompts(test_words, test_words, p.prompt_template, p.max_icl_examples),
            "absorption": icl_prompts(absorption_words, vocab, p.prompt_template, p.max_icl_examples),
        }
    acts: dict[str, torch.Tensor] = {}
    word_hits, lengths = 0, set()
    total = sum(len(v) for v in prompts.values())
    with env.reporter.bar(f"absorption prep {hook}", total=total, unit="prompt") as bar:
        for split, texts in prompts.items():
            ids = tokenize_prompts(texts, tokenizer, env.prepend_bos)
            lengths |= {len(x) for x in ids}
            acts[split], found = activations_at(
                model, ids, hook, layer, p.prompt_token_pos, p.llm_batch_size,
                on_batch=lambda n, s=split: bar.advance(n, extra=s),
            )  # fmt: skip
            words = train_words if split == "train" else test_words if split == "test" else absorption_words
            word_ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
            word_hits += sum(len(w) == 1 and w[0] == f for w, f in zip(word_ids, found.tolist()))
            sink.append(f"{split}_acts", acts[split])
        bar.advance(0, extra="letter probe")
        probe = train_letter_probe(acts["train"], train_labels, p.random_seed, env.model_spec.device)
    sink.append("train_labels", train_labels)
    sink.append("test_labels", test_labels)
    sink.put("probe_weight", probe.weights.detach().float())
    sink.put("probe_bias", probe.biases.detach().float())

    with torch.no_grad():
        probe_stats = letter_probe_stats(probe(acts["test"]).float(), test_labels)
    passing = letters_passing(probe_stats, p, hook)
    cut = f"{TRAIN_FRACTION:.0%}/{1 - TRAIN_FRACTION:.0%}"
    selection = (
        f"whole vocabulary, random {cut} train/test split"
        if p.words_per_letter is None
        else f"SUBSAMPLE of {p.words_per_letter} words per letter, {cut} train/test within each letter"
    )
    return {
        "data_source": DATA_SOURCE.format(
            n_vocab=len(vocab), model=env.model_spec.name, selection=selection, template=p.prompt_template,
            seed=p.random_seed,
        ),  # fmt: skip
        "hook": hook,
        "layer": layer,
        "n_alpha_vocab": len(vocab),
        "train_words": train_words,
        "test_words": test_words,
        "absorption_words": absorption_words,
        "prompt_token_lengths": sorted(lengths),
        "word_at_position_fraction": word_hits / total,
        "example_prompts": {split: texts[0] for split, texts in prompts.items()},
        "probe_test_stats": probe_stats,
        "probe_letters_passing": passing,
        "prepend_bos": env.prepend_bos,
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- absorption on cached activations ----------------------------------------------------------------------


@torch.no_grad()
def absorption_scores(
    sae: Any, acts: torch.Tensor, words: Sequence[str], probe_direction: torch.Tensor, main_feature_ids: list[int],
    prompts: Sequence[str] | None = None,
    full_absorption_probe_cos_sim_threshold: float = FULL_ABSORPTION_PROBE_COS_THRESHOLD,
    absorption_fraction_probe_cos_sim_threshold: float = ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
    probe_projection_proportion_threshold: float = ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
    absorption_fraction_max_absorbing_latents: int = ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
    topk_feats: int = TOP_PROJECTION_FEATS,
) -> list[fac.WordAbsorptionResult]:  # fmt: skip
    """``FeatureAbsorptionCalculator.calculate_absorption`` on activations already read at the word
    position (``acts`` [n, d_model], row i for ``words[i]``), with sae-bench's thresholds as defaults.
    Same arithmetic in the same order, word by word; only the forward pass is replaced by ``acts``."""
    if probe_direction.ndim != 1:
        raise ValueError("probe_direction must be 1D")
    direction = probe_direction / probe_direction.norm()
    cos_sims = torch.nn.functional.cosine_similarity(direction.to(sae.device), sae.W_dec, dim=-1).float().cpu()
    results: list[fac.WordAbsorptionResult] = []
    if len(words) == 0:
        return results
    batch_acts = acts.to(device=sae.device, dtype=sae.dtype)
    sae_acts_all = sae.encode(batch_acts)
    projections = sae_acts_all * cos_sims.to(sae_acts_all.device)
    act_projections = batch_acts @ direction.to(device=sae_acts_all.device, dtype=sae_acts_all.dtype)
    calc = _threshold_holder(full_absorption_probe_cos_sim_threshold, probe_projection_proportion_threshold)
    for i, word in enumerate(words):
        sae_acts = sae_acts_all[i]
        act_probe_proj = act_projections[i].cpu().item()
        proj = projections[i].cpu()
        main_proj = torch.sum(proj[main_feature_ids]).cpu().item()
        absorbers = torch.ones(proj.size(0), dtype=torch.bool)
        absorbers[main_feature_ids] = False
        absorbers &= cos_sims >= absorption_fraction_probe_cos_sim_threshold
        absorbers &= proj > 0
        absorber_proj = proj[absorbers]
        top_absorbers = absorber_proj.topk(k=min(absorption_fraction_max_absorbing_latents, absorber_proj.numel()))
        top_total = torch.sum(top_absorbers.values).cpu().item()
        proportion = top_total / act_probe_proj
        if main_proj >= act_probe_proj or proportion < probe_projection_proportion_threshold:
            fraction = 0.0
        elif main_proj <= 0.0:
            fraction = 1.0
        else:
            absorbed = min(top_total, act_probe_proj - main_proj)
            fraction = float(np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0))
        top_feats = proj.topk(topk_feats).indices.tolist()
        main_scores = fac._get_feature_scores(main_feature_ids, probe_cos_sims=cos_sims, sae_acts=sae_acts)
        top_scores = fac._get_feature_scores(top_feats, probe_cos_sims=cos_sims, sae_acts=sae_acts)
        results.append(
            fac.WordAbsorptionResult(
                word=word, prompt=prompts[i] if prompts is not None else "", probe_projection=act_probe_proj,
                main_feature_scores=main_scores, top_projection_feature_scores=top_scores, absorption_fraction=fraction,
                is_full_absorption=calc._is_full_absorption(act_probe_proj, main_scores, top_scores),
            )
        )  # fmt: skip
    return results


def _threshold_holder(full_cos: float, proportion: float) -> fac.FeatureAbsorptionCalculator:
    """A calculator without a model, only to call sae-bench's own ``_is_full_absorption`` rule."""
    return fac.FeatureAbsorptionCalculator(
        model=None,  # type: ignore[arg-type]
        icl_word_list=[],
        full_absorption_probe_cos_sim_threshold=full_cos,
        probe_projection_proportion_threshold=proportion,
    )


def likely_false_negatives(metrics_df: pd.DataFrame, raw_df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """sae-bench's ``get_stats_and_likely_false_negative_tokens`` on the in-memory raw scores: per letter,
    the main (split) latents and the test rows the LLM probe marks positive, which the calculator scores.
    Also returns the row indices, to pick the cached calculator activations."""
    out: dict[str, dict[str, Any]] = {}
    for letter in LETTERS:
        split_feats = metrics_df[metrics_df["letter"] == letter]["split_feats"].iloc[0]
        k = len(split_feats)
        positive = (raw_df["answer_letter"] == letter) & (raw_df[f"score_probe_{letter}"] > 0)
        split_tp = (positive & (raw_df[f"score_sparse_sae_{letter}_k_{k}"] > 0)).sum() if k else 0
        out[letter] = {
            "probe_true_positives": int(positive.sum()),
            "split_feats_true_positives": int(split_tp),
            "split_feats": [int(f) for f in split_feats],
            "rows": np.flatnonzero(positive.to_numpy()).tolist(),
        }
    return out


# --- evaluate ------------------------------------------------------------------------------------------------


def k_sparse_metrics(
    sae: Any, probe: probing.LinearProbe, train: tuple[torch.Tensor, list[tuple[str, int]]],
    test: tuple[torch.Tensor, list[tuple[str, int]]], params: AbsorptionParams, sae_name: str, layer: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """sae-bench's k-sparse probing experiment on tensors (``run_k_sparse_probing_experiment`` minus its
    parquet/probe files): (raw per-word scores, per-letter metrics with ``split_feats``)."""
    p = params
    # Hundreds of tiny sklearn fits: a multi-threaded BLAS only spins (12 ms a fit alone, 160 ms with 2
    # threads on a busy 2-core machine). One BLAS thread changes no result beyond rounding.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        torch.random.fork_rng(devices=[]),
        torch.enable_grad(),
        quiet_saebench(),
    ):
        torch.manual_seed(p.random_seed)
        k_probes = ksp.train_k_sparse_probes(
            sae, train[1], train[0], ks=list(range(1, p.max_k_value + 1)), l1_decay=p.k_sparse_probe_l1_decay,
            batch_size=p.k_sparse_probe_batch_size, num_epochs=p.k_sparse_probe_num_epochs,
            precalc_sae_acts=p.precalc_k_sparse_probe_sae_acts,
        )  # fmt: skip
    with threadpool_limits(limits=1, user_api="blas"), torch.no_grad(), quiet_saebench():
        raw_df = ksp.eval_probe_and_sae_k_sparse_raw_scores(
            sae, probe, k_sparse_probes=k_probes, eval_labels=test[1], eval_activations=test[0],
            eval_batch_size=p.eval_k_sparse_probe_batch_size,
        )  # fmt: skip
        metadata = ksp.sae_k_sparse_metadata(sae, probe, k_probes, sae_name=sae_name, layer=layer)
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # ~2,000 metric calls
            metrics_df = ksp.build_metrics_df(raw_df, metadata, max_k_value=p.max_k_value)
    ksp.add_feature_splits_to_metrics_df(metrics_df, max_k_value=p.max_k_value, f1_jump_threshold=p.f1_jump_threshold)
    return raw_df, metrics_df


def aggregate(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """sae-bench's ``_aggregate_results_df`` (per letter: summed fractions / probe true positives)."""
    from sae_bench.evals.absorption.main import _aggregate_results_df

    return _aggregate_results_df(pd.DataFrame(rows))


def evaluate(
    prepared: Prepared, sae: Any, env: EvalEnv, params: AbsorptionParams
) -> tuple[AbsorptionEvalOutput, dict[str, float]]:
    """k-sparse probing on the SAE's latents, then absorption on the cached calculator activations."""
    started = time.perf_counter()
    p, meta = params, prepared.meta
    train_words, test_words, abs_words = meta["train_words"], meta["test_words"], meta["absorption_words"]
    train_labels = prepared.tensor("train_labels").tolist()
    test_labels = prepared.tensor("test_labels").tolist()
    train = (prepared.tensor("train_acts"), list(zip(train_words, train_labels)))
    test = (prepared.tensor("test_acts"), list(zip(test_words, test_labels)))
    absorption_acts = prepared.tensor("absorption_acts")
    probe = probe_from_tensors(prepared.tensor("probe_weight"), prepared.tensor("probe_bias"))
    sae_name = env.label or "sae"

    with env.reporter.bar(f"absorption {sae_name}", total=len(LETTERS) + 1, unit="step") as bar:
        bar.advance(0, extra="k-sparse probes")
        raw_df, metrics_df = k_sparse_metrics(sae, probe, train, test, p, sae_name, meta["layer"])
        bar.advance(1, extra="absorption")
        negs = likely_false_negatives(metrics_df, raw_df)
        rows: list[dict[str, Any]] = []
        for i, letter in enumerate(LETTERS):
            stats = negs[letter]
            idx = stats["rows"]
            results = absorption_scores(
                sae, absorption_acts[idx], [abs_words[j] for j in idx], probe.weights[i].detach(), stats["split_feats"],
            )  # fmt: skip
            rows += [
                {"letter": letter, "token": r.word, "num_probe_true_positives": stats["probe_true_positives"],
                 "split_feats": stats["split_feats"], "absorption_fraction": r.absorption_fraction,
                 "is_full_absorption": r.is_full_absorption}
                for r in results
            ]  # fmt: skip
            bar.advance(1, extra=letter)
    agg = aggregate(rows)
    f1_probe = dict(zip(metrics_df["letter"], metrics_df["f1_probe"]))
    details = [
        AbsorptionResultDetail(
            first_letter=row["letter"], mean_absorption_fraction=float(row["mean_absorption_fraction"]),
            full_absorption_rate=float(row["full_absorption_rate"]),
            num_full_absorption=int(row["num_full_absorption"]),
            num_probe_true_positives=int(row["num_probe_true_positives"]),
            num_split_features=int(row["num_split_feats"]),
        )  # fmt: skip
        for _, row in agg.iterrows()
        if f1_probe[row["letter"]] > p.min_GT_probe_f1
    ]
    if len(details) < p.min_feats_for_eval:  # prepare checks the same probe; this guards a changed threshold
        raise RuntimeError(
            f"absorption: only {len(details)} letters pass min_GT_probe_f1={p.min_GT_probe_f1} "
            f"(min_feats_for_eval={p.min_feats_for_eval}); SAEBench reports no result then"
        )
    fractions = [d.mean_absorption_fraction for d in details]
    full_rates = [d.full_absorption_rate for d in details]
    splits = [d.num_split_features for d in details]
    mean_metrics = AbsorptionMeanMetrics(
        mean_absorption_fraction_score=statistics.mean(fractions),
        mean_full_absorption_score=statistics.mean(full_rates),
        mean_num_split_features=statistics.mean(splits),
        std_dev_absorption_fraction_score=statistics.stdev(fractions),
        std_dev_full_absorption_score=statistics.stdev(full_rates),
        std_dev_num_split_features=statistics.stdev(splits),
    )
    output = AbsorptionEvalOutput(
        eval_type_id=EVAL_TYPE_ID_ABSORPTION,
        eval_config=eval_config(p, env),
        eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(datetime.now().timestamp() * 1000),
        eval_result_metrics=AbsorptionMetricCategories(mean=mean_metrics),
        eval_result_details=details,
        eval_result_unstructured=unstructured(meta, metrics_df, negs, p),
        sae_bench_commit_hash=f"sae-bench=={version('sae-bench')}",
        sae_lens_id=env.label or None,
        sae_lens_release_id=env.run_name or None,
        sae_lens_version=getattr(getattr(sae.cfg, "metadata", None), "sae_lens_version", None) or version("sae-lens"),
        sae_cfg_dict=sae.cfg.to_dict(),
    )
    summary = {
        "mean_absorption_fraction_score": mean_metrics.mean_absorption_fraction_score,
        "mean_full_absorption_score": mean_metrics.mean_full_absorption_score,
        "mean_num_split_features": mean_metrics.mean_num_split_features,
        "letters_evaluated": float(len(details)),
        "llm_probe_mean_f1": float(np.mean(list(f1_probe.values()))),
        "seconds": time.perf_counter() - started,
    }
    return output, {k: round(float(v), 4) for k, v in summary.items()}


def eval_config(p: AbsorptionParams, env: EvalEnv) -> AbsorptionEvalConfig:
    return AbsorptionEvalConfig(
        model_name=env.model_spec.name, random_seed=p.random_seed, f1_jump_threshold=p.f1_jump_threshold,
        max_k_value=p.max_k_value, prompt_template=p.prompt_template, prompt_token_pos=p.prompt_token_pos,
        llm_batch_size=p.llm_batch_size, llm_dtype=env.model_spec.dtype,
        k_sparse_probe_l1_decay=p.k_sparse_probe_l1_decay,
        k_sparse_probe_batch_size=p.k_sparse_probe_batch_size, k_sparse_probe_num_epochs=p.k_sparse_probe_num_epochs,
        min_GT_probe_f1=p.min_GT_probe_f1, min_feats_for_eval=p.min_feats_for_eval,
        eval_k_sparse_probe_batch_size=p.eval_k_sparse_probe_batch_size,
        precalc_k_sparse_probe_sae_acts=p.precalc_k_sparse_probe_sae_acts,
    )  # fmt: skip


def unstructured(
    meta: dict[str, Any], metrics_df: pd.DataFrame, negs: dict[str, dict[str, Any]], p: AbsorptionParams
) -> dict[str, Any]:
    """JSON-able extras: where the words came from, the LLM probe and the k-sparse F1 curve per letter."""
    per_letter = {}
    for _, row in metrics_df.iterrows():
        letter = row["letter"]
        per_letter[letter] = {
            "f1_probe": float(row["f1_probe"]),
            "included": bool(row["f1_probe"] > p.min_GT_probe_f1),
            "split_feats": negs[letter]["split_feats"],
            "split_feats_true_positives": negs[letter]["split_feats_true_positives"],
            "f1_sparse_sae": [float(row[f"f1_sparse_sae_{k}"]) for k in range(1, p.max_k_value + 1)],
        }
    return {
        "data_source": meta["data_source"],
        "hook": meta["hook"],
        "n_train_words": len(meta["train_words"]),
        "n_test_words": len(meta["test_words"]),
        "words_per_letter": p.words_per_letter,
        "max_icl_examples": p.max_icl_examples,
        "word_at_position_fraction": meta["word_at_position_fraction"],
        "prepend_bos": meta["prepend_bos"],
        "calculator": "sae-bench's calculate_absorption re-implemented on cached activations "
        "(one seeded ICL prompt per test word, built in prepare); see evals/absorption.py",
        "per_letter": per_letter,
    }
