"""SAEBench's core metrics on held-out text of the run's corpus (README.md)."""

from evals.contract import EvalDef
from evals.core.config import CoreConfig
from evals.core.output import REPORTED

EVAL = EvalDef("core", 3, CoreConfig, __name__, REPORTED, prep="core", prep_version=3, prep_reads_corpus=True)
