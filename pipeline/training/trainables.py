"""The two SAE implementations the `train` stage can drive, behind one small interface.

- ``saepipe``: :class:`pipeline.recipes.coder.SparseCoder`, every recipe piece, sparse decoder.
- ``sae_lens``: sae-lens's own ``BatchTopKTrainingSAE``, the reference implementation.

Both give (loss, metrics, per-latent firing counts) per batch and save in the sae-lens format, so the
training loop, its checkpoints and everything downstream are the same for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainStepInput

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import build_coder
from pipeline.recipes.collective import world
from pipeline.recipes.saving import save_coder


class StepResult(NamedTuple):
    loss: torch.Tensor
    stats: dict[str, torch.Tensor | float]
    """Metrics of the batch, left on the device: the loop reads them back on logging steps only."""
    fired: torch.Tensor
    """(d_sae,) how many rows of this rank's batch each latent fired on."""


class Trainable(Protocol):
    module: torch.nn.Module
    ops: str
    """Which decode ops train it ('sparse', 'dense'; 'sae_lens' for sae-lens's own)."""

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult: ...
    def after_optimizer_step(self) -> None: ...
    def save(self, folder: Path, metadata: dict[str, Any]) -> None: ...


class RecipeTrainable:
    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int, device: torch.device, ops: str):
        self.module = build_coder(recipe, d_in, d_sae, k, seed, dense=ops == "dense").to(device)
        self.d_sae = d_sae
        self.ops = ops

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult:
        if step == 0:
            self.module.init_b_dec(x)
        out = self.module.training_loss(x, step, n_steps, dead_mask)
        live = (out.active.values != 0).long()
        fired = torch.zeros(self.d_sae, dtype=torch.long, device=x.device).index_add_(0, out.active.latents, live)
        return StepResult(out.loss, out.stats, fired)

    def after_optimizer_step(self) -> None:
        self.module.normalize_decoder()

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        save_coder(self.module.cpu(), folder, metadata)


class SaeLensTrainable:
    """sae-lens's BatchTopK SAE, stepped exactly as sae-lens's trainer steps it (one process only:
    its batch-global top-k and threshold live inside sae-lens, out of reach of the all-reduces)."""

    ops = "sae_lens"

    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int, device: torch.device, ops: str):
        if world() > 1:
            raise ValueError("trainer 'sae_lens' trains in one process only; use trainer: saepipe for multi-GPU data parallel")
        torch.manual_seed(seed)
        aux = recipe.aux_k.coefficient if recipe.aux_k else 0.0
        cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, aux_loss_coefficient=aux, dtype="float32", device="cpu")
        self.module = BatchTopKTrainingSAE(cfg).to(device)
        self.module.cfg.device = str(device)

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult:
        out = self.module.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead_mask, n_training_steps=step, is_logging_step=False)
        )
        with torch.no_grad():
            stats: dict[str, torch.Tensor | float] = {f"loss/{k}": v.detach() for k, v in out.losses.items()}
            stats |= {"loss": out.loss.detach(), "mse": out.losses["mse_loss"].detach()}
            fired = (out.feature_acts > 0).sum(0)
        return StepResult(out.loss, stats, fired)

    def after_optimizer_step(self) -> None:
        """sae-lens rescales activations by the decoder norm; no projection needed."""

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        self.module.cpu()
        self.module.cfg.device = "cpu"
        self.module.cfg.metadata = SAEMetadata(**metadata)
        self.module.save_inference_model(folder)


def build_trainable(
    trainer: str, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int, device: torch.device, ops: str
) -> Trainable:
    """The trainer's SAE, initialised from `seed` on the CPU (same weights on every device), on `device`."""
    cls = {"saepipe": RecipeTrainable, "sae_lens": SaeLensTrainable}[trainer]
    return cls(recipe, d_in, d_sae, k, seed, device, ops)
