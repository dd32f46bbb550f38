"""SAEBench's unlearning score; what it measures and where it differs from SAEBench: README.md."""

from evals.contract import EvalDef
from evals.unlearning import output
from evals.unlearning.config import SAE_ONLY, UnlearningParams

EVAL = EvalDef(
    name="unlearning", version=1, config=UnlearningParams, package="evals.unlearning", reported=output.REPORTED,
    prep="unlearning", prep_exclude=SAE_ONLY,
)
