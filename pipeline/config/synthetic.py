"""`synthetic:` config section: a SynthSAEBench-style ground-truth model used instead of `model`/`data`.

Pydantic only (no torch), so loading a config stays cheap; `pipeline.synthetic.model.model_config`
maps a spec onto sae-lens's `SyntheticModelConfig`. The defaults are a CPU-sized model; the published
SynthSAEBench-16k settings are in `configs/synth16k.yaml` (and `SyntheticSpec.published_16k()`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZipfFiringSpec(_Strict):
    """Feature i fires with a probability that falls off as 1 / rank**exponent, rescaled to [min_prob, max_prob]."""

    exponent: float = Field(0.5, gt=0.0)
    max_prob: Probability = 0.4
    min_prob: Probability = 5e-4

    @model_validator(mode="after")
    def _ordered(self) -> ZipfFiringSpec:
        if not self.min_prob < self.max_prob:
            raise ValueError(f"min_prob ({self.min_prob}) must be smaller than max_prob ({self.max_prob})")
        return self


class HierarchySpec(_Strict):
    """A forest of feature trees: a child can only fire when its parent fires."""

    n_roots: PositiveInt = 16
    branching: Annotated[int, Field(ge=2)] | tuple[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=2)]] = 4
    """Children per parent, or [min, max] for a random count per parent. sae-lens fills the trees
    breadth-first until the features run out, so a forest larger than `num_features` is fine."""
    depth: PositiveInt = 2
    mutually_exclusive: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of parents whose children are mutually exclusive (1.0 = all, the published setting)."""
    mutually_exclusive_min_depth: Annotated[int, Field(ge=0)] = 0
    mutually_exclusive_max_depth: Annotated[int, Field(ge=0)] | None = None
    scale_children_by_parent: bool = True
    """Children's magnitudes are scaled by parent_activation / parent_mean instead of binary gating."""
    compensate_probabilities: bool = False


class CorrelationSpec(_Strict):
    """Low-rank correlation between features' firing (a Gaussian copula with a rank-`rank` factor)."""

    rank: PositiveInt = 25
    scale: float = Field(0.1, ge=0.0)


class OrthogonalizationSpec(_Strict):
    """Gradient steps that push the feature directions apart (lower interference) before use."""

    steps: PositiveInt = 100
    lr: float = Field(3e-4, gt=0.0)


class MagnitudeSpec(_Strict):
    """Firing magnitudes: mean linear in feature rank from `mean_start` to `mean_end`; per-feature std
    drawn from a folded normal |N(std_mean, std_std^2)|; an active value is relu(N(mean_i, std_i^2))."""

    mean_start: float = Field(5.0, gt=0.0)
    mean_end: float = Field(4.0, gt=0.0)
    std_mean: float = 0.5
    std_std: float = Field(0.5, gt=0.0)


MODEL_KEYS = ("num_features", "hidden_dim", "firing", "hierarchy", "correlation", "orthogonalization", "magnitudes", "bias")
"""The keys that describe the model itself; `sae_lens` and `saved` replace all of them."""


