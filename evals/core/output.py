"""SAEBench's core schema (``CoreEvalOutput``) and what the report takes from it."""

from __future__ import annotations

from typing import Any

from pipeline.kinds import Metric, Reported


def __getattr__(name: str) -> Any:
    """``OUTPUT``: sae-bench's ``CoreEvalOutput``, imported on first use, because the plan reads ``REPORTED``
    from this module and must not pay for (or need) sae-bench."""
    if name == "OUTPUT":
        from sae_bench.evals.core.eval_output import CoreEvalOutput

        return CoreEvalOutput
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


RESULT_FILE = "core.json"


def extract(result: dict[str, Any]) -> dict[str, float]:
    m = result["eval_result_metrics"]
    return {
        "explained_variance": m["reconstruction_quality"]["explained_variance"],
        "mse": m["reconstruction_quality"]["mse"],
        "cossim": m["reconstruction_quality"]["cossim"],
        "l0": m["sparsity"]["l0"],
        "ce_loss_score": m["model_performance_preservation"]["ce_loss_score"],
        "ce_with_sae": m["model_performance_preservation"]["ce_loss_with_sae"],
        "ce_clean": m["model_performance_preservation"]["ce_loss_without_sae"],
        "kl_div_score": m["model_behavior_preservation"]["kl_div_score"],
        "l2_ratio": m["shrinkage"]["l2_ratio"],
        "frac_alive": m["misc_metrics"]["frac_alive"],
        "frac_dense_10pct": m["misc_metrics"]["freq_over_10_percent"],
    }


REPORTED = Reported(
    "Core (reconstruction, sparsity, model preservation)",
    RESULT_FILE,
    extract,
    {
        "explained_variance": Metric("higher", headline=True),
        "mse": Metric("lower"),
        "cossim": Metric("higher"),
        "l0": Metric(None),
        "ce_loss_score": Metric("higher", headline=True),
        "ce_with_sae": Metric("lower"),
        "ce_clean": Metric(None),
        "kl_div_score": Metric("higher", headline=True),
        "l2_ratio": Metric(None),
        "frac_alive": Metric("higher"),
        "frac_dense_10pct": Metric("lower"),
    },
)
