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

from pipeline.recipes.coder import build_coder
from pipeline.recipes.saving import save_coder
from pipeline.recipes.spec import RecipeSpec


class StepResult(NamedTuple):
    loss: torch.Tensor
    metrics: dict[str, float]
    fired: torch.Tensor
    """(d_sae,) how many rows of the batch each latent fired on."""


class Trainable(Protocol):
    module: torch.nn.Module

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult: ...
    def after_optimizer_step(self) -> None: ...
    def save(self, folder: Path, metadata: dict[str, Any]) -> None: ...


class RecipeTrainable:
    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int):
        self.module = build_coder(recipe, d_in, d_sae, k, seed)
        self.d_sae = d_sae

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult:
        if step == 0:
            self.module.init_b_dec(x)
        out = self.module.training_loss(x, step, n_steps, dead_mask)
        live = out.active.values != 0
        fired = torch.bincount(out.active.latents[live], minlength=self.d_sae)
        return StepResult(out.loss, out.metrics, fired)

    def after_optimizer_step(self) -> None:
        self.module.normalize_decoder()

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        save_coder(self.module, folder, metadata)


class SaeLensTrainable:
    """sae-lens's BatchTopK SAE, stepped exactly as sae-lens's trainer steps it."""

    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int):
        torch.manual_seed(seed)
        aux = recipe.aux_k.coefficient if recipe.aux_k else 0.0
        cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, aux_loss_coefficient=aux, dtype="float32", device="cpu")
        self.module = BatchTopKTrainingSAE(cfg)

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult:
        out = self.module.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead_mask, n_training_steps=step, is_logging_step=False)
        )
        with torch.no_grad():
            metrics = {f"loss/{k}": float(v) for k, v in out.losses.items()}
            metrics |= {"loss": float(out.loss), "mse": float(out.losses["mse_loss"])}
            fired = (out.feature_acts > 0).sum(0)
        return StepResult(out.loss, metrics, fired)

    def after_optimizer_step(self) -> None:
        """sae-lens rescales activations by the decoder norm; no projection needed."""

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        self.module.cfg.metadata = SAEMetadata(**metadata)
        self.module.save_inference_model(folder)


def build_trainable(trainer: str, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int) -> Trainable:
    cls = {"saepipe": RecipeTrainable, "sae_lens": SaeLensTrainable}[trainer]
    return cls(recipe, d_in, d_sae, k, seed)
