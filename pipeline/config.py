"""The run config: one YAML file, validated by pydantic before anything is computed or written.

Every model forbids unknown keys so a typo (``lr_rate:``) is an error instead of a silently ignored
setting. ``load_config`` turns pydantic's errors into one line per problem: field path, bad value,
what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.models.registry import known_n_layers
from pipeline.recipes.spec import RecipeSpec
from pipeline.synthetic.spec import SyntheticSpec

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """Which language model to hook, and where."""

    source: Literal["smollm2_gguf", "hub"]
    name: str = Field(min_length=1)
    hook: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"

    @field_validator("hook")
    @classmethod
    def _hook_shape(cls, hook: str) -> str:
        if not HOOK_RE.match(hook):
            raise ValueError("must look like 'blocks.<layer>.hook_resid_post' (or _pre / _mid)")
        return hook

    @model_validator(mode="after")
    def _layer_in_range(self) -> ModelSpec:
        n_layers = known_n_layers(self.source, self.name)
        layer = self.layer
        if n_layers is not None and layer >= n_layers:
            raise ValueError(f"hook layer {layer} does not exist: {self.name} has layers 0..{n_layers - 1}")
        return self

    @property
    def layer(self) -> int:
        match = HOOK_RE.match(self.hook)
        assert match is not None
        return int(match.group(1))


class DataSpec(Strict):
    """Where the text comes from. 'shipped' corpora live inside installed packages (offline)."""

    source: Literal["shipped", "hf"]
    name: str = Field(min_length=1)
    split: str = "train"
    text_field: str = "text"
    context_size: PositiveInt = 128
    prepend_bos: bool = True
    holdout_every: Annotated[int, Field(ge=2)] = 10
    """Every n-th document is held out for evaluation and never used to train SAEs."""

    @model_validator(mode="after")
    def _shipped_known(self) -> DataSpec:
        from pipeline.data.corpora import SHIPPED

        if self.source == "shipped" and self.name not in SHIPPED:
            raise ValueError(f"unknown shipped corpus {self.name!r}; choose one of {sorted(SHIPPED)}")
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

    @model_validator(mode="after")
    def _consistent(self) -> SAESpec:
        if self.k >= self.d_sae:
            raise ValueError(f"k={self.k} must be smaller than d_sae={self.d_sae}")
        r = self.recipe
        if r.matryoshka is not None and r.matryoshka.levels[-1] != self.d_sae:
            raise ValueError(f"recipe.matryoshka.levels must end at d_sae={self.d_sae}, got {list(r.matryoshka.levels)}")
        extras = [p for p in ("matryoshka", "lista", "k_anneal", "term", "orthogonality", "loo") if getattr(r, p) is not None]
        if self.trainer == "sae_lens" and (r.activation != "batchtopk" or extras):
            raise ValueError(
                f"trainer 'sae_lens' trains plain BatchTopK only (got activation {r.activation!r}, pieces {extras}); "
                "use trainer: saepipe"
            )
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two specs train the same SAE (everything but the name and the seeds)."""
        return self.model_dump(exclude={"name", "seeds"})


class CoreEvalSpec(Strict):
    """SAEBench core metrics (language-model runs only; a synthetic run has no model to splice into)."""

    enabled: bool = True
    batch_size_prompts: PositiveInt = 8
    n_reconstruction_batches: PositiveInt = 4
    n_sparsity_batches: PositiveInt = 4


