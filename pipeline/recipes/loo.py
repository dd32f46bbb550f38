"""Leave-one-out pruning of active latents at inference.

With residual r = x - x_hat, the error after removing latent i is r + a_i d_i. Latent i is zeroed
when r . d_i + a_i |d_i|^2 <= tau (its contribution is not aligned with what it must explain),
all latents judged against the same x_hat in one vectorised pass.
"""

from __future__ import annotations

from torch import Tensor

from pipeline.recipes.ops import SparseOps
from pipeline.recipes.outputs import Active


def loo_prune(x: Tensor, active: Active, W_dec: Tensor, b_dec: Tensor, tau: float) -> Active:
    """Drop active entries with r . d_i + a_i |d_i|^2 <= tau."""
    residual = x - b_dec - SparseOps.decode(active.selection, active.values, W_dec)
    d = W_dec[active.latents]
    score = (residual[active.rows] * d).sum(-1) + active.values * d.pow(2).sum(-1)
    keep = score > tau
    return Active.of(active.selection.keep(keep), active.values[keep])


class LooPruner:
    """Inference post-processing: `loo_prune` with a fixed tau."""

    def __init__(self, tau: float) -> None:
        self.tau = tau

    def __call__(self, x: Tensor, active: Active, W_dec: Tensor, b_dec: Tensor) -> Active:
        return loo_prune(x, active, W_dec, b_dec, self.tau)


class NoPruning:
    def __call__(self, x: Tensor, active: Active, W_dec: Tensor, b_dec: Tensor) -> Active:
        return active
