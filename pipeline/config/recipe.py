"""Recipe specification: which SAE ideas a run combines, as frozen pydantic models read from YAML.

Every optional piece is `None` (off) or its own small spec; `build_coder` turns a spec into modules.
Checks that need `d_sae` (which lives outside the recipe) happen in `build_coder`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

ActivationName = Literal["topk", "batchtopk", "jumprelu", "relu_l1"]
TOPK_STYLE: frozenset[str] = frozenset({"topk", "batchtopk"})


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _quiet_defaults: ClassVar[frozenset[str]] = frozenset()
    """Fields added after stage keys existed: left out of the dump while at their default, so the keys
    of every run that does not set them stay what they were."""

    @model_serializer(mode="wrap")
    def _drop_quiet_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name in self._quiet_defaults:
            if isinstance(data, dict) and name in data and getattr(self, name) == type(self).model_fields[name].default:
                del data[name]
        return data


class BatchTopKSpec(_Spec):
    """Inference threshold fitted during training (EMA of the smallest kept activation)."""

    threshold: Literal["global", "per_latent"] = "global"
    threshold_lr: float = Field(0.01, gt=0.0, le=1.0)


class JumpReLUSpec(_Spec):
    """JumpReLU (Rajamanoharan et al. 2024): threshold learned with a rectangle-kernel pseudo-gradient.

    sae-lens's JumpReLUTrainingSAE uses init_threshold 0.01, bandwidth 0.05, l0_coefficient 1.0 and
    threshold_param 'direct' (with decoder.norm 'free', init_norm 0.1 and b_dec_init 'zeros').
    These defaults learn no sparsity on docs/RESULTS.md §7's shape at 1,000, 4,000 or 8,000 steps; with
    threshold_param 'direct', init_threshold 0.01 and bandwidth 0.05 they do. Write those. The defaults
    stay as they are because every SAE's stage key includes them."""

    _quiet_defaults: ClassVar[frozenset[str]] = frozenset({"threshold_param"})
    init_threshold: float = Field(0.001, gt=0.0)
    bandwidth: float = Field(0.001, gt=0.0)
    l0_coefficient: float = Field(1.0, ge=0.0)
    threshold_param: Literal["log", "direct"] = "log"
    """What Adam trains. 'log' (ours, DeepMind's): log(threshold), so the threshold stays positive and
    moves multiplicatively. 'direct' (sae-lens): the threshold itself, clamped to >= 0 before every
    training forward pass; Adam's ~lr-sized steps then move it additively, which matters for a small init."""


class ReluL1Spec(_Spec):
    """ReLU with an L1 penalty on activations (decoder rows are unit norm, so no norm weighting)."""

    l1_coefficient: float = Field(1.0, ge=0.0)


class MatryoshkaSpec(_Spec):
    """Prefix reconstruction losses (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs")."""

    _quiet_defaults: ClassVar[frozenset[str]] = frozenset({"inner_weight"})
    levels: tuple[int, ...] = Field(..., min_length=1, description="cumulative widths; the last must equal d_sae")
    detach_inner: bool = False
    order_by_frequency: bool = False
    frequency_ema: float = Field(0.01, gt=0.0, le=1.0)
    inner_weight: float = Field(1.0, gt=0.0)
    """Weight of each inner level's reduced loss against the full level's 1. 1.0 is the plain sum of
    Bussmann et al. and sae-lens. The inner latents are trained by every level, so they grow larger
    activations and win BatchTopK's shared top-k; below 1 they pull less (docs/RESULTS.md §4c)."""

    @field_validator("levels")
    @classmethod
    def _increasing(cls, levels: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in levels):
            raise ValueError(f"matryoshka levels must be positive widths, got {list(levels)}")
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"matryoshka levels must be strictly increasing, got {list(levels)}")
        return levels


class ListaSpec(_Spec):
    """LISTA-style encoder refinement (Gregor & LeCun 2010, "Learning Fast Approximations of Sparse Coding").

    On BatchTopK it is the best-supported single addition: ahead on F1 on four of six synthetic
    shapes and on MCC on five, behind on none (docs/RESULTS.md §4d, §4e, §6c)."""

    steps: int = Field(1, ge=1)
    eta: float = Field(0.3, gt=0.0)


class KAnnealSpec(_Spec):
    """Linear K schedule from `k_start` down (or up) to the run's k over `fraction` of training.

    Annealing down leaves latents dead that AuxK does not revive: it cost the full recipe F1 on
    steep_zipf and on synth_small's shape (docs/RESULTS.md §6c, §4d)."""

    k_start: int = Field(..., ge=1)
    fraction: float = Field(0.5, gt=0.0, le=1.0)


class TermSpec(_Spec):
    """Tilted empirical risk (Li et al. 2021, "Tilted Empirical Risk Minimization")."""

    t: float = 2e-3


