"""What the scheduler says about jobs: ``scontrol show job -o`` (no accounting database needed), and
``sacct`` for jobs slurmctld has already forgotten (after ``MinJobAge``), where accounting works.

Kept apart from the rest so the executor's decisions (resubmit? wait? report a failure?) read plain
``JobInfo`` values and never parse scheduler output themselves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES

JobKey = tuple[str, "int | None"]  # (job id, array task id or None)


class SlurmError(RuntimeError):
    """sbatch/scontrol failed, or the request cannot be expressed as SLURM jobs."""


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
