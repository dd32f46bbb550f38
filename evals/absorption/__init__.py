"""SAEBench's feature-absorption eval (first-letter spelling); what it measures and where it differs from
SAEBench: README.md."""

from evals.absorption import output
from evals.absorption.config import AbsorptionParams
from evals.contract import EvalDef

EVAL = EvalDef(
    name="absorption", version=1, config=AbsorptionParams, package="evals.absorption", reported=output.REPORTED,
    prep="absorption",
)