class SyntheticSpec(_Strict):
    """The ground-truth model: features, how they fire and how they are embedded.

    Three ways to name it: the keys below (a SynthSAEBench-style model); `sae_lens:` with any
    `SyntheticModelConfig` sae-lens accepts, as its `to_dict()` writes it (so every firing, magnitude and
    hierarchy option sae-lens has is available); or `saved:` with a folder `SyntheticModel.save` wrote
    (an existing benchmark model, used as is). sae-lens validates the model where it is built
    (`pipeline.synthetic.model`); this class only checks shapes, so it stays torch-free."""

    num_features: PositiveInt = 2048
    hidden_dim: PositiveInt = 128
    firing: ZipfFiringSpec = ZipfFiringSpec()
    hierarchy: HierarchySpec | None = HierarchySpec()
    correlation: CorrelationSpec | None = CorrelationSpec()
    orthogonalization: OrthogonalizationSpec | None = OrthogonalizationSpec()
    magnitudes: MagnitudeSpec = MagnitudeSpec()
    bias: float = Field(1.0, ge=0.0)
    """Norm of the constant offset added to every hidden vector (0 = none); sae-lens's default is 1."""
    sae_lens: dict[str, Any] | None = None
    """A sae-lens `SyntheticModelConfig.to_dict()` (the `synthetic_model_config.json` of a saved model).
    Its `seed`, when absent or null, is `seed` below (a model must be reproducible)."""
    saved: str | None = None
    """A folder written by `SyntheticModel.save`; the model is copied into the artifact, keyed by its content."""
    seed: int = 42
    """Seeds the model's construction (keys form) and every sample stream (all forms)."""
    eval_samples: PositiveInt = 50_000
    """Fresh samples (never in the training shards) the `eval_synthetic` stage scores each SAE on."""
    probe_samples: PositiveInt | None = None
    """Fresh samples for the supervised probe baseline (80% train, 20% test). None: chosen per model so
    the rarest feature has about 100 training positives (`evals.synthetic.prepare.probe_sample_count`)."""
    probe_max_samples: PositiveInt = 2_000_000
    """Upper bound on the automatic probe sample count (memory: samples x features bytes); the probe
    baseline reports how many features got fewer than 100 positives when it binds."""
    sampling_device: Literal["cpu", "device"] = "cpu"
    """Where the model is built and sampled. "cpu": on the CPU whatever the run's `device`, so a key names
    the very same vectors on every machine (CPU and CUDA random streams differ). "device": on the run's
    `device` (fast on a GPU; samples are then equal in distribution across devices, not identical).
    Training runs on `device` either way; the synthetic eval runs where its samples are drawn."""

    @model_serializer(mode="wrap")
    def _default_sampling_unkeyed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The default is left out of the dump (the stage keys) so keys from before it existed still hold."""
        out = handler(self)
        if out.get("sampling_device") == "cpu":
            del out["sampling_device"]
        return out

    @model_validator(mode="after")
    def _one_form(self) -> SyntheticSpec:
        forms = [f for f in ("sae_lens", "saved") if getattr(self, f) is not None]
        if len(forms) > 1:
            raise ValueError("give either `sae_lens` or `saved`, not both")
        clash = [k for k in MODEL_KEYS if getattr(self, k) != type(self).model_fields[k].default]
        if forms and clash:
            raise ValueError(f"`{forms[0]}` describes the whole model; remove {', '.join(clash)}")
        if self.sae_lens is not None:
            for key in ("num_features", "hidden_dim"):
                if not isinstance(self.sae_lens.get(key), int) or self.sae_lens[key] < 1:
                    raise ValueError(f"sae_lens.{key}: a positive integer is required (got {self.sae_lens.get(key)!r})")
        return self

    @classmethod
    def published_16k(cls) -> SyntheticSpec:
        """SynthSAEBench-16k: the published ground-truth model."""
        return cls(
            num_features=16_384,
            hidden_dim=768,
            firing=ZipfFiringSpec(exponent=0.5, max_prob=0.4, min_prob=5e-4),
            hierarchy=HierarchySpec(n_roots=128, branching=4, depth=3, mutually_exclusive=1.0, scale_children_by_parent=True),
            correlation=CorrelationSpec(rank=25, scale=0.1),
            orthogonalization=OrthogonalizationSpec(steps=100, lr=3e-4),
            magnitudes=MagnitudeSpec(mean_start=5.0, mean_end=4.0, std_mean=0.5, std_std=0.5),
            seed=42,
        )


SHAPE_NAME = r"^[A-Za-z0-9_]+$"


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base`, nested sections key by key (a section set to null removes it)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class SyntheticSuite(_Strict):
    """Several synthetic models ("shapes") the same recipes run on, so a comparison is not one model's
    accident. Each shape is `base` with its own keys laid over it (nested sections merge key by key)."""

    base: dict[str, Any] = {}
    """Keys every shape shares (any `synthetic:` key)."""
    shapes: dict[Annotated[str, Field(pattern=SHAPE_NAME)], SyntheticSpec] = Field(min_length=1)
    """Shape name (used in stage labels, e.g. `train:batchtopk-s0@deep`) -> what differs from `base`."""

    @model_validator(mode="before")
    @classmethod
    def _lay_over_base(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("shapes"), dict):
            base = data.get("base") or {}
            shapes = {n: _merged(base, s) if isinstance(s, dict) else s for n, s in data["shapes"].items()}
            data = {**data, "shapes": shapes}
        return data
