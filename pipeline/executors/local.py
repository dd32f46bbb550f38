"""The local executor: run the plan in topological order in this process, skipping complete stages.

What to do with each stage (skip, recompute a corrupt artifact, redo a stale one, resume, run) is
``pipeline.state``'s policy, shared with the SLURM executor. The evals of one kind over several SAEs run
back to back (``pipeline.executors.groups``), sharing the process's loaded model. A failing stage does not stop independent
stages; its dependents are skipped and the run ends with a non-zero status listing what failed. A stage
another process is computing right now (its lock is held) is skipped, with its dependents, and is not
a failure: that process commits it. A SIGTERM that stops training (``Preempted``: checkpoint saved) ends
the run there, as a failure: no later stage starts, and a re-run resumes.
"""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.dag import Stage, downstream
from pipeline.executors.groups import local_order
from pipeline.executors.stage_runner import execute
from pipeline.progress import Reporter
from pipeline.stages.registry import kind_of
from pipeline.state import StageBusy, begin, force, stage_lock, stage_state
from pipeline.training.preemption import Preempted


@dataclass
class Outcome:
    stage: Stage
    status: str  # cached | ran | failed | skipped
    seconds: float = 0.0
    error: str = ""


def run_local(
    cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore, force_labels: set[str], reporter: Reporter
) -> list[Outcome]:
    forced = downstream(stages, force_labels) if force_labels else set()
    failed: set[str] = set()
    elsewhere: set[str] = set()  # being computed by another process, or waiting on such a stage
    outcomes = []
    for stage in local_order(stages):  # like evals back to back: one model in memory at a time
        if stage.label not in forced and stage_state(store, stage) == "done":
            outcomes.append(Outcome(stage, "cached"))
            continue
        if any(inp.label in elsewhere for inp in stage.inputs.values()):
            elsewhere.add(stage.label)
            outcomes.append(Outcome(stage, "skipped", error="an input is being computed by another process"))
            continue
        started = time.perf_counter()
        try:
            with stage_lock(store, stage, wait=False, reporter=reporter):
                if stage.label in forced:
                    force(store, stage)
                if not kind_of(stage.kind).partial_inputs and any(inp.label in failed for inp in stage.inputs.values()):
                    failed.add(stage.label)
                    outcomes.append(Outcome(stage, "skipped", error="an input failed"))
                    continue
                if not begin(store, stage, reporter):  # committed by another process since the check above
                    outcomes.append(Outcome(stage, "cached"))
                    continue
                execute(cfg, store, stage, reporter)
        except StageBusy as busy:
            reporter.log(f"[yellow]{stage.label}: {busy}; skipping")
            elsewhere.add(stage.label)
            outcomes.append(Outcome(stage, "skipped", error=str(busy)))
            continue
        except Preempted as exc:  # the job is being stopped: start nothing more
            reporter.log(f"[red]{stage.label}:[/] {exc}")
            outcomes.append(Outcome(stage, "failed", time.perf_counter() - started, str(exc)))
            break
        except Exception as exc:  # one stage's failure must not lose the others' results
            failed.add(stage.label)
            reporter.log(f"[red]{stage.label} failed:[/] {type(exc).__name__}: {exc}")
            outcomes.append(Outcome(stage, "failed", time.perf_counter() - started, traceback.format_exc()))
            continue
        outcomes.append(Outcome(stage, "ran", time.perf_counter() - started))
    publish_report(cfg, stages, store)
    return outcomes


def publish_report(cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore) -> Path | None:
    """Copy the report artifact's files to ``<artifacts>/<run name>/`` where a reader looks for them."""
    report = next((s for s in stages if s.kind == "report"), None)
    if report is None or not store.is_complete(report.kind, report.key):
        return None
    run_dir = store.root / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "summary.json"):
        tmp = run_dir / f".{name}.tmp"
        shutil.copyfile(store.path(report.kind, report.key) / name, tmp)
        tmp.replace(run_dir / name)
    return run_dir
