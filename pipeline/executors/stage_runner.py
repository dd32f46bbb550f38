"""Run one stage to a committed artifact. Shared by every executor, so a stage behaves the same
in-process and inside a SLURM job; ``run_stages`` is a SLURM job's body (one stage, or a group of like
evals sharing the process and its loaded model)."""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.dag import Stage
from pipeline.progress import Reporter
from pipeline.stages.context import StageContext
from pipeline.stages.registry import KINDS, kind_of


def match_threads_to_allocation() -> None:
    """Inside a SLURM job use only the CPUs it was given: torch defaults to every core of the node,
    and oversubscribed jobs on a shared node run several times slower."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


def execute(cfg: PipelineConfig, store: ArtifactStore, stage: Stage, reporter: Reporter) -> Path:
    """Compute a stage whose inputs are complete, and commit its artifact. Executors call it holding the
    stage's lock (``pipeline.state.stage_lock``), after ``pipeline.state.begin`` said it has work to do."""
    match_threads_to_allocation()
    kind = kind_of(stage.kind)
    for name, inp in stage.inputs.items():
        if not kind.partial_inputs and not store.is_complete(inp.kind, inp.key):
            raise RuntimeError(f"{stage.label}: input {name} ({inp.label}) is not complete")
    if store.is_complete(stage.kind, stage.key):  # a stale report being redone
        store.quarantine(stage.kind, stage.key)
    for stale in (store.root / stage.kind / ".staging").glob(f"{stage.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed process
    staging = store.staging_dir(stage.kind, stage.key)
    ctx = StageContext(stage, cfg, store, staging, store.work_dir(stage.kind, stage.key), reporter, KINDS)
    started = time.time()
    try:
        summary = kind.run(ctx)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = {
        "label": stage.label,
        "config_name": cfg.name,
        "code_version": kind.version,
        "params": stage.params,
        "inputs": {n: {"kind": s.kind, "key": s.key, "label": s.label} for n, s in stage.inputs.items()},
        "summary": summary,
        "timings": {"started": started, "finished": time.time(), "seconds": round(time.time() - started, 3)},
    }
    return store.commit(stage.kind, stage.key, staging, record)


def run_stages(cfg: PipelineConfig, store: ArtifactStore, stages: list[Stage], reporter: Reporter) -> dict[str, str]:
    """Each stage in turn in this process, under its own lock (waiting for another holder, then finding
    it usually complete): label -> 'ran', 'cached' or 'failed'. A failing stage is reported with its
    traceback (the job log's error line) and the next one still runs, so one broken SAE of a group
    loses no other SAE's artifact; what is left to redo is exactly what failed. A SIGTERM that stops
    training (``Preempted``) ends the group there: the job is being stopped."""
    from pipeline.state import begin, stage_lock
    from pipeline.training.preemption import Preempted

    outcome = {}
    for stage in stages:
        try:
            with stage_lock(store, stage, wait=True, reporter=reporter):
                if not begin(store, stage, reporter):
                    outcome[stage.label] = "cached"
                    continue
                execute(cfg, store, stage, reporter)
            outcome[stage.label] = "ran"
        except Preempted as exc:  # the job is being stopped: start nothing more
            traceback.print_exc(file=sys.stderr)  # the job log's error line, as for any failure
            reporter.log(f"[red]{stage.label}:[/] {exc}")
            outcome[stage.label] = "failed"
            outcome |= {s.label: "failed" for s in stages if s.label not in outcome}
            break
        except Exception as exc:  # the group's other stages must still run
            traceback.print_exc(file=sys.stderr)
            reporter.log(f"[red]{stage.label} failed:[/] {type(exc).__name__}: {exc}")
            outcome[stage.label] = "failed"
    return outcome
