"""Per-token measures as sae-bench's core eval computes them (``get_recons_loss`` and
``get_downstream_reconstruction_metrics``), so prep's and each SAE's halves agree with its numbers: the
same masks and CE; KL rearranged so that its clean half is computed once, in prep (``kl``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def special_mask(tokens: Tensor, ignore: Iterable[int]) -> Tensor:
    """(batch, pos) True where the token counts: not BOS/EOS/pad (sae-bench's ``ignore_tokens``)."""
    return torch.logical_not(torch.any(torch.stack([tokens == t for t in ignore], dim=0), dim=0))


def clean_side(clean_logits: Tensor) -> tuple[Tensor, Tensor]:
    """What KL needs of the clean pass, SAE-independent, so prep computes it once: the probabilities
    (sae-bench's softmax) and per position sum p log p (``xlogy``: 0 where p underflows to 0)."""
    probs = torch.nn.functional.softmax(clean_logits, dim=-1)
    return probs, torch.special.xlogy(probs, probs).sum(dim=-1)


def kl(probs: Tensor, plogp: Tensor, new_logits: Tensor) -> Tensor:
    """KL(clean || new) per position, as sum p log p - sum p log q with the clean side from
    ``clean_side``: one log-softmax and one elementwise product and sum over the new logits (a BLAS dot
    product instead was 10x further from float64), where sae-bench's form
    (``p * (log p - log q)``, both logs of a softmax) makes six passes over both. Equal in exact
    arithmetic; in fp32 the core parity test measures the difference (tests/evals/test_core.py)."""
    return kl_of_log_probs(probs, plogp, torch.nn.functional.log_softmax(new_logits, dim=-1))


def kl_of_log_probs(probs: Tensor, plogp: Tensor, log_q: Tensor, overwrite: bool = False) -> Tensor:
    """``kl`` from the new side's log-softmax, when the CE needs it too. ``overwrite``: the product is
    written into ``log_q`` (a tensor the caller reuses) instead of new memory; the same bits."""
    return plogp - (log_q.mul_(probs) if overwrite else probs * log_q).sum(dim=-1)


def counted_kl(probs: Tensor, plogp: Tensor, new_logits: Tensor, mask: Tensor) -> Tensor:
    """KL at the positions that count, flattened in sae-bench's order."""
    return kl(probs, plogp, new_logits)[mask]


def next_token_ce(log_probs: Tensor, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Per-token CE as TransformerLens's ``lm_cross_entropy_loss(per_token=True)`` computes it (the same
    gather and padding fill), from a log-softmax already taken: KL needs the same one, and on this CPU
    each costs 0.15 s a batch."""
    picked = log_probs[..., :-1, :].gather(dim=-1, index=tokens[..., 1:, None])[..., 0]
    if attention_mask is not None:
        picked = picked.masked_fill(~torch.logical_and(attention_mask[:, :-1], attention_mask[:, 1:]), 0.0)
    return -picked


def counted_ce(ce_per_token: Tensor, mask: Tensor) -> Tensor:
    """Per-token CE (one position shorter: the last has no next token) at the positions that count."""
    return ce_per_token[mask[:, :-1]]
