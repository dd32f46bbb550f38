"""Every stage kind, in one visible block. The plan, the executors and the report ask this and nothing else.

Each kind is declared beside its code (``KIND = StageKind(...)`` at the bottom of its module); the eval
kinds are generated from the evals' own registry (``evals.registry``), so an eval is one folder plus one
registration line there.
"""

from __future__ import annotations

from pipeline.kinds import StageKind
from pipeline.stages import activations, eval_stages, report, train
from pipeline.synthetic import stages as synthetic

KINDS: dict[str, StageKind] = {
    k.name: k
    for k in (
        synthetic.MODEL_KIND,
        activations.KIND,
        synthetic.ACTIVATIONS_KIND,
        train.KIND,
        *eval_stages.kinds(),
        report.KIND,
    )
}
"""In report order (the report's sections follow it)."""


def kind_of(name: str) -> StageKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown stage kind {name!r}; known kinds: {sorted(KINDS)}") from None
