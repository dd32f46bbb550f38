"""NamedTuple values passed between recipe pieces (flat sparse codes, encoder and training outputs)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def row_offsets(rows: Tensor, n_rows: int) -> Tensor:
    """Start of each row's entries in a row-sorted flat list (the `offsets` of `embedding_bag`)."""
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cumsum(counts, 0) - counts


class Selection(NamedTuple):
    """Which (row, latent) pairs are active; entries sorted by row. Chosen without gradient."""

    rows: Tensor
    latents: Tensor
    offsets: Tensor
    n_rows: int

    @staticmethod
    def from_mask(mask: Tensor) -> "Selection":
        rows, latents = mask.nonzero(as_tuple=True)
        return Selection(rows, latents, row_offsets(rows, mask.shape[0]), mask.shape[0])

    @staticmethod
    def from_flat(flat_index: Tensor, n_rows: int, width: int) -> "Selection":
        flat_index = torch.sort(flat_index).values
        rows = torch.div(flat_index, width, rounding_mode="floor")
        return Selection(rows, flat_index - rows * width, row_offsets(rows, n_rows), n_rows)

    def keep(self, mask: Tensor) -> "Selection":
        rows = self.rows[mask]
        return Selection(rows, self.latents[mask], row_offsets(rows, self.n_rows), self.n_rows)


class Active(NamedTuple):
    """Active latents as a flat (row, latent, value) list: rows may hold different counts (BatchTopK)."""

    rows: Tensor
    latents: Tensor
    values: Tensor
    offsets: Tensor
    n_rows: int

    @staticmethod
    def of(sel: Selection, values: Tensor) -> "Active":
        return Active(sel.rows, sel.latents, values, sel.offsets, sel.n_rows)

    @property
    def selection(self) -> Selection:
        return Selection(self.rows, self.latents, self.offsets, self.n_rows)

    def dense(self, d_sae: int) -> Tensor:
        """(n_rows, d_sae) activation matrix."""
        out = self.values.new_zeros(self.n_rows, d_sae)
        return out.index_put((self.rows, self.latents), self.values, accumulate=True)


class EncodeOutput(NamedTuple):
    """Training-time encoder result: the active code and the dense pre-activations it came from."""

    active: Active
    pre: Tensor  # pre-activation values at the active entries (carry gradient)
    hidden_pre: Tensor  # dense (B, d_sae) pre-activations of the plain encoder (no grad on the sparse path)
    x_centered: Tensor  # x - b_dec


class ReconOutput(NamedTuple):
    """Full reconstruction plus one per-sample squared-error vector per loss level, and each level's
    weight in the loss (applied after the reduction, so TERM tilts each level's errors as they are)."""

    x_hat: Tensor
    level_losses: list[Tensor]
    level_weights: list[float]


class TrainOutput(NamedTuple):
    """What `SparseCoder.training_loss` returns. `stats` stay on the device (reading them back forces
    a sync, so the trainer does it only on logging steps); `metrics` reads them back now."""

    loss: Tensor
    stats: dict[str, Tensor | float]
    active: Active

    @property
    def metrics(self) -> dict[str, float]:
        return {name: float(v) for name, v in self.stats.items()}
