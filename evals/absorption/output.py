"""Absorption's result in SAEBench's schema (sae-bench's own output classes), and what the report takes from it.

sae-bench is imported inside the functions that build the output: the plan reads ``REPORTED`` from this
module and must not pay for (or need) sae-bench."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from evals.absorption.config import AbsorptionParams
from evals.common import saebench_output
from pipeline.kinds import Metric, Reported

if TYPE_CHECKING:
    import pandas as pd
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.eval_output import (
        AbsorptionEvalOutput,
        AbsorptionMeanMetrics,
        AbsorptionResultDetail,
    )

    from evals.contract import EvalEnv

RESULT_FILE = "absorption.json"


def result_details(agg: pd.DataFrame, f1_probe: dict[str, float], p: AbsorptionParams) -> list[AbsorptionResultDetail]:
    """Per letter whose LLM probe passes ``min_GT_probe_f1``: sae-bench's aggregated absorption numbers."""
    from sae_bench.evals.absorption.eval_output import AbsorptionResultDetail

    return [
        AbsorptionResultDetail(
            first_letter=row["letter"], mean_absorption_fraction=float(row["mean_absorption_fraction"]),
            full_absorption_rate=float(row["full_absorption_rate"]),
            num_full_absorption=int(row["num_full_absorption"]),
            num_probe_true_positives=int(row["num_probe_true_positives"]),
            num_split_features=int(row["num_split_feats"]),
        )  # fmt: skip
        for _, row in agg.iterrows()
        if f1_probe[row["letter"]] > p.min_GT_probe_f1
    ]


def mean_metrics(details: list[AbsorptionResultDetail]) -> AbsorptionMeanMetrics:
    """Means and standard deviations over the letters, as SAEBench's ``run_eval`` reports them."""
    from sae_bench.evals.absorption.eval_output import AbsorptionMeanMetrics

    fractions = [d.mean_absorption_fraction for d in details]
    full_rates = [d.full_absorption_rate for d in details]
    splits = [d.num_split_features for d in details]
    return AbsorptionMeanMetrics(
        mean_absorption_fraction_score=statistics.mean(fractions),
        mean_full_absorption_score=statistics.mean(full_rates),
        mean_num_split_features=statistics.mean(splits),
        std_dev_absorption_fraction_score=statistics.stdev(fractions),
        std_dev_full_absorption_score=statistics.stdev(full_rates),
        std_dev_num_split_features=statistics.stdev(splits),
    )


def build_output(p: AbsorptionParams, env: EvalEnv, sae: Any, details: list[AbsorptionResultDetail],
                 unstructured_results: dict[str, Any]) -> AbsorptionEvalOutput:  # fmt: skip
    from sae_bench.evals.absorption.eval_output import (
        AbsorptionEvalOutput,
        AbsorptionMetricCategories,
    )

    return saebench_output(
        AbsorptionEvalOutput, eval_config(p, env), sae, env,
        eval_result_metrics=AbsorptionMetricCategories(mean=mean_metrics(details)),
        eval_result_details=details, eval_result_unstructured=unstructured_results,
    )  # fmt: skip


def eval_config(p: AbsorptionParams, env: EvalEnv) -> AbsorptionEvalConfig:
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig

    return AbsorptionEvalConfig(
        model_name=env.model_spec.name, random_seed=p.random_seed, f1_jump_threshold=p.f1_jump_threshold,
        max_k_value=p.max_k_value, prompt_template=p.prompt_template, prompt_token_pos=p.prompt_token_pos,
        llm_batch_size=p.llm_batch_size, llm_dtype=env.model_spec.dtype,
        k_sparse_probe_l1_decay=p.k_sparse_probe_l1_decay,
        k_sparse_probe_batch_size=p.k_sparse_probe_batch_size, k_sparse_probe_num_epochs=p.k_sparse_probe_num_epochs,
        min_GT_probe_f1=p.min_GT_probe_f1, min_feats_for_eval=p.min_feats_for_eval,
        eval_k_sparse_probe_batch_size=p.eval_k_sparse_probe_batch_size,
        precalc_k_sparse_probe_sae_acts=p.precalc_k_sparse_probe_sae_acts,
    )  # fmt: skip


def unstructured(
    meta: dict[str, Any], metrics_df: pd.DataFrame, negs: dict[str, dict[str, Any]], p: AbsorptionParams
) -> dict[str, Any]:
    """JSON-able extras: where the words came from, the LLM probe and the k-sparse F1 curve per letter."""
    per_letter = {}
    for _, row in metrics_df.iterrows():
        letter = row["letter"]
        per_letter[letter] = {
            "f1_probe": float(row["f1_probe"]),
            "included": bool(row["f1_probe"] > p.min_GT_probe_f1),
            "split_feats": negs[letter]["split_feats"],
            "split_feats_true_positives": negs[letter]["split_feats_true_positives"],
            "f1_sparse_sae": [float(row[f"f1_sparse_sae_{k}"]) for k in range(1, p.max_k_value + 1)],
        }
    return {
        "data_source": meta["data_source"],
        "hook": meta["hook"],
        "n_train_words": len(meta["train_words"]),
        "n_test_words": len(meta["test_words"]),
        "words_per_letter": p.words_per_letter,
        "max_icl_examples": p.max_icl_examples,
        "word_at_position_fraction": meta["word_at_position_fraction"],
        "prepend_bos": meta["prepend_bos"],
        "calculator": "sae-bench's calculate_absorption re-implemented on cached activations "
        "(one seeded ICL prompt per test word, built in prepare); see evals/absorption/README.md",
        "per_letter": per_letter,
    }


def extract(result: dict[str, Any]) -> dict[str, float]:
    m = result["eval_result_metrics"]["mean"]
    return {
        "absorption_fraction": m["mean_absorption_fraction_score"],
        "full_absorption": m["mean_full_absorption_score"],
        "split_features": m["mean_num_split_features"],
    }


REPORTED = Reported(
    "Feature absorption (first-letter spelling)", RESULT_FILE, extract,
    {"absorption_fraction": Metric("lower", headline=True), "full_absorption": Metric("lower"),
     "split_features": Metric(None)},
)  # fmt: skip
