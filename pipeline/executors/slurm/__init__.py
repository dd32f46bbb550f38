"""The SLURM executor: one batch job per stage, or one job array per family of like stages.

Every job runs ``python -m pipeline.job run-stage CONFIG KEY --artifacts ROOT --quiet`` (the CLI with SIGTERM
caught from process start: ``pipeline/job.py``), the same code
path as the local executor (``pipeline.state``'s policy and per-stage lock, then
``stage_runner.execute``), so a stage computed on the cluster is byte-for-byte the artifact a local run
would commit. The DAG becomes ``--dependency=afterok:...`` edges (with
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

One module per job: ``scheduler`` (what SLURM says about jobs), ``records`` (jobs.json,
submissions.jsonl), ``scripts`` (families, resources, the sbatch text), ``submit`` (sbatch, dependencies,
``--wait``) and ``status`` (``pipeline status``).
"""

from pipeline.executors.slurm.records import jobs_path
from pipeline.executors.slurm.scheduler import query_jobs
from pipeline.executors.slurm.status import print_status
from pipeline.executors.slurm.submit import run_slurm

__all__ = ["jobs_path", "print_status", "query_jobs", "run_slurm"]
