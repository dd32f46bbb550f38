"""The SAE implementations the `train` stage's loop can drive, behind one small interface.

- ``saepipe``: :class:`pipeline.recipes.coder.SparseCoder`, every recipe piece, sparse decoder.
- ``sae_lens``: sae-lens's own training SAE for the recipe, the reference (``reference.py``).

Both give (loss, metrics, per-latent firing counts) per batch and save in the sae-lens format, so the
training loop, its checkpoints and everything downstream are the same for both. (The baselines,
``pca`` and ``random``, skip the loop: ``baselines.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import build_coder
from pipeline.training.contract import StepResult, Trainable


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

    def differences(self, lr: float, dead_window_steps: float, autocast: bool) -> dict[str, list[Any]]:
        from pipeline.training.reference import saepipe_differences

        m = self.module
        return saepipe_differences(m.recipe, m.d_in, m.d_sae, m.k, lr, dead_window_steps, autocast)

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        from pipeline.recipes.saving import save_coder  # imports sae_lens

        save_coder(self.module.cpu(), folder, metadata)


def build_trainable(
    trainer: str,
    recipe: RecipeSpec,
    d_in: int,
    d_sae: int,
    k: int,
    seed: int,
    device: torch.device,
    ops: str,
    sae_lens_config: dict[str, Any] | None = None,
) -> Trainable:
    """The trainer's SAE, initialised from `seed` on the CPU (same weights on every device), on `device`.
    `sae_lens_config`: sae-lens config fields the run sets explicitly (trainer sae_lens only)."""
    if trainer == "sae_lens":
        from pipeline.training.reference import SaeLensTrainable

        return SaeLensTrainable(recipe, d_in, d_sae, k, seed, device, sae_lens_config or {})
    if trainer != "saepipe":
        raise ValueError(f"trainer {trainer!r} has no training loop; choose saepipe or sae_lens")
    return RecipeTrainable(recipe, d_in, d_sae, k, seed, device, ops)
