"""Trainer ``sae_lens``: sae-lens's own training SAEs, stepped as sae-lens's ``SAETrainer`` steps them.

Which class follows the recipe: topk -> ``TopKTrainingSAE``, batchtopk -> ``BatchTopKTrainingSAE``,
batchtopk + matryoshka -> ``MatryoshkaBatchTopKTrainingSAE`` (levels -> ``matryoshka_widths``),
jumprelu -> ``JumpReLUTrainingSAE``. Every field of its config keeps sae-lens's default (aux
coefficient 1.0, decoder_init_norm 0.1, rescale_acts_by_decoder_norm, b_dec at zero, JumpReLU's
threshold 0.01 / bandwidth 0.05, ...) unless the run config sets it: a recipe field written in the
YAML (``aux_k.coefficient``, ``jumprelu.*``, ``batchtopk.threshold_lr``, ``decoder.norm`` / ``init_norm``,
``b_dec_init``) or a ``sae_lens_config`` entry
(any field, by sae-lens's name). ``pipeline/config/run.py`` keeps only what was written, so "written"
survives into the stage's params.

Per step this does what ``SAETrainer._train_step`` does around the loss (the train loop does the rest,
as SAETrainer does: backward, grad-norm clip 1.0, Adam(0.9, 0.999), zero_grad; its default learning-rate
schedule is constant with no warm-up, so there is no scheduler to step): the dead mask is "forward
passes since fired > dead_feature_window" (the loop's token count over a batch's tokens per pass), and
the coefficients come from sae-lens's ``CoefficientScheduler`` at this step (JumpReLU's L0 warm-up).
The scheduler's state is the step alone, so a resumed run needs nothing more than the checkpoint.

sae_lens is imported inside functions: the plan imports the stages, and nothing it imports may pull in
sae-lens at module load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.collective import world
from pipeline.training.contract import ADAM_BETAS, StepResult

SHAPE_FIELDS = frozenset({"d_in", "d_sae", "k", "matryoshka_widths", "dtype", "device", "metadata"})
"""Set by the run's shape (d_sae, k, recipe levels) and placement; not settable through sae_lens_config."""


def sae_lens_classes(recipe: RecipeSpec) -> tuple[type, type]:
    """(training SAE class, its config class) for the recipe's activation."""
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    if recipe.matryoshka is not None:
        return MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig
    table = {
        "topk": (TopKTrainingSAE, TopKTrainingSAEConfig),
        "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
        "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig),
    }
    if recipe.activation not in table:
        raise ValueError(f"recipe.activation: trainer 'sae_lens' has no {recipe.activation!r} SAE; choose one of {sorted(table)}")
    return table[recipe.activation]


def written_settings(recipe: RecipeSpec, d_in: int) -> dict[str, Any]:
    """The sae-lens config fields that recipe fields written in the config set (by sae-lens's names).
    Written fields with no sae-lens counterpart are refused by the config (``pipeline/config/run.py``)."""
    written = recipe.model_fields_set
    topk_style = recipe.activation in ("topk", "batchtopk")
    out: dict[str, Any] = {}
    if topk_style and "aux_k" in written:
        aux = recipe.aux_k
        if aux is None:
            out["aux_loss_coefficient"] = 0.0
        else:
            if "coefficient" in aux.model_fields_set:
                out["aux_loss_coefficient"] = aux.coefficient
            if "k_aux" in aux.model_fields_set and aux.k_aux != d_in // 2:
                raise ValueError(f"recipe.aux_k.k_aux: sae-lens always uses d_in // 2 = {d_in // 2}; remove it or use trainer: saepipe")
    if recipe.activation == "batchtopk" and "batchtopk" in written and "threshold_lr" in recipe.batchtopk.model_fields_set:
        out["topk_threshold_lr"] = recipe.batchtopk.threshold_lr
    if recipe.activation == "jumprelu" and "jumprelu" in written:
        names = {"init_threshold": "jumprelu_init_threshold", "bandwidth": "jumprelu_bandwidth", "l0_coefficient": "l0_coefficient"}
        out |= {theirs: getattr(recipe.jumprelu, ours) for ours, theirs in names.items() if ours in recipe.jumprelu.model_fields_set}
    if "decoder" in written:
        if topk_style and "norm" in recipe.decoder.model_fields_set:
            out["rescale_acts_by_decoder_norm"] = recipe.decoder.norm == "rescale"
        if "init_norm" in recipe.decoder.model_fields_set:
            out["decoder_init_norm"] = recipe.decoder.init_norm
    return out


def shape_settings(cfg_cls: type, recipe: RecipeSpec, d_in: int, d_sae: int, k: int) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    shape: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu"}
    if "k" in names:
        shape["k"] = k
    if recipe.matryoshka is not None:
        shape["matryoshka_widths"] = list(recipe.matryoshka.levels)
    return shape


