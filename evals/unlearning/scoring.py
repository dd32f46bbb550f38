"""The model's answer to a multiple-choice question: SAEBench's letter probabilities, or cloze scores."""

from __future__ import annotations

from typing import Any

import torch

from evals.unlearning.forward import Ran, final_logits


def letter_probs(logits_BV: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """SAEBench's A/B/C/D probabilities: softmax over the vocabulary, then per letter the max of the
    unspaced and spaced token (``get_output_probs_abcd``). [B, 4]."""
    probs = logits_BV.softmax(-1)[:, answer_ids.to(logits_BV.device)]
    return probs.reshape(-1, 2, 4).max(dim=1)[0]


def choice_scores(model: Any, ran: Ran, choices: list[list[int]], answer_ids: torch.Tensor | None) -> torch.Tensor:
    """Four scores, the highest being the model's answer. Letter: SAEBench's probabilities of A-D at the
    prompt's last position. Cloze: per choice the summed log-probability of its tokens (position t
    predicts token t + 1, the prompt's last position predicts the first)."""
    if answer_ids is not None:
        return letter_probs(final_logits(model, ran.last[None]), answer_ids)[0]
    assert ran.conts is not None
    predicting = torch.cat([torch.cat([ran.last[None], ran.conts[j, : len(c) - 1]]) for j, c in enumerate(choices)])
    logp = final_logits(model, predicting).log_softmax(-1)
    targets = torch.tensor([t for c in choices for t in c], device=logp.device)
    per_token = logp[torch.arange(len(targets), device=logp.device), targets]
    return torch.stack([chunk.sum() for chunk in per_token.split([len(c) for c in choices])])
