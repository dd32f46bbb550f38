"""Scores of an explanation on held-out examples, each with its null and its spread over latents.

* SAEBench's detection score: the fraction of scoring examples classified right (``score_predictions``).
* delphi-style detection: the judge labels each held-out example 1/0 from the explanation; balanced accuracy.
* delphi-style fuzzing: activating examples with their active tokens marked, non-activating ones with as many
  random tokens marked; the judge says which markings fit the explanation; balanced accuracy.
* embedding: cosine of the explanation's and each example's MiniLM embedding; AUROC positives vs negatives.

Nulls: detection and fuzzing score the same answers against shuffled truth (chance for this answer
pattern, free); embedding scores other latents' explanations (random explanations).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from evals.autointerp.contexts import Window
from evals.autointerp.prompts import active, example_text


@dataclass
class HeldOut:
    """A scorer's examples: texts shown to the judge (or embedded) and the truth (1: the latent fires)."""

    texts: list[str]
    labels: list[int]


def saebench_accuracy(predictions: Sequence[int], is_active: Sequence[bool]) -> float:
    """SAEBench's ``score_predictions``: 1-based predicted indices vs each example's truth."""
    classified = [i in predictions for i in range(1, len(is_active) + 1)]
    return sum(c == t for c, t in zip(classified, is_active)) / len(classified)


def balanced_accuracy(pred: Sequence[int], labels: Sequence[int]) -> float:
    """Mean of the hit rates on positives and on negatives (0.5 for any constant answer)."""
    rates = []
    for cls in (0, 1):
        idx = [i for i, y in enumerate(labels) if y == cls]
        if idx:
            rates.append(sum(pred[i] == cls for i in idx) / len(idx))
    return sum(rates) / len(rates)


def shuffled_null(pred: Sequence[int], labels: Sequence[int], n: int, rng: random.Random, score=balanced_accuracy) -> float:
    """The same answers scored against ``n`` shuffles of the truth: what this answer pattern gets by chance."""
    shuffled = list(labels)
    total = 0.0
    for _ in range(n):
        rng.shuffle(shuffled)
        total += score(pred, shuffled)
    return total / n


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U / n+ n-)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def spread(values: Sequence[float], n_boot: int, seed: int) -> dict[str, float | int | None]:
    """Mean, standard deviation over latents and a 95% bootstrap interval of the mean (resampling latents)."""
    vals = [v for v in values if not math.isnan(v)]  # NaN: the latent had no answer for this scorer
    if not vals:
        return {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0}
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(vals, k=len(vals))) for _ in range(n_boot))
    return {
        "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "ci95_low": means[int(0.025 * (n_boot - 1))], "ci95_high": means[int(0.975 * (n_boot - 1))], "n": len(vals),
    }  # fmt: skip


def delphi_examples(scoring: Sequence[Window], negatives: Sequence[Window], rng: random.Random) -> list[Window]:
    """The held-out top and importance-weighted windows (the explainer never saw them) and random windows the
    latent does not fire in, shuffled. Unlike SAEBench's random examples, a negative here is a true negative."""
    chosen = [w for w in scoring if w.kind != "random"] + list(negatives)
    return rng.sample(chosen, len(chosen))


def detection_set(examples: Sequence[Window], threshold: float, str_tokens: dict[str, str]) -> HeldOut:
    """The examples unmarked, labelled by whether the latent fires in them."""
    return HeldOut([example_text(w, str_tokens) for w in examples], [int(any(active(w, threshold))) for w in examples])


def fuzzing_set(examples: Sequence[Window], threshold: float, str_tokens: dict[str, str], rng: random.Random) -> HeldOut:
    """Positives: windows where the latent fires, its active tokens marked. Negatives: windows where it does
    not, with as many random tokens marked as a random positive has."""
    labels = [int(any(active(w, threshold))) for w in examples]
    counts = [sum(active(w, threshold)) for w, y in zip(examples, labels) if y] or [1]
    texts = []
    for w, y in zip(examples, labels):
        if y:
            marks = active(w, threshold)
        else:
            chosen = set(rng.sample(range(len(w.tokens)), k=min(len(w.tokens), rng.choice(counts))))
            marks = [i in chosen for i in range(len(w.tokens))]
        texts.append(example_text(w, str_tokens, marks))
    return HeldOut(texts, labels)


def embedding_scores(explanations: dict[int, str], sets: dict[int, HeldOut], embed, seed: int) -> dict[int, tuple[float, float]]:
    """Per latent (AUROC of its own explanation, mean AUROC of up to 5 other latents' explanations)."""
    latents = sorted(explanations)
    expl = embed([explanations[k] for k in latents])
    out = {}
    rng = random.Random(f"{seed}:embedding-null")
    for i, latent in enumerate(latents):
        held = sets[latent]
        ex = embed(held.texts)
        sims = ex @ expl.T  # [n_examples, n_latents]
        own = auroc(sims[:, i].tolist(), held.labels)
        others = [j for j in range(len(latents)) if j != i]
        picks = rng.sample(others, k=min(5, len(others)))
        null = statistics.fmean(auroc(sims[:, j].tolist(), held.labels) for j in picks) if picks else float("nan")
        out[latent] = (own, null)
    return out
