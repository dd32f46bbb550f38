"""SAEBench's SCR (spurious correlation removal) and TPP (targeted probe perturbation) evals: one shared
prep, one settings class, two per-SAE evals. What they measure and where they differ from SAEBench: README.md."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.scr_tpp import output
from evals.scr_tpp.config import SAE_ONLY, ScrTppParams


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """Per-token fp32 activations of every train and test prompt of every dataset (plus pooled rows)."""
    prompts = len(params["dataset_names"]) * (params["train_set_size"] + params["test_set_size"])
    return prompts * (params["context_length"] + 1) * size.d_model * 4


SCR = EvalDef(
    name="scr", version=1, config=ScrTppParams, package="evals.scr_tpp", reported=output.SCR_REPORTED,
    prep="scr_tpp", evaluate="evaluate_scr", prep_exclude=SAE_ONLY, prep_bytes=prep_bytes,
)
TPP = EvalDef(
    name="tpp", version=1, config=ScrTppParams, package="evals.scr_tpp", reported=output.TPP_REPORTED,
    prep="scr_tpp", evaluate="evaluate_tpp", prep_exclude=SAE_ONLY, prep_bytes=prep_bytes,
)
