"""SAEBench's feature-absorption eval (first-letter spelling); what it measures and where it differs from
SAEBench: README.md."""

from typing import Any

from evals.absorption import output
from evals.absorption.config import AbsorptionParams
from evals.contract import EvalDef, PrepSize

LETTERS = 26


def prep_bytes(params: dict[str, Any], size: PrepSize) -> int | None:
    """fp32 activations of one prompt per train and test word, and one per test word for the calculator
    (at most twice the words); words_per_letter None (SAEBench's whole vocabulary) is bounded by the
    vocabulary, unknown without it."""
    words = LETTERS * params["words_per_letter"] if params["words_per_letter"] is not None else size.d_vocab
    if words is None:
        return None
    return 2 * words * (size.d_model * 4 + 8) + (LETTERS + 1) * size.d_model * 4


EVAL = EvalDef(
    name="absorption", version=1, config=AbsorptionParams, package="evals.absorption", reported=output.REPORTED,
    prep="absorption", prep_bytes=prep_bytes,
)
