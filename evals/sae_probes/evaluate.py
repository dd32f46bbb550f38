"""Per SAE: encode the cached activations, rank latents, fit a tuned probe per k (sae-probes' run_sae_eval)."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from sae_bench.evals.sparse_probing_sae_probes.eval_config import (
    SparseProbingSaeProbesEvalConfig,
)
from sae_bench.evals.sparse_probing_sae_probes.eval_output import (
    SaeProbesLlmMetrics,
    SaeProbesMetricCategories,
    SaeProbesResultDetail,
    SaeProbesSaeMetrics,
    SparseProbingSaeProbesEvalOutput,
)

from evals.common import saebench_output
from evals.contract import EvalEnv, Prepared
from evals.sae_probes.config import SaeProbesConfig
from evals.sae_probes.prepare import METRICS, quiet_fit


@torch.no_grad()
def encode(sae: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """sae-probes' ``generate_sae_activations_normal``: encode in batches, float32 on CPU."""
    return torch.cat([sae.encode(x[i : i + batch_size]).cpu().float() for i in range(0, len(x), batch_size)])


def probe_sae(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, p: SaeProbesConfig
) -> dict[int, dict[str, Any]]:
    """sae-probes' ``run_sae_eval`` loop: rank latents once, then a tuned logistic probe per k."""
    from sae_probes.run_sae_evals import get_sorted_indices, mean_act_normalization
    from sae_probes.utils_training import find_best_reg

    order = get_sorted_indices(x_train, y_train, mean_act_normalization)
    out = {}
    for k in p.ks:
        top = order[:k]
        xtr, xte = x_train[:, top], x_test[:, top]
        if p.binarize:
            xtr, xte = xtr != 0, xte != 0
        res = quiet_fit(find_best_reg, xtr, y_train, xte, y_test, n_jobs=-1, parallel=False, penalty=p.reg_type, seed=p.seed)
        out[k] = {**{m: float(getattr(res.metrics, v)) for m, v in METRICS.items()}, "indices": top.tolist()}
    return out


def evaluate(
    prepared: dict[str, Prepared], sae: Any, env: EvalEnv, p: SaeProbesConfig
) -> tuple[SparseProbingSaeProbesEvalOutput, dict[str, Any]]:
    started = time.perf_counter()
    details: list[SaeProbesResultDetail] = []
    per_dataset: dict[str, dict[int, dict[str, Any]]] = {}
    with env.reporter.bar(f"sae-probes {env.label}", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            prep = prepared[name]
            t = {f"{s}/{kind}": prep.tensor(f"{name}/{s}/{kind}") for s in ("train", "test") for kind in ("acts", "labels")}
            x_train, x_test = encode(sae, t["train/acts"], p.batch_size), encode(sae, t["test/acts"], p.batch_size)
            results = probe_sae(x_train, t["train/labels"], x_test, t["test/labels"], p)
            per_dataset[name] = results
            flat = {f"sae_top_{k}_{m}": r[m] for k, r in results.items() for m in METRICS}
            llm = {f"llm_{m}": v for m, v in prep.meta[name]["llm"].items()}
            by_k = {k: {m: r[m] for m in METRICS} for k, r in results.items()}
            details.append(SaeProbesResultDetail(dataset_name=name, sae_metrics_by_k=by_k, **llm, **flat))
            bar.advance(1, extra=f"{name}: top-{p.ks[0]} acc {results[p.ks[0]]['test_accuracy']:.3f}")

    def mean(key: str) -> float:
        return float(np.mean([getattr(d, key) for d in details]))

    sae_metrics = {f"sae_top_{k}_{m}": mean(f"sae_top_{k}_{m}") for k in p.ks for m in METRICS}
    llm_metrics = {f"llm_{m}": mean(f"llm_{m}") for m in METRICS}
    config = SparseProbingSaeProbesEvalConfig(
        model_name=env.model_spec.name, random_seed=p.seed, dataset_names=list(p.datasets), reg_type=p.reg_type,
        setting="normal", ks=list(p.ks), binarize=p.binarize, results_path="(not used: results are this JSON)",
        model_cache_path=None, include_llm_baseline=True, baseline_method="logreg",
    )  # fmt: skip
    output = saebench_output(
        SparseProbingSaeProbesEvalOutput,
        config,
        sae,
        env,
        eval_result_metrics=SaeProbesMetricCategories(llm=SaeProbesLlmMetrics(**llm_metrics), sae=SaeProbesSaeMetrics(**sae_metrics)),
        eval_result_details=details,
        sae_metrics_by_k={k: {m: sae_metrics[f"sae_top_{k}_{m}"] for m in METRICS} for k in p.ks},
        eval_result_unstructured={
            "data_source": f"sae-probes {version('sae-probes')} binary datasets shipped in the wheel (real data)",
            "sizes": {n: {"num_train": prepared[n].meta[n]["num_train"], "num_test": prepared[n].meta[n]["num_test"]} for n in p.datasets},
            "max_seq_len": p.max_seq_len,
            "selected_latents": {n: {k: r["indices"] for k, r in res.items()} for n, res in per_dataset.items()},
        },
    )
    summary = {"llm_test_accuracy": round(llm_metrics["llm_test_accuracy"], 4)}
    summary |= {f"sae_top_{k}_test_accuracy": round(sae_metrics[f"sae_top_{k}_test_accuracy"], 4) for k in p.ks}
    summary["probe_seconds"] = round(time.perf_counter() - started, 2)
    return output, summary
