"""SAEBench's intervention (clamping the selected latents at the hook) and the answers it leaves."""

from __future__ import annotations

from typing import Any

import torch
from sae_bench.evals.unlearning.utils.intervention import (
    anthropic_clamp_resid_SAE_features,
)
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from evals.unlearning.forward import new_cache, run_piece, run_prompts
from evals.unlearning.scoring import choice_scores_many
from evals.unlearning.stored import KeptQuestion


def clamp_piece(
    rows_RD: torch.Tensor, sae: Any, features: list[int], multiplier: int, has_position_0: bool
) -> torch.Tensor:
    """SAEBench's intervention (``anthropic_clamp_resid_SAE_features``, called as is) on a piece of a
    sequence. It leaves position 0 (BOS) alone, so a piece that does not start the sequence gets a
    placeholder row in front, dropped after. Everything else it does is per position."""
    x = rows_RD if has_position_0 else torch.cat([torch.zeros_like(rows_RD[:1]), rows_RD])
    out = anthropic_clamp_resid_SAE_features(
        x[None], None, sae, features_to_ablate=features, multiplier=multiplier  # type: ignore[arg-type]
    )
    if out is None:  # SAEBench's hook changes nothing when no latent is selected
        return rows_RD
    return out[0] if has_position_0 else out[0, 1:]


@torch.no_grad()
def clamped_head(model: Any, sae: Any, head_acts: torch.Tensor | None, features: list[int], multiplier: int,
                 first_block: int) -> TransformerLensKeyValueCache:  # fmt: skip
    """The key/value cache of the shared head with the clamp applied (empty when there is no head)."""
    head = new_cache(model)
    if head_acts is not None:
        x = clamp_piece(head_acts.to(model.cfg.device, model.cfg.dtype), sae, features, multiplier, True)
        run_piece(model, x[None], head, first_block)
    return head


@torch.no_grad()
def answers_with_clamp(model: Any, sae: Any, head: TransformerLensKeyValueCache, qs: list[KeptQuestion],
                       features: list[int], multiplier: int, first_block: int, answer_ids: torch.Tensor | None,
                       has_position_0: bool) -> list[bool]:  # fmt: skip
    """Whether each kept question is still answered correctly with SAEBench's clamp at the hook, after the
    (clamped) shared head; the questions run as one batch (``run_prompts``)."""
    xs = [clamp_piece(q.acts.to(model.cfg.device, model.cfg.dtype), sae, features, multiplier, has_position_0) for q in qs]
    conts = [list(x[q.own :].split([len(c) for c in q.choices])) for x, q in zip(xs, qs, strict=True)]
    ran = run_prompts(model, head, [x[: q.own] for x, q in zip(xs, qs, strict=True)],
                      conts if qs[0].choices else None, first_block)  # fmt: skip
    scores = choice_scores_many(model, ran, [q.choices for q in qs], answer_ids)
    return [int(s.argmax()) == q.answer for s, q in zip(scores, qs, strict=True)]
