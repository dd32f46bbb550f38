"""Per SAE: pool its latents over the cached activations, probe them, write SAEBench's JSON."""

from __future__ import annotations

import time
from typing import Any

import torch
from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
from sae_bench.evals.sparse_probing.eval_output import (
    SparseProbingEvalOutput,
    SparseProbingLlmMetrics,
    SparseProbingMetricCategories,
    SparseProbingResultDetail,
    SparseProbingSaeMetrics,
)
from sae_bench.sae_bench_utils import activation_collection, general_utils

from evals.common import saebench_output
from evals.contract import EvalEnv, Prepared
from evals.sparse_probing.config import SparseProbingConfig
from evals.sparse_probing.data import MAX_ROWS, data_source
from evals.sparse_probing.probes import (
    SPLITS,
    acts_name,
    class_means,
    in_saebench_order,
    sae_probes,
    selected_latents,
)


@torch.no_grad()
def sae_pooled(prepared: Prepared, name: str, split: str, sae: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """Pooled SAE latents per class, streamed batch by batch from the cached activations
    (SAEBench's ``get_sae_meaned_activations``: latents at masked tokens are multiplied away)."""
    out = {}
    for cls in prepared.meta[name]["classes"]:
        parts = [
            activation_collection.get_sae_meaned_activations({"x": acts}, sae, batch_size)["x"]
            for acts in prepared.batches(acts_name(name, split, cls), batch_size)
        ]
        out[cls] = torch.cat(parts)
    return out


def evaluate(
    prepared: dict[str, Prepared], sae: Any, env: EvalEnv, p: SparseProbingConfig
) -> tuple[SparseProbingEvalOutput, dict[str, Any]]:
    started = time.perf_counter()
    dataset_results: dict[str, dict[str, float]] = {}
    per_class_results: dict[str, dict[str, dict[str, float]]] = {}
    extras: dict[str, dict[str, Any]] = {}
    with env.reporter.bar(f"sparse probing {env.label}", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            prep = prepared[name]
            facts = prep.meta[name]
            sae_train, sae_test = (sae_pooled(prep, name, split, sae, p.batch_size) for split in SPLITS)
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(prep.tensor(f"{name}/rng_after_llm_probes"))
                sae_side = sae_probes(sae_train, sae_test, list(p.k_values))
            per_class = in_saebench_order(facts["llm_per_class"], sae_side)
            key = f"{name}_results"  # SAEBench's naming of per-dataset entries
            dataset_results[key], per_class_results[key] = class_means(per_class), per_class
            extras[name] = {
                "llm_sklearn_test_accuracy": facts["llm_sklearn_test_accuracy"],
                "sae_top_k_latents": selected_latents(sae_train, list(p.k_values)),
                "n_train_per_class": facts["n_train_per_class"],
                "n_test_per_class": facts["n_test_per_class"],
            }
            first = p.k_values[0]
            bar.advance(1, extra=f"{name}: sae top-{first} {dataset_results[key][f'sae_top_{first}_test_accuracy']:.3f}")

    averaged = general_utils.average_results_dictionaries(dataset_results, list(p.datasets))
    eval_cfg = SparseProbingEvalConfig(
        random_seed=p.seed,
        dataset_names=list(p.datasets),
        probe_train_set_size=p.n_train,
        probe_test_set_size=p.n_test,
        context_length=p.context_size,
        sae_batch_size=p.batch_size,
        llm_batch_size=p.batch_size,
        llm_dtype=env.model_spec.dtype,
        model_name=env.model_spec.name,
        k_values=list(p.k_values),
        lower_vram_usage=False,
    )
    output = saebench_output(
        SparseProbingEvalOutput,
        eval_cfg,
        sae,
        env,
        eval_result_metrics=SparseProbingMetricCategories(
            llm=SparseProbingLlmMetrics(**{k: v for k, v in averaged.items() if k.startswith("llm_")}),
            sae=SparseProbingSaeMetrics(**{k: v for k, v in averaged.items() if k.startswith("sae_")}),
        ),
        eval_result_details=[
            SparseProbingResultDetail(dataset_name=key, **res) for key, res in dataset_results.items()
        ],
        eval_result_unstructured={
            "data_source": data_source(list(p.datasets)),
            "sampling": f"sae-probes get_train_test_indices (balanced, disjoint, first {MAX_ROWS} rows), seed {p.seed}",
            "per_class_results": per_class_results,
            "per_dataset_extras": extras,
        },
    )
    summary: dict[str, Any] = {"datasets": len(p.datasets)}
    for key in ("llm_test_accuracy", "sae_test_accuracy"):
        summary[key] = round(averaged[key], 4)
    for k in p.k_values:
        summary[f"llm_top_{k}_test_accuracy"] = round(averaged[f"llm_top_{k}_test_accuracy"], 4)
        summary[f"sae_top_{k}_test_accuracy"] = round(averaged[f"sae_top_{k}_test_accuracy"], 4)
    summary["probe_seconds"] = round(time.perf_counter() - started, 2)
    return output, summary
