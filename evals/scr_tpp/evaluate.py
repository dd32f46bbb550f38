"""SCR's and TPP's per-SAE half: encode the cached activations, ablate each run's latents, score the
probes, average the runs as SAEBench does (the model is never loaded)."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from sae_bench.evals.scr_and_tpp import main as saebench_scr_tpp
from sae_bench.evals.scr_and_tpp.eval_output import ScrEvalOutput, TppEvalOutput
from sae_bench.sae_bench_utils import general_utils

from evals.common import quiet
from evals.contract import EvalEnv, Prepared
from evals.scr_tpp.ablation import encode_zero, load_split, score_run
from evals.scr_tpp.config import ScrTppParams
from evals.scr_tpp.output import build_output


def evaluate(
    kind: Literal["scr", "tpp"], prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams
) -> tuple[ScrEvalOutput | TppEvalOutput, dict[str, float]]:
    """Scores every run of ``kind`` and averages them as SAEBench's ``run_eval_single_sae`` does."""
    started = time.perf_counter()
    runs = [r for r in prepared.meta["runs"] if r["kind"] == kind]
    if not runs:
        raise ValueError(f"{kind}: nothing to score: column1_vals_lookup has no class pair for {params.dataset_names}")
    if prepared.meta["hook"] != env.model_spec.hook:
        raise ValueError(f"{kind}: prepared at {prepared.meta['hook']!r}, the model spec hooks {env.model_spec.hook!r}")
    d_sae = int(sae.W_dec.shape[0])
    n_values = [n for n in params.n_values if n <= d_sae]  # SAEBench asserts n <= d_sae
    results: dict[str, dict[str, float]] = {}
    per_class: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    with env.reporter.bar(f"{kind} {env.label}", total=len(runs) + 1, unit="step") as bar:
        bar.advance(0, extra="encoding the cached activations")
        data = {f"{kind}_{s}": load_split(prepared, f"{kind}_{s}", sae, params) for s in ("train", "test")}
        bar.advance(1, extra="ablations")
        for run in runs:
            accs, latents = score_run(run, prepared, data, sae, n_values, params)
            clean = run["clean_accuracies"]
            if kind == "scr":
                processed = quiet(saebench_scr_tpp.get_scr_plotting_dict, accs, clean)
            else:
                own = {k: clean[k] for k in run["chosen"]}
                processed, per_class[run["dataset"]] = quiet(saebench_scr_tpp.create_tpp_plotting_dict, accs, own)
            results[f"{run['name']}_results"] = processed
            extras[run["name"]] = {"clean_accuracies": clean, "ablated_accuracies": accs, "ablated_latents": latents,
                                   "n_prompts": run["n_prompts"]}  # fmt: skip
            bar.advance(1, extra=run["name"])
    averaged = general_utils.average_results_dictionaries(results, [r["name"] for r in runs])
    unstructured: dict[str, Any] = {
        "data_source": prepared.meta["data_source"],
        "runs": extras,
        "skipped_n_values": [n for n in params.n_values if n > d_sae],
        "latents_active_at_masked_positions": int((encode_zero(sae) > 0).sum()),
        "n_unique_prompts": prepared.meta["n_unique_prompts"],
        "prepend_bos": prepared.meta["prepend_bos"],
        "deviations": "test draws fixed per run and reused for every ablation; prompts shared by class lists run "
        "once; BOS prepended when the SAE's training contexts had it; see evals/scr_tpp/README.md",
        "seconds": round(time.perf_counter() - started, 2),
    }
    if kind == "tpp":
        unstructured["per_dataset_class_results"] = per_class  # what SAEBench puts in unstructured
    output = build_output(kind, env, params, sae, averaged, results, unstructured)
    if kind == "scr":
        headline = [f"scr_metric_threshold_{n}" for n in n_values]
    else:
        parts = ("total_metric", "intended_diff_only", "unintended_diff_only")
        headline = [f"tpp_threshold_{n}_{m}" for n in n_values for m in parts]
    summary = {k: round(float(averaged[k]), 4) for k in headline if _finite(averaged.get(k))}
    return output, summary


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(x)


def evaluate_scr(prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams) -> tuple[ScrEvalOutput, dict[str, float]]:
    """SCR for one SAE on ``prepare``'s activations and probes (never loads the model)."""
    return evaluate("scr", prepared, sae, env, params)  # type: ignore[return-value]


def evaluate_tpp(prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams) -> tuple[TppEvalOutput, dict[str, float]]:
    """TPP for one SAE on ``prepare``'s activations and probes (never loads the model)."""
    return evaluate("tpp", prepared, sae, env, params)  # type: ignore[return-value]
