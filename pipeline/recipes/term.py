"""How per-sample losses are reduced over the batch.

TERM (Li et al. 2021, "Tilted Empirical Risk Minimization"), in normalised form:
    w = softmax(t * l / mean(l))  (no gradient),   loss = sum_i w_i l_i
With t -> 0 the weights are 1/B and this is the mean; t > 0 up-weights badly reconstructed samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.recipes.collective import all_max, all_sum, world


class MeanLoss:
    """loss = mean_i l_i."""

    def __call__(self, per_sample: Tensor) -> Tensor:
        return per_sample.mean()


class TiltedLoss:
    """loss = sum_i softmax(t * l / mean(l))_i l_i, weights detached."""

    def __init__(self, t: float) -> None:
        self.t = t

    def weights(self, per_sample: Tensor) -> Tensor:
        """Softmax over the global batch (this rank's entries of it)."""
        l = per_sample.detach()
        if world() == 1:
            return torch.softmax(self.t * l / l.mean().clamp_min(1e-12), dim=0)
        mean = all_sum(l.sum()) / (l.numel() * world())
        z = self.t * l / mean.clamp_min(1e-12)
        top = all_max(z.max())
        e = (z - top).exp()
        return e / all_sum(e.sum())

    def __call__(self, per_sample: Tensor) -> Tensor:
        """The global sum; times the world size, since data parallelism averages the ranks' gradients."""
        return (self.weights(per_sample) * per_sample).sum() * world()
