"""Submission: decide which stages need a job, submit them with ``sbatch`` and the DAG's
``--dependency=afterok`` edges, record every job, and with ``--wait`` watch them to the end. A group of
like evals shares a job (or array task); each of its stages is recorded under that job.

What a stage's artifact needs (skip / recompute / resume / ``--force``) is ``pipeline.state``'s policy,
the same the local executor follows; what this module adds is the scheduler's side: a stage whose
recorded job is still queued or running is neither resubmitted nor forced.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import shlex
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.dag import Stage, downstream
from pipeline.executors.slurm.records import (
    Record,
    info_of,
    jobs_path,
    load_jobs,
    query_records,
    record_submission,
    ref,
    slurm_dir,
    submit_lock,
)
from pipeline.executors.slurm.scheduler import SlurmError, query_jobs
from pipeline.executors.slurm.scripts import (
    REPO_ROOT,
    Family,
    plan_families,
    render_script,
    time_seconds,
)
from pipeline.executors.slurm.status import print_status
from pipeline.fsutil import atomic_write_json
from pipeline.progress import Reporter, console
from pipeline.state import StageBusy, force, settle, stage_lock, stage_state


def run_slurm(
    cfg: PipelineConfig,
    cfg_path: Path,
    stages: list[Stage],
    store: ArtifactStore,
    force_labels: set[str],
    reporter: Reporter,
    *,
    dry_run: bool = False,
    wait: bool = False,
) -> int:
    """Submit the plan's incomplete stages as SLURM jobs. Returns 0 on success (with ``wait``: all stages
    complete), 1 when a stage failed or sbatch did, 2 when the request is invalid."""
    spec = cfg.executor.slurm
    folder = slurm_dir(cfg, store)
    bad = [p for p in (str(store.root), str(REPO_ROOT)) if re.search(r"[\s%]", p)]
    if bad:
        console.print(f"[red]error:[/] SLURM paths must not contain whitespace or '%': {bad}")
        return 2
    for kind in sorted({s.kind for s in stages}):
        limit = spec.resources(kind).time
        if limit and time_seconds(limit) <= spec.grace_seconds:
            console.print(
                f"[red]error:[/] {kind}: time limit {limit} is not longer than executor.slurm.grace_seconds "
                f"({spec.grace_seconds} s): the job would be told to stop as soon as it starts"
            )
            return 2
    if not dry_run and shutil.which("sbatch") is None:
        console.print("[red]error:[/] sbatch not found: is this a SLURM login node? (use --executor local)")
        return 2

    try:
        with submit_lock(folder):
            watched = _submit(cfg, Path(cfg_path), stages, store, force_labels, reporter, folder, dry_run)
    except SlurmError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 1
    if watched is None or dry_run:
        return 0 if watched is not None else 2
    if not wait:
        if not watched:
            return _finish(cfg, stages, store)
        console.print(
            f"follow with: pipeline status {cfg_path} --artifacts {store.root}   (or squeue -u $USER)",
            soft_wrap=True,
            markup=False,
        )
        return 0
    return _wait(cfg, stages, store, watched, spec.poll_seconds, reporter)


def _submit(
    cfg: PipelineConfig,
    cfg_path: Path,
    stages: list[Stage],
    store: ArtifactStore,
    force_labels: set[str],
    reporter: Reporter,
    folder: Path,
    dry_run: bool,
) -> dict[str, Record] | None:
    """Submit what is missing; returns the job records to watch (key -> record), None on a refusal."""
    jobs = load_jobs(jobs_path(cfg, store))
    selected = _select(stages, store, force_labels, jobs, reporter, dry_run)
    if selected is None:
        return None
    reused, to_submit = selected
    if not to_submit:
        if not reused:
            console.print(f"{cfg.name}: all {len(stages)} stages are complete; nothing to submit")
        return {k: jobs[k] for k in reused}

    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    config_snapshot = _snapshot_config(cfg_path, folder)
    families = plan_families(cfg, stages, to_submit, folder)
    _link(families, reused)
    for fam in families:
        fam.script.write_text(render_script(cfg, fam, config_snapshot, store, cfg.executor.slurm.grace_seconds))
    if dry_run:
        _print_dry_run(cfg, families, len(to_submit))
        return {}

    watched = {k: jobs[k] for k in reused}
    submission: dict[str, Any] = {"submitted_at": _now(), "config": str(config_snapshot), "jobs": []}
    try:
        _sbatch_all(cfg, store, families, jobs, watched, submission)
    finally:
        if submission["jobs"]:
            record_submission(folder, submission)
    console.print(f"{len(families)} job(s) for {len(to_submit)} stage(s); scripts in {folder / 'scripts'}, logs in {folder / 'logs'}",
                  soft_wrap=True, markup=False)
    return watched


def _select(
    stages: list[Stage],
    store: ArtifactStore,
    force_labels: set[str],
    jobs: dict[str, Record],
    reporter: Reporter,
    dry_run: bool,
) -> tuple[dict[str, str], list[Stage]] | None:
    """(key -> job of a stage already queued or running, stages to submit); None on a refusal.
    Applies ``--force`` and settles corrupt or stale artifacts (``pipeline.state``) unless ``dry_run``."""
    infos = query_records(jobs, [s.key for s in stages])

    def active(stage: Stage) -> bool:
        info = info_of(infos, jobs.get(stage.key))
        return info is not None and info.active

    forced = downstream(stages, force_labels) if force_labels else set()
    busy = [s for s in stages if s.label in forced and active(s)]
    if busy:
        names = ", ".join(f"{s.label} (job {ref(jobs[s.key])})" for s in busy)
        console.print(f"[red]error:[/] cannot --force stages whose jobs are still queued or running: {names}; scancel them first")
        return None
    if forced and not dry_run:
        try:
            with ExitStack() as held:  # every lock first: a refusal must leave nothing half-forced
                chosen = [s for s in stages if s.label in forced]
                for s in chosen:
                    held.enter_context(stage_lock(store, s, wait=False, reporter=reporter))
                for s in chosen:
                    force(store, s)
        except StageBusy as exc:
            console.print(f"[red]error:[/] cannot --force {exc.stage.label}: {exc}; wait for it or stop it first")
            return None

    reused: dict[str, str] = {}
    to_submit: list[Stage] = []
    for stage in stages:
        if stage.label not in forced and stage_state(store, stage) == "done":
            continue
        if active(stage):
            reused[stage.key] = ref(jobs[stage.key])
            continue
        if not dry_run:
            try:
                with stage_lock(store, stage, wait=False, reporter=reporter):
                    settle(store, stage, reporter)
            except StageBusy:
                pass  # another process is computing it; the job waits for it and settles it then
        to_submit.append(stage)
    for key, job in reused.items():
        label = next(s.label for s in stages if s.key == key)
        console.print(f"{label}: job {job} is still {info_of(infos, jobs[key]).state.lower()}; not resubmitted")  # type: ignore[union-attr]
    return reused, to_submit


def _link(families: list[Family], reused: dict[str, str]) -> None:
    """Each family's dependencies: 'family:<i>[_<task>]' for a job of this submission, or the id of a
    job already queued or running."""
    where: dict[str, tuple[int, int | None]] = {}  # key -> (family index, task)
    for i, fam in enumerate(families):
        for t, task in enumerate(fam.tasks):
            for s in task:
                where[s.key] = (i, t if fam.is_array else None)
    for fam in families:
        deps: list[str] = []
        for s in fam.stages:
            for inp in s.inputs.values():
                if inp.key in where:
                    j, t = where[inp.key]
                    deps.append(f"family:{j}" + ("" if t is None else f"_{t}"))
                elif inp.key in reused:
                    deps.append(reused[inp.key])
        fam.deps = list(dict.fromkeys(deps))


def _describe(dep: str, families: list[Family]) -> str:
    """A dependency for the dry-run table: the family's job name (with [task]) or an existing job id."""
    if not dep.startswith("family:"):
        return f"job {dep}"
    idx, _, task = dep.removeprefix("family:").partition("_")
    return families[int(idx)].name + (f"[{task}]" if task else "")


