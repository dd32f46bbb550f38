"""sae-bench's k-sparse probing on SAE latents, in memory: which latents carry each letter (the feature
splits) and which test words the calculator scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sklearn
import torch
from sae_bench.evals.absorption import k_sparse_probing as ksp
from sae_bench.evals.absorption import probing
from sae_bench.evals.absorption.vocab import LETTERS
from threadpoolctl import threadpool_limits

from evals.absorption.config import AbsorptionParams
from evals.absorption.quiet import quiet_saebench


def k_sparse_metrics(
    sae: Any, probe: probing.LinearProbe, train: tuple[torch.Tensor, list[tuple[str, int]]],
    test: tuple[torch.Tensor, list[tuple[str, int]]], params: AbsorptionParams, sae_name: str, layer: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """sae-bench's k-sparse probing experiment on tensors (``run_k_sparse_probing_experiment`` minus its
    parquet/probe files): (raw per-word scores, per-letter metrics with ``split_feats``)."""
    p = params
    # Hundreds of tiny sklearn fits: a multi-threaded BLAS only spins (12 ms a fit alone, 160 ms with 2
    # threads on a busy 2-core machine). One BLAS thread changes no result beyond rounding.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        torch.random.fork_rng(devices=[]),
        torch.enable_grad(),
        quiet_saebench(),
    ):
        torch.manual_seed(p.random_seed)
        k_probes = ksp.train_k_sparse_probes(
            sae, train[1], train[0], ks=list(range(1, p.max_k_value + 1)), l1_decay=p.k_sparse_probe_l1_decay,
            batch_size=p.k_sparse_probe_batch_size, num_epochs=p.k_sparse_probe_num_epochs,
            precalc_sae_acts=p.precalc_k_sparse_probe_sae_acts,
        )  # fmt: skip
    with threadpool_limits(limits=1, user_api="blas"), torch.no_grad(), quiet_saebench():
        raw_df = ksp.eval_probe_and_sae_k_sparse_raw_scores(
            sae, probe, k_sparse_probes=k_probes, eval_labels=test[1], eval_activations=test[0],
            eval_batch_size=p.eval_k_sparse_probe_batch_size,
        )  # fmt: skip
        metadata = ksp.sae_k_sparse_metadata(sae, probe, k_probes, sae_name=sae_name, layer=layer)
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # ~2,000 metric calls
            metrics_df = ksp.build_metrics_df(raw_df, metadata, max_k_value=p.max_k_value)
    ksp.add_feature_splits_to_metrics_df(metrics_df, max_k_value=p.max_k_value, f1_jump_threshold=p.f1_jump_threshold)
    return raw_df, metrics_df


def likely_false_negatives(metrics_df: pd.DataFrame, raw_df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """sae-bench's ``get_stats_and_likely_false_negative_tokens`` on the in-memory raw scores: per letter,
    the main (split) latents and the test rows the LLM probe marks positive, which the calculator scores.
    Also returns the row indices, to pick the cached calculator activations."""
    out: dict[str, dict[str, Any]] = {}
    for letter in LETTERS:
        split_feats = metrics_df[metrics_df["letter"] == letter]["split_feats"].iloc[0]
        k = len(split_feats)
        positive = (raw_df["answer_letter"] == letter) & (raw_df[f"score_probe_{letter}"] > 0)
        split_tp = (positive & (raw_df[f"score_sparse_sae_{letter}_k_{k}"] > 0)).sum() if k else 0
        out[letter] = {
            "probe_true_positives": int(positive.sum()),
            "split_feats_true_positives": int(split_tp),
            "split_feats": [int(f) for f in split_feats],
            "rows": np.flatnonzero(positive.to_numpy()).tolist(),
        }
    return out
