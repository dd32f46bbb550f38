"""The run config's top level: the model and text (or a synthetic model), activations, SAEs.

Pure pydantic types that import nothing of the project outside ``pipeline.config``, so loading and
validating a config is fast and testable alone. ``pipeline.loading`` turns pydantic's errors into
one line per problem: field path, bad value, what is allowed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import NAME_RE, PositiveFloat, PositiveInt, Strict
from pipeline.config.evals import EvalsSpec
from pipeline.config.facts import SHIPPED_CORPORA
from pipeline.config.model import ModelSpec
from pipeline.config.recipe import RecipeSpec
from pipeline.config.slurm import ExecutorSpec
from pipeline.config.synthetic import SyntheticSpec, SyntheticSuite


class DataSpec(Strict):
    """Where the text comes from. 'shipped' corpora live inside installed packages (offline)."""

    source: Literal["shipped", "hf"]
    name: str = Field(min_length=1)
    split: str = "train"
    text_field: str = "text"
    context_size: PositiveInt = 128
    prepend_bos: bool = True
    holdout_every: Annotated[int, Field(ge=2)] = 10
    """About one document in n (by a hash of its text) is held out for evaluation and never used to train SAEs."""

    @model_validator(mode="after")
    def _shipped_known(self) -> DataSpec:
        if self.source == "shipped" and self.name not in SHIPPED_CORPORA:
            raise ValueError(f"unknown shipped corpus {self.name!r}; choose one of {sorted(SHIPPED_CORPORA)}")
        return self


class ActivationsSpec(Strict):
    """How many activations to cache and how to cut them into shards."""

    n_tokens: PositiveInt
    contexts_per_shard: PositiveInt = 64
    batch_size: PositiveInt = 8
    """Contexts per forward pass."""
    dtype: Literal["float32", "float16"] = "float32"
    skip_bos: bool = True
    """Do not store the BOS position: its residual norm is an outlier that SAEs waste capacity on."""


DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SAESpec(Strict):
    """One SAE (trained once per seed): a recipe, a width, a sparsity and an optimiser setting."""

    name: str = Field(pattern=NAME_RE)
    trainer: Literal["saepipe", "sae_lens"] = "saepipe"
    """'saepipe': our sparse-decoder trainer with every recipe piece; 'sae_lens': sae-lens's own
    BatchTopKTrainingSAE (plain BatchTopK only), the reference implementation."""
    recipe: RecipeSpec = RecipeSpec()
    d_sae: PositiveInt
    k: PositiveInt
    lr: PositiveFloat = 3e-4
    batch_size: PositiveInt = 1024
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train_tokens: PositiveInt | None = None
    """Tokens to train on; default: every cached token once."""
    checkpoint_every: PositiveInt = 50
    """Steps between checkpoints (weights, optimizer, data position, RNG)."""
    dead_after_tokens: PositiveInt = 200_000
    """A latent that has not fired for this many tokens counts as dead (feeds the auxiliary loss)."""
    shuffle_shards: PositiveInt = 4
    """Shards mixed together when shuffling; peak memory is this many shards."""
    autocast: Literal["none", "bf16"] = "none"
    """bf16: the SAE's dense matmuls under torch.autocast (fp32 master weights and optimizer state)."""
    ops: Literal["auto", "sparse", "dense"] = "auto"
    """saepipe decode ops; auto: sparse on CPU, a timed probe on CUDA (pipeline/training/ops_choice.py)."""

    @model_validator(mode="after")
    def _consistent(self) -> SAESpec:
        if self.k >= self.d_sae:
            raise ValueError(f"k={self.k} must be smaller than d_sae={self.d_sae}")
        r = self.recipe
        if r.matryoshka is not None and r.matryoshka.levels[-1] != self.d_sae:
            raise ValueError(f"recipe.matryoshka.levels must end at d_sae={self.d_sae}, got {list(r.matryoshka.levels)}")
        extras = [p for p in ("matryoshka", "lista", "k_anneal", "term", "orthogonality", "loo") if getattr(r, p) is not None]
        if self.trainer == "sae_lens" and self.ops != "auto":
            raise ValueError(f"ops {self.ops!r} applies to trainer saepipe only; sae_lens has its own")
        if self.trainer == "sae_lens" and (r.activation != "batchtopk" or extras):
            raise ValueError(
                f"trainer 'sae_lens' trains plain BatchTopK only (got activation {r.activation!r}, pieces {extras}); "
                "use trainer: saepipe"
            )
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two specs train the same SAE (everything but the name and the seeds)."""
        return self.model_dump(exclude={"name", "seeds"})


class PipelineConfig(Strict):
    """A run on a language model (``model`` + ``data``) or on a synthetic model with known features
    (``synthetic``, instead of both)."""

    name: str = Field(pattern=NAME_RE)
    model: ModelSpec | None = None
    data: DataSpec | None = None
    synthetic: SyntheticSpec | None = None
    synthetic_suite: SyntheticSuite | None = None
    """Several synthetic models, each with its own model -> activations -> train -> eval chain."""
    activations: ActivationsSpec
    saes: list[SAESpec] = Field(min_length=1)
    evals: EvalsSpec = EvalsSpec()
    executor: ExecutorSpec = ExecutorSpec()
    device: str = "auto"
    """Where `train` runs: cpu, cuda, cuda:N, or auto (CUDA when present). Not part of any key."""

    @field_validator("device")
    @classmethod
    def _device_form(cls, device: str) -> str:
        if not DEVICE_RE.match(device):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N")
        return device

    @model_validator(mode="after")
    def _one_source(self) -> PipelineConfig:
        if self.synthetic is not None and self.synthetic_suite is not None:
            raise ValueError("synthetic_suite: give `synthetic` (one model) or `synthetic_suite` (several), not both")
        if not self.is_synthetic:
            missing = [f for f in ("model", "data") if getattr(self, f) is None]
            if missing:
                raise ValueError("; ".join(f"{f}: required field is missing (or give `synthetic:` instead)" for f in missing))
        elif self.model is not None or self.data is not None:
            raise ValueError("synthetic: a synthetic run takes no `model` or `data`; remove them or remove `synthetic`")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None or self.synthetic_suite is not None

    def shapes(self) -> dict[str, SyntheticSpec]:
        """The synthetic models of the run by shape name ("" for a lone `synthetic:`); empty without one."""
        if self.synthetic_suite is not None:
            return dict(self.synthetic_suite.shapes)
        return {"": self.synthetic} if self.synthetic is not None else {}

    @field_validator("saes")
    @classmethod
    def _unique(cls, saes: list[SAESpec]) -> list[SAESpec]:
        names = [s.name for s in saes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"SAE names must be unique; repeated: {dupes}")
        for i, a in enumerate(saes):
            for b in saes[:i]:
                if a.identity() == b.identity() and set(a.seeds) & set(b.seeds):
                    raise ValueError(
                        f"SAEs {b.name!r} and {a.name!r} have the same settings and share seeds "
                        f"{sorted(set(a.seeds) & set(b.seeds))}: they would train the same SAE; change one or drop it"
                    )
        return saes
