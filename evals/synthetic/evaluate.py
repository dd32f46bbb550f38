"""Per SAE (and variant): sae-lens's synthetic eval of the SAE against the model's true features."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.synthetic import SyntheticModel, eval_sae_on_synthetic_data
from torch import Tensor

from evals.contract import EvalEnv, Prepared
from evals.synthetic.calibrate import Calibration, calibrate
from evals.synthetic.config import SyntheticConfig
from evals.synthetic.output import SyntheticEvalOutput, extract
from pipeline.recipes.loo import LooPruner, loo_prune
from pipeline.recipes.outputs import Active, Selection
from pipeline.recipes.saving import CODER_FILE, load_coder
from pipeline.synthetic.model import chunk_rows, derive_seed, sample, seeded


class CoderAsSAE:
    """A saepipe SparseCoder behind the interface `eval_sae_on_synthetic_data` uses
    (`eval()`, `encode(x) -> dense codes`, `decode(codes)`, `W_dec`)."""

    def __init__(self, coder: Any) -> None:
        self.coder = coder
        self.W_dec = coder.W_dec.detach()

    def eval(self) -> CoderAsSAE:
        self.coder.eval()
        return self

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.coder.encode_dense(x)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        return codes @ self.coder.W_dec + self.coder.b_dec


class LooSAE:
    """Any dense-code SAE (sae-lens's) with leave-one-out pruning applied to its codes."""

    def __init__(self, sae: Any, tau: float) -> None:
        self.sae, self.tau = sae, tau
        self.W_dec = sae.W_dec.detach()

    def eval(self) -> LooSAE:
        self.sae.eval()
        return self

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        codes = self.sae.encode(x)
        sel = Selection.from_mask(codes != 0)
        active = Active.of(sel, codes[sel.rows, sel.latents])
        return loo_prune(x, active, self.sae.W_dec, self.sae.b_dec, self.tau).dense(codes.shape[1])

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        return self.sae.decode(codes)


def load_sae_for_eval(folder: Path, loo_tau: float | None, on: str = "cpu") -> tuple[Any, str]:
    """(object for `eval_sae_on_synthetic_data`, loader name) for an SAE folder in sae-lens format."""
    if (folder / CODER_FILE).exists():
        coder = load_coder(folder).to(on)
        if loo_tau is not None:
            coder.pruner = LooPruner(loo_tau)
        return CoderAsSAE(coder), "saepipe_coder"
    sae = SAE.load_from_disk(str(folder), device=on)
    return (sae if loo_tau is None else LooSAE(sae, loo_tau)), "sae_lens"


def score(sae: Any, model: SyntheticModel, n_samples: int, seed: int) -> dict[str, Any]:
    """sae-lens's synthetic eval on `n_samples` drawn from the stream `seed` (chunked as `sample_chunks`)."""
    with seeded(seed):
        result = eval_sae_on_synthetic_data(
            sae, model.feature_dict, model.activation_generator, num_samples=n_samples, batch_size=chunk_rows(model)
        )
    return result.to_dict()


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    c = result["classification"]
    return {
        "f1": c["f1_score"],
        "precision": c["precision"],
        "recall": c["recall"],
        "accuracy": c["accuracy"],
        "mcc": result["mcc"],
        "uniqueness": result["uniqueness"],
        "explained_variance": result["explained_variance"],
        "l0": result["sae_l0"],
        "true_l0": result["true_l0"],
        "dead_latents": result["dead_latents"],
        "shrinkage": result["shrinkage"],
    }


def target_l0(sae: Any, k: int | None) -> int:
    """The L0 an SAE is matched to: its spec's k (the train stage's), else the k the SAE carries itself
    (a saepipe coder's, a sae-lens TopK's); a JumpReLU saved by sae-lens carries none."""
    if k is not None:
        return k
    inner = getattr(sae, "sae", sae)
    own = inner.coder.k if hasattr(inner, "coder") else getattr(inner.cfg, "k", None)
    if own is None:
        raise ValueError("match_l0_samples: the SAE records no k to match its L0 to; set evals.synthetic.match_l0_samples: null")
    return int(own)


def calibration_record(cal: Calibration, target: int, n: int, seed: int) -> dict[str, Any]:
    return {"target_l0": target, "samples": n, "seed": seed, **dataclasses.asdict(cal)}


def evaluate(prepared: Prepared, sae_folder: Path, env: EvalEnv, p: SyntheticConfig) -> tuple[SyntheticEvalOutput, dict[str, Any]]:
    """``p.loo_tau`` None: the SAE's own inference ("plain"); a number: leave-one-out pruning ("loo").
    ``p.match_l0_samples`` set: scored at the fitted thresholds, then again with them scaled to L0 = k
    (when the SAE has thresholds to scale); the matched scores are the reported ones."""
    spec = env.synthetic
    model = env.synthetic_model()
    sae, loader = load_sae_for_eval(sae_folder, p.loo_tau, model.device)  # beside the samples it is scored on
    eval_seed = derive_seed(spec.seed, "eval")
    result = score(sae, model, spec.eval_samples, eval_seed)
    fitted = flat_metrics(result)
    metrics, calibration = fitted, None
    if p.match_l0_samples is not None:
        target = target_l0(sae, env.sae_k)
        seed = derive_seed(spec.seed, "calibrate")  # its own stream: never the scored samples
        x, _ = sample(model, p.match_l0_samples, seed)
        cal = calibrate(sae, x, target, chunk_rows(model))
        calibration = calibration_record(cal, target, p.match_l0_samples, seed)
        if cal.factor not in (None, 1.0):
            result = score(sae, model, spec.eval_samples, eval_seed)
            metrics = flat_metrics(result)
    variant = "plain" if p.loo_tau is None else "loo"
    output = SyntheticEvalOutput(
        metrics=metrics,
        fitted_metrics=fitted,
        calibration=calibration,
        variant=variant,
        loo_tau=p.loo_tau,
        eval_samples=spec.eval_samples,
        sae_loader=loader,
        sae_id=env.label,
        d_sae=int(sae.W_dec.shape[0]),
        num_features=model.cfg.num_features,
        sae_lens_result=result,
    )
    return output, {"variant": variant, **extract(output.model_dump())}