class SparseProbingSpec(Strict):
    """k-sparse probes on SAE latents beside probes on the model's own activations (SAEBench),
    on the real probing datasets shipped in the `sae-probes` package."""

    enabled: bool = False
    datasets: list[str] = Field(default_factory=lambda: ["96_spam_is", "139_news_class_Politics"], min_length=1)
    n_train: PositiveInt = 400
    n_test: PositiveInt = 200
    k_values: list[Literal[1, 2, 5, 10, 20, 50, 100]] = Field(default_factory=lambda: [1, 2, 5, 10, 20], min_length=1)
    """SAEBench's JSON has fields for these k only."""
    context_size: PositiveInt = 128
    batch_size: PositiveInt = 8
    """Prompts per forward pass (SAEBench's llm_batch_size); also rows per SAE encoding batch."""
    seed: int = 42
    """Seeds the train/test draw (sae-probes' sampler) and torch before each dataset's probes."""

    @field_validator("n_train", "n_test")
    @classmethod
    def _even(cls, n: int) -> int:
        if n < 4 or n % 2:
            raise ValueError("must be an even number >= 4 (classes are balanced, n/2 each)")
        return n

    @field_validator("k_values", "datasets")
    @classmethod
    def _no_repeats(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError("repeated values")
        return values


class SaeProbesSpec(Strict):
    """SAEBench's ``sparse_probing_sae_probes``: sae-probes' last-token probes with tuned regularisation,
    on its shipped datasets (the most reliable SAEBench metric in Chanin 2026)."""

    enabled: bool = False
    datasets: list[str] = Field(default_factory=lambda: ["96_spam_is", "139_news_class_Politics"], min_length=1)
    ks: list[Literal[1, 2, 5, 10, 20, 50, 100]] = Field(default_factory=lambda: [1, 2, 5], min_length=1)
    """SAEBench's JSON has fields for these k only."""
    reg_type: Literal["l1", "l2"] = "l1"
    binarize: bool = False
    num_train: PositiveInt | None = None
    """Training prompts per dataset; default sae-probes' min(size - 100, 1024)."""
    num_test: PositiveInt | None = None
    """Cap on test prompts; default all the rest (sae-probes)."""
    max_seq_len: PositiveInt = 1024
    batch_size: PositiveInt = 8
    seed: int = 42

    @field_validator("ks", "datasets")
    @classmethod
    def _no_repeats(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError("repeated values")
        return values


class SyntheticEvalSpec(Strict):
    """Ground-truth metrics (F1, MCC, uniqueness, EV, L0, dead) for synthetic runs."""

    enabled: bool = True
    loo_tau: float | None = None
    """Also score each SAE with leave-one-out pruning at inference (threshold tau) as its own variant."""


class EvalSection(Strict):
    """An eval switched on with ``enabled: true``. Its other keys are the eval's own settings, checked
    against the eval's params class, which is imported only when the eval is enabled (the evals pull in
    sae-bench; a config that does not use them should load in a blink)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    enabled: bool = False

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


LAZY_EVAL_PARAMS = {
    "absorption": "evals.absorption:AbsorptionParams",
    "scr": "evals.scr_tpp:ScrTppParams",
    "tpp": "evals.scr_tpp:ScrTppParams",
    "unlearning": "evals.unlearning:UnlearningParams",
}
"""Evals whose settings class lives with the eval's code (SCR and TPP share one: one prepare serves both)."""


def eval_params_class(name: str) -> type[BaseModel]:
    """The pydantic class of an eval's settings."""
    if name in LAZY_EVAL_PARAMS:
        import importlib

        module, cls = LAZY_EVAL_PARAMS[name].split(":")
        return getattr(importlib.import_module(module), cls)
    return {"sparse_probing": SparseProbingSpec, "sae_probes": SaeProbesSpec}[name]


class EvalsSpec(Strict):
    core: CoreEvalSpec = CoreEvalSpec()
    sparse_probing: SparseProbingSpec = SparseProbingSpec()
    sae_probes: SaeProbesSpec = SaeProbesSpec()
    absorption: EvalSection = EvalSection()
    scr: EvalSection = EvalSection()
    tpp: EvalSection = EvalSection()
    unlearning: EvalSection = EvalSection()
    synthetic: SyntheticEvalSpec = SyntheticEvalSpec()
    max_chunk_mib: Annotated[int, Field(gt=0, le=4096)] = 256
    """Largest file any eval writes: bigger tensors are cut into parts of at most this size."""

    @model_validator(mode="after")
    def _lazy_sections_valid(self) -> EvalsSpec:
        problems = []
        for name in LAZY_EVAL_PARAMS:
            section: EvalSection = getattr(self, name)
            if not section.enabled and not section.settings():
                continue  # nothing to check, nothing to import
            try:
                eval_params_class(name).model_validate(section.settings())
            except ValidationError as exc:
                problems += [_format_error({**e, "loc": ("evals", name, *e["loc"])}) for e in exc.errors()]
        if problems:
            raise ValueError("\n".join(problems))  # parse_config lists each on its own line
        return self

    def enabled(self) -> dict[str, dict[str, Any]]:
        """The SAEBench evals switched on (besides core), by name: every setting, defaults filled in."""
        out = {}
        for name in EVAL_NAMES:
            section = getattr(self, name)
            if section.enabled:
                raw = section.settings() if isinstance(section, EvalSection) else section.model_dump(exclude={"enabled"})
                out[name] = eval_params_class(name).model_validate(raw).model_dump(mode="json", exclude={"enabled"})
        return out


EVAL_NAMES = ("sparse_probing", "sae_probes", "absorption", "scr", "tpp", "unlearning")
"""SAEBench evals with a shared prep stage, in report order (core and synthetic are separate)."""


StageKind = Literal[
    "synthetic_model",
    "activations",
    "synthetic_activations",
    "train",
    "eval_core",
    "eval_prep",
    "eval_sparse_probing",
    "eval_sae_probes",
    "eval_absorption",
    "eval_scr",
    "eval_tpp",
    "eval_unlearning",
    "eval_synthetic",
    "probe_baseline",
    "report",
]


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
    stages: dict[StageKind, SlurmResources] = Field(default_factory=dict)
    arrays: bool = True
    """Submit families of like stages (a sweep's SAEs, many evals) as one job array."""
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


class PipelineConfig(Strict):
    """A run on a language model (``model`` + ``data``) or on a synthetic model with known features
    (``synthetic``, instead of both)."""

    name: str = Field(pattern=NAME_RE)
    model: ModelSpec | None = None
    data: DataSpec | None = None
    synthetic: SyntheticSpec | None = None
    activations: ActivationsSpec
    saes: list[SAESpec] = Field(min_length=1)
    evals: EvalsSpec = EvalsSpec()
    executor: ExecutorSpec = ExecutorSpec()

    @model_validator(mode="after")
    def _one_source(self) -> PipelineConfig:
        if self.synthetic is None:
            missing = [f for f in ("model", "data") if getattr(self, f) is None]
            if missing:
                raise ValueError("; ".join(f"{f}: required field is missing (or give `synthetic:` instead)" for f in missing))
        elif self.model is not None or self.data is not None:
            raise ValueError("synthetic: a synthetic run takes no `model` or `data`; remove them or remove `synthetic`")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

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


class ConfigError(Exception):
    """A config problem the user must fix; ``problems`` holds one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def resolve_config_path(name_or_path: str) -> Path:
    """A path as given, else ``configs/NAME`` (with or without .yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (CONFIGS_DIR / name_or_path, CONFIGS_DIR / f"{name_or_path}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(name_or_path, [f"no such config file (looked at {path} and in {CONFIGS_DIR})"])


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and msg.startswith(f"{loc}."):  # names its own fields (lazy eval sections)
        return msg
    if not loc:  # whole-config checks name their fields themselves
        return msg
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (value {err['input']!r}); remove it or fix its spelling"
    return f"{loc}: bad value {err['input']!r}: {msg}"


def parse_config(data: Any, source: str = "<config>") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the file must hold a mapping of settings, got {type(data).__name__}"])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [line for e in exc.errors() for line in _format_error(e).split("\n")]) from None


def load_config(name_or_path: str) -> tuple[PipelineConfig, Path]:
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}".replace("\n", " ")]) from None
    return parse_config(data, str(path)), path
