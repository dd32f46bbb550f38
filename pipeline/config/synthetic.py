"""`synthetic:` config section: a SynthSAEBench-style ground-truth model used instead of `model`/`data`.

Pydantic only (no torch), so loading a config stays cheap; `pipeline.synthetic.model.model_config`
maps a spec onto sae-lens's `SyntheticModelConfig`. The defaults are a CPU-sized model; the published
SynthSAEBench-16k settings are in `configs/synth16k.yaml` (and `SyntheticSpec.published_16k()`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    branching: Annotated[int, Field(ge=2)] = 4
    depth: PositiveInt = 2
    mutually_exclusive: float = Field(1.0, ge=0.0, le=1.0)
    """Fraction of parents whose children are mutually exclusive (1.0 = all, the published setting)."""
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


class SyntheticSpec(_Strict):
    """The ground-truth model: features, how they fire and how they are embedded."""

    num_features: PositiveInt = 2048
    hidden_dim: PositiveInt = 128
    firing: ZipfFiringSpec = ZipfFiringSpec()
    hierarchy: HierarchySpec | None = HierarchySpec()
    correlation: CorrelationSpec | None = CorrelationSpec()
    orthogonalization: OrthogonalizationSpec | None = OrthogonalizationSpec()
    magnitudes: MagnitudeSpec = MagnitudeSpec()
    bias: float = Field(1.0, ge=0.0)
    """Norm of the constant offset added to every hidden vector (0 = none); sae-lens's default is 1."""
    seed: int = 42
    eval_samples: PositiveInt = 50_000
    """Fresh samples (never in the training shards) the `eval_synthetic` stage scores each SAE on."""
    probe_samples: PositiveInt = 40_000
    """Fresh samples for the supervised probe baseline (80% train, 20% test)."""

    @model_validator(mode="after")
    def _hierarchy_fits(self) -> SyntheticSpec:
        h = self.hierarchy
        if h is not None:
            per_tree = sum(h.branching**d for d in range(h.depth + 1))
            if h.n_roots * per_tree > self.num_features:
                raise ValueError(
                    f"hierarchy needs {h.n_roots} x {per_tree} = {h.n_roots * per_tree} features "
                    f"but num_features is {self.num_features}; lower n_roots/branching/depth"
                )
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
