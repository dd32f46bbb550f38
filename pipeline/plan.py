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
STAGE_VERSIONS = {
    "synthetic_model": 1,
    "activations": 1,
    "synthetic_activations": 1,
    "train": 2,
    "eval_core": 1,
    "eval_prep": 1,
    "eval_sparse_probing": 2,
    "eval_sae_probes": 1,
    "eval_absorption": 1,
    "eval_scr": 1,
    "eval_tpp": 1,
    "eval_unlearning": 1,
    "eval_synthetic": 1,
    "probe_baseline": 1,
    "report": 2,
}


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
    assert cfg.model is not None
    return cfg.model.model_dump(exclude={"device"})


def _source_stages(cfg: PipelineConfig) -> list[Stage]:
    """The stages that produce activations: a model hooked on text, or a synthetic model sampled."""
    if cfg.synthetic is not None:
        synth = Stage("synthetic_model", "synthetic_model", {"synthetic": cfg.synthetic.model_dump()})
        acts = Stage(
            "synthetic_activations",
            "activations",
            {"activations": cfg.activations.model_dump()},
            {"synthetic_model": synth},
        )
        return [synth, acts]
    assert cfg.data is not None
    params = {"model": _model_params(cfg), "data": cfg.data.model_dump(), "activations": cfg.activations.model_dump()}
    return [Stage("activations", "activations", params)]


def _prep_stages(cfg: PipelineConfig) -> dict[str, dict[str, Stage]]:
    """Per enabled eval, its shared prep stages by unit. Evals whose prep params agree get the very
    same Stage (same key), so the model runs over that data once for all of them."""
    from evals.registry import EVALS

    assert cfg.data is not None
    out: dict[str, dict[str, Stage]] = {}
    by_key: dict[str, Stage] = {}
    for name, settings in cfg.evals.enabled().items():
        spec = EVALS[name]
        out[name] = {}
        for unit, params in spec.prep_units(settings).items():
            label = f"eval_prep:{spec.prep}" + (f":{unit}" if unit != "all" else "")
            prep_params = {"eval": spec.prep, "model": _model_params(cfg), "prepend_bos": cfg.data.prepend_bos, "params": params}
            stage = Stage("eval_prep", label, prep_params)
            if stage.key not in by_key and any(s.label == label for s in by_key.values()):
                stage = Stage("eval_prep", f"{label}#{stage.key[:6]}", prep_params)  # same family, other data
            out[name][unit] = by_key.setdefault(stage.key, stage)
    return out


def _evals(cfg: PipelineConfig, sae_id: str, train: Stage, synth: Stage | None, preps: dict[str, dict[str, Stage]]) -> list[Stage]:
    """The eval stages of one trained SAE (each independent: one failing leaves the others)."""
    out = []
    ev = cfg.evals
    if synth is not None:
        if ev.synthetic.enabled:
            out.append(Stage("eval_synthetic", f"eval_synthetic:{sae_id}", {"loo_tau": None}, {"sae": train, "synthetic_model": synth}))
            if ev.synthetic.loo_tau is not None:
                out.append(
                    Stage(
                        "eval_synthetic",
                        f"eval_synthetic:{sae_id}+loo",
                        {"loo_tau": ev.synthetic.loo_tau},
                        {"sae": train, "synthetic_model": synth},
                    )
                )
        return out
    assert cfg.data is not None
    if ev.core.enabled:
        params = {"model": _model_params(cfg), "data": cfg.data.model_dump(), "core": ev.core.model_dump(exclude={"enabled"})}
        out.append(Stage("eval_core", f"eval_core:{sae_id}", params, {"sae": train}))
    for name, settings in ev.enabled().items():
        inputs = {"sae": train, **{f"prep:{unit}": s for unit, s in preps[name].items()}}
        params = {"params": settings}
        out.append(Stage(f"eval_{name}", f"eval_{name}:{sae_id}", params, inputs))
    return out


def build_plan(cfg: PipelineConfig) -> list[Stage]:
    """Stages in a topological order (inputs before the stages that read them)."""
    stages = _source_stages(cfg)
    synth = stages[0] if cfg.synthetic is not None else None
    acts = stages[-1]
    preps = {} if synth is not None else _prep_stages(cfg)
    unique_preps = {s.key: s for units in preps.values() for s in units.values()}
    stages += list(unique_preps.values())
    trains: list[Stage] = []
    evals: list[Stage] = []
    if synth is not None and cfg.evals.synthetic.enabled:
        evals.append(Stage("probe_baseline", "probe_baseline", {}, {"synthetic_model": synth}))
    for sae in cfg.saes:
        for seed in sae.seeds:
            sae_id = f"{sae.name}-s{seed}"
            train = Stage("train", f"train:{sae_id}", {**sae.identity(), "seed": seed}, {"activations": acts})
            trains.append(train)
            evals += _evals(cfg, sae_id, train, synth, preps)
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
