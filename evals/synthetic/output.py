"""The synthetic eval's result file (sae-lens's ``eval_sae_on_synthetic_data`` result, flattened) and
what the report takes from it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from pipeline.kinds import Metric, Reported

RESULT_FILE = "synthetic.json"
PROBE_BASELINE = "probe_baseline"
"""Name under which the report shows the prep's result (the supervised probe ceiling)."""


class SyntheticEvalOutput(BaseModel):
    """One SAE (variant) scored against the ground truth; SAEBench has no schema for this eval."""

    metrics: dict[str, float]
    """The flat metrics the report shows (``evaluate.flat_metrics``): at matched L0 when ``calibration``
    is set and scaled the thresholds, else at the fitted thresholds."""
    fitted_metrics: dict[str, float]
    """The same metrics at the SAE's fitted inference thresholds (equal to ``metrics`` when nothing was scaled)."""
    calibration: dict[str, Any] | None
    """How L0 was matched (``calibrate.Calibration`` plus target_l0, samples, seed); None when the eval
    scored the fitted thresholds only (``match_l0_samples: null``)."""
    variant: str
    """'plain' or 'loo'."""
    loo_tau: float | None
    eval_samples: int
    sae_loader: str
    """'saepipe_coder' (LISTA and recipe LOO as trained) or 'sae_lens'."""
    sae_id: str
    d_sae: int
    num_features: int
    sae_lens_result: dict[str, Any]
    """sae-lens's full result (``SyntheticEvalResult.to_dict()``)."""

    def to_json_file(self, path: str, indent: int = 2) -> None:
        """The same call as sae-bench's outputs, so the stage writes every eval alike."""
        with open(path, "w") as f:
            json.dump(self.model_dump(mode="json"), f, indent=indent)


FITTED_SHOWN = ("l0", "f1", "mcc")
"""Metrics at the fitted thresholds the report shows beside the matched ones (as ``<name>_fitted``)."""


def extract(result: dict[str, Any]) -> dict[str, float]:
    """The reported metrics; with L0 matching, also the fitted thresholds' L0/F1/MCC and the factor."""
    out = dict(result["metrics"])
    cal = result.get("calibration")
    if cal is not None:
        out |= {f"{m}_fitted": result["fitted_metrics"][m] for m in FITTED_SHOWN}
        if cal["factor"] is not None:
            out["threshold_scale"] = cal["factor"]
    return out


REPORTED = Reported(
    "Synthetic ground truth",
    RESULT_FILE,
    extract,
    {
        "f1": Metric("higher", headline=True),
        "precision": Metric("higher"),
        "recall": Metric("higher"),
        "accuracy": Metric("higher"),
        "mcc": Metric("higher", headline=True),
        "uniqueness": Metric("higher", headline=True),
        "explained_variance": Metric("higher"),
        "l0": Metric(None),
        "true_l0": Metric(None),
        "dead_latents": Metric("lower"),
        "shrinkage": Metric(None),
        # at the fitted thresholds, beside the matched-L0 scores: shown, never ranked (not at matched L0)
        "l0_fitted": Metric(None),
        "f1_fitted": Metric(None),
        "mcc_fitted": Metric(None),
        "threshold_scale": Metric(None),
    },
)
