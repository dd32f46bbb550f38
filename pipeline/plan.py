"""Config -> DAG of stages (``pipeline.dag.Stage``), each with a content key.

Which stages a config asks for, with which params and inputs; the kinds and their code versions come
from the stage registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.contract import EvalDef
from evals.registry import EVALS
from pipeline.config import EvalConfig, PipelineConfig
from pipeline.dag import Stage, downstream, select
from pipeline.stages.registry import kind_of
from pipeline.synthetic.saved import saved_digest

__all__ = ["Stage", "build_plan", "downstream", "select", "stage", "suffix"]


def stage(kind: str, label: str, params: dict[str, Any], inputs: dict[str, Stage] | None = None) -> Stage:
    """A stage of a registered kind, its code version filled in from the registry."""
    return Stage(kind, label, params, inputs or {}, kind_of(kind).version)


def _model_params(cfg: PipelineConfig) -> dict[str, Any]:
    # device is left out on purpose: where a stage runs must not change its key.
    assert cfg.model is not None
    return cfg.model.model_dump(exclude={"device"})


def suffix(shape: str) -> str:
    """What a shape adds to its stages' labels: `train:batchtopk-s0@deep` (nothing for a lone model)."""
    return f"@{shape}" if shape else ""


def _source_stages(cfg: PipelineConfig) -> dict[str, list[Stage]]:
    """Per shape, the stages that produce activations: a model hooked on text (shape ""), or each
    synthetic model of the run sampled (its `synthetic_model` stage first)."""
    if cfg.is_synthetic:
        out = {}
        for shape, spec in cfg.shapes().items():
            params: dict[str, Any] = {"synthetic": spec.model_dump()}
            if spec.saved is not None:  # keyed by the saved model's content, not its path alone
                params["saved_sha256"] = saved_digest(Path(spec.saved))
            synth = stage("synthetic_model", "synthetic_model" + suffix(shape), params)
            acts = stage(
                "synthetic_activations",
                "activations" + suffix(shape),
                {"activations": cfg.activations.model_dump()},
                {"synthetic_model": synth},
            )
            out[shape] = [synth, acts]
        return out
    assert cfg.data is not None
    params = {"model": _model_params(cfg), "data": cfg.data.model_dump(), "activations": cfg.activations.model_dump()}
    return {"": [stage("activations", "activations", params)]}


def _enabled_evals(cfg: PipelineConfig) -> list[tuple[EvalDef, EvalConfig]]:
    """The evals switched on that apply to this run (a language model's, or a synthetic model's)."""
    runs_on = "synthetic" if cfg.is_synthetic else "model"
    sections = cfg.evals.sections()
    return [(d, sections[name]) for name, d in EVALS.items() if sections[name].enabled and d.runs_on == runs_on]


def _settings(section: EvalConfig) -> dict[str, Any]:
    """An eval's own settings as they key its stages (the switch and its model are not settings)."""
    return section.model_dump(mode="json", exclude={"enabled", "model"})


def _eval_model_params(cfg: PipelineConfig, section: EvalConfig) -> dict[str, Any]:
    """The model an eval runs in: its own (``evals.<name>.model``), else the run's; device left out."""
    return section.model.model_dump(exclude={"device"}) if section.model is not None else _model_params(cfg)


def _prep_stages(cfg: PipelineConfig, synth: Stage | None, shape: str = "") -> dict[str, dict[str, Stage]]:
    """Per enabled eval, its shared prep stages by unit. Evals whose prep params agree get the very
    same Stage (same key), so the model runs over that data once for all of them."""
    out: dict[str, dict[str, Stage]] = {}
    by_key: dict[str, Stage] = {}
    for d, section in _enabled_evals(cfg):
        out[d.name] = {}
        for unit, params in d.prep_units(_settings(section)).items():
            label = f"eval_prep:{d.prep}" + (f":{unit}" if unit != "all" else "") + suffix(shape)
            prep_params: dict[str, Any] = {"eval": d.prep, "params": params}
            inputs = {"synthetic_model": synth} if synth is not None else {}
            if synth is None:
                assert cfg.data is not None
                prep_params |= {"model": _eval_model_params(cfg, section), "prepend_bos": cfg.data.prepend_bos}
                if d.prep_reads_corpus:
                    prep_params["data"] = cfg.data.model_dump()
            if d.prep_version != 1:  # absent at 1, so the keys of preps that never changed stand
                prep_params["prep_version"] = d.prep_version
            prep = stage("eval_prep", label, prep_params, inputs)
            if prep.key not in by_key and any(s.label == label for s in by_key.values()):
                prep = stage("eval_prep", f"{label}#{prep.key[:6]}", prep_params, inputs)  # same family, other data
            out[d.name][unit] = by_key.setdefault(prep.key, prep)
    return out


def _reported_preps(cfg: PipelineConfig, preps: dict[str, dict[str, Stage]], shape: str = "") -> dict[str, Stage]:
    """Preps whose result the report shows at run level (the synthetic probe ceiling), by the name it
    uses (`probe_baseline@deep` for a shape)."""
    return {d.report_prep + suffix(shape): s for d, _ in _enabled_evals(cfg) if d.report_prep for s in preps[d.name].values()}


def _evals(cfg: PipelineConfig, sae_id: str, train: Stage, synth: Stage | None, preps: dict[str, dict[str, Stage]]) -> list[Stage]:
    """The eval stages of one trained SAE (each independent: one failing leaves the others)."""
    out = []
    for d, section in _enabled_evals(cfg):
        inputs = {"sae": train, **{f"prep:{unit}": s for unit, s in preps[d.name].items()}}
        if synth is not None:
            inputs["synthetic_model"] = synth
        own_model = {"model": _eval_model_params(cfg, section)} if section.model is not None else {}
        for suffix, settings in d.scored(_settings(section)).items():
            out.append(stage(f"eval_{d.name}", f"eval_{d.name}:{sae_id}{suffix}", {"params": settings, **own_model}, inputs))
    return out


def build_plan(cfg: PipelineConfig) -> list[Stage]:
    """Stages in a topological order (inputs before the stages that read them): per shape, its source,
    its eval preps, then every SAE x seed trained and scored on it; one report over all of them."""
    stages: list[Stage] = []
    report_inputs: dict[str, Stage] = {}
    for shape, source in _source_stages(cfg).items():
        synth = source[0] if cfg.is_synthetic else None
        acts = source[-1]
        preps = _prep_stages(cfg, synth, shape)
        unique_preps = {s.key: s for units in preps.values() for s in units.values()}
        stages += source + list(unique_preps.values())
        trains: list[Stage] = []
        evals: list[Stage] = []
        for sae in cfg.saes:
            for seed in sae.seeds:
                sae_id = f"{sae.name}-s{seed}{suffix(shape)}"
                train = stage("train", f"train:{sae_id}", {**sae.identity(), "seed": seed}, {"activations": acts})
                trains.append(train)
                evals += _evals(cfg, sae_id, train, synth, preps)
        stages += trains + evals
        report_inputs |= {s.label: s for s in trains + evals} | _reported_preps(cfg, preps, shape)
    stages.append(stage("report", "report", {"run": cfg.name}, report_inputs))
    return stages
