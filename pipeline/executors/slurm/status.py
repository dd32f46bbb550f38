"""Per-stage status of a run submitted to SLURM: the artifact's state (``pipeline.state``) combined
with what the scheduler says about the stage's latest job, for ``pipeline status`` and ``--wait``.

The artifact wins: a stage whose artifact is complete is done whatever its job says, and a job that
completed without leaving a complete artifact (deleted since) shows the artifact's state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.dag import Stage
from pipeline.executors.local import publish_report
from pipeline.executors.slurm.records import (
    Record,
    info_of,
    jobs_path,
    load_jobs,
    query_records,
    ref,
)
from pipeline.executors.slurm.scheduler import JobInfo, JobKey
from pipeline.progress import console
from pipeline.state import stage_state

STATE_STYLE = {"done": "green", "running": "cyan", "pending": "blue", "failed": "red", "cancelled": "yellow", "corrupt": "red"}


@dataclass
class StageStatus:
    stage: Stage
    state: str  # done | running | pending | failed | cancelled | partial | missing | corrupt
    job: str | None = None  # '123' or '123_4'
    log: str | None = None
    detail: str = ""  # scheduler state/reason/exit code behind a failure


def stage_statuses(
    stages: list[Stage], store: ArtifactStore, jobs: dict[str, Record], infos: dict[JobKey, JobInfo]
) -> list[StageStatus]:
    out = []
    for stage in stages:
        record = jobs.get(stage.key)
        job = ref(record) if record else None
        log = record.get("log") if record else None
        if log and not Path(log).exists():
            log = None  # never started (cancelled while pending) or deleted
        artifact = stage_state(store, stage)
        info = info_of(infos, record)
        if artifact == "done":
            out.append(StageStatus(stage, "done", job, log))
            continue
        if info is None:  # never submitted, or the scheduler has forgotten the job
            out.append(StageStatus(stage, artifact, job, log))
            continue
        detail = f"{info.state}" + (f" ({info.reason})" if info.reason and info.reason != "None" else "")
        if info.exit_code and info.exit_code not in ("0:0", ""):
            detail += f" exit {info.exit_code}"
        category = info.category
        if category == "completed":  # the job succeeded but the artifact is gone since
            out.append(StageStatus(stage, artifact, job, log))
        else:
            out.append(StageStatus(stage, category, job, log, "" if category in ("pending", "running") else detail))
    return out


def _last_error_line(log: str | None) -> str:
    if not log:
        return ""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Preempted|Interrupt)\b", ln) or ln.startswith("slurmstepd"):
            return ln[:300]
    return ""


def print_status(cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore) -> list[StageStatus]:
    """`pipeline status` for a run submitted to SLURM: a table, then one line per failed stage."""
    jobs = load_jobs(jobs_path(cfg, store))
    statuses = stage_statuses(stages, store, jobs, query_records(jobs, [s.key for s in stages]))
    table = Table(title=f"{cfg.name}: SLURM status ({len(stages)} stages)")
    for col in ("stage", "kind", "key", "state", "job"):
        table.add_column(col)
    for st in statuses:
        style = STATE_STYLE.get(st.state)
        state = f"[{style}]{st.state}[/]" if style else st.state
        table.add_row(st.stage.label, st.stage.kind, st.stage.key, state, st.job or "")
    console.print(table)
    _print_problems(statuses)
    counts: dict[str, int] = {}
    for st in statuses:
        counts[st.state] = counts.get(st.state, 0) + 1
    console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())), soft_wrap=True)
    if counts.get("done") == len(statuses) and (path := publish_report(cfg, stages, store)):
        console.print(f"report: {path / 'report.md'}", soft_wrap=True, markup=False)
    return statuses


def _print_problems(statuses: list[StageStatus]) -> None:
    for st in statuses:
        if st.state == "failed":
            console.print(
                f"FAILED {st.stage.label} ({st.stage.key}): job {st.job} {st.detail}; log: {st.log or '(none)'}",
                soft_wrap=True,
                markup=False,
                style="red",
            )
            if err := _last_error_line(st.log):
                console.print(f"    {err}", soft_wrap=True, markup=False)
        elif st.state == "cancelled":
            why = "an input failed" if "DependencyNeverSatisfied" in st.detail else st.detail
            log = f"; log: {st.log}" if st.log else ""
            console.print(
                f"CANCELLED {st.stage.label} ({st.stage.key}): job {st.job} ({why}){log}",
                soft_wrap=True,
                markup=False,
                style="yellow",
            )
