"""What the train loop asks of an SAE implementation, and the loop's fixed optimiser settings.

Its own module so that the implementations (``trainables.py``, ``reference.py``) share it without
importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

ADAM_BETAS = (0.9, 0.999)
"""The loop's Adam betas, sae-lens's defaults (SAETrainerConfig.adam_beta1/2)."""
GRAD_CLIP = 1.0
"""The loop's grad-norm clip, as sae-lens's SAETrainer (fixed there too)."""


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
    def differences(self, lr: float, dead_window_steps: float, autocast: bool) -> dict[str, list[Any]]:
        """{setting: [ours, sae-lens default]} wherever this training differs from sae-lens's."""
        ...

    def save(self, folder: Path, metadata: dict[str, Any]) -> None: ...
