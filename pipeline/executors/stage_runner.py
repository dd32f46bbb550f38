"""Run one stage to a committed artifact. Shared by every executor, so a stage behaves the same
in-process and inside a SLURM job."""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.plan import STAGE_VERSIONS, Stage
from pipeline.progress import Reporter
from pipeline.stages.context import StageContext

RUNNERS = {
    "synthetic_model": "pipeline.synthetic.stages:run_model",
    "activations": "pipeline.stages.activations:run",
    "synthetic_activations": "pipeline.synthetic.stages:run_activations",
    "train": "pipeline.stages.train:run",
    "eval_core": "evals.core:run",
    "eval_prep": "pipeline.stages.eval_prep:run",
    "eval_sparse_probing": "pipeline.stages.eval_sae:run",
    "eval_sae_probes": "pipeline.stages.eval_sae:run",
    "eval_absorption": "pipeline.stages.eval_sae:run",
    "eval_scr": "pipeline.stages.eval_sae:run",
    "eval_tpp": "pipeline.stages.eval_sae:run",
    "eval_unlearning": "pipeline.stages.eval_sae:run",
    "eval_synthetic": "evals.synthetic:run",
    "probe_baseline": "evals.probe_baseline:run",
    "report": "pipeline.stages.report:run",
}


PARTIAL_OK = {"report"}
"""Kinds that run with whatever inputs completed: a report with one failed eval still shows the rest
(it lists what is missing), and is redone once the failed eval succeeds (its key does not change, so
``stage_state`` calls it stale)."""


def runner(kind: str) -> Callable[[StageContext], dict[str, Any]]:
    module, func = RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module), func)


def stage_state(store: ArtifactStore, stage: Stage) -> str:
    """done | stale (made with inputs missing that are complete now) | corrupt | partial (resumable
    work exists) | missing."""
    problems = store.problems(stage.kind, stage.key)
    if not problems:
        return "stale" if _filled_since(store, stage) else "done"
    if problems != ["missing"]:
        return "corrupt"
    work = store.root / stage.kind / ".work" / stage.key
    return "partial" if work.exists() and any(work.iterdir()) else "missing"


def _filled_since(store: ArtifactStore, stage: Stage) -> bool:
    if stage.kind not in PARTIAL_OK:
        return False
    missing = store.manifest(stage.kind, stage.key)["summary"].get("missing_inputs", [])
    by_label = {s.label: s for s in stage.inputs.values()}
    return any(label in by_label and store.is_complete(by_label[label].kind, by_label[label].key) for label in missing)


def match_threads_to_allocation() -> None:
    """Inside a SLURM job use only the CPUs it was given: torch defaults to every core of the node,
    and oversubscribed jobs on a shared node run several times slower."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


def execute(cfg: PipelineConfig, store: ArtifactStore, stage: Stage, reporter: Reporter) -> Path:
    """Compute a stage whose inputs are complete, and commit its artifact."""
    match_threads_to_allocation()
    for name, inp in stage.inputs.items():
        if stage.kind not in PARTIAL_OK and not store.is_complete(inp.kind, inp.key):
            raise RuntimeError(f"{stage.label}: input {name} ({inp.label}) is not complete")
    if store.is_complete(stage.kind, stage.key):  # a stale report being redone
        store.quarantine(stage.kind, stage.key)
    for stale in (store.root / stage.kind / ".staging").glob(f"{stage.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed process
    staging = store.staging_dir(stage.kind, stage.key)
    ctx = StageContext(stage, cfg, store, staging, store.work_dir(stage.kind, stage.key), reporter)
    started = time.time()
    try:
        summary = runner(stage.kind)(ctx)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = {
        "label": stage.label,
        "config_name": cfg.name,
        "code_version": STAGE_VERSIONS[stage.kind],
        "params": stage.params,
        "inputs": {n: {"kind": s.kind, "key": s.key, "label": s.label} for n, s in stage.inputs.items()},
        "summary": summary,
        "timings": {"started": started, "finished": time.time(), "seconds": round(time.time() - started, 3)},
    }
    return store.commit(stage.kind, stage.key, staging, record)
