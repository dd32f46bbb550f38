"""Absorption's per-SAE half: k-sparse probing on the SAE's latents, then absorption on the calculator
activations ``prepare`` cached (the model is never loaded)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sae_bench.evals.absorption.eval_output import AbsorptionEvalOutput
from sae_bench.evals.absorption.vocab import LETTERS

from evals.absorption.calculator import absorption_scores, aggregate
from evals.absorption.config import AbsorptionParams
from evals.absorption.k_sparse import k_sparse_metrics, likely_false_negatives
from evals.absorption.output import build_output, result_details, unstructured
from evals.absorption.probe import probe_from_tensors
from evals.contract import EvalEnv, Prepared


def evaluate(
    prepared: Prepared, sae: Any, env: EvalEnv, params: AbsorptionParams
) -> tuple[AbsorptionEvalOutput, dict[str, float]]:
    """k-sparse probing on the SAE's latents, then absorption on the cached calculator activations."""
    started = time.perf_counter()
    p, meta = params, prepared.meta
    train_words, test_words, abs_words = meta["train_words"], meta["test_words"], meta["absorption_words"]
    train_labels = prepared.tensor("train_labels").tolist()
    test_labels = prepared.tensor("test_labels").tolist()
    train = (prepared.tensor("train_acts"), list(zip(train_words, train_labels)))
    test = (prepared.tensor("test_acts"), list(zip(test_words, test_labels)))
    absorption_acts = prepared.tensor("absorption_acts")
    probe = probe_from_tensors(prepared.tensor("probe_weight"), prepared.tensor("probe_bias"))
    sae_name = env.label or "sae"

    with env.reporter.bar(f"absorption {sae_name}", total=len(LETTERS) + 1, unit="step") as bar:
        bar.advance(0, extra="k-sparse probes")
        raw_df, metrics_df = k_sparse_metrics(sae, probe, train, test, p, sae_name, meta["layer"])
        bar.advance(1, extra="absorption")
        negs = likely_false_negatives(metrics_df, raw_df)
        rows: list[dict[str, Any]] = []
        for i, letter in enumerate(LETTERS):
            stats = negs[letter]
            idx = stats["rows"]
            results = absorption_scores(
                sae, absorption_acts[idx], [abs_words[j] for j in idx], probe.weights[i].detach(), stats["split_feats"],
            )  # fmt: skip
            rows += [
                {"letter": letter, "token": r.word, "num_probe_true_positives": stats["probe_true_positives"],
                 "split_feats": stats["split_feats"], "absorption_fraction": r.absorption_fraction,
                 "is_full_absorption": r.is_full_absorption}
                for r in results
            ]  # fmt: skip
            bar.advance(1, extra=letter)
    f1_probe = dict(zip(metrics_df["letter"], metrics_df["f1_probe"]))
    details = result_details(aggregate(rows), f1_probe, p)
    if len(details) < p.min_feats_for_eval:  # prepare checks the same probe; this guards a changed threshold
        raise RuntimeError(
            f"absorption: only {len(details)} letters pass min_GT_probe_f1={p.min_GT_probe_f1} "
            f"(min_feats_for_eval={p.min_feats_for_eval}); SAEBench reports no result then"
        )
    output = build_output(p, env, sae, details, unstructured(meta, metrics_df, negs, p))
    mean = output.eval_result_metrics.mean
    summary = {
        "mean_absorption_fraction_score": mean.mean_absorption_fraction_score,
        "mean_full_absorption_score": mean.mean_full_absorption_score,
        "mean_num_split_features": mean.mean_num_split_features,
        "letters_evaluated": float(len(details)),
        "llm_probe_mean_f1": float(np.mean(list(f1_probe.values()))),
        "seconds": time.perf_counter() - started,
    }
    return output, {k: round(float(v), 4) for k, v in summary.items()}
