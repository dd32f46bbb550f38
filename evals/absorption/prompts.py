"""The words and the ICL spelling prompts, built with sae-bench's own functions."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

from sae_bench.evals.absorption.prompting import create_icl_prompt, first_letter_formatter
from sae_bench.evals.absorption.vocab import LETTERS, get_alpha_tokens

TRAIN_FRACTION = 0.8
"""sae-bench's ``create_dataset_probe_training`` default."""


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
