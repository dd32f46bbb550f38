"""SAEBench's unlearning score; what it measures and where it differs from SAEBench: README.md."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.unlearning import output
from evals.unlearning.config import SAE_ONLY, UnlearningParams


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """Per-token fp32 hook activations of the forget and the retain corpus (the questions' are far fewer)."""
    return 2 * params["dataset_size"] * params["seq_len"] * size.d_model * 4


EVAL = EvalDef(
    name="unlearning", version=3, config=UnlearningParams, package="evals.unlearning", reported=output.REPORTED,
    prep="unlearning", prep_exclude=SAE_ONLY, prep_bytes=prep_bytes,
)
