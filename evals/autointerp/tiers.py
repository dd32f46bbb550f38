"""Feature tiers from a correlation score: is what a latent fires on consistent in what precedes it, what
follows it, both, or neither?

For each sampled latent, its top-activating windows are cut around the top token into three token windows
of ``tier_window`` tokens: *before* (ending at and including the token: what the model has read), *around*
(centred on it) and *after* (the tokens that follow: what the model goes on to predict). A window type's
correlation score is the mean pairwise cosine similarity of the MiniLM embeddings of the latent's windows
of that type. The same statistic over random windows of the corpus is the baseline (short snippets share
style and frequent words, so unrelated windows are not at 0). A type is *consistent* when the latent's
score beats the baseline by ``tier_margin`` (default 0.1: MiniLM puts unrelated short snippets at ~0.05-0.2
cosine and snippets sharing a content word at ~0.4 and up, so 0.1 above the corpus's own random level
separates shared content from chance without asking for identical text).

Tiers: *input* (before consistent, after not: the latent reads a pattern), *output* (after consistent,
before not: it predicts one), *cross* (both), *obscure* (neither: nothing shared in either direction).
*around* is reported beside them; it is not needed to tell the four apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from evals.autointerp.contexts import Window

TIERS = ("input", "output", "cross", "obscure")
KINDS = ("before", "around", "after")
BASELINE_WINDOWS = 64


def cut(window: Window, kind: str, w: int) -> list[int]:
    """The token ids of one window type around the window's centre (its chosen token)."""
    b = len(window.tokens) // 2
    span = {"before": (b - w + 1, b + 1), "around": (b - w // 2, b + w // 2 + 1), "after": (b + 1, b + w + 1)}[kind]
    return window.tokens[span[0] : span[1]]


def mean_pairwise_cosine(emb: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of unit-norm rows."""
    n = len(emb)
    if n < 2:
        return float("nan")
    sims = emb @ emb.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def correlation(windows: Sequence[Window], w: int, text: Callable[[list[int]], str],
                embed: Callable[[list[str]], torch.Tensor]) -> dict[str, float]:  # fmt: skip
    return {kind: mean_pairwise_cosine(embed([text(cut(x, kind, w)) for x in windows])) for kind in KINDS}


def tier(score: dict[str, float], baseline: dict[str, float], margin: float) -> str:
    inp = score["before"] - baseline["before"] > margin
    out = score["after"] - baseline["after"] > margin
    return "cross" if inp and out else "input" if inp else "output" if out else "obscure"


def baseline_windows(random_windows: Sequence[Window]) -> list[Window]:
    """Up to ``BASELINE_WINDOWS`` random windows, spread over the latents' random draws."""
    return list(itertools.islice(random_windows, BASELINE_WINDOWS))


def tier_mix(tiers: dict[int, str]) -> dict[str, float]:
    """Fraction of the scored latents in each tier."""
    n = len(tiers)
    return {t: (sum(v == t for v in tiers.values()) / n if n else 0.0) for t in TIERS}
