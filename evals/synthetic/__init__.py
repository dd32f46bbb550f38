"""Synthetic ground truth (SynthSAEBench metrics) with the supervised probe ceiling as its prep (README.md)."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.synthetic.config import SyntheticConfig, variants
from evals.synthetic.output import PROBE_BASELINE, REPORTED


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """No tensors: the probe ceiling is the prep's JSON meta (``pipeline.disk.PREP_OVERHEAD`` covers it)."""
    return 0


EVAL = EvalDef(
    "synthetic",
    3,  # 3: scored at matched L0 (match_l0_samples), fitted metrics and the calibration beside them
    SyntheticConfig,
    __name__,
    REPORTED,
    prep="synthetic",
    runs_on="synthetic",
    prep_exclude=("loo_tau", "match_l0_samples"),
    sae_format="folder",
    variants=variants,
    report_prep=PROBE_BASELINE,
    prep_bytes=prep_bytes,
    prep_version=3,  # 2: the probe runs to convergence on a per-model sample count (rates.py); 3: and again on twice the samples
)
