"""The SLURM executor: one batch job per stage, or one job array per family of like stages.

Every job runs ``python -m pipeline.cli run-stage CONFIG KEY --artifacts ROOT --quiet``, the same code
path as the local executor (``stage_runner.execute``), so a stage computed on the cluster is byte-for-byte
the artifact a local run would commit. The DAG becomes ``--dependency=afterok:...`` edges (with
``--kill-on-invalid-dep=yes``: a failed stage cancels everything downstream instead of leaving it pending
forever).

Everything the executor writes lives under ``<artifacts>/<run name>/slurm/``:

- ``configs/<sha>.yaml``: a snapshot of the submitted config; jobs read it, so editing the config
  while jobs are queued cannot make them run something else (or fail to find their key);
- ``scripts/*.sbatch``: the batch scripts (``<kind>.sbatch`` for an array, ``<label>.sbatch`` for a job);
- ``logs/*.log``: the jobs' stdout+stderr (``<kind>-<arrayid>_<task>.log`` / ``<label>-<jobid>.log``);
- ``jobs.json``: stage key -> its latest submission (label, job_id, array_task, log, submitted_at, ...)
  plus the earlier ones under ``previous``;
- ``submissions.jsonl``: one line per ``pipeline run`` that submitted something (the sbatch commands).

Resume: a re-run skips stages whose artifact is complete, does not resubmit (nor cancel) a stage whose
recorded job is still pending or running (its dependents wait on that job), and resubmits the rest.
A partially done stage (shards cached so far, a training checkpoint) resumes from its ``.work`` folder,
exactly as it does locally.

The scheduler is asked with ``scontrol show job -o <id>`` (no accounting database needed); ``sacct`` is
the fallback for jobs that slurmctld has already forgotten (after ``MinJobAge``), where it works.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig, SlurmResources
from pipeline.executors.local import publish_report
from pipeline.executors.stage_runner import stage_state
from pipeline.fsutil import atomic_write_json
from pipeline.plan import Stage, downstream
from pipeline.progress import Reporter, console

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_ARRAY = 1000  # SLURM's default MaxArraySize is 1001 (task ids 0..1000)

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES
FAILED_STATES = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


class SlurmError(RuntimeError):
    """sbatch/scontrol failed, or the request cannot be expressed as SLURM jobs."""


# --------------------------------------------------------------------------------------- scheduler


@dataclass(frozen=True)
class JobInfo:
    """What the scheduler says about one job or one array task."""

    state: str  # SLURM's JobState, e.g. PENDING, RUNNING, COMPLETED, FAILED, CANCELLED
    reason: str = ""
    exit_code: str = ""

    @property
    def active(self) -> bool:
        # A job whose dependency can never be satisfied stays PENDING forever when the cluster ignores
        # --kill-on-invalid-dep; it is as good as cancelled.
        return self.state in ACTIVE_STATES and self.reason != "DependencyNeverSatisfied"

    @property
    def category(self) -> str:
        """pending | running | completed | failed | cancelled."""
        if self.state in PENDING_STATES:
            return "cancelled" if self.reason == "DependencyNeverSatisfied" else "pending"
        if self.state in RUNNING_STATES:
            return "running"
        if self.state == "COMPLETED":
            return "completed"
        if self.state.startswith("CANCELLED"):
            return "cancelled"
        return "failed"


def _field(line: str, name: str) -> str | None:
    match = re.search(rf"(?:^|\s){re.escape(name)}=(\S*)", line)
    return match.group(1) if match else None


def _expand_tasks(spec: str) -> list[int]:
    """'0-2' / '1,3-4' / '0-9%2' / '0-8:2' -> task ids."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        step = 1
        if ":" in part:
            part, step_s = part.split(":", 1)
            step = int(step_s)
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1, step))
        else:
            out.append(int(part))
    return out


JobKey = tuple[str, "int | None"]  # (job id, array task id or None)


