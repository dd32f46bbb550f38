"""Sparsity-guided decoder orthogonality penalty.

Latents that fire together compete to explain the same inputs; push their decoder directions apart:
    C_ij = (1/B) sum_b m_bi m_bj          (co-occurrence of the active masks m)
    P = coefficient * sum_{i<j, C_ij > threshold} C_ij |d_i . d_j|,   d = unit-normalised decoder rows
(after the co-occurrence-weighted orthogonality regularisers for SAEs, e.g. "Feature Competition in
Sparse Autoencoders"-style competition thresholds). Cost: O(B u^2) for u distinct active latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config.recipe import OrthogonalitySpec
from pipeline.recipes.collective import all_cat, rank, world
from pipeline.recipes.loss_terms import LossContext
from pipeline.recipes.outputs import Active


def orthogonality_penalty(active: Active, W_dec: Tensor, coefficient: float, threshold: float) -> Tensor:
    """P above, over the latents active in this batch."""
    live = active.values.detach() != 0
    rows, latents, n_rows = active.rows[live], active.latents[live], active.n_rows
    if world() > 1:  # co-occurrence of the global batch: every rank computes the same penalty
        rows, latents, n_rows = all_cat(rows + rank() * n_rows), all_cat(latents), n_rows * world()
    used, column = torch.unique(latents, return_inverse=True)
    mask = W_dec.new_zeros(n_rows, used.numel()).index_put((rows, column), W_dec.new_ones(()))
    co = mask.t() @ mask / n_rows
    directions = F.normalize(W_dec[used], dim=-1)
    overlap = (directions @ directions.t()).abs()
    counted = torch.triu(co > threshold, diagonal=1)
    return coefficient * (co * overlap * counted).sum()


class OrthogonalityLoss:
    """Loss term wrapper for `orthogonality_penalty`."""

    def __init__(self, spec: OrthogonalitySpec) -> None:
        self.coefficient = spec.coefficient
        self.threshold = spec.competition_threshold

    def __call__(self, ctx: LossContext) -> Tensor:
        return orthogonality_penalty(ctx.enc.active, ctx.W_dec, self.coefficient, self.threshold)
