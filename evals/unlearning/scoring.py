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
    return choice_scores_many(model, [ran], [choices], answer_ids)[0]


def choice_scores_many(
    model: Any, rans: list[Ran], choices: list[list[list[int]]], answer_ids: torch.Tensor | None
) -> list[torch.Tensor]:
    """``choice_scores`` of many questions with one unembedding: the rows a question is scored on are
    few, so one matmul per question reads the whole unembedding (49,152 x 576 here) for a handful of
    rows; one matmul for all of them reads it once."""
    if answer_ids is not None:
        probs = letter_probs(final_logits(model, torch.stack([r.last for r in rans])), answer_ids)
        return list(probs)
    predicting, targets, sizes = [], [], []
    for ran, cs in zip(rans, choices, strict=True):
        assert ran.conts is not None
        predicting += [torch.cat([ran.last[None], ran.conts[j, : len(c) - 1]]) for j, c in enumerate(cs)]
        targets += [t for c in cs for t in c]
        sizes += [len(c) for c in cs]
    logp = final_logits(model, torch.cat(predicting)).log_softmax(-1)
    index = torch.tensor(targets, device=logp.device)
    per_choice = torch.stack([chunk.sum() for chunk in logp[torch.arange(len(index), device=logp.device), index].split(sizes)])
    return list(per_choice.split([len(cs) for cs in choices]))
