"""The batch scripts: which stages go out together (one job, or one array per family of like stages),
with which ``#SBATCH`` resources, and the script text that makes a job run ``pipeline run-stage``.
A job (or array task) runs one stage, or a group of like evals in one process
(``pipeline.executors.groups``, ``executor.slurm.eval_group_size``).

Apart from submission so that ``--dry-run`` writes exactly the scripts a real run would submit.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig, SlurmResources
from pipeline.dag import Stage
from pipeline.executors.groups import grouped

REPO_ROOT = Path(__file__).resolve().parents[3]
MAX_ARRAY = 1000  # SLURM's default MaxArraySize is 1001 (task ids 0..1000)


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
    """Stages submitted together: one job, or one array with a task per group; each task runs its
    group's stages in one process."""

    kind: str
    tasks: list[list[Stage]]
    name: str
    script: Path
    log_pattern: str
    resources: list[str]
    deps: list[str] = field(default_factory=list)  # dependency refs; 'family:<i>[_<task>]' before submission
    job_id: str | None = None

    @property
    def stages(self) -> list[Stage]:
        return [s for task in self.tasks for s in task]

    @property
    def is_array(self) -> bool:
        return len(self.tasks) > 1

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
        directives.append(f"--array=0-{len(fam.tasks) - 1}")
    lines = ["#!/bin/bash", f"# saepipe: {cfg.name}, {len(fam.stages)} {fam.kind} stage(s). Generated; edits are overwritten."]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += ["", "set -euo pipefail"]
    keys = [" ".join(s.key for s in task) for task in fam.tasks]  # a group's keys, space-separated
    labels = [" ".join(s.label for s in task) for task in fam.tasks]
    if fam.is_array:
        lines.append("KEYS=(" + " ".join(shlex.quote(k) for k in keys) + ")")
        lines.append("LABELS=(" + " ".join(shlex.quote(label) for label in labels) + ")")
        lines.append('KEY=${KEYS[$SLURM_ARRAY_TASK_ID]}')
        lines.append('LABEL=${LABELS[$SLURM_ARRAY_TASK_ID]}')
    else:
        lines.append(f"KEY={shlex.quote(keys[0])}")
        lines.append(f"LABEL={shlex.quote(labels[0])}")
    python = shlex.quote(sys.executable)
    config, root = shlex.quote(str(config_path)), shlex.quote(str(store.root))
    lines += [
        f"cd {shlex.quote(str(REPO_ROOT))}",
        "# One thread per allocated CPU unless the submitter chose otherwise (--export=ALL carries it).",
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
        "export PYTHONUNBUFFERED=1",
        'echo "saepipe: $LABEL ($KEY) job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})} '
        'on $(hostname) at $(date -Is)"',
        stage_command(cfg, fam.kind, python, config, root, grouped=max(map(len, fam.tasks)) > 1),
    ]
    return "\n".join(lines) + "\n"


def stage_command(cfg: PipelineConfig, kind: str, python: str, config: str, root: str, grouped: bool = False) -> str:
    """What the job execs. A train stage given several GPUs trains data-parallel: torchrun starts one
    rank per GPU, rank 0 being an ordinary ``run-stage`` (lock, resume, commit) and the others joining
    its loop (``pipeline.training.worker``). ``exec`` keeps the job's SIGTERM warning reaching the ranks.
    ``grouped``: ``$KEY`` holds several keys (hex, so splitting it on spaces is safe), run in one process."""
    gpus = cfg.executor.slurm.resources(kind).gpus or 0
    if kind == "train" and gpus > 1:
        return (
            f"exec srun --ntasks=1 {python} -m torch.distributed.run --standalone --nproc_per_node {gpus} "
            f'-m pipeline.training.worker {config} "$KEY" --artifacts {root}'
        )
    keys = "$KEY" if grouped else '"$KEY"'
    return f"exec {python} -m pipeline.job run-stage {config} {keys} --artifacts {root} --quiet"



def _depths(stages: list[Stage]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for s in stages:  # topological order
        depth[s.key] = 1 + max((depth[i.key] for i in s.inputs.values()), default=-1)
    return depth


def plan_families(cfg: PipelineConfig, stages: list[Stage], to_submit: list[Stage], folder: Path) -> list[Family]:
    """Group the stages to submit into tasks (a stage alone, or up to ``eval_group_size`` like evals in one
    process); with ``arrays``, one array per (depth in the DAG, kind) with a task per group, cut at
    ``MAX_ARRAY``; otherwise one job per task. In dependency order."""
    spec = cfg.executor.slurm
    depth = _depths(stages)
    by_depth: dict[tuple[int, str], list[Stage]] = {}
    for s in to_submit:
        by_depth.setdefault((depth[s.key], s.kind), []).append(s)
    families = []
    for (_, kind), members in sorted(by_depth.items(), key=lambda kv: kv[0][0]):
        tasks = grouped(members, spec.eval_group_size)
        jobs = [tasks[i : i + MAX_ARRAY] for i in range(0, len(tasks), MAX_ARRAY)] if spec.arrays else [[t] for t in tasks]
        for n, chunk in enumerate(jobs):
            if len(chunk) > 1:
                base = kind + (f"-{n}" if len(jobs) > 1 else "")
                name, log = base, str(folder / "logs" / f"{base}-%A_%a.log")
            else:
                first, size = chunk[0][0], len(chunk[0])
                name = first.label + (f"+{size - 1}" if size > 1 else "")  # a group: its first SAE's, and how many more
                base = _safe(name)
                log = str(folder / "logs" / f"{base}-%j.log")
            families.append(
                Family(
                    kind=kind,
                    tasks=chunk,
                    name=f"saepipe-{cfg.name}-{name}",
                    script=folder / "scripts" / f"{base}.sbatch",
                    log_pattern=log,
                    resources=resource_lines(spec.resources(kind)),
                )
            )
    return families
