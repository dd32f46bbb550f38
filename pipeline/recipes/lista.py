"""Encoder with optional LISTA-style refinement steps.

Formula (Gregor & LeCun 2010, "Learning Fast Approximations of Sparse Coding", applied to TopK SAEs):
    h0 = (x - b_dec) W_enc + b_enc,            a0 = act(h0)
    h_{s+1} = h_s + eta * ((x - b_dec - a_s W_dec) W_enc),   a_{s+1} = act(h_{s+1})
With `steps = 0` this is the plain SAE encoder. Gradients flow through every step. The dense
pre-activations are sums of parts (h0, eta*r_1 W_enc, ...), each gathered at the final selection
through its own linear map, so the sparse path never back-propagates through a dense matmul.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from pipeline.recipes.activation import Activation
from pipeline.recipes.ops import DenseOps, SparseOps
from pipeline.recipes.outputs import Active, EncodeOutput, Selection


class RefiningEncoder:
    """Plain encoder (steps=0) or LISTA refinement with `steps` residual corrections of size `eta`."""

    def __init__(self, steps: int = 0, eta: float = 0.3) -> None:
        self.steps = steps
        self.eta = eta

    def __call__(
        self,
        x: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        W_dec: Tensor,
        b_dec: Tensor,
        activation: Activation,
        select: Callable[[Tensor], Selection],
        ops: type[SparseOps] | type[DenseOps],
    ) -> EncodeOutput:
        xc = x - b_dec
        h0 = ops.preact(xc, W_enc, b_enc)
        parts: list[tuple[Tensor, Tensor, Tensor | None, float]] = [(h0, xc, b_enc, 1.0)]
        h = h0
        sel = select(h.detach())
        pre = ops.gather(h0, xc, W_enc, b_enc, sel)
        for _ in range(self.steps):
            residual = xc - ops.decode(sel, activation.activate(pre, sel.latents), W_dec)
            correction = ops.preact(residual, W_enc, None)
            parts.append((correction, residual, None, self.eta))
            h = h + self.eta * correction
            sel = select(h.detach())
            pre = sum(scale * ops.gather(hp, inp, W_enc, b, sel) for hp, inp, b, scale in parts)
        values = activation.activate(pre, sel.latents)
        return EncodeOutput(Active.of(sel, values), pre, h0, xc)
