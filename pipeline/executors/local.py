"""The local executor: run the plan in topological order in this process, skipping complete stages.

A corrupt artifact (a file whose size no longer matches its manifest) is moved to ``.trash`` and
recomputed automatically. A failing stage does not stop independent stages; its dependents are
skipped and the run ends with a non-zero status listing what failed.
"""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.executors.stage_runner import PARTIAL_OK, execute, stage_state
from pipeline.plan import Stage, downstream
from pipeline.progress import Reporter


@dataclass
class Outcome:
    stage: Stage
    status: str  # cached | ran | failed | skipped
    seconds: float = 0.0
    error: str = ""


def run_local(
    cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore, force: set[str], reporter: Reporter
) -> list[Outcome]:
    forced = downstream(stages, force) if force else set()
    failed: set[str] = set()
    outcomes = []
    for stage in stages:
        if stage.label in forced:
            store.quarantine(stage.kind, stage.key)
            store.clear_work(stage.kind, stage.key)
        state = stage_state(store, stage)
        if state == "done":
            outcomes.append(Outcome(stage, "cached"))
            continue
        if state == "corrupt":
            reporter.log(f"[yellow]{stage.label}: corrupt artifact {store.problems(stage.kind, stage.key)}; recomputing")
            store.quarantine(stage.kind, stage.key)
        if state == "stale":
            reporter.log(f"{stage.label}: inputs missing when it was made are complete now; redoing it")
        if stage.kind not in PARTIAL_OK and any(inp.label in failed for inp in stage.inputs.values()):
            failed.add(stage.label)
            outcomes.append(Outcome(stage, "skipped", error="an input failed"))
            continue
        reporter.log(f"[bold]{stage.label}[/] ({stage.key}) {'resuming' if state == 'partial' else 'starting'}")
        started = time.perf_counter()
        try:
            execute(cfg, store, stage, reporter)
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
