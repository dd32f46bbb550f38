"""Config -> DAG of stages, each with a content key.

A stage's key hashes its kind, its code version, its own params and its inputs' keys. So changing one
SAE's learning rate changes that train stage's key and its evals' keys, and nothing upstream. Params
hold everything a stage needs, so any process (a SLURM job included) can run a stage from the config
and the key alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PipelineConfig

# Bump a kind's version when its code changes what it produces; every artifact of that kind is then
# recomputed (and everything downstream, through the input keys).
STAGE_VERSIONS = {"activations": 1, "train": 1, "eval_core": 1, "report": 1}


@dataclass(frozen=True)
class Stage:
    kind: str
    label: str
    params: dict[str, Any]
    inputs: dict[str, Stage] = field(default_factory=dict)

    @property
    def key(self) -> str:
        payload = {
            "kind": self.kind,
            "version": STAGE_VERSIONS[self.kind],
            "params": self.params,
            "inputs": {name: s.key for name, s in sorted(self.inputs.items())},
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.key)


def _model_params(cfg: PipelineConfig) -> dict[str, Any]:
    # device is left out on purpose: where a stage runs must not change its key.
    return cfg.model.model_dump(exclude={"device"})


def build_plan(cfg: PipelineConfig) -> list[Stage]:
    """Stages in a topological order (inputs before the stages that read them)."""
    acts = Stage(
        "activations",
        "activations",
        {"model": _model_params(cfg), "data": cfg.data.model_dump(), "activations": cfg.activations.model_dump()},
    )
    stages: list[Stage] = [acts]
    trains: list[Stage] = []
    evals: list[Stage] = []
    for sae in cfg.saes:
        for seed in sae.seeds:
            params = {**sae.identity(), "seed": seed}
            train = Stage("train", f"train:{sae.name}-s{seed}", params, {"activations": acts})
            trains.append(train)
            if cfg.evals.core.enabled:
                evals.append(
                    Stage(
                        "eval_core",
                        f"eval_core:{sae.name}-s{seed}",
                        {
                            "model": _model_params(cfg),
                            "data": cfg.data.model_dump(),
                            "core": cfg.evals.core.model_dump(exclude={"enabled"}),
                        },
                        {"sae": train},
                    )
                )
    stages += trains + evals
    report_inputs = {s.label: s for s in trains + evals}
    stages.append(Stage("report", "report", {"run": cfg.name}, report_inputs))
    return stages


def downstream(stages: list[Stage], roots: set[str]) -> set[str]:
    """Labels of the stages in ``roots`` and of everything that depends on them."""
    out = set(roots)
    for stage in stages:  # topological order: one pass suffices
        if any(inp.label in out for inp in stage.inputs.values()):
            out.add(stage.label)
    return out


def select(stages: list[Stage], pattern: str) -> set[str]:
    """Labels matched by a --force pattern: a kind ('train'), a label ('train:btk-s0'), or a key."""
    hits = {s.label for s in stages if pattern in (s.kind, s.label, s.key)}
    if not hits:
        choices = sorted({s.kind for s in stages} | {s.label for s in stages})
        raise ValueError(f"--force {pattern!r} matches no stage; choose one of {choices}")
    return hits
