"""SAEBench's core metrics on held-out text of the run's corpus (README.md)."""

from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.core.config import CoreConfig
from evals.core.output import REPORTED

ROW_BYTES = 8 + 3 * 4
"""Per token: its id (int64), and the clean CE, ablated CE and ablated KL (fp32)."""
KL_ROW_BYTES = 4
"""Per CE/KL token when the clean side is stored: its sum p log p (fp32)."""


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int | None:
    """Tokens and per-token measures, the hook's activations, the tail's starting residual (counted always:
    an upper bound, since a resid hook needs none), and the clean probabilities with their sum p log p when
    prep stores them (bounded by ``clean_logits_max_mib`` when the vocabulary is unknown)."""
    p = CoreConfig.model_validate(params)
    context_size = p.tokens_per_context(size.context_size)
    if context_size is None:
        return None
    tokens = p.n_contexts * context_size
    kl_tokens = p.n_reconstruction_contexts * context_size
    if size.d_vocab is None:
        logits = p.clean_logits_max_mib * 2**20
    else:
        stored = p.clean_logits_bytes(context_size, size.d_vocab, size.float_bytes)
        logits = stored + kl_tokens * KL_ROW_BYTES if stored is not None else 0
    return tokens * (ROW_BYTES + size.d_model * size.float_bytes) + kl_tokens * size.d_model * size.float_bytes + logits


EVAL = EvalDef(
    "core", 4, CoreConfig, __name__, REPORTED, prep="core", prep_version=4, prep_reads_corpus=True, prep_bytes=prep_bytes
)
