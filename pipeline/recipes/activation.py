"""Activation functions as selection + value maps on flat (row, latent) lists.

Each activation answers four questions: which entries are active in training (`select`, no
gradient), what value an active entry takes given its pre-activation (`activate`), what sparsity
penalty it adds (`penalty`), and which entries are active at inference (`select_inference`).
`observe` lets an activation keep training statistics (BatchTopK's inference threshold).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.config.recipe import BatchTopKSpec, JumpReLUSpec, RecipeSpec, ReluL1Spec
from pipeline.recipes.collective import all_cat, defer, world
from pipeline.recipes.outputs import Active, Selection


class Activation(nn.Module):
    """Base: ReLU values on the selected entries, no penalty, no statistics."""

    def select(self, h: Tensor, k: int) -> Selection:
        raise NotImplementedError

    def select_inference(self, h: Tensor, k: int) -> Selection:
        return self.select(h, k)

    def activate(self, pre: Tensor, latents: Tensor) -> Tensor:
        return pre.relu()

    def penalty(self, pre: Tensor, values: Tensor, latents: Tensor, n_rows: int) -> Tensor:
        return values.new_zeros(())

    def observe(self, active: Active) -> None:
        return None

    def constrain(self) -> None:
        """Put trained parameters back in their domain; called before every training forward pass."""

    def fold_scale(self, n: Tensor) -> None:
        """Pre-activations are about to be multiplied by `n` per latent (decoder norms folded in)."""


class TopK(Activation):
    """Keep the k largest pre-activations of each row (Makhzani & Frey 2013; Gao et al. 2024)."""

    def select(self, h: Tensor, k: int) -> Selection:
        n, width = h.shape
        idx = torch.topk(h, k, dim=-1, sorted=False).indices
        rows = torch.arange(n, device=h.device).repeat_interleave(k)
        return Selection(rows, idx.reshape(-1), torch.arange(0, n * k, k, device=h.device), n)


def batch_topk_flat(h: Tensor, n_keep: int, candidates_per_row: int) -> Tensor:
    """Flat indices of the n_keep largest relu(h) entries of the whole batch.

    Exact two-stage search: take each row's top `candidates_per_row`, then the global top n_keep
    among those. If some row's smallest candidate still reaches the global cut, that row may hold
    more winners than candidates, so fall back to one global top-k over all entries.
    """
    n, width = h.shape
    acts = h.relu()
    if candidates_per_row < width:
        cand_v, cand_i = torch.topk(acts, candidates_per_row, dim=-1, sorted=False)
        if n_keep <= cand_v.numel():
            top_v, top_pos = torch.topk(cand_v.reshape(-1), n_keep, sorted=False)
            cut = top_v.min()
            if not bool((cand_v.min(dim=-1).values >= cut).any()):
                row = torch.div(top_pos, candidates_per_row, rounding_mode="floor")
                return row * width + cand_i.reshape(-1)[top_pos]
    return torch.topk(acts.reshape(-1), n_keep, sorted=False).indices


def global_batch_topk_mask(h: Tensor, n_keep: int) -> Tensor:
    """Mask of this rank's entries among the n_keep largest relu(h) of the *global* batch (exact).

    No rank can hold more than n_keep of the global winners, so each rank's top n_keep values,
    gathered, contain them all; the global cut is the n_keep-th largest of those. Entries equal to a
    positive cut are all kept (ties, measure zero in fp32); with a zero cut only positive entries,
    which are the ones that carry value and gradient.
    """
    acts = h.relu()
    local = torch.topk(acts.reshape(-1), min(n_keep, acts.numel()), sorted=False).values
    gathered = all_cat(local, same_length=True)  # every rank's slice has the same rows, so the same count
    cut = torch.topk(gathered, min(n_keep, gathered.numel()), sorted=False).values.min()
    return torch.where(cut > 0, acts >= cut, acts > 0)


def global_batch_topk_flat(h: Tensor, n_keep: int, candidates_per_row: int) -> Tensor:
    """Flat indices of this rank's entries among the n_keep largest relu(h) of the *global* batch: the
    entries `global_batch_topk_mask` keeps, found as `batch_topk_flat` finds them.

    Each rank offers the top n_keep of its rows' top `candidates_per_row`, plus its largest row-minimum
    of candidates (same length on every rank: one all-gather). If no rank's row-minimum reaches the
    global cut, every entry at or above the cut is a candidate, and the cut is the global batch's exact
    n_keep-th largest value; otherwise (or with a zero cut) the exact search over all entries. One flat
    top-k over every entry costs far more than the per-row search once n_keep * 64 <= the rank's
    entries (torch switches to a partial sort there: 512 -> 4096 at 2048 rows a rank).
    """
    n, width = h.shape
    if candidates_per_row >= width:
        return global_batch_topk_mask(h, n_keep).reshape(-1).nonzero().squeeze(1)
    acts = h.relu()
    cand_v, cand_i = torch.topk(acts, candidates_per_row, dim=-1, sorted=False)
    offered = torch.topk(cand_v.reshape(-1), min(n_keep, cand_v.numel()), sorted=False).values
    row_floor = cand_v.min(dim=-1).values.max().reshape(1)
    gathered = all_cat(torch.cat([offered, row_floor]), same_length=True).view(world(), -1)
    values, floors = gathered[:, :-1].reshape(-1), gathered[:, -1]
    cut = torch.topk(values, min(n_keep, values.numel()), sorted=False).values.min()
    if bool((floors >= cut).any()):  # the same on every rank (same gathered tensor): all fall back together
        return global_batch_topk_mask(h, n_keep).reshape(-1).nonzero().squeeze(1)
    keep = cand_v >= cut
    rows = torch.arange(n, device=h.device).unsqueeze(1).expand_as(cand_i)
    return (rows * width + cand_i)[keep]


class BatchTopK(Activation):
    """Keep the k*B largest activations of the batch (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

    Inference cannot see the batch, so a JumpReLU-style threshold is fitted during training:
    theta <- (1 - lr) theta + lr * min(kept activations), globally and per latent (for latents that
    fired; others fall back to the global one). Inference keeps h > theta.
    """

    threshold_global: Tensor
    threshold_latent: Tensor
    latent_seen: Tensor

    def __init__(self, spec: BatchTopKSpec, d_sae: int) -> None:
        super().__init__()
        self.per_latent = spec.threshold == "per_latent"
        self.lr = spec.threshold_lr
        self.register_buffer("threshold_global", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_latent", torch.zeros(d_sae, dtype=torch.float64))
        self.register_buffer("latent_seen", torch.zeros(d_sae, dtype=torch.bool))

    def select(self, h: Tensor, k: int) -> Selection:
        n, width = h.shape
        if world() > 1:
            return Selection.from_flat(global_batch_topk_flat(h, k * n * world(), min(width, 4 * k)), n, width)
        flat = batch_topk_flat(h, k * n, min(width, 4 * k))
        return Selection.from_flat(flat, n, width)

    @torch.no_grad()
    def observe(self, active: Active) -> None:
        """EMA updates from the (global) batch; no host sync: an empty batch leaves every threshold as is.
        Under data parallelism the minima are reduced with the step's other statistics (``settle``)."""
        v = active.values.detach().to(torch.float64)
        v = torch.where(v > 0, v, math.inf)
        per_latent = torch.full_like(self.threshold_latent, math.inf).scatter_reduce(0, active.latents, v, "amin")
        smallest = torch.cat([v, v.new_full((1,), math.inf)]).min().reshape(1)
        defer("min", torch.cat([smallest, per_latent]), self._update_thresholds)

    def _update_thresholds(self, minima: Tensor) -> None:
        """minima: [the batch's smallest kept value, then each latent's] (inf where none)."""
        smallest, batch_min = minima[0], minima[1:]
        ema_global = (1 - self.lr) * self.threshold_global + self.lr * smallest
        self.threshold_global.copy_(torch.where(torch.isfinite(smallest), ema_global, self.threshold_global))
        fired = torch.isfinite(batch_min)
        first = fired & ~self.latent_seen
        ema = (1 - self.lr) * self.threshold_latent + self.lr * batch_min
        self.threshold_latent.copy_(torch.where(first, batch_min, torch.where(fired, ema, self.threshold_latent)))
        self.latent_seen |= fired

    def inference_threshold(self) -> Tensor:
        """Per-latent threshold vector actually used at inference (float64)."""
        glob = self.threshold_global.expand_as(self.threshold_latent)
        if self.per_latent:
            return torch.where(self.latent_seen, self.threshold_latent, glob)
        return glob.clone()

    def select_inference(self, h: Tensor, k: int) -> Selection:
        return Selection.from_mask(h > self.inference_threshold().to(h.dtype))


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLUFn(torch.autograd.Function):
    """a = h * H(h - theta); d a/d h = H(h - theta); d a/d theta = -(theta/eps) K((h - theta)/eps)."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(h, theta)
        ctx.eps = eps
        return h * (h > theta).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None]:
        h, theta = ctx.saved_tensors
        eps = ctx.eps
        return (h > theta).to(g.dtype) * g, -(theta / eps) * _rectangle((h - theta) / eps) * g, None


class _StepFn(torch.autograd.Function):
    """H(h - theta) with pseudo-gradient d/d theta = -(1/eps) K((h - theta)/eps), none into h."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(h, theta)
        ctx.eps = eps
        return (h > theta).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[None, Tensor, None]:
        h, theta = ctx.saved_tensors
        eps = ctx.eps
        return None, -(1.0 / eps) * _rectangle((h - theta) / eps) * g, None


class JumpReLU(Activation):
    """JumpReLU with an L0 penalty (Rajamanoharan et al. 2024, "Jumping Ahead: Improving
    Reconstruction Fidelity with JumpReLU Sparse Autoencoders").

    Training selects every entry with h > theta - eps/2: the active ones plus the inactive ones inside
    the pseudo-gradient window, which carry zero value but still send gradient to theta.
    Penalty: l0_coefficient * sum_ij H(h_ij - theta_j) / B.
    The trained parameter is log(theta) ('log') or theta itself, kept >= 0 ('direct', sae-lens's).
    """

    def __init__(self, spec: JumpReLUSpec, d_sae: int) -> None:
        super().__init__()
        self.eps = spec.bandwidth
        self.l0_coefficient = spec.l0_coefficient
        self.direct = spec.threshold_param == "direct"
        if self.direct:
            self.direct_threshold = nn.Parameter(torch.full((d_sae,), spec.init_threshold))
        else:
            self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(spec.init_threshold)))

    @property
    def threshold(self) -> Tensor:
        return self.direct_threshold if self.direct else self.log_threshold.exp()

    @torch.no_grad()
    def constrain(self) -> None:
        """'direct': clamp theta at 0 in place (not in the graph, so a latent at 0 keeps its gradient)."""
        if self.direct:
            self.direct_threshold.clamp_(min=0.0)

    @torch.no_grad()
    def fold_scale(self, n: Tensor) -> None:
        if self.direct:
            self.direct_threshold.mul_(n)
        else:
            self.log_threshold.add_(n.log())

    def select(self, h: Tensor, k: int) -> Selection:
        return Selection.from_mask(h > (self.threshold.detach() - self.eps / 2))

    def select_inference(self, h: Tensor, k: int) -> Selection:
        return Selection.from_mask(h > self.threshold.detach())

    def activate(self, pre: Tensor, latents: Tensor) -> Tensor:
        return _JumpReLUFn.apply(pre, self.threshold[latents], self.eps)

    def penalty(self, pre: Tensor, values: Tensor, latents: Tensor, n_rows: int) -> Tensor:
        return self.l0_coefficient * _StepFn.apply(pre, self.threshold[latents], self.eps).sum() / n_rows


class ReluL1(Activation):
    """ReLU + L1 (the original dictionary-learning SAE, Bricken et al. 2023 "Towards Monosemanticity").

    Penalty: l1_coefficient * sum_ij a_ij / B (decoder rows are unit norm, so |a| * |d| = a).
    """

    def __init__(self, spec: ReluL1Spec) -> None:
        super().__init__()
        self.l1_coefficient = spec.l1_coefficient

    def select(self, h: Tensor, k: int) -> Selection:
        return Selection.from_mask(h > 0)

    def penalty(self, pre: Tensor, values: Tensor, latents: Tensor, n_rows: int) -> Tensor:
        return self.l1_coefficient * values.sum() / n_rows


def build_activation(recipe: RecipeSpec, d_sae: int) -> Activation:
    """The activation module named by `recipe.activation`."""
    makers = {
        "topk": lambda: TopK(),
        "batchtopk": lambda: BatchTopK(recipe.batchtopk, d_sae),
        "jumprelu": lambda: JumpReLU(recipe.jumprelu, d_sae),
        "relu_l1": lambda: ReluL1(recipe.relu_l1),
    }
    return makers[recipe.activation]()
