"""Every eval, in report order: one registration line each. An eval is a package ``evals/<name>/``
declaring ``EVAL = EvalDef(...)`` (``evals/contract.py``); listed here, it gets its config section
``evals.<name>``, its stages in the plan and its section in the report (the config loader, the plan
and the stage registry all read ``EVALS``)."""

from __future__ import annotations

from evals import (
    absorption,
    autointerp,
    core,
    sae_probes,
    scr_tpp,
    sparse_probing,
    synthetic,
    unlearning,
)
from evals.contract import EvalDef

EVALS: dict[str, EvalDef] = {
    d.name: d
    for d in (
        core.EVAL,
        synthetic.EVAL,
        sparse_probing.EVAL,
        sae_probes.EVAL,
        absorption.EVAL,
        scr_tpp.SCR,
        scr_tpp.TPP,
        unlearning.EVAL,
        autointerp.EVAL,
    )
}


def prep_family(prep: str) -> EvalDef:
    """An eval of a prep family (SCR and TPP share one prepare and one settings class)."""
    return next(d for d in EVALS.values() if d.prep == prep)
