"""Absorption's SAE-independent half: vocabulary, prompts, the model's activations at the word position,
and the first-letter probe on them (once per model, hook and settings; see README.md)."""

from __future__ import annotations

import time
from typing import Any

import torch
from sae_bench.evals.absorption.vocab import LETTERS

from evals.absorption.activations import activations_at, tokenize_prompts
from evals.absorption.config import AbsorptionParams
from evals.absorption.probe import letter_probe_stats, letters_passing, train_letter_probe
from evals.absorption.prompts import (
    TRAIN_FRACTION,
    alpha_vocab,
    icl_prompts,
    letter_of,
    seeded_global_random,
    split_vocab,
)
from evals.contract import EvalEnv, TensorSink

DATA_SOURCE = (
    "the model's own tokenizer vocabulary ({n_vocab} alphabetic tokens of {model}, sae-bench get_alpha_tokens); "
    "{selection}; ICL prompts '{template}' built with sae-bench create_icl_prompt (seed {seed}); no dataset download"
)


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