def sae_lens_config(recipe: RecipeSpec, d_in: int, d_sae: int, k: int, overrides: dict[str, Any]) -> Any:
    """The training-SAE config: sae-lens's defaults, the shape, then what the run config wrote."""
    _, cfg_cls = sae_lens_classes(recipe)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    for name in overrides:
        if name in SHAPE_FIELDS:
            raise ValueError(f"sae_lens_config.{name}: set by the run (d_sae, k, recipe.matryoshka.levels); remove it")
        if name not in fields:
            choices = sorted(fields - SHAPE_FIELDS)
            raise ValueError(f"sae_lens_config.{name}: not a field of sae-lens's {cfg_cls.__name__}; choose from {choices}")
    written = written_settings(recipe, d_in)
    clash = sorted(written.keys() & overrides.keys())
    if clash:
        raise ValueError(f"sae_lens_config.{clash[0]}: the recipe sets it too ({written[clash[0]]!r}); set it in one place")
    return cfg_cls(**shape_settings(cfg_cls, recipe, d_in, d_sae, k), **written, **overrides)


def config_differences(cfg: Any) -> dict[str, list[Any]]:
    """{field: [ours, sae-lens default]} for every config field that differs from sae-lens's default."""
    shape = {n: getattr(cfg, n) for n in ("d_in", "d_sae", "k") if hasattr(cfg, n)}
    default = type(cfg)(**shape, **({"matryoshka_widths": list(cfg.matryoshka_widths)} if hasattr(cfg, "matryoshka_widths") else {}))
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name not in SHAPE_FIELDS and getattr(cfg, f.name) != getattr(default, f.name):
            out[f.name] = [getattr(cfg, f.name), getattr(default, f.name)]
    return out


