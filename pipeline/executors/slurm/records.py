"""What the executor remembers about its submissions, under ``<artifacts>/<run name>/slurm/``:
``jobs.json`` (stage key -> its latest submission, earlier ones under ``previous``) and
``submissions.jsonl`` (one line per ``pipeline run`` that submitted something).

A re-run and ``pipeline status`` read these to find each stage's job; the scheduler knows jobs, not
stages. The lock here serialises submitters of one run (two at once would submit everything twice);
the per-stage lock in ``pipeline.state`` is a different thing, taken by whoever computes a stage.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.executors.slurm.scheduler import JobInfo, JobKey, SlurmError, query_jobs

Record = dict[str, Any]
"""One submission of a stage: label, kind, job_id, array_task, log, script, job_name, dependency,
submitted_at, previous."""


def slurm_dir(cfg: PipelineConfig, store: ArtifactStore) -> Path:
    return store.root / cfg.name / "slurm"


def jobs_path(cfg: PipelineConfig, store: ArtifactStore) -> Path:
    return slurm_dir(cfg, store) / "jobs.json"


def load_jobs(path: Path) -> dict[str, Record]:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def ref(record: Record) -> str:
    """The id to name a stage's job in --dependency and scontrol: '123' or '123_4' for an array task."""
    task = record.get("array_task")
    return record["job_id"] if task is None else f"{record['job_id']}_{task}"


def info_of(infos: dict[JobKey, JobInfo], record: Record | None) -> JobInfo | None:
    if record is None:
        return None
    return infos.get((record["job_id"], record.get("array_task")))


def query_records(jobs: dict[str, Record], keys: list[str]) -> dict[JobKey, JobInfo]:
    """The scheduler's view of the recorded jobs of these stage keys."""
    return query_jobs({jobs[k]["job_id"] for k in keys if k in jobs})


@contextmanager
def submit_lock(folder: Path) -> Iterator[None]:
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


def record_submission(folder: Path, submission: dict[str, Any]) -> None:
    """Append one `pipeline run`'s sbatch commands to ``submissions.jsonl``."""
    with open(folder / "submissions.jsonl", "a") as fh:
        fh.write(json.dumps(submission) + "\n")
