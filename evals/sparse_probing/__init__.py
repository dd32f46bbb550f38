"""SAEBench's sparse probing on sae-probes' shipped datasets (README.md): one prep stage per dataset."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.sparse_probing.config import SparseProbingConfig
from evals.sparse_probing.output import REPORTED


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """Per-token fp32 activations of every train and test prompt of the unit's dataset."""
    return (params["n_train"] + params["n_test"]) * params["context_size"] * size.d_model * 4


EVAL = EvalDef(
    "sparse_probing", 2, SparseProbingConfig, __name__, REPORTED, prep="sparse_probing", split_by="datasets",
    prep_bytes=prep_bytes,
)  # fmt: skip
