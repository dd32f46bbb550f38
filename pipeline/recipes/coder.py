"""SparseCoder: one SAE assembled from recipe pieces.

The training loss is the same loop for every recipe:
    k      = k_schedule(step, total)
    code   = encoder(x)                          (plain or LISTA; activation picks the entries)
    recon  = reconstruction(x, code)             (plain or Matryoshka levels of per-sample errors)
    loss   = sum_levels reduce(level) + activation penalty + sum of extra loss terms
Pieces that are switched off are replaced by neutral ones (constant k, zero refinement steps, one
level, mean reduction, empty term list), so the loop has no per-idea branches.

Decoder norms (`recipe.decoder`): 'project' keeps W_dec rows at unit norm by projection after each
step; 'rescale' (sae-lens's TopK-style parametrisation) leaves them free and runs the same loop on the
effective weights W_enc * n, b_enc * n, W_dec / n (n = row norms), which is what sae-lens computes;
'free' (sae-lens's JumpReLU) leaves them free and uses the weights as they are.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.activation import (
    Activation,
    BatchTopK,
    JumpReLU,
    build_activation,
)
from pipeline.recipes.aux_k import AuxKLoss
from pipeline.recipes.collective import all_sum, defer, world
from pipeline.recipes.k_anneal import KSchedule
from pipeline.recipes.lista import RefiningEncoder
from pipeline.recipes.loo import LooPruner, NoPruning
from pipeline.recipes.loss_terms import LossContext, LossTerm
from pipeline.recipes.matryoshka import build_reconstruction
from pipeline.recipes.ops import DenseOps, SparseOps
from pipeline.recipes.orthogonality import OrthogonalityLoss
from pipeline.recipes.outputs import Active, ReconOutput, TrainOutput
from pipeline.recipes.term import MeanLoss, TiltedLoss


def global_fvu(err_sum: Tensor, x: Tensor) -> Tensor:
    """This rank's share of the global batch's FVU (the ranks' shares are averaged when logged):
    world * err_sum / sum_b ||x_b - mean(x)||^2. Only logged, so under data parallelism the
    denominator's sums ([sum x, sum ||x||^2], float64) ride the step's ``settle`` and the value is
    filled in then."""
    if world() == 1:
        return err_sum / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    fvu = err_sum.new_zeros(())
    n = x.shape[0] * world()

    def fill(sums: Tensor) -> None:
        variance = sums[-1] - sums[:-1].pow(2).sum() / n
        fvu.copy_(err_sum * world() / variance.to(err_sum.dtype).clamp_min(1e-12))

    xd = x.detach().double()
    defer("sum", torch.cat([xd.sum(0), xd.pow(2).sum().reshape(1)]), fill)
    return fvu


class SavedForm(NamedTuple):
    """Closest sae-lens inference form: architecture name, extra cfg fields, tensors."""

    architecture: str
    cfg: dict[str, object]
    tensors: dict[str, Tensor]


class SparseCoder(nn.Module):
    """SAE with W_enc (d_in, d_sae), b_enc, W_dec (d_sae, d_in) (unit-norm rows, or free rows under
    decoder.norm 'rescale' / 'free'), b_dec."""

    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int = 0, dense: bool = False) -> None:
        super().__init__()
        self.recipe, self.d_in, self.d_sae, self.k, self.seed = recipe, d_in, d_sae, k, seed
        gen = torch.Generator().manual_seed(seed)
        W_dec = F.normalize(torch.randn(d_sae, d_in, generator=gen), dim=-1) * recipe.decoder.init_norm
        self.rescale = recipe.decoder.norm == "rescale"
        self.project = recipe.decoder.norm == "project"
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.ops: type[SparseOps] | type[DenseOps] = DenseOps if dense else SparseOps
        self.activation: Activation = build_activation(recipe, d_sae)
        self.encoder = RefiningEncoder(recipe.lista.steps, recipe.lista.eta) if recipe.lista else RefiningEncoder(0)
        self.reconstruction = build_reconstruction(recipe.matryoshka, d_sae)
        self.reduce = TiltedLoss(recipe.term.t) if recipe.term else MeanLoss()
        ka = recipe.k_anneal
        self.k_schedule = KSchedule(k, ka.k_start, ka.fraction) if ka else KSchedule(k)
        self.loss_terms: dict[str, LossTerm] = {}
        if recipe.aux_k is not None:
            self.loss_terms["aux_k"] = AuxKLoss(recipe.aux_k)
        if recipe.orthogonality is not None:
            self.loss_terms["orthogonality"] = OrthogonalityLoss(recipe.orthogonality)
        self.pruner = LooPruner(recipe.loo.tau) if recipe.loo else NoPruning()

    def effective_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W_enc, b_enc, W_dec) as the loss and inference see them (differentiable)."""
        if not self.rescale:
            return self.W_enc, self.b_enc, self.W_dec
        n = self.W_dec.norm(dim=-1)
        return self.W_enc * n, self.b_enc * n, self.W_dec / n[:, None]

    # -- training ---------------------------------------------------------------------------

    def training_loss(self, x: Tensor, step: int = 0, total_steps: int = 1, dead_mask: Tensor | None = None) -> TrainOutput:
        """Loss of one batch; also updates training statistics (BatchTopK threshold, frequencies)."""
        k = self.k_schedule(step, total_steps)
        self.activation.constrain()
        W_enc, b_enc, W_dec = self.effective_weights()
        enc = self.encoder(x, W_enc, b_enc, W_dec, self.b_dec, self.activation,
                           lambda h: self.activation.select(h, k), self.ops)
        recon: ReconOutput = self.reconstruction(x, enc.active, W_dec, self.b_dec, self.ops)
        terms: dict[str, Tensor] = {
            "reconstruction": sum(w * self.reduce(level) for level, w in zip(recon.level_losses, recon.level_weights)),
            "sparsity": self.activation.penalty(enc.pre, enc.active.values, enc.active.latents, x.shape[0]),
        }
        ctx = LossContext(x, enc, recon, dead_mask, W_enc, b_enc, W_dec, self.ops)
        for name, term in self.loss_terms.items():
            terms[name] = term(ctx)
        loss = sum(terms.values())
        with torch.no_grad():
            active = Active.of(enc.active.selection, enc.active.values.detach())
            self.activation.observe(active)
            self.reconstruction.observe(active)
            err = (x - recon.x_hat).pow(2).sum(-1)
            stats: dict[str, Tensor | float] = {f"loss/{name}": v.detach() for name, v in terms.items()}
            stats.update({
                "loss": loss.detach(),
                "mse": err.mean(),
                "fvu": global_fvu(err.sum(), x),
                "l0": (active.values != 0).sum() / x.shape[0],
                "k": float(k),
            })
        return TrainOutput(loss, stats, active)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project decoder rows back to unit norm; call after each optimizer step ('rescale', 'free': no-op)."""
        if self.project:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Move the decoder row norms into W_enc and b_enc (same function; unit rows after), as
        sae-lens does when it saves a rescaled SAE; 'free' scales the activation's threshold too, as
        sae-lens's JumpReLU fold does. A no-op for projected decoders."""
        if self.recipe.decoder.norm == "free":
            n = self.W_dec.norm(dim=-1)
            self.activation.fold_scale(n)
            self.W_dec.div_(n[:, None])
            self.W_enc.mul_(n)
            self.b_enc.mul_(n)
            return
        W_enc, b_enc, W_dec = self.effective_weights()
        self.W_enc.copy_(W_enc)
        self.b_enc.copy_(b_enc)
        self.W_dec.copy_(W_dec)

    @torch.no_grad()
    def init_b_dec(self, x: Tensor) -> None:
        """Start b_dec at the data mean (a cheap stand-in for the geometric median), unless the
        recipe says 'zeros' (sae-lens)."""
        if self.recipe.b_dec_init == "data_mean":
            self.b_dec.copy_(x.mean(0) if world() == 1 else all_sum(x.sum(0)) / (x.shape[0] * world()))

    # -- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: Tensor) -> Active:
        """Inference code: fitted threshold for BatchTopK, refinement if LISTA, LOO pruning if set."""
        W_enc, b_enc, W_dec = self.effective_weights()
        enc = self.encoder(x, W_enc, b_enc, W_dec, self.b_dec, self.activation,
                           lambda h: self.activation.select_inference(h, self.k), SparseOps)
        return self.pruner(x, enc.active, W_dec, self.b_dec)

    @torch.no_grad()
    def decode(self, active: Active) -> Tensor:
        return self.b_dec + SparseOps.decode(active.selection, active.values, self.effective_weights()[2])

    @torch.no_grad()
    def encode_dense(self, x: Tensor) -> Tensor:
        """(B, d_sae) activations, for comparison with dense SAE libraries."""
        return self.encode(x).dense(self.d_sae)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # -- saving -----------------------------------------------------------------------------

    @torch.no_grad()
    def state_for_saving(self) -> SavedForm:
        """Weights in the closest sae-lens inference architecture (see `saving.py`); folds the decoder
        norms in first, so the saved rows (and `W_dec` of the coder itself) are unit norm."""
        self.fold_decoder_norm()
        tensors = {name: getattr(self, name).detach().clone().contiguous() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        act = self.activation
        if isinstance(act, BatchTopK):
            tensors["threshold"] = act.inference_threshold().to(self.W_enc.dtype)
            return SavedForm("jumprelu", {}, tensors)
        if isinstance(act, JumpReLU):
            tensors["threshold"] = act.threshold.detach().clone()
            return SavedForm("jumprelu", {}, tensors)
        if self.recipe.activation == "topk":
            return SavedForm("topk", {"k": self.k, "rescale_acts_by_decoder_norm": False}, tensors)
        return SavedForm("standard", {}, tensors)


def build_coder(recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int = 0, dense: bool = False) -> SparseCoder:
    """SparseCoder for a recipe; checks the parts of the recipe that depend on d_in, d_sae and k."""
    if d_in < 1 or d_sae < 1:
        raise ValueError(f"d_in and d_sae must be positive, got {d_in}, {d_sae}")
    if not 1 <= k <= d_sae:
        raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
    if recipe.k_anneal and recipe.k_anneal.k_start > d_sae:
        raise ValueError(f"k_anneal.k_start={recipe.k_anneal.k_start} exceeds d_sae={d_sae}")
    if recipe.matryoshka and recipe.matryoshka.levels[-1] != d_sae:
        raise ValueError(f"matryoshka levels must end at d_sae={d_sae}, got {list(recipe.matryoshka.levels)}")
    return SparseCoder(recipe, d_in, d_sae, k, seed, dense)
