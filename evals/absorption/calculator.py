"""sae-bench's ``FeatureAbsorptionCalculator`` on activations cached in ``prepare``: same arithmetic, no
forward pass, so scoring an SAE never loads the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sae_bench.evals.absorption import feature_absorption_calculator as fac
from sae_bench.evals.absorption.feature_absorption import (
    ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
    ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
    ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
    FULL_ABSORPTION_PROBE_COS_THRESHOLD,
)

TOP_PROJECTION_FEATS = 10
"""``FeatureAbsorptionCalculator.topk_feats``."""


@torch.no_grad()
def absorption_scores(
    sae: Any, acts: torch.Tensor, words: Sequence[str], probe_direction: torch.Tensor, main_feature_ids: list[int],
    prompts: Sequence[str] | None = None,
    full_absorption_probe_cos_sim_threshold: float = FULL_ABSORPTION_PROBE_COS_THRESHOLD,
    absorption_fraction_probe_cos_sim_threshold: float = ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
    probe_projection_proportion_threshold: float = ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
    absorption_fraction_max_absorbing_latents: int = ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
    topk_feats: int = TOP_PROJECTION_FEATS,
) -> list[fac.WordAbsorptionResult]:  # fmt: skip
    """``FeatureAbsorptionCalculator.calculate_absorption`` on activations already read at the word
    position (``acts`` [n, d_model], row i for ``words[i]``), with sae-bench's thresholds as defaults.
    Same arithmetic in the same order, word by word; only the forward pass is replaced by ``acts``."""
    if probe_direction.ndim != 1:
        raise ValueError("probe_direction must be 1D")
    direction = probe_direction / probe_direction.norm()
    cos_sims = torch.nn.functional.cosine_similarity(direction.to(sae.device), sae.W_dec, dim=-1).float().cpu()
    results: list[fac.WordAbsorptionResult] = []
    if len(words) == 0:
        return results
    batch_acts = acts.to(device=sae.device, dtype=sae.dtype)
    sae_acts_all = sae.encode(batch_acts)
    projections = sae_acts_all * cos_sims.to(sae_acts_all.device)
    act_projections = batch_acts @ direction.to(device=sae_acts_all.device, dtype=sae_acts_all.dtype)
    calc = _threshold_holder(full_absorption_probe_cos_sim_threshold, probe_projection_proportion_threshold)
    for i, word in enumerate(words):
        sae_acts = sae_acts_all[i]
        act_probe_proj = act_projections[i].cpu().item()
        proj = projections[i].cpu()
        main_proj = torch.sum(proj[main_feature_ids]).cpu().item()
        absorbers = torch.ones(proj.size(0), dtype=torch.bool)
        absorbers[main_feature_ids] = False
        absorbers &= cos_sims >= absorption_fraction_probe_cos_sim_threshold
        absorbers &= proj > 0
        absorber_proj = proj[absorbers]
        top_absorbers = absorber_proj.topk(k=min(absorption_fraction_max_absorbing_latents, absorber_proj.numel()))
        top_total = torch.sum(top_absorbers.values).cpu().item()
        proportion = top_total / act_probe_proj
        if main_proj >= act_probe_proj or proportion < probe_projection_proportion_threshold:
            fraction = 0.0
        elif main_proj <= 0.0:
            fraction = 1.0
        else:
            absorbed = min(top_total, act_probe_proj - main_proj)
            fraction = float(np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0))
        top_feats = proj.topk(topk_feats).indices.tolist()
        main_scores = fac._get_feature_scores(main_feature_ids, probe_cos_sims=cos_sims, sae_acts=sae_acts)
        top_scores = fac._get_feature_scores(top_feats, probe_cos_sims=cos_sims, sae_acts=sae_acts)
        results.append(
            fac.WordAbsorptionResult(
                word=word, prompt=prompts[i] if prompts is not None else "", probe_projection=act_probe_proj,
                main_feature_scores=main_scores, top_projection_feature_scores=top_scores, absorption_fraction=fraction,
                is_full_absorption=calc._is_full_absorption(act_probe_proj, main_scores, top_scores),
            )
        )  # fmt: skip
    return results


def _threshold_holder(full_cos: float, proportion: float) -> fac.FeatureAbsorptionCalculator:
    """A calculator without a model, only to call sae-bench's own ``_is_full_absorption`` rule."""
    return fac.FeatureAbsorptionCalculator(
        model=None,  # type: ignore[arg-type]
        icl_word_list=[],
        full_absorption_probe_cos_sim_threshold=full_cos,
        probe_projection_proportion_threshold=proportion,
    )


def aggregate(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """sae-bench's ``_aggregate_results_df`` (per letter: summed fractions / probe true positives)."""
    from sae_bench.evals.absorption.main import _aggregate_results_df

    return _aggregate_results_df(pd.DataFrame(rows))