def _parse_scontrol(text: str) -> dict[JobKey, JobInfo]:
    out: dict[JobKey, JobInfo] = {}
    for line in text.splitlines():
        job_id = _field(line, "JobId")
        if not job_id:
            continue
        info = JobInfo(_field(line, "JobState") or "UNKNOWN", _field(line, "Reason") or "", _field(line, "ExitCode") or "")
        array_id, tasks = _field(line, "ArrayJobId"), _field(line, "ArrayTaskId")
        if array_id and tasks:
            for task in _expand_tasks(tasks):
                out[(array_id, task)] = info
        else:
            out[(job_id, None)] = info
    return out


_sacct_works: bool | None = None


def _sacct(job_ids: list[str]) -> dict[JobKey, JobInfo]:
    """Fallback for jobs slurmctld no longer holds; {} where accounting is disabled."""
    global _sacct_works
    if _sacct_works is False or not job_ids or shutil.which("sacct") is None:
        return {}
    proc = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        _sacct_works = False  # e.g. "Slurm accounting storage is disabled"
        return {}
    _sacct_works = True
    out: dict[JobKey, JobInfo] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        jid, state, code = parts[0], parts[1].split()[0], parts[2]
        if "_" in jid:
            base, task = jid.split("_", 1)
            if task.isdigit():
                out[(base, int(task))] = JobInfo(state, "", code)
        else:
            out[(jid, None)] = JobInfo(state, "", code)
    return out


def query_jobs(job_ids: set[str]) -> dict[JobKey, JobInfo]:
    """Scheduler state of jobs (an array id yields every task). Unknown ids are simply absent."""
    if not job_ids or shutil.which("scontrol") is None:
        return {}
    out: dict[JobKey, JobInfo] = {}
    missing = []
    for job_id in sorted(job_ids, key=lambda j: (len(j), j)):
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        found = _parse_scontrol(proc.stdout) if proc.returncode == 0 else {}
        if not found:
            missing.append(job_id)
        out.update(found)
    out.update({k: v for k, v in _sacct(missing).items() if k not in out})
    return out


# --------------------------------------------------------------------------------------- records


def slurm_dir(cfg: PipelineConfig, store: ArtifactStore) -> Path:
    return store.root / cfg.name / "slurm"


def jobs_path(cfg: PipelineConfig, store: ArtifactStore) -> Path:
    return slurm_dir(cfg, store) / "jobs.json"


