"""Sparse and dense implementations of the two linear maps of an SAE.

Only the encoder's forward pass is a dense matmul. Everything that depends on which latents are
active touches only those latents: the decoder is `x_hat = b_dec + sum_j v_j W_dec[l_j]` (an
`embedding_bag`), and the gradient of selected pre-activations `h[r, l] = inp[r] . W[:, l] + b[l]`
flows back as two `embedding_bag`s (into `inp` and into the columns of `W`), O(nnz * d_in) instead
of O(B * d_sae * d_in). `DenseOps` is the reference path with the ordinary dense matmuls; the two
must agree on losses and gradients (tested). Which one trains is `SAESpec.ops` (`auto`: see
`pipeline/training/ops_choice.py`). Under bf16 autocast only the dense matmuls run in bf16; the
sparse gathers and embedding_bags keep fp32 (they are memory-bound, bf16 would only lose precision).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.recipes.outputs import Selection, row_offsets


class _GatherLinear(torch.autograd.Function):
    """Values of `inp @ W + b` at selected (row, latent) pairs, with a sparse backward."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor, W: Tensor, b: Tensor | None, h: Tensor, rows: Tensor, latents: Tensor, offsets: Tensor) -> Tensor:
        ctx.save_for_backward(inp, W, rows, latents, offsets)
        ctx.has_bias = b is not None
        return h[rows, latents].to(W.dtype)  # under autocast h is bf16; the sparse part stays in fp32

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        inp, W, rows, latents, offsets = ctx.saved_tensors
        d_sae = W.shape[1]
        grad_inp = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_inp = F.embedding_bag(latents, W.t().contiguous(), offsets, mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            order = torch.argsort(latents, stable=True)
            by_latent = latents[order]
            grad_W = F.embedding_bag(rows[order], inp, row_offsets(by_latent, d_sae), mode="sum", per_sample_weights=g[order]).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.new_zeros(d_sae).index_add_(0, latents, g)
        return grad_inp, grad_W, grad_b, None, None, None, None


class SparseOps:
    """Dense encoder forward without autograd; selected values and the decoder with sparse gradients."""

    dense = False

    @staticmethod
    def preact(inp: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        with torch.no_grad():
            return torch.addmm(b, inp, W) if b is not None else inp @ W

    @staticmethod
    def gather(h: Tensor, inp: Tensor, W: Tensor, b: Tensor | None, sel: Selection) -> Tensor:
        return _GatherLinear.apply(inp, W, b, h, sel.rows, sel.latents, sel.offsets)

    @staticmethod
    def decode(sel: Selection, values: Tensor, W_dec: Tensor) -> Tensor:
        """sum_j v_j W_dec[l_j] per row (no bias), shape (n_rows, d_in)."""
        out = F.embedding_bag(sel.latents, W_dec, sel.offsets, mode="sum", per_sample_weights=values)
        return out


class DenseOps:
    """Reference path: ordinary dense matmuls with autograd, same numbers as `SparseOps`."""

    dense = True

    @staticmethod
    def preact(inp: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        return inp @ W + b if b is not None else inp @ W

    @staticmethod
    def gather(h: Tensor, inp: Tensor, W: Tensor, b: Tensor | None, sel: Selection) -> Tensor:
        return h[sel.rows, sel.latents]

    @staticmethod
    def decode(sel: Selection, values: Tensor, W_dec: Tensor) -> Tensor:
        acts = values.new_zeros(sel.n_rows, W_dec.shape[0]).index_put((sel.rows, sel.latents), values, accumulate=True)
        return acts @ W_dec


Ops = type[SparseOps] | type[DenseOps]
