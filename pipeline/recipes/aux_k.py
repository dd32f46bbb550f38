"""AuxK dead-latent loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

With e = x - x_hat (target, no gradient) and z = TopK_{k_aux}(pre-activations of dead latents):
    L_aux = coefficient * s * mean_b || e_b - z_b W_dec ||^2,   s = min(n_dead / k_aux, 1) or 1
so dead latents get gradient by explaining what the live ones miss. Zero when nothing is dead.
z is ReLU'd unless `relu` is off (sae-lens keeps the raw, possibly negative, pre-activations).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.config.recipe import AuxKSpec
from pipeline.recipes.activation import TopK
from pipeline.recipes.loss_terms import LossContext
from pipeline.recipes.outputs import Active


class AuxKLoss:
    """Loss term: reconstruct the residual with the top k_aux dead latents."""

    def __init__(self, spec: AuxKSpec) -> None:
        self.k_aux = spec.k_aux
        self.coefficient = spec.coefficient
        self.scale_by_dead = spec.scale_by_dead
        self.relu = spec.relu

    def __call__(self, ctx: LossContext) -> Tensor:
        dead = ctx.dead_mask
        n_dead = 0 if dead is None else int(dead.sum())
        if n_dead == 0:
            return ctx.x.new_zeros(())
        enc = ctx.enc
        h = enc.hidden_pre
        sel = TopK().select(h.detach().masked_fill(~dead, -torch.inf), min(self.k_aux, n_dead))
        z = ctx.ops.gather(h, enc.x_centered, ctx.W_enc, ctx.b_enc, sel)
        e_hat = ctx.ops.decode(sel, z.relu() if self.relu else z, ctx.W_dec)
        e = (ctx.x - ctx.recon.x_hat).detach()
        scale = min(n_dead / self.k_aux, 1.0) if self.scale_by_dead else 1.0
        return self.coefficient * scale * (e - e_hat).pow(2).sum(-1).mean()


class DeadLatentTracker:
    """dead_mask for AuxK: latents that have not fired in the last `window` rows."""

    def __init__(self, d_sae: int, window: int) -> None:
        self.window = window
        self.rows_since_fired = torch.zeros(d_sae, dtype=torch.long)

    @torch.no_grad()
    def update(self, active: Active) -> Tensor:
        fired = torch.zeros_like(self.rows_since_fired, dtype=torch.bool)
        fired[active.latents[active.values != 0]] = True
        self.rows_since_fired += active.n_rows
        self.rows_since_fired[fired] = 0
        return self.rows_since_fired > self.window
