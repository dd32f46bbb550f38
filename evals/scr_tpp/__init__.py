"""SAEBench's SCR (spurious correlation removal) and TPP (targeted probe perturbation) evals: one shared
prep, one settings class, two per-SAE evals. What they measure and where they differ from SAEBench: README.md."""

from evals.contract import EvalDef
from evals.scr_tpp import output
from evals.scr_tpp.config import SAE_ONLY, ScrTppParams

SCR = EvalDef(
    name="scr", version=1, config=ScrTppParams, package="evals.scr_tpp", reported=output.SCR_REPORTED,
    prep="scr_tpp", evaluate="evaluate_scr", prep_exclude=SAE_ONLY,
)
TPP = EvalDef(
    name="tpp", version=1, config=ScrTppParams, package="evals.scr_tpp", reported=output.TPP_REPORTED,
    prep="scr_tpp", evaluate="evaluate_tpp", prep_exclude=SAE_ONLY,
)
