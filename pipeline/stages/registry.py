"""Every stage kind, in one visible block. The plan, the executors and the report ask this and nothing else.

Each kind names the function that runs it (``module:function``), imported only when a stage runs: the
plan, ``pipeline plan`` and the SLURM submitter load no torch. The eval kinds are generated from the
evals' own registry (``evals.registry``), so an eval is one folder plus one registration line there.
"""

from __future__ import annotations

from evals.contract import EvalDef
from evals.registry import EVALS
from pipeline import disk
from pipeline.kinds import StageKind


def eval_kind(d: EvalDef) -> StageKind:
    """The per-SAE stage kind of one eval."""
    return StageKind(f"eval_{d.name}", d.version, "pipeline.stages.eval_stages:run", reported=d.reported,
                     planned_bytes=disk.small, extra={"eval": d})  # fmt: skip


KINDS: dict[str, StageKind] = {
    k.name: k
    for k in (
        StageKind("synthetic_model", 1, "pipeline.synthetic.stages:run_model", planned_bytes=disk.synthetic_model),
        StageKind("activations", 2, "pipeline.stages.activations:run", resumes=True, planned_bytes=disk.activation_shards),
        StageKind("synthetic_activations", 2, "pipeline.synthetic.stages:run_activations", resumes=True,
                  planned_bytes=disk.activation_shards),
        StageKind("train", 2, "pipeline.stages.train:run", resumes=True, planned_bytes=disk.sae_training),
        StageKind("eval_prep", 1, "pipeline.stages.eval_prep:run", planned_bytes=disk.eval_prep),
        *(eval_kind(d) for d in EVALS.values()),
        StageKind("report", 3, "pipeline.stages.report:run", partial_inputs=True, planned_bytes=disk.small),  # 3: curves, baselines, examples
    )
}
"""In report order (the report's sections follow it)."""


def kind_of(name: str) -> StageKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown stage kind {name!r}; known kinds: {sorted(KINDS)}") from None