def _members(fam: Family) -> str:
    """What a job runs: its stages, a group's joined by '+' (one process), an array's tasks by ','."""
    names = ", ".join(" + ".join(s.label for s in task) for task in fam.tasks)
    if fam.is_array:
        return f"array of {len(fam.tasks)}: {names}"
    return f"group of {len(fam.stages)} in one process: {names}" if len(fam.stages) > 1 else names


def _print_dry_run(cfg: PipelineConfig, families: list[Family], n_stages: int) -> None:
    table = Table(title=f"{cfg.name}: {len(families)} SLURM job(s) for {n_stages} stage(s) (dry run: nothing submitted)")
    for col in ("job", "stages", "resources", "after"):
        table.add_column(col)
    for fam in families:
        table.add_row(fam.name, _members(fam), " ".join(fam.resources), ", ".join(_describe(d, families) for d in fam.deps) or "-")
    console.print(table)
    for fam in families:  # unwrapped, for the eye and for grep
        console.print(f"script: {fam.script} ({_members(fam)})", soft_wrap=True, markup=False)


def _compress(refs: list[str], array_sizes: dict[str, int]) -> list[str]:
    """'7_0','7_1','7_2' -> '7' when that is the whole array (afterok on an array = on all its tasks)."""
    tasks: dict[str, set[str]] = {}
    out: list[str] = []
    for r in refs:
        base, _, task = r.partition("_")
        if task and base in array_sizes:
            tasks.setdefault(base, set()).add(task)
        elif r not in out:
            out.append(r)
    for base, ts in tasks.items():
        if len(ts) == array_sizes[base]:
            out.append(base)
        else:
            out.extend(f"{base}_{t}" for t in sorted(ts, key=int))
    return out


