"""Autointerp: SAEBench's explain-and-detect protocol with an LLM judge, delphi-style scorers beside it, and
feature tiers; on held-out text of the run's corpus (README.md)."""

from typing import Any

from evals.autointerp.config import PREP_EXCLUDE, AutointerpConfig, held_out_contexts
from evals.autointerp.output import REPORTED
from evals.contract import EvalDef, PrepSize


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int:
    """Per held-out token: its id (int64), its mask (bool) and the hook's activation in the model's dtype."""
    contexts = held_out_contexts(params["total_tokens"], params["llm_context_size"])
    return contexts * params["llm_context_size"] * (8 + 1 + size.d_model * size.float_bytes)


EVAL = EvalDef(
    name="autointerp", version=2, config=AutointerpConfig,  # 2: tier examples as tokens + activations
    package=__name__, reported=REPORTED, prep="autointerp",
    prep_reads_corpus=True, prep_exclude=PREP_EXCLUDE, prep_version=2,  # 2: held-out split by text hash
    prep_bytes=prep_bytes,
)
