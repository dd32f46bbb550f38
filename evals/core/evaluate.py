"""Per SAE: SAEBench's core metrics at the cost of the SAE and the model's tail.

Reconstruction, sparsity, shrinkage, density and weight metrics: sae-bench's own ``run_evals`` (CE/KL
off) on prep's cached hook activations (``replay.py``). CE loss and KL: the SAE spliced in at the hook
and only the blocks after it run (``downstream.py``), against prep's clean and zero-ablated passes.
The output is sae-bench's ``CoreEvalOutput``, assembled by its own ``save_single_eval_result``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from sae_bench.evals.core.eval_config import CoreEvalConfig
from sae_bench.evals.core.main import (
    calculate_misc_metrics,
    replace_nans_with_negative_one,
    run_evals,
    save_single_eval_result,
)

from evals.common import saebench_version
from evals.contract import EvalEnv, Prepared
from evals.core.config import CoreConfig
from evals.core.downstream import downstream_metrics
from evals.core.output import OUTPUT, RESULT_FILE
from evals.core.prepare import ACTS, TOKENS
from evals.core.replay import CachedBatches


def eval_config(env: EvalEnv, p: CoreConfig, dataset: str, context_size: int) -> CoreEvalConfig:
    return CoreEvalConfig(
        model_name=env.model_spec.name,
        llm_dtype=env.model_spec.dtype,
        batch_size_prompts=p.batch_size_prompts,
        n_eval_reconstruction_batches=p.n_reconstruction_batches,
        n_eval_sparsity_variance_batches=p.n_sparsity_batches,
        dataset=dataset,
        context_size=context_size,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True,
        exclude_special_tokens_from_reconstruction=True,
    )


def saebench_output(eval_cfg: CoreEvalConfig, metrics: dict[str, Any], feature_metrics: dict[str, Any], sae: Any,
                    env: EvalEnv) -> OUTPUT:  # fmt: skip
    """The output object sae-bench's ``save_single_eval_result`` writes, built by that very function
    (it assembles the schema from run_evals' flat dicts) and read back."""
    metrics = {**metrics, "misc_metrics": calculate_misc_metrics(feature_metrics)}
    result = replace_nans_with_negative_one(
        {"eval_cfg": eval_cfg, "metrics": metrics, "feature_metrics": feature_metrics, "sae_set": env.run_name, "sae_id": env.label}
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / RESULT_FILE
        save_single_eval_result(
            result,
            eval_instance_id=str(uuid.uuid4()),
            sae_lens_version=sae.cfg.metadata.sae_lens_version or "",
            sae_bench_commit_hash=saebench_version(),
            json_path=str(path),
            sae=sae,
        )
        return TypeAdapter(OUTPUT).validate_python(json.loads(path.read_text()))


def summary(output: OUTPUT) -> dict[str, Any]:
    m = output.eval_result_metrics
    return {
        "ce_loss_score": m.model_performance_preservation.ce_loss_score,
        "explained_variance": m.reconstruction_quality.explained_variance,
        "l0": m.sparsity.l0,
    }


def evaluate(prepared: Prepared, sae: Any, env: EvalEnv, p: CoreConfig) -> tuple[OUTPUT, dict[str, Any]]:
    model, _ = env.model()
    hook, device = env.model_spec.hook, env.model_spec.device
    eval_cfg = eval_config(env, p, prepared.meta["dataset"], prepared.meta["context_size"])
    b = p.batch_size_prompts
    cached = CachedBatches(prepared.batches(TOKENS, b), prepared.batches(ACTS, b), hook, b, eval_cfg.context_size, device)
    without_model = dataclasses.replace(eval_cfg, compute_kl=False, compute_ce_loss=False)
    with env.reporter.bar(f"core eval {env.label}", total=2, unit="part") as bar, torch.no_grad():
        metrics, feature_metrics = run_evals(sae, cached, cached, without_model, ignore_tokens=set(prepared.meta["ignore_tokens"]))
        bar.advance(1)
        metrics.update(downstream_metrics(prepared, sae, model, hook, p, device))
        bar.advance(1)
    output = saebench_output(eval_cfg, metrics, feature_metrics, sae, env)
    return output, summary(output)
