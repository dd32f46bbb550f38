"""Stage `eval_core`: SAEBench's core metrics, computed by sae-bench's own functions on our model object.

sae-bench's ``run_evals`` takes a model and an ActivationsStore, so we hand it the already-loaded model
and a store over held-out contexts of the run's corpus (documents the SAE never trained on). Metrics:
explained variance, MSE, cosine similarity, L0/L1, shrinkage (l2 ratio), CE loss recovered and KL with
the SAE spliced in at the hook, feature density and weight-based statistics. The result is written
with sae-bench's ``save_single_eval_result``, so the file is SAEBench's core JSON schema verbatim.

Special tokens (BOS/EOS/pad) are ignored in the sparsity/variance metrics, as sae-bench's own runner
does; BOS positions were also left out of SAE training (``activations.skip_bos``).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import datasets
import torch
from sae_bench.evals.core.eval_config import CoreEvalConfig
from sae_bench.evals.core.main import (
    calculate_misc_metrics,
    replace_nans_with_negative_one,
    run_evals,
    save_single_eval_result,
)
from sae_bench.sae_bench_utils.general_utils import load_and_format_sae
from sae_lens import SAE, ActivationsStore

from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents
from pipeline.models.cache import get_model
from pipeline.stages.context import StageContext

RESULT_FILE = "core.json"


def load_trained_sae(ctx: StageContext, name: str = "sae") -> SAE:
    """The SAE of a train artifact (checksum verified), standardised the way sae-bench's runner does."""
    inp = ctx.stage.inputs[name]
    weights = ctx.store.verified_file(inp.kind, inp.key, "sae/sae_weights.safetensors")
    sae = SAE.load_from_disk(str(weights.parent), device=ctx.cfg.model.device)
    formatted = load_and_format_sae(ctx.cfg.name, sae, ctx.cfg.model.device)
    assert formatted is not None
    return formatted[1]


def heldout_dataset(ctx: StageContext, tokenizer: Any, n_contexts: int) -> datasets.Dataset:
    data = ctx.cfg.data
    stream = token_contexts(documents(data, heldout=True), tokenizer, data.context_size, data.prepend_bos)
    rows = list(itertools.islice(stream, n_contexts))
    if len(rows) < n_contexts:
        raise RuntimeError(
            f"evals.core: the held-out split of {data.name!r} has only {len(rows)} contexts, need {n_contexts}; "
            "lower n_reconstruction_batches / n_sparsity_batches / batch_size_prompts"
        )
    return datasets.Dataset.from_dict({"tokens": rows})


def run(ctx: StageContext) -> dict[str, Any]:
    core = ctx.cfg.evals.core
    model, tokenizer = get_model(ctx.cfg.model)
    sae = load_trained_sae(ctx)
    n_contexts = core.batch_size_prompts * max(core.n_reconstruction_batches, core.n_sparsity_batches)
    store = ActivationsStore.from_sae(
        model,
        sae,
        dataset=heldout_dataset(ctx, tokenizer, n_contexts),
        context_size=ctx.cfg.data.context_size,
        streaming=False,
        store_batch_size_prompts=core.batch_size_prompts,
        device=ctx.cfg.model.device,
    )
    eval_cfg = CoreEvalConfig(
        model_name=ctx.cfg.model.name,
        llm_dtype=ctx.cfg.model.dtype,
        batch_size_prompts=core.batch_size_prompts,
        n_eval_reconstruction_batches=core.n_reconstruction_batches,
        n_eval_sparsity_variance_batches=core.n_sparsity_batches,
        dataset=f"{ctx.cfg.data.source}:{ctx.cfg.data.name} (held-out: every {ctx.cfg.data.holdout_every}th document)",
        context_size=ctx.cfg.data.context_size,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True,
        exclude_special_tokens_from_reconstruction=True,
    )
    ignore = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}
    started = time.perf_counter()
    with ctx.reporter.bar(f"core eval {ctx.stage.label}", total=1, unit="eval") as bar:
        with torch.no_grad():
            metrics, feature_metrics = run_evals(sae, store, model, eval_cfg, ignore_tokens=ignore)
        bar.advance(1)
    metrics["misc_metrics"] = calculate_misc_metrics(feature_metrics)
    result = replace_nans_with_negative_one(
        {
            "eval_cfg": eval_cfg,
            "metrics": metrics,
            "feature_metrics": feature_metrics,
            "sae_set": ctx.cfg.name,
            "sae_id": ctx.stage.label.split(":", 1)[1],
        }
    )
    save_single_eval_result(
        result,
        eval_instance_id=str(uuid.uuid4()),
        sae_lens_version=sae.cfg.metadata.sae_lens_version or "",
        sae_bench_commit_hash="sae-bench==0.6.0",
        json_path=str(ctx.out / RESULT_FILE),
        sae=sae,
    )
    flat = json.loads((ctx.out / RESULT_FILE).read_text())["eval_result_metrics"]
    return {
        "ce_loss_score": flat["model_performance_preservation"]["ce_loss_score"],
        "explained_variance": flat["reconstruction_quality"]["explained_variance"],
        "l0": flat["sparsity"]["l0"],
        "seconds": round(time.perf_counter() - started, 2),
    }
