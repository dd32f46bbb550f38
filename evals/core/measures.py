"""Per-token measures exactly as sae-bench's core eval computes them (``get_recons_loss`` and
``get_downstream_reconstruction_metrics``), so prep's and each SAE's halves agree with its numbers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def special_mask(tokens: Tensor, ignore: Iterable[int]) -> Tensor:
    """(batch, pos) True where the token counts: not BOS/EOS/pad (sae-bench's ``ignore_tokens``)."""
    return torch.logical_not(torch.any(torch.stack([tokens == t for t in ignore], dim=0), dim=0))


def kl(original_logits: Tensor, new_logits: Tensor) -> Tensor:
    """KL(original || new) per position, with sae-bench's very operations (log of softmax, not log_softmax),
    so the floats match its own."""
    original_probs = torch.nn.functional.softmax(original_logits, dim=-1)
    log_original_probs = torch.log(original_probs)
    log_new_probs = torch.log(torch.nn.functional.softmax(new_logits, dim=-1))
    return (original_probs * (log_original_probs - log_new_probs)).sum(dim=-1)


def counted_kl(original_logits: Tensor, new_logits: Tensor, mask: Tensor) -> Tensor:
    """KL at the positions that count, flattened in sae-bench's order."""
    return kl(original_logits, new_logits)[mask]


def counted_ce(ce_per_token: Tensor, mask: Tensor) -> Tensor:
    """Per-token CE (one position shorter: the last has no next token) at the positions that count."""
    return ce_per_token[mask[:, :-1]]