def load_jobs(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _ref(record: dict[str, Any]) -> str:
    """The id to name a stage's job in --dependency and scontrol: '123' or '123_4' for an array task."""
    task = record.get("array_task")
    return record["job_id"] if task is None else f"{record['job_id']}_{task}"


def _info(infos: dict[JobKey, JobInfo], record: dict[str, Any] | None) -> JobInfo | None:
    if record is None:
        return None
    return infos.get((record["job_id"], record.get("array_task")))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One submitter per run at a time (two concurrent `pipeline run`s would submit everything twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SlurmError(f"another `pipeline run` is submitting this run right now ({folder / '.lock'})") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------- states


@dataclass
class StageStatus:
    stage: Stage
    state: str  # done | running | pending | failed | cancelled | partial | missing | corrupt
    job: str | None = None  # '123' or '123_4'
    log: str | None = None
    detail: str = ""  # scheduler state/reason/exit code behind a failure


def _stage_statuses(
    stages: list[Stage], store: ArtifactStore, jobs: dict[str, dict[str, Any]], infos: dict[JobKey, JobInfo]
) -> list[StageStatus]:
    out = []
    for stage in stages:
        record = jobs.get(stage.key)
        job = _ref(record) if record else None
        log = record.get("log") if record else None
        if log and not Path(log).exists():
            log = None  # never started (cancelled while pending) or deleted
        artifact = stage_state(store, stage)
        info = _info(infos, record)
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


def slurm_stage_states(
    cfg: PipelineConfig, stages: list[Stage], store: ArtifactStore
) -> dict[str, tuple[str, str | None, str | None]]:
    """key -> (state, job id, log path): the artifacts (done) combined with what the scheduler says.

    state: done | running | pending | failed | cancelled | partial | missing | corrupt. The job id is the
    latest one recorded in jobs.json ('123', or '123_4' for task 4 of array 123); the log path is given
    once the job has written its log.
    """
    jobs = load_jobs(jobs_path(cfg, store))
    infos = query_jobs({jobs[s.key]["job_id"] for s in stages if s.key in jobs})
    return {st.stage.key: (st.state, st.job, st.log) for st in _stage_statuses(stages, store, jobs, infos)}


STATE_STYLE = {"done": "green", "running": "cyan", "pending": "blue", "failed": "red", "cancelled": "yellow", "corrupt": "red"}


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
    infos = query_jobs({jobs[s.key]["job_id"] for s in stages if s.key in jobs})
    statuses = _stage_statuses(stages, store, jobs, infos)
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


# --------------------------------------------------------------------------------------- scripts


def time_seconds(limit: str) -> int:
    """SLURM time limit ('MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') in seconds."""
    days = 0
    if "-" in limit:
        d, limit = limit.split("-", 1)
        days = int(d)
        parts = [int(p) for p in limit.split(":")] + [0] * (3 - len(limit.split(":")))
        h, m, s = parts
    else:
        parts = [int(p) for p in limit.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, (m, s) = 0, parts
        else:
            h, m, s = parts
    return ((days * 24 + h) * 60 + m) * 60 + s


def resource_lines(res: SlurmResources) -> list[str]:
    lines = []
    if res.partition:
        lines.append(f"--partition={res.partition}")
    if res.account:
        lines.append(f"--account={res.account}")
    if res.qos:
        lines.append(f"--qos={res.qos}")
    if res.gpus:
        lines.append(f"--gres=gpu:{res.gpus}")
    if res.cpus:
        lines.append(f"--cpus-per-task={res.cpus}")
    if res.mem:
        lines.append(f"--mem={res.mem}")
    if res.time:
        lines.append(f"--time={res.time}")
    return lines + [e if e.startswith("-") else f"--{e}" for e in res.extra]


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


@dataclass
class Family:
    """Stages submitted together: one job, or one array with a task per stage."""

    kind: str
    stages: list[Stage]
    name: str
    script: Path
    log_pattern: str
    resources: list[str]
    deps: list[str] = field(default_factory=list)  # dependency refs; 'family:<i>[_<task>]' before submission
    job_id: str | None = None

    @property
    def is_array(self) -> bool:
        return len(self.stages) > 1

    def log_for(self, job_id: str, task: int | None) -> str:
        return self.log_pattern.replace("%A", job_id).replace("%a", str(task)).replace("%j", job_id)


def render_script(cfg: PipelineConfig, fam: Family, config_path: Path, store: ArtifactStore, grace: int) -> str:
    directives = [
        f"--job-name={fam.name}",
        f"--output={fam.log_pattern}",
        # B: the batch shell itself gets the warning; it has exec'd python, so python catches it,
        # training writes a checkpoint and exits, and the next run resumes from it.
        f"--signal=B:TERM@{grace}",
        "--kill-on-invalid-dep=yes",
        *fam.resources,
    ]
    if fam.is_array:
        directives.append(f"--array=0-{len(fam.stages) - 1}")
    lines = ["#!/bin/bash", f"# saepipe: {cfg.name}, {len(fam.stages)} {fam.kind} stage(s). Generated; edits are overwritten."]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += ["", "set -euo pipefail"]
    if fam.is_array:
        lines.append("KEYS=(" + " ".join(s.key for s in fam.stages) + ")")
        lines.append("LABELS=(" + " ".join(shlex.quote(s.label) for s in fam.stages) + ")")
        lines.append('KEY=${KEYS[$SLURM_ARRAY_TASK_ID]}')
        lines.append('LABEL=${LABELS[$SLURM_ARRAY_TASK_ID]}')
    else:
        lines.append(f"KEY={fam.stages[0].key}")
        lines.append(f"LABEL={shlex.quote(fam.stages[0].label)}")
    python = shlex.quote(sys.executable)
    lines += [
        f"cd {shlex.quote(str(REPO_ROOT))}",
        "# One thread per allocated CPU unless the submitter chose otherwise (--export=ALL carries it).",
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
        "export PYTHONUNBUFFERED=1",
        'echo "saepipe: $LABEL ($KEY) job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})} '
        'on $(hostname) at $(date -Is)"',
        f"exec {python} -m pipeline.cli run-stage {shlex.quote(str(config_path))} \"$KEY\" "
        f"--artifacts {shlex.quote(str(store.root))} --quiet",
    ]
    return "\n".join(lines) + "\n"


def _depths(stages: list[Stage]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for s in stages:  # topological order
        depth[s.key] = 1 + max((depth[i.key] for i in s.inputs.values()), default=-1)
    return depth


def _families(cfg: PipelineConfig, stages: list[Stage], to_submit: list[Stage], folder: Path) -> list[Family]:
    spec = cfg.executor.slurm
    depth = _depths(stages)
    groups: dict[tuple[int, str], list[Stage]] = {}
    for s in to_submit:
        if spec.arrays:
            groups.setdefault((depth[s.key], s.kind), []).append(s)
        else:
            groups[(depth[s.key], s.label)] = [s]
    families = []
    for (_, _), members in sorted(groups.items(), key=lambda kv: kv[0][0]):
        kind = members[0].kind
        chunks = [members[i : i + MAX_ARRAY] for i in range(0, len(members), MAX_ARRAY)]
        for n, chunk in enumerate(chunks):
            if len(chunk) > 1:
                base = kind + (f"-{n}" if len(chunks) > 1 else "")
                log = str(folder / "logs" / f"{base}-%A_%a.log")
            else:
                base = _safe(chunk[0].label)
                log = str(folder / "logs" / f"{base}-%j.log")
            families.append(
                Family(
                    kind=kind,
                    stages=chunk,
                    name=f"saepipe-{cfg.name}-{base if len(chunk) > 1 else chunk[0].label}",
                    script=folder / "scripts" / f"{base}.sbatch",
                    log_pattern=log,
                    resources=resource_lines(spec.resources(kind)),
                )
            )
    return families


def _describe(dep: str, families: list[Family]) -> str:
    """A dependency for the dry-run table: the family's job name (with [task]) or an existing job id."""
    if not dep.startswith("family:"):
        return f"job {dep}"
    idx, _, task = dep.removeprefix("family:").partition("_")
    return families[int(idx)].name + (f"[{task}]" if task else "")


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


# --------------------------------------------------------------------------------------- run


def _snapshot_config(cfg_path: Path, folder: Path) -> Path:
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


def run_slurm(
    cfg: PipelineConfig,
    cfg_path: Path,
    stages: list[Stage],
    store: ArtifactStore,
    force: set[str],
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
        with _locked(folder):
            result = _submit(cfg, Path(cfg_path), stages, store, force, reporter, folder, dry_run)
    except SlurmError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 1
    if result is None or dry_run:
        return 0 if result is not None else 2
    watched = result
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
    force: set[str],
    reporter: Reporter,
    folder: Path,
    dry_run: bool,
) -> dict[str, dict[str, Any]] | None:
    """Submit what is missing; returns the job records to watch (key -> record), None on a refusal."""
    jobs = load_jobs(jobs_path(cfg, store))
    infos = query_jobs({jobs[s.key]["job_id"] for s in stages if s.key in jobs})

    def active(stage: Stage) -> bool:
        info = _info(infos, jobs.get(stage.key))
        return info is not None and info.active

    forced = downstream(stages, force) if force else set()
    busy = [s for s in stages if s.label in forced and active(s)]
    if busy:
        names = ", ".join(f"{s.label} (job {_ref(jobs[s.key])})" for s in busy)
        console.print(f"[red]error:[/] cannot --force stages whose jobs are still queued or running: {names}; scancel them first")
        return None

    reused: dict[str, str] = {}  # key -> ref of a job already queued/running for it
    to_submit: list[Stage] = []
    for stage in stages:
        if stage.label in forced and not dry_run:
            store.quarantine(stage.kind, stage.key)
            store.clear_work(stage.kind, stage.key)
        state = stage_state(store, stage)
        if state == "done" and stage.label not in forced:
            continue
        if active(stage):
            reused[stage.key] = _ref(jobs[stage.key])
            continue
        if state == "corrupt" and not dry_run:
            reporter.log(f"[yellow]{stage.label}: corrupt artifact {store.problems(stage.kind, stage.key)}; recomputing")
            store.quarantine(stage.kind, stage.key)
        to_submit.append(stage)

    for key, ref in reused.items():
        label = next(s.label for s in stages if s.key == key)
        console.print(f"{label}: job {ref} is still {_info(infos, jobs[key]).state.lower()}; not resubmitted")  # type: ignore[union-attr]
    if not to_submit:
        if not reused:
            console.print(f"{cfg.name}: all {len(stages)} stages are complete; nothing to submit")
        return {k: jobs[k] for k in reused}

    (folder / "scripts").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    config_snapshot = _snapshot_config(cfg_path, folder)
    families = _families(cfg, stages, to_submit, folder)
    where: dict[str, tuple[int, int | None]] = {}  # key -> (family index, task)
    for i, fam in enumerate(families):
        for t, s in enumerate(fam.stages):
            where[s.key] = (i, t if fam.is_array else None)
    for i, fam in enumerate(families):
        deps: list[str] = []
        for s in fam.stages:
            for inp in s.inputs.values():
                if inp.key in where:
                    j, t = where[inp.key]
                    deps.append(f"family:{j}" + ("" if t is None else f"_{t}"))
                elif inp.key in reused:
                    deps.append(reused[inp.key])
        fam.deps = list(dict.fromkeys(deps))
        fam.script.write_text(render_script(cfg, fam, config_snapshot, store, cfg.executor.slurm.grace_seconds))

    if dry_run:
        table = Table(title=f"{cfg.name}: {len(families)} SLURM job(s) for {len(to_submit)} stage(s) (dry run: nothing submitted)")
        for col in ("job", "stages", "resources", "after"):
            table.add_column(col)
        for fam in families:
            names = ", ".join(s.label for s in fam.stages)
            if fam.is_array:
                names = f"array of {len(fam.stages)}: {names}"
            table.add_row(fam.name, names, " ".join(fam.resources), ", ".join(_describe(d, families) for d in fam.deps) or "-")
        console.print(table)
        for fam in families:
            console.print(f"script: {fam.script}", soft_wrap=True, markup=False)
        return {}

    array_sizes: dict[str, int] = {}
    submission = {"submitted_at": _now(), "config": str(config_snapshot), "jobs": []}
    watched = {k: jobs[k] for k in reused}
    try:
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
                array_sizes[job_id] = len(fam.stages)
            now = _now()
            for t, s in enumerate(fam.stages):
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
            shown = f"array {job_id} ({len(fam.stages)} tasks)" if fam.is_array else f"job {job_id}"
            after = f" after {':'.join(refs)}" if refs else ""
            console.print(f"submitted {fam.name}: {shown}{after}", soft_wrap=True, markup=False)
            atomic_write_json(jobs_path(cfg, store), jobs)  # after every sbatch: a crash loses no record
    finally:
        if submission["jobs"]:
            with open(folder / "submissions.jsonl", "a") as fh:
                fh.write(json.dumps(submission) + "\n")
    console.print(f"{len(families)} job(s) for {len(to_submit)} stage(s); scripts in {folder / 'scripts'}, logs in {folder / 'logs'}",
                  soft_wrap=True, markup=False)
    return watched


def _wait(
    cfg: PipelineConfig,
    stages: list[Stage],
    store: ArtifactStore,
    watched: dict[str, dict[str, Any]],
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
                info = _info(infos, record)
                if info is None:
                    unknown += 1  # scontrol hiccup, or a job the scheduler has forgotten
                    continue
                if info.active:
                    still += 1
                if seen.get(key) != info.state:
                    seen[key] = info.state
                    reporter.log(f"{labels[key]} (job {_ref(record)}): {info.state}")
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
