"""Unlearning's result in SAEBench's schema (sae-bench's own output classes), and what the report takes from it.

sae-bench (and ``data.py``, which reads its prompt formats) is imported inside ``build_output``: the plan
reads ``REPORTED`` from this module and must not pay for (or need) sae-bench."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evals.common import saebench_output
from evals.unlearning.config import UnlearningParams
from pipeline.kinds import Metric, Reported

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sae_bench.evals.unlearning.eval_output import UnlearningEvalOutput

    from evals.contract import EvalEnv

RESULT_FILE = "unlearning.json"
RETAIN_ACCURACY_BAR = 0.99
"""SAEBench's rule: a setting counts when pooled retain accuracy stays >= this."""


def build_output(
    p: UnlearningParams, env: EvalEnv, sae: Any, meta: dict[str, Any], df: pd.DataFrame, score: float,
    top: dict[float, np.ndarray], forget_sp: np.ndarray, retain_sp: np.ndarray,
) -> UnlearningEvalOutput:  # fmt: skip
    """SAEBench's output object; the per-setting table and data facts go in ``eval_result_unstructured``."""
    from sae_bench.evals.unlearning.eval_config import UnlearningEvalConfig
    from sae_bench.evals.unlearning.eval_output import (
        UnlearningEvalOutput,
        UnlearningMetricCategories,
        UnlearningMetrics,
    )

    from evals.unlearning.data import HUB_FORGET

    spec = env.model_spec
    eval_cfg = UnlearningEvalConfig(
        random_seed=p.random_seed,
        dataset_names=[meta["forget"], *meta["retain"]],
        intervention_method="clamp_feature_activation",
        retain_thresholds=list(p.retain_thresholds),
        n_features_list=list(p.n_features_list),
        multipliers=list(p.multipliers),
        dataset_size=p.dataset_size,
        seq_len=p.seq_len,
        target_metric="correct",
        model_name=spec.name,
        llm_batch_size=p.llm_batch_size,
        llm_dtype=spec.dtype,
    )
    table = df if meta["forget"] == HUB_FORGET else df.drop(columns=[HUB_FORGET])
    n_show = max(p.n_features_list)
    return saebench_output(
        UnlearningEvalOutput, eval_cfg, sae, env,
        eval_result_metrics=UnlearningMetricCategories(unlearning=UnlearningMetrics(unlearning_score=score)),
        eval_result_details=[],
        eval_result_unstructured={
            "data_source": meta["data_source"],
            "scoring": (
                "letter: SAEBench's A/B/C/D next-token probabilities" if meta["scoring"] == "letter"
                else "cloze: summed log-probability of each answer text (a deviation from SAEBench's letter scoring)"
            ),  # fmt: skip
            "questions": meta["questions"],
            "kept_question_ids": meta["kept_question_ids"],
            "retain_accuracy_bar": RETAIN_ACCURACY_BAR,
            "settings": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
            "settings_note": (
                "every setting computed in full (full_sweep)" if p.full_sweep else
                "a setting whose retain accuracy fell below the bar stopped there: its all_side_effects_mcq is "
                "an upper bound and its per-set accuracies are null; questions no selected latent reaches kept "
                "the unmodified model's (right) answer"
            ),
            "selected_features": {str(t): [int(f) for f in top[t][:n_show]] for t in p.retain_thresholds},
            "candidate_features": {str(t): len(top[t]) for t in p.retain_thresholds},
            "corpus_tokens_counted": meta["corpus_tokens_counted"],
            "latents_firing": {"forget": int((forget_sp > 0).sum()), "retain": int((retain_sp > 0).sum())},
        },
    )


def extract(result: dict[str, Any]) -> dict[str, float]:
    return {"unlearning_score": result["eval_result_metrics"]["unlearning"]["unlearning_score"]}


REPORTED = Reported("Unlearning", RESULT_FILE, extract, {"unlearning_score": Metric("higher", headline=True)})