def _sbatch_all(
    cfg: PipelineConfig,
    store: ArtifactStore,
    families: list[Family],
    jobs: dict[str, Record],
    watched: dict[str, Record],
    submission: dict[str, Any],
) -> None:
    """sbatch each family in dependency order; ``jobs.json`` is rewritten after every sbatch, so a crash
    midway loses no record."""
    array_sizes: dict[str, int] = {}
    for fam in families:
        refs = []
        for d in fam.deps:
            if d.startswith("family:"):
                idx, _, task = d.removeprefix("family:").partition("_")
                job_id = families[int(idx)].job_id
                assert job_id is not None
                refs.append(job_id + (f"_{task}" if task else ""))
            else:
                refs.append(d)
        refs = _compress(refs, array_sizes)
        job_id, cmd = _sbatch(fam.script, refs)
        fam.job_id = job_id
        if fam.is_array:
            array_sizes[job_id] = len(fam.tasks)
        now = _now()
        for t, s in ((t, s) for t, members in enumerate(fam.tasks) for s in members):
            task = t if fam.is_array else None
            old = jobs.get(s.key)
            previous = (old.pop("previous", []) + [old]) if old else []
            jobs[s.key] = {
                "label": s.label,
                "kind": s.kind,
                "job_id": job_id,
                "array_task": task,
                "log": fam.log_for(job_id, task),
                "script": str(fam.script),
                "job_name": fam.name,
                "dependency": ":".join(refs) or None,
                "submitted_at": now,
                "previous": previous[-10:],
            }
            watched[s.key] = jobs[s.key]
        submission["jobs"].append(
            {"job_id": job_id, "name": fam.name, "array": fam.is_array, "keys": [s.key for s in fam.stages],
             "labels": [s.label for s in fam.stages], "command": shlex.join(cmd)}
        )
        shown = f"array {job_id} ({len(fam.tasks)} tasks)" if fam.is_array else f"job {job_id}"
        after = f" after {':'.join(refs)}" if refs else ""
        console.print(f"submitted {fam.name}: {shown}{after}", soft_wrap=True, markup=False)
        atomic_write_json(jobs_path(cfg, store), jobs)


def _snapshot_config(cfg_path: Path, folder: Path) -> Path:
    """Jobs read this copy, so editing the config while they are queued cannot change what they run."""
    data = Path(cfg_path).read_bytes()
    dest = folder / "configs" / f"{hashlib.sha256(data).hexdigest()[:12]}.yaml"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return dest


def _sbatch(script: Path, deps: list[str]) -> tuple[str, list[str]]:
    cmd = ["sbatch", "--parsable"]
    if deps:
        cmd.append("--dependency=afterok:" + ":".join(deps))
    cmd.append(str(script))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SlurmError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().split(";")[0]  # '<id>' or '<id>;<cluster>'
    if not job_id.isdigit():
        raise SlurmError(f"unexpected sbatch output {proc.stdout!r}")
    return job_id, cmd


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _wait(
    cfg: PipelineConfig,
    stages: list[Stage],
    store: ArtifactStore,
    watched: dict[str, Record],
    poll: float,
    reporter: Reporter,
) -> int:
    labels = {s.key: s.label for s in stages}
    seen: dict[str, str] = {}
    unknown_polls = 0
    try:
        while True:
            infos = query_jobs({r["job_id"] for r in watched.values()})
            still = unknown = 0
            for key, record in watched.items():
                info = info_of(infos, record)
                if info is None:
                    unknown += 1  # scontrol hiccup, or a job the scheduler has forgotten
                    continue
                if info.active:
                    still += 1
                if seen.get(key) != info.state:
                    seen[key] = info.state
                    reporter.log(f"{labels[key]} (job {ref(record)}): {info.state}")
            unknown_polls = unknown_polls + 1 if unknown else 0
            if not still and (not unknown or unknown_polls > 5):
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        console.print("stopped waiting; the jobs keep running (pipeline status shows them)")
        return 130
    return _finish(cfg, stages, store)


def _finish(cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore) -> int:
    statuses = print_status(cfg, stages, store)
    return 0 if all(st.state == "done" for st in statuses) else 1
