"""Stage `eval_synthetic`: score a trained SAE against the synthetic model's ground-truth features.

Inputs: "sae" (a train artifact) and "synthetic_model". The metrics are computed by sae-lens's own
`sae_lens.synthetic.eval_sae_on_synthetic_data` on `eval_samples` fresh samples (a seeded stream,
`derive_seed(spec.seed, "eval")`, disjoint from the training shards), so the definitions are
SynthSAEBench's exactly:
  * f1 / precision / recall / accuracy: each latent is assigned its best-|cos| ground-truth feature
    (decoder row vs feature direction); the latent firing is scored as a detector of that feature
    firing; per-latent values are averaged over all latents (undefined -> 0);
  * mcc: Hungarian one-to-one matching of decoder rows and features on |cos|, mean matched |cos|;
  * uniqueness: distinct best-matched features / number of latents;
  * explained_variance, l0 (mean active latents per sample), true_l0, dead_latents (never fired on
    the eval samples), shrinkage (|x_hat| / |x|).
The SAE is loaded with `pipeline.recipes.saving.load_coder` when the artifact has the saepipe coder
file (so LISTA refinement and recipe LOO run as trained), else with `sae_lens.SAE.load_from_disk`.

Variants: params `loo_tau` None -> "plain" (the SAE's own inference, recipe LOO included if the recipe
set it); a number -> "loo": leave-one-out pruning (`pipeline.recipes.loo`) with that tau is applied
to every code before decoding (it replaces a recipe's own LOO tau).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.synthetic import SyntheticModel, eval_sae_on_synthetic_data
from torch import Tensor

from pipeline.recipes.loo import LooPruner, loo_prune
from pipeline.recipes.outputs import Active, Selection
from pipeline.recipes.saving import CODER_FILE, WEIGHTS_FILE, load_coder
from pipeline.stages.context import StageContext
from pipeline.synthetic.model import chunk_rows, derive_seed, device, load_model, seeded

RESULT_FILE = "synthetic.json"
SAE_DIR = "sae"


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


def evaluate(sae: Any, model: SyntheticModel, n_samples: int, seed: int) -> dict[str, Any]:
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


def run(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.cfg.synthetic
    params = ctx.stage.params
    loo_tau = params.get("loo_tau")
    n_samples = int(params.get("eval_samples") or spec.eval_samples)
    inp = ctx.stage.inputs["sae"]
    weights = ctx.store.verified_file(inp.kind, inp.key, f"{SAE_DIR}/{WEIGHTS_FILE}")
    folder = weights.parent
    if (folder / CODER_FILE).exists():
        ctx.store.verified_file(inp.kind, inp.key, f"{SAE_DIR}/{CODER_FILE}")
    on = device()
    sae, loader = load_sae_for_eval(folder, loo_tau, on)
    model = load_model(ctx.input_dir("synthetic_model"), on)
    result = evaluate(sae, model, n_samples, derive_seed(spec.seed, "eval"))
    metrics = flat_metrics(result)
    variant = "plain" if loo_tau is None else "loo"
    payload = {
        "metrics": metrics,
        "variant": variant,
        "loo_tau": loo_tau,
        "eval_samples": n_samples,
        "sae_loader": loader,
        "sae_stage": inp.label,
        "d_sae": int(sae.W_dec.shape[0]),
        "num_features": spec.num_features,
        "sae_lens_result": result,
    }
    (ctx.out / RESULT_FILE).write_text(json.dumps(payload, indent=2))
    return {"variant": variant, **metrics}
