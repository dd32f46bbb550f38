"""The run config's top level: the model and text (or a synthetic model), activations, SAEs.

Pure pydantic types that import nothing of the project outside ``pipeline.config``, so loading and
validating a config is fast and testable alone. ``pipeline.loading`` turns pydantic's errors into
one line per problem: field path, bad value, what is allowed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

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
    trainer: Literal["saepipe", "sae_lens", "pca", "random"] = "saepipe"
    """'saepipe': our sparse-decoder trainer with every recipe piece; 'sae_lens': sae-lens's own
    training SAE for the recipe (topk, batchtopk, batchtopk + matryoshka, jumprelu) at sae-lens's
    defaults except what the config writes, the reference; 'pca' / 'random': baselines, not trained
    (principal directions of the training rows / a seeded random SAE), saved as TopK SAEs at k."""
    recipe: RecipeSpec = RecipeSpec()
    sae_lens_config: dict[str, Any] = Field(default_factory=dict)
    """trainer sae_lens: fields of sae-lens's training-SAE config to set, by sae-lens's names, for
    settings the recipe has no knob for (e.g. {jumprelu_sparsity_loss_mode: tanh})."""
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
    """A latent that has not fired for this many tokens counts as dead (feeds the auxiliary loss).
    Trainer sae_lens, unless written: sae-lens's dead_feature_window, 1000 batches."""
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
        if self.trainer != "saepipe" and self.ops != "auto":
            raise ValueError(f"ops {self.ops!r} applies to trainer saepipe only; {self.trainer} has its own")
        if self.sae_lens_config and self.trainer != "sae_lens":
            raise ValueError(f"sae_lens_config applies to trainer sae_lens only, not {self.trainer!r}; remove it")
        if self.trainer == "sae_lens":
            _reference_can_train(r)
        if self.trainer in BASELINES and r.model_fields_set - {"aux_k"}:
            raise ValueError(f"trainer {self.trainer!r} is a baseline and takes no recipe; remove recipe or use trainer: saepipe")
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two specs train the same SAE (everything but the name and the seeds).

        For trainer sae_lens an unwritten setting means "sae-lens's default", not ours, so the recipe
        keeps only its written fields and an unwritten dead_after_tokens is left out: the train stage
        reads these params and can tell the two apart."""
        if self.trainer != "sae_lens":
            return self.model_dump(exclude={"name", "seeds", "sae_lens_config"})  # empty: keys as before it existed
        unwritten = {"name", "seeds", "recipe"} | ({"dead_after_tokens"} - self.model_fields_set)
        return self.model_dump(exclude=unwritten) | {"recipe": _written(self.recipe)}


BASELINES = ("pca", "random")
REFERENCE_PIECES = ("lista", "k_anneal", "term", "orthogonality", "loo")
"""Recipe pieces sae-lens has no counterpart for."""


def _written(spec: BaseModel) -> dict[str, Any]:
    """The fields written in the config, nested; unlike a dump, a written default stays (quiet defaults too)."""
    out = {}
    for name in spec.model_fields_set:
        value = getattr(spec, name)
        out[name] = _written(value) if isinstance(value, BaseModel) else list(value) if isinstance(value, tuple) else value
    return out


def _written_as(spec: Any, field: str, value: Any) -> bool:
    return field in spec.model_fields_set and getattr(spec, field) == value


def _reference_can_train(r: RecipeSpec) -> None:
    """Refuse a written recipe field that sae-lens's training SAEs have no setting for."""
    extras = [p for p in REFERENCE_PIECES if getattr(r, p) is not None]
    if r.activation == "relu_l1" or extras:
        raise ValueError(
            f"trainer 'sae_lens' trains topk, batchtopk (+ matryoshka) and jumprelu without extra pieces "
            f"(got activation {r.activation!r}, pieces {extras}); use trainer: saepipe"
        )
    no_counterpart = {
        "matryoshka with a non-batchtopk activation": r.matryoshka is not None and r.activation != "batchtopk",
        "matryoshka.detach_inner / order_by_frequency / frequency_ema / inner_weight": r.matryoshka is not None
        and bool(r.matryoshka.model_fields_set - {"levels"}),
        "batchtopk.threshold per_latent (sae-lens fits one global threshold)": _written_as(r.batchtopk, "threshold", "per_latent"),
        "aux_k.scale_by_dead false (sae-lens: true)": r.aux_k is not None and _written_as(r.aux_k, "scale_by_dead", False),
        "aux_k.relu true (sae-lens: false)": r.aux_k is not None and _written_as(r.aux_k, "relu", True),
        "decoder.norm with jumprelu (sae-lens's JumpReLU has no decoder-norm handling)": r.activation == "jumprelu"
        and "norm" in r.decoder.model_fields_set,
        "jumprelu.threshold_param log (sae-lens trains the threshold itself)": _written_as(r.jumprelu, "threshold_param", "log"),
    }
    bad = [what for what, refused in no_counterpart.items() if refused]
    if bad:
        raise ValueError(f"trainer 'sae_lens' has no setting for recipe {bad[0]}; remove it or use trainer: saepipe")


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
