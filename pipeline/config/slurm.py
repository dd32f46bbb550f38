"""The ``executor:`` section: local, or SLURM with per-stage-kind resources."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.config.base import PositiveFloat, PositiveInt, Strict


class SlurmResources(Strict):
    """sbatch resources for one stage kind; unset fields fall back to ``executor.slurm.defaults``."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: Annotated[int, Field(ge=0)] | None = None
    cpus: PositiveInt | None = None
    mem: str | None = Field(default=None, pattern=r"^\d+[KMGT]?$")
    time: str | None = Field(default=None, pattern=r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
    extra: list[str] = Field(default_factory=list)
    """Further '#SBATCH' option lines, e.g. ['--constraint=a100']."""


class SlurmSpec(Strict):
    defaults: SlurmResources = SlurmResources(cpus=1, mem="4G", time="04:00:00")
    stages: dict[str, SlurmResources] = Field(default_factory=dict)
    """Per stage kind (``train``, ``eval_core``, ...); the names are checked against the stage registry on load."""
    arrays: bool = True
    """Submit families of like stages (a sweep's SAEs, many evals) as one job array."""
    eval_group_size: PositiveInt = 4
    """Evals of one kind over several SAEs that read the same prep with the same model run this many to
    a job (or array task), in one process: one start-up and model load per group instead of per SAE.
    Each SAE keeps its own artifact; the kind's time limit covers the whole group. 1: a job per stage."""
    grace_seconds: PositiveInt = 120
    """SIGTERM this long before the time limit (pre-emption warning): training checkpoints and exits."""
    poll_seconds: PositiveFloat = 2.0

    def resources(self, kind: str) -> SlurmResources:
        override = self.stages.get(kind)  # type: ignore[call-overload]
        if override is None:
            return self.defaults
        return self.defaults.model_copy(update=override.model_dump(exclude_unset=True))


class ExecutorSpec(Strict):
    kind: Literal["local", "slurm"] = "local"
    slurm: SlurmSpec = SlurmSpec()
