"""How often each ground-truth feature really fires, and so how many samples the probe ceiling needs.

`activation_generator.firing_probabilities` is the chance a feature is *drawn*; the hierarchy then
switches a child off unless its parent fires, and a mutually exclusive group keeps one of its active
children. So a leaf three levels down fires far less often than its drawn probability, and a probe
sample count sized on the drawn probabilities leaves deep features with a handful of positives.
"""

from __future__ import annotations

import math
from typing import Any

from sae_lens.synthetic import SyntheticModel
from torch import Tensor

TARGET_POSITIVES = 100
"""Training positives the rarest feature's probe should see (the probe is a ceiling only when every
feature has enough examples to learn from)."""
MIN_SAMPLES = 20_000
"""Floor on the automatic count: frequent-feature models still get a test split worth scoring."""


def effective_rates(model: SyntheticModel) -> Tensor:
    """Per-feature marginal firing rate under the hierarchy: drawn probability x the parent's effective
    rate x, in a mutually exclusive group, 1 / (1 + the siblings' summed drawn probabilities) (a lower
    bound of the chance it is the one kept: Jensen). Correlation (a copula) leaves the marginals alone."""
    drawn = model.activation_generator.firing_probabilities.detach().float().cpu()
    rates = drawn.clone()
    if model.hierarchy is None:
        return rates

    def visit(node: Any, parent_rate: float) -> None:
        own = parent_rate
        if node.feature_index is not None:
            rates[node.feature_index] = own = parent_rate * float(drawn[node.feature_index])
        kids = [c for c in node.children if c.feature_index is not None]
        exclusive = node.mutually_exclusive_children and len(kids) >= 2
        total = sum(float(drawn[c.feature_index]) for c in kids)
        for child in node.children:
            if exclusive and child.feature_index is not None:
                share = 1.0 / (1.0 + total - float(drawn[child.feature_index]))
                visit(child, own * share)
            else:
                visit(child, own)

    for root in model.hierarchy.roots:
        visit(root, 1.0)
    return rates


def needed_samples(rate: float, train_fraction: float, target: int = TARGET_POSITIVES) -> int:
    """Samples whose training split holds `target` positives of a feature firing at `rate`, with a
    3-sigma Poisson margin (so the rarest feature falls short of `target` in about 0.1% of draws)."""
    expected = target + 3 * math.sqrt(target)
    return math.ceil(expected / (max(rate, 1e-12) * train_fraction))


def probe_sample_count(model: SyntheticModel, requested: int | None, cap: int, train_fraction: float) -> int:
    """The probe's sample count: `requested` when the config names one, else enough for the rarest feature."""
    if requested is not None:
        return requested
    rarest = float(effective_rates(model).min())
    return min(cap, max(MIN_SAMPLES, needed_samples(rarest, train_fraction)))
