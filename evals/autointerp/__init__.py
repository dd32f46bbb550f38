"""Autointerp: SAEBench's explain-and-detect protocol with an LLM judge, delphi-style scorers beside it, and
feature tiers; on held-out text of the run's corpus (README.md)."""

from evals.autointerp.config import PREP_EXCLUDE, AutointerpConfig
from evals.autointerp.output import REPORTED
from evals.contract import EvalDef

EVAL = EvalDef(
    name="autointerp", version=2, config=AutointerpConfig,  # 2: tier examples as tokens + activations
    package=__name__, reported=REPORTED, prep="autointerp",
    prep_reads_corpus=True, prep_exclude=PREP_EXCLUDE, prep_version=2,  # 2: held-out split by text hash
)
