"""Config types: one YAML file as typed, frozen pydantic models (pure types; no project imports below).

Import from here; the submodules split it by section: ``run`` (top level), ``model``, ``recipe``,
``synthetic``, ``evals`` (the section as data, and ``EvalConfig``, the base of every eval's settings),
``slurm``, plus ``errors`` (one line per problem). Reading a file, and plugging each eval's own
settings class in, is ``pipeline.loading``'s job.
"""

from pipeline.config.errors import ConfigError
from pipeline.config.evals import EvalConfig, EvalsSpec
from pipeline.config.model import ModelSpec
from pipeline.config.run import ActivationsSpec, DataSpec, PipelineConfig, SAESpec
from pipeline.config.slurm import ExecutorSpec, SlurmResources, SlurmSpec

__all__ = [
    "ActivationsSpec",
    "ConfigError",
    "DataSpec",
    "EvalConfig",
    "EvalsSpec",
    "ExecutorSpec",
    "ModelSpec",
    "PipelineConfig",
    "SAESpec",
    "SlurmResources",
    "SlurmSpec",
]
