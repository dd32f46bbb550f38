"""Which evals exist, where their code lives, and how their SAE-independent work is shared.

Each eval has a config section (``evals.<name>``), a per-SAE stage ``eval_<name>`` writing
``result_file`` (SAEBench's JSON), and a ``prep`` family: the ``eval_prep`` stages it reads. Evals
of one family (SCR and TPP) share prep stages when their data settings agree, so the model runs
over that data once for both and for every SAE.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class EvalDef:
    name: str
    module: str
    result_file: str
    prep: str
    """Prep family: evals naming the same family and producing the same prep params share stages."""
    evaluate: str = "evaluate"

    prep_exclude: tuple[str, ...] = ()
    """Settings only the per-SAE part reads: left out of the prep key, so changing them redoes no model work."""
    split_by: str | None = None
    """A list setting with one prep stage per element (sparse probing: one per dataset)."""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def prep_units(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Prep stages this eval reads: unit name -> the params that key that stage."""
        shared = {k: v for k, v in params.items() if k not in self.prep_exclude}
        if self.split_by is None:
            return {"all": shared}
        return {str(v): {**shared, self.split_by: [v]} for v in params[self.split_by]}


SCR_TPP_SAE_ONLY = ("n_values", "sae_batch_size")
"""Read only by SCR's / TPP's per-SAE half: SCR and TPP sections differing only here share one prep."""

EVALS: dict[str, EvalDef] = {
    d.name: d
    for d in (
        EvalDef("sparse_probing", "evals.sparse_probing", "sparse_probing.json", "sparse_probing", split_by="datasets"),
        EvalDef("sae_probes", "evals.sae_probes", "sae_probes.json", "sae_probes", split_by="datasets"),
        EvalDef("absorption", "evals.absorption", "absorption.json", "absorption"),
        EvalDef("scr", "evals.scr_tpp", "scr.json", "scr_tpp", evaluate="evaluate_scr", prep_exclude=SCR_TPP_SAE_ONLY),
        EvalDef("tpp", "evals.scr_tpp", "tpp.json", "scr_tpp", evaluate="evaluate_tpp", prep_exclude=SCR_TPP_SAE_ONLY),
        EvalDef("unlearning", "evals.unlearning", "unlearning.json", "unlearning",
                prep_exclude=("retain_thresholds", "n_features_list", "multipliers")),  # fmt: skip
    )
}
PREP_MODULES = {d.prep: d.module for d in EVALS.values()}
