"""Non-SAE baselines as SAEs: ``pca`` (principal directions of the activations) and ``random`` (untrained).

A fair recipe comparison needs a row that no SAE training produced. Both are saved as sae-lens
``topk`` SAEs at the run's k, so L0 is matched and every eval takes them unchanged.

- ``pca``: SAEBench's PCA baseline idea, made a sparse code. Its codes are signed and an SAE's are
  not, so each of the top m = min(d_in, d_sae // 2) principal directions v_i is two latents, +v_i
  (latent i) and -v_i (latent m + i); W_enc = W_dec^T, b_dec = the data mean, so the top-k rule keeps
  the k largest |projections| of the centred input. Latents past 2m (an SAE wider than 2 d_in) have
  zero rows and never fire. The fit streams the run's training rows once, accumulating the sum and
  X^T X in float64: memory is one shard window plus d_in^2, whatever the number of rows.
- ``random``: unit-norm Gaussian decoder rows from the seed, W_enc = W_dec^T, zero biases.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from pipeline.config.run import BASELINES

__all__ = ["BASELINES", "pca_weights", "random_weights", "save_topk"]


class Weights(NamedTuple):
    """An SAE's tensors in sae-lens's layout (W_enc is d_in x d_sae)."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor


class Moments:
    """Row count, sum and X^T X of a stream of row batches (float64), and the principal directions."""

    def __init__(self, d_in: int):
        self.n = 0
        self.total = torch.zeros(d_in, dtype=torch.float64)
        self.gram = torch.zeros(d_in, d_in, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        self.n += x.shape[0]
        self.total += x.sum(0)
        self.gram += x.T @ x

    def mean(self) -> torch.Tensor:
        return self.total / self.n

    def principal_directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(variances descending, directions as rows); each direction's largest-|.| entry positive."""
        if self.n < 2:
            raise ValueError(f"trainer 'pca' needs at least 2 rows, got {self.n}; cache more tokens or raise train_tokens")
        mu = self.mean()
        cov = (self.gram - self.n * torch.outer(mu, mu)) / (self.n - 1)
        variances, vectors = torch.linalg.eigh(cov)
        variances, directions = variances.flip(0), vectors.T.flip(0)
        sign = directions.gather(1, directions.abs().argmax(1, keepdim=True)).sign()
        return variances, directions * sign


def pca_weights(batches: Iterable[torch.Tensor], d_in: int, d_sae: int) -> tuple[Weights, int]:
    """The PCA SAE of the rows in `batches` (one pass); (weights, rows used)."""
    moments = Moments(d_in)
    for x in batches:
        moments.add(x)
    _, directions = moments.principal_directions()
    m = min(d_in, d_sae // 2)
    top = directions[:m].float()
    W_dec = torch.cat([top, -top, torch.zeros(d_sae - 2 * m, d_in)])
    return Weights(W_dec.T.contiguous(), torch.zeros(d_sae), W_dec, moments.mean().float()), moments.n


def random_weights(d_in: int, d_sae: int, seed: int) -> Weights:
    gen = torch.Generator().manual_seed(seed)
    W_dec = F.normalize(torch.randn(d_sae, d_in, generator=gen), dim=-1)
    return Weights(W_dec.T.contiguous(), torch.zeros(d_sae), W_dec, torch.zeros(d_in))


def save_topk(weights: Weights, k: int, folder: Path, metadata: dict[str, Any]) -> None:
    """Write `weights` as a sae-lens TopK SAE (cfg.json + sae_weights.safetensors) at `k`."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_sae, d_in = weights.W_dec.shape
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(**metadata)))
    sae.load_state_dict(weights._asdict())
    sae.save_model(folder)
