"""Reconstruction losses: plain, or Matryoshka prefix losses.

Matryoshka (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders"; Nabeshima 2024): with cumulative level widths w_1 < ... < w_L = d_sae,
    loss = sum_l  || x - b_dec - sum_{latents i with rank(i) < w_l} a_i d_i ||^2
so every prefix of the dictionary must reconstruct x on its own. rank(i) is the latent index, or
(`order_by_frequency`) its position when latents are sorted by an EMA of firing frequency.
`inner_weight` w scales the loss of every level l < L (w = 1: the plain sum above).
`detach_inner`: level l < L sees the inner levels' running reconstruction detached, so inner
latents are trained only by their own level and the outermost (full) level.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.config.recipe import MatryoshkaSpec
from pipeline.recipes.collective import defer, world
from pipeline.recipes.ops import DenseOps, SparseOps
from pipeline.recipes.outputs import Active, ReconOutput, Selection, row_offsets


class PlainReconstruction(nn.Module):
    """One level: per-sample squared error ||x - x_hat||^2."""

    def forward(self, x: Tensor, active: Active, W_dec: Tensor, b_dec: Tensor, ops: type[SparseOps] | type[DenseOps]) -> ReconOutput:
        x_hat = b_dec + ops.decode(active.selection, active.values, W_dec)
        return ReconOutput(x_hat, [(x - x_hat).pow(2).sum(-1)], [1.0])

    def observe(self, active: Active) -> None:
        return None


class MatryoshkaReconstruction(nn.Module):
    """Per-sample squared errors of every dictionary prefix (see module docstring)."""

    frequency: Tensor

    def __init__(self, spec: MatryoshkaSpec, d_sae: int) -> None:
        super().__init__()
        if spec.levels[-1] != d_sae:
            raise ValueError(f"matryoshka levels must end at d_sae={d_sae}, got {list(spec.levels)}")
        self.register_buffer("widths", torch.tensor(spec.levels, dtype=torch.long))
        self.register_buffer("frequency", torch.zeros(d_sae))
        self.detach_inner = spec.detach_inner
        self.order_by_frequency = spec.order_by_frequency
        self.ema = spec.frequency_ema
        self.weights = [spec.inner_weight] * (len(spec.levels) - 1) + [1.0]

    def ranks(self) -> Tensor:
        """rank[i] = position of latent i in the level order (0 = first/innermost)."""
        n = self.frequency.numel()
        if not self.order_by_frequency:
            return torch.arange(n, device=self.frequency.device)
        order = torch.argsort(-self.frequency, stable=True)
        return torch.empty_like(order).scatter_(0, order, torch.arange(n, device=order.device))

    def levels_of(self, latents: Tensor) -> Tensor:
        """Level index of each latent: the first l with rank < w_l."""
        return torch.bucketize(self.ranks()[latents], self.widths, right=True)

    def forward(self, x: Tensor, active: Active, W_dec: Tensor, b_dec: Tensor, ops: type[SparseOps] | type[DenseOps]) -> ReconOutput:
        n_levels, n = self.widths.numel(), active.n_rows
        key = self.levels_of(active.latents) * n + active.rows
        order = torch.argsort(key, stable=True)
        key = key[order]
        sel = Selection(key, active.latents[order], row_offsets(key, n_levels * n), n_levels * n)
        bands = ops.decode(sel, active.values[order], W_dec).view(n_levels, n, -1)
        full = bands.cumsum(0)
        if self.detach_inner:
            inner = bands.detach().cumsum(0)
            running = torch.cat([torch.zeros_like(inner[:1]), inner[:-1]]) + bands
            prefixes = torch.cat([running[:-1], full[-1:]])
        else:
            prefixes = full
        target = x - b_dec
        return ReconOutput(b_dec + full[-1], [(target - p).pow(2).sum(-1) for p in prefixes], self.weights)

    @torch.no_grad()
    def observe(self, active: Active) -> None:
        fired = active.latents[active.values.detach() != 0]
        n_rows = active.n_rows * world()

        def update(counts: Tensor) -> None:
            self.frequency.mul_(1 - self.ema).add_(self.ema * (counts.to(self.frequency.dtype) / n_rows))

        defer("sum", torch.bincount(fired, minlength=self.frequency.numel()), update)  # reduced at the step's end


def build_reconstruction(spec: MatryoshkaSpec | None, d_sae: int) -> nn.Module:
    return PlainReconstruction() if spec is None else MatryoshkaReconstruction(spec, d_sae)
