"""sae-bench's k-sparse probing on SAE latents, in memory: which latents carry each letter (the feature
splits) and which test words the calculator scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
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
        raw_df = raw_scores(sae, probe, k_probes, test[1], test[0], batch_size=p.eval_k_sparse_probe_batch_size)
        metadata = ksp.sae_k_sparse_metadata(sae, probe, k_probes, sae_name=sae_name, layer=layer)
    metrics_df = metrics_table(raw_df, metadata, max_k_value=p.max_k_value)
    ksp.add_feature_splits_to_metrics_df(metrics_df, max_k_value=p.max_k_value, f1_jump_threshold=p.f1_jump_threshold)
    return raw_df, metrics_df


@torch.no_grad()
def raw_scores(
    sae: Any, probe: probing.LinearProbe, k_probes: dict[int, dict[int, ksp.KSparseProbe]],
    eval_labels: list[tuple[str, int]], eval_acts: torch.Tensor, batch_size: int,
) -> pd.DataFrame:  # fmt: skip
    """sae-bench's ``eval_probe_and_sae_k_sparse_raw_scores``, computed per (letter, k) over all test rows
    at once instead of one k-sparse probe call per row (26 x max_k calls per word, about 1 s an SAE). The
    SAE and the probe still see sae-bench's batches, so the latents are the same floats. Same columns
    except the per-row ``sparse_sae_*_acts`` arrays, which nothing downstream reads."""
    probe = probe.to(sae.device)
    sae_acts, probe_scores = [], []
    for batch in eval_acts.to(sae.device).split(batch_size):
        sae_acts.append(sae.encode(batch.to(dtype=sae.dtype)).float().cpu())
        probe_scores.append(probe(batch).float().cpu())
    acts, scores = torch.cat(sae_acts), torch.cat(probe_scores)
    columns: dict[str, Any] = {"token": [word for word, _ in eval_labels],
                               "answer_letter": [LETTERS[i] for _, i in eval_labels]}  # fmt: skip
    for letter_i, letter in enumerate(LETTERS):
        columns[f"score_probe_{letter}"] = scores[:, letter_i].double().numpy()
        for k, by_letter in k_probes.items():
            k_probe = by_letter[letter_i]
            sparse = acts[:, k_probe.feature_ids]
            columns[f"score_sparse_sae_{letter}_k_{k}"] = (sparse @ k_probe.weight + k_probe.bias).double().numpy()
            columns[f"sum_sparse_sae_{letter}_k_{k}"] = sparse.sum(dim=1).double().numpy()
    return pd.DataFrame(columns)


def metrics_table(raw_df: pd.DataFrame, metadata_df: pd.DataFrame, max_k_value: int) -> pd.DataFrame:
    """sae-bench's ``build_metrics_df``, same columns in the same order, from counts instead of its ~2,200
    sklearn metric calls per SAE (half of this eval's time). Precision, recall and F1 are sklearn's binary
    formulas with its 0 for an empty denominator, so they are equal exactly; AUC is the Mann-Whitney form
    with ties counted half, which equals sklearn's trapezoid ROC area up to float rounding."""
    meta = {(row["letter"], row["k"]): row for row in metadata_df.to_dict("records")}
    layer, sae_name = metadata_df["layer"].iloc[0], metadata_df["sae_name"].iloc[0]
    answers = raw_df["answer_letter"].to_numpy()
    rows = []
    for letter in LETTERS:
        y = answers == letter
        probe_score = raw_df[f"score_probe_{letter}"].to_numpy()
        row: dict[str, Any] = {**_scored("probe", y, probe_score, probe_score > 0.0),
                               "letter": letter, "layer": layer, "sae_name": sae_name}  # fmt: skip
        for k in range(1, max_k_value + 1):
            score = raw_df[f"score_sparse_sae_{letter}_k_{k}"].to_numpy()
            total = raw_df[f"sum_sparse_sae_{letter}_k_{k}"].to_numpy()
            m = meta[(letter, k)]
            row |= _scored(f"sparse_sae_{k}", y, score, score > 0.0)
            row |= _scored(f"sum_sparse_sae_{k}", y, total, total > ksp.EPS)
            row[f"sparse_sae_k_{k}_feats"] = m["feats"]
            row[f"cos_probe_sae_enc_k_{k}"], row[f"cos_probe_sae_dec_k_{k}"] = m["cos_probe_sae_enc"], m["cos_probe_sae_dec"]
            row[f"sparse_sae_k_{k}_weights"], row[f"sparse_sae_k_{k}_bias"] = m["weights"], m["bias"]
            row["layer"], row["sae_name"] = m["layer"], m["sae_name"]
        rows.append(row)
    return pd.DataFrame(rows)


def _scored(name: str, y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """``auc_``, ``f1_``, ``recall_`` and ``precision_`` + name, in sae-bench's column order: sklearn's
    binary formulas for positive label True, 0.0 where a denominator is 0."""
    tp, true_sum, pred_sum = float(np.sum(y & pred)), float(np.sum(y)), float(np.sum(pred))
    return {
        f"auc_{name}": roc_auc(y, score),
        f"f1_{name}": 2.0 * tp / (true_sum + pred_sum) if true_sum + pred_sum else 0.0,
        f"recall_{name}": tp / true_sum if true_sum else 0.0,
        f"precision_{name}": tp / pred_sum if pred_sum else 0.0,
    }


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the chance a positive outscores a negative (ties half); raises like
    sklearn's ``roc_auc_score`` when only one class is present."""
    n_pos = int(np.sum(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("Only one class is present in y_true. ROC AUC score is not defined in that case.")
    return float((average_ranks(score)[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (``scipy.stats.rankdata``'s default, without importing
    scipy.stats, which costs more than the whole table)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


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
