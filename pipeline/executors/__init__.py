"""Executors run a plan: `local` in this process; `slurm` as cluster jobs that call `run-stage`."""