class OrthogonalitySpec(_Spec):
    """Co-occurrence-weighted decoder orthogonality penalty."""

    coefficient: float = Field(0.01, ge=0.0)
    competition_threshold: float = Field(0.0, ge=0.0, le=1.0)


class AuxKSpec(_Spec):
    """Dead-latent auxiliary loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    sae-lens's TopK/BatchTopK training SAEs use k_aux = d_in // 2, coefficient 1.0, scale_by_dead
    true and relu false (set k_aux to your d_in // 2 to reproduce them)."""

    _quiet_defaults: ClassVar[frozenset[str]] = frozenset({"scale_by_dead", "relu"})
    k_aux: int = Field(512, ge=1)
    coefficient: float = Field(1.0 / 32.0, ge=0.0)
    scale_by_dead: bool = False
    """Multiply the loss by min(n_dead / k_aux, 1), so a few dead latents get a small loss (sae-lens: true)."""
    relu: bool = True
    """ReLU the dead latents' pre-activations before they reconstruct the residual (sae-lens: false,
    it uses the raw top-k_aux pre-activations, which may be negative)."""


class DecoderSpec(_Spec):
    """How the decoder's row norms are kept out of the sparsity constraint.

    'project' (ours): rows start at unit norm and are projected back to unit norm after every
    optimizer step. 'rescale' (sae-lens's `rescale_acts_by_decoder_norm`): rows are free; the loss
    sees encoder columns and b_enc times ||d_i|| and decoder rows divided by it, so the function is
    the same but the optimizer moves different parameters. Saving folds the norms in (unit rows)."""

    norm: Literal["project", "rescale", "free"] = "project"
    """'free' (sae-lens's JumpReLU): rows are plain parameters, neither projected nor rescaled, so the
    loss and the L0 penalty see the raw weights; JumpReLU and ReLU-L1 only (a TopK selection would
    change when saving folds the norms in). Saving folds them into W_enc, b_enc and the threshold."""
    init_norm: float = Field(1.0, gt=0.0)
    """Initial decoder row norm; W_enc starts as W_dec^T, so it scales the encoder too (sae-lens: 0.1,
    Anthropic's April 2024 update). Only with norm 'rescale' or 'free' (projection would undo it)."""

    @model_validator(mode="after")
    def _init_norm_needs_rescale(self) -> DecoderSpec:
        if self.norm == "project" and self.init_norm != 1.0:
            raise ValueError("decoder.init_norm != 1 needs decoder.norm 'rescale' or 'free' (projection resets rows to unit norm)")
        return self


class LooSpec(_Spec):
    """Leave-one-out pruning of active latents at inference."""

    tau: float = 0.0


class RecipeSpec(_Spec):
    """One SAE recipe: an activation plus optional, independently switchable pieces."""

    activation: ActivationName = "batchtopk"
    batchtopk: BatchTopKSpec = BatchTopKSpec()
    jumprelu: JumpReLUSpec = JumpReLUSpec()
    relu_l1: ReluL1Spec = ReluL1Spec()
    matryoshka: MatryoshkaSpec | None = None
    lista: ListaSpec | None = None
    k_anneal: KAnnealSpec | None = None
    term: TermSpec | None = None
    orthogonality: OrthogonalitySpec | None = None
    aux_k: AuxKSpec | None = AuxKSpec()
    loo: LooSpec | None = None
    decoder: DecoderSpec = DecoderSpec()
    """Decoder-norm handling and initial scale; default: unit rows, projected after each step."""
    b_dec_init: Literal["data_mean", "zeros"] = "data_mean"
    """'data_mean': b_dec starts at the first batch's mean (ours); 'zeros': as sae-lens's trainer."""

    _quiet_defaults: ClassVar[frozenset[str]] = frozenset({"decoder", "b_dec_init"})

    @model_validator(mode="before")
    @classmethod
    def _aux_k_default_only_for_topk(cls, data: Any) -> Any:
        """AuxK is on by default, but only TopK-style activations have a 'top k_aux dead latents'."""
        if isinstance(data, dict) and "aux_k" not in data:
            if data.get("activation", "batchtopk") not in TOPK_STYLE:
                data = {**data, "aux_k": None}
        return data

    @model_validator(mode="after")
    def _pieces_fit_activation(self) -> RecipeSpec:
        act = self.activation
        for name in ("batchtopk", "jumprelu", "relu_l1"):
            settings = getattr(self, name)
            if name != act and settings != type(settings)():
                raise ValueError(f"settings for '{name}' were given but activation is '{act}'")
        if act in TOPK_STYLE and self.decoder.norm == "free":
            raise ValueError(f"decoder.norm 'free' is for jumprelu / relu_l1, not '{act}' (folding the norms would "
                             "change the TopK selection); use 'rescale'")
        if act not in TOPK_STYLE:
            for name in ("aux_k", "lista", "k_anneal"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' needs a TopK-style activation (topk or batchtopk), not '{act}'")
        return self
