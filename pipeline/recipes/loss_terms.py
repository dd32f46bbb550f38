"""The contract between the coder and its extra loss terms (AuxK, orthogonality): what a term sees.

It sits below both, so the pieces import it and the coder imports the pieces, with no circle.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from pipeline.recipes.ops import DenseOps, SparseOps
from pipeline.recipes.outputs import EncodeOutput, ReconOutput


class LossContext(NamedTuple):
    """Everything an extra loss term may look at."""

    x: Tensor
    enc: EncodeOutput
    recon: ReconOutput
    dead_mask: Tensor | None
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    ops: type[SparseOps] | type[DenseOps]


class LossTerm(Protocol):
    def __call__(self, ctx: LossContext) -> Tensor: ...