def saepipe_differences(recipe: RecipeSpec, d_in: int, d_sae: int, k: int, lr: float, dead_window_steps: float, autocast: bool) -> dict[str, list[Any]]:
    """Our trainer (``trainer: saepipe``) against sae-lens's training SAE for the same architecture:
    {setting: [ours, sae-lens default]}, by sae-lens's names where it has the setting (None where not)."""
    out: dict[str, list[Any]] = {}
    if recipe.b_dec_init != "zeros":
        out["b_dec_init"] = [recipe.b_dec_init, "zeros"]
    if recipe.activation in ("topk", "batchtopk", "jumprelu"):
        _, cfg_cls = sae_lens_classes(recipe)
        default = cfg_cls(**shape_settings(cfg_cls, recipe, d_in, d_sae, k))
        ours: dict[str, Any] = {"decoder_init_norm": recipe.decoder.init_norm}
        if recipe.activation in ("topk", "batchtopk"):
            ours["rescale_acts_by_decoder_norm"] = recipe.decoder.norm == "rescale"  # 'project': unit rows after every step
            ours["aux_loss_coefficient"] = recipe.aux_k.coefficient if recipe.aux_k is not None else 0.0
        if recipe.activation == "batchtopk":
            ours["topk_threshold_lr"] = recipe.batchtopk.threshold_lr
        if recipe.activation == "jumprelu":
            j = recipe.jumprelu
            ours |= {"jumprelu_init_threshold": j.init_threshold, "jumprelu_bandwidth": j.bandwidth, "l0_coefficient": j.l0_coefficient}
        out |= {name: [value, getattr(default, name)] for name, value in ours.items() if value != getattr(default, name)}
        if recipe.activation == "jumprelu" and recipe.decoder.norm != "free":
            out["decoder_norm"] = [recipe.decoder.norm, None]  # sae-lens: free rows, no norm handling
        if recipe.activation == "jumprelu" and recipe.jumprelu.threshold_param != "direct":
            out["jumprelu_threshold_param"] = [recipe.jumprelu.threshold_param, "direct"]
    else:
        out["activation"] = [recipe.activation, None]
    if recipe.aux_k is not None:
        aux = recipe.aux_k
        out |= {n: [v, d] for n, v, d in (("k_aux", aux.k_aux, d_in // 2), ("aux_scale_by_dead", aux.scale_by_dead, True), ("aux_relu", aux.relu, False)) if v != d}
    if recipe.activation == "batchtopk" and recipe.batchtopk.threshold != "global":
        out["topk_threshold"] = [recipe.batchtopk.threshold, "global"]
    if recipe.matryoshka is not None:
        m = recipe.matryoshka
        out |= {n: [getattr(m, n), None] for n in ("detach_inner", "order_by_frequency") if getattr(m, n)}
        if m.inner_weight != 1.0:
            out["matryoshka_inner_weight"] = [m.inner_weight, 1.0]  # sae-lens sums its levels unweighted
    for piece in ("lista", "k_anneal", "term", "orthogonality", "loo"):
        spec = getattr(recipe, piece)
        if spec is not None:
            out[piece] = [spec.model_dump(mode="json"), None]
    return out | trainer_differences(lr, dead_window_steps, autocast)


def default_dead_window_steps() -> int:
    """sae-lens's dead_feature_window: a latent is dead after this many forward passes without firing."""
    from sae_lens.config import SAETrainerConfig

    return next(f.default for f in dataclasses.fields(SAETrainerConfig) if f.name == "dead_feature_window")


def trainer_differences(lr: float, dead_window_steps: float, autocast: bool) -> dict[str, list[Any]]:
    """The train loop's settings against sae-lens's ``SAETrainerConfig`` defaults, where they differ."""
    from sae_lens.config import SAETrainerConfig

    ours = {
        "lr": lr,
        "lr_scheduler_name": "constant",
        "lr_warm_up_steps": 0,
        "lr_decay_steps": 0,
        "adam_beta1": ADAM_BETAS[0],
        "adam_beta2": ADAM_BETAS[1],
        "dead_feature_window": dead_window_steps,
        "autocast": autocast,
    }
    defaults = {f.name: f.default for f in dataclasses.fields(SAETrainerConfig) if f.name in ours}
    return {name: [value, defaults[name]] for name, value in ours.items() if value != defaults[name]}


class SaeLensTrainable:
    """sae-lens's training SAE for the recipe, one process only: its batch-global top-k and threshold
    live inside sae-lens, out of reach of the all-reduces."""

    ops = "sae_lens"

    def __init__(self, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, seed: int, device: torch.device, overrides: dict[str, Any]):
        if world() > 1:
            raise ValueError("trainer 'sae_lens' trains in one process only; use trainer: saepipe for multi-GPU data parallel")
        from sae_lens.training.optim import CoefficientScheduler

        sae_cls, _ = sae_lens_classes(recipe)
        self.cfg = sae_lens_config(recipe, d_in, d_sae, k, overrides)
        torch.manual_seed(seed)
        self.module = sae_cls(self.cfg).to(device)
        self.module.cfg.device = str(device)
        self.b_dec_from_data = "b_dec_init" in recipe.model_fields_set and recipe.b_dec_init == "data_mean"
        """sae-lens's trainer leaves b_dec at zero; a written `b_dec_init: data_mean` starts it at the first batch's mean."""
        self.schedulers: dict[str, Any] = {}
        for name, coeff in self.module.get_coefficients().items():
            value, warm_up = (coeff, 0) if isinstance(coeff, (int, float)) else (coeff.value, coeff.warm_up_steps)
            self.schedulers[name] = CoefficientScheduler(warm_up_steps=warm_up, final_value=value)

    def coefficients(self, step: int) -> dict[str, float]:
        """sae-lens's coefficient values at `step` (its scheduler restored to that step, as on resume)."""
        for scheduler in self.schedulers.values():
            scheduler.load_state_dict({"current_step": step})
        return {name: scheduler.value for name, scheduler in self.schedulers.items()}

    def step(self, x: torch.Tensor, step: int, n_steps: int, dead_mask: torch.Tensor) -> StepResult:
        from sae_lens.saes.sae import TrainStepInput

        if step == 0 and self.b_dec_from_data:
            with torch.no_grad():
                self.module.b_dec.copy_(x.mean(0))
        inputs = TrainStepInput(sae_in=x, coefficients=self.coefficients(step), dead_neuron_mask=dead_mask, n_training_steps=step, is_logging_step=False)
        out = self.module.training_forward_pass(inputs)
        with torch.no_grad():
            stats: dict[str, torch.Tensor | float] = {f"loss/{k}": v.detach() for k, v in out.losses.items()}
            stats |= {"loss": out.loss.detach(), "mse": out.losses["mse_loss"].detach()}
            fired = out.feature_acts.bool().sum(0)
        return StepResult(out.loss, stats, fired)

    def after_optimizer_step(self) -> None:
        """sae-lens rescales activations by the decoder norm (or leaves it free); no projection."""

    def differences(self, lr: float, dead_window_steps: float, autocast: bool) -> dict[str, list[Any]]:
        data_mean = {"b_dec_init": ["data_mean", "zeros"]} if self.b_dec_from_data else {}
        return config_differences(self.cfg) | data_mean | trainer_differences(lr, dead_window_steps, autocast)

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        from sae_lens.saes.sae import SAEMetadata

        self.module.cpu()
        self.module.cfg.device = "cpu"
        self.module.cfg.metadata = SAEMetadata(**metadata)
        self.module.save_inference_model(folder)
