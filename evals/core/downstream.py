"""Per SAE: CE loss and KL with the SAE spliced in, from the cached residual through the model's tail
only; the clean and zero-ablated sides come from prep. Same batches, masks and reductions as sae-bench's
``get_downstream_reconstruction_metrics``, so the numbers are its numbers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from evals.contract import Prepared
from evals.core.config import CoreConfig
from evals.core.measures import clean_side, counted_ce, kl_of_log_probs, special_mask
from evals.core.prepare import (
    ACTS,
    CE_ABLATED,
    CE_CLEAN,
    CLEAN_PLOGP,
    CLEAN_PROBS,
    KL_ABLATED,
    RESID,
    TOKENS,
)
from evals.core.tail import Replace, Tail
from pipeline.data.reused import Reused
from pipeline.models.read_layout import weights_stored_as_read


def splice(sae: Any, mask: Tensor) -> Replace:
    """sae-bench's replacement hook: the SAE's reconstruction where the token counts, the original elsewhere."""

    def replace(acts: Tensor) -> Tensor:
        recon = sae.decode(sae.encode(acts.to(sae.device))).to(acts.dtype).to(acts.device)
        return torch.where(mask[..., None], recon, acts)

    return replace


def downstream_metrics(prepared: Prepared, sae: Any, model: Any, hook: str, p: CoreConfig, device: str) -> dict[str, dict[str, float]]:
    """sae-bench's ``model_behavior_preservation`` and ``model_performance_preservation`` groups."""
    tail = Tail.of(hook, model.cfg.n_layers)
    ignore = prepared.meta["ignore_tokens"]
    b = p.batch_size_prompts
    starts = prepared.batches(ACTS if tail.starts_at_splice else RESID, b)
    stored = CLEAN_PROBS in prepared.names()
    cleans = zip(prepared.batches(CLEAN_PROBS, b, reuse=True), prepared.batches(CLEAN_PLOGP, b)) if stored else None
    kl_sae, ce_sae = [], []
    reused = Reused()
    with weights_stored_as_read(model, tail.start_layer, unembed=True):
        for _, batch, start in zip(range(p.n_reconstruction_batches), prepared.batches(TOKENS, b), starts):
            batch, start = batch.to(device), start.to(device)
            mask = special_mask(batch, ignore)
            log_q, ce = tail.run(model, start, batch, splice(sae, mask), reused)
            probs, plogp = (t.to(device) for t in next(cleans)) if cleans is not None else clean_side(tail.logits(model, start, batch, None, reused)[0])
            kl_sae.append(kl_of_log_probs(probs, plogp, log_q, overwrite=True)[mask])
            ce_sae.append(counted_ce(ce, mask))
    kl_with_sae, ce_with_sae = torch.cat(kl_sae).mean().item(), torch.cat(ce_sae).mean().item()
    kl_ablation = prepared.tensor(KL_ABLATED).mean().item()
    ce_clean, ce_ablation = prepared.tensor(CE_CLEAN).mean().item(), prepared.tensor(CE_ABLATED).mean().item()
    return {
        "model_behavior_preservation": {
            "kl_div_score": (kl_ablation - kl_with_sae) / kl_ablation,
            "kl_div_with_ablation": kl_ablation,
            "kl_div_with_sae": kl_with_sae,
        },
        "model_performance_preservation": {
            "ce_loss_score": (ce_ablation - ce_with_sae) / (ce_ablation - ce_clean),
            "ce_loss_with_ablation": ce_ablation,
            "ce_loss_with_sae": ce_with_sae,
            "ce_loss_without_sae": ce_clean,
        },
    }
