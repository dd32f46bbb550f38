"""SAEBench's ``sparse_probing_sae_probes`` (the sae-probes benchmark, README.md): one prep stage per dataset."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.sae_probes.config import SaeProbesConfig
from evals.sae_probes.output import REPORTED

LARGEST_DATASET = 5_000
"""Prompts in the biggest sae-probes dataset (e.g. 56_wikidatasex_or_gender): the bound when sizes are unset."""


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """Last-token fp32 activations (and labels) of every train and test prompt of the unit's dataset."""
    n = (params["num_train"] or LARGEST_DATASET) + (params["num_test"] or LARGEST_DATASET)
    return min(n, LARGEST_DATASET) * (size.d_model * 4 + 8)


EVAL = EvalDef(
    "sae_probes", 1, SaeProbesConfig, __name__, REPORTED, prep="sae_probes", split_by="datasets", prep_bytes=prep_bytes
)
