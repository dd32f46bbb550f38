"""Autointerp's result in SAEBench's schema (``AutoInterpEvalOutput``) and what the report takes from it.

``eval_result_unstructured`` holds SAEBench's per-latent records (keyed by latent: explanation, predictions,
correct seqs, score, logs), each with our scorers' numbers, tier and correlation added, plus one key
``saepipe``: the judge (model, tokens, cost, cache), every score with its null and spread, the tier mix
and example latents per tier with their top contexts.

sae-bench is imported inside the functions that build the output: the plan reads ``REPORTED`` from this
module and must not pay for (or need) sae-bench.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from evals.autointerp.config import AutointerpConfig
from evals.common import saebench_output
from pipeline.kinds import Metric, Reported

if TYPE_CHECKING:
    from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig
    from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput

    from evals.autointerp.contexts import LatentContexts
    from evals.contract import EvalEnv

RESULT_FILE = "autointerp.json"
SCORES = ("score", "detection", "fuzzing", "embedding")
"""Per-latent scores: SAEBench's ('score') and the delphi-style ones; each has a '<name>_null'."""
TIERS = ("input", "output", "cross", "obscure")
SMALL_JUDGE_NOTE = (
    "judge SmolLM2-135M-Instruct (local, 135M parameters): these scores exercise the pipeline end to end and "
    "do not rank SAEs; use a strong judge (judge_backend: openai) for numbers to compare"
)


def eval_config(p: AutointerpConfig, env: EvalEnv, meta: dict[str, Any]) -> AutoInterpEvalConfig:
    from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig

    return AutoInterpEvalConfig(
        model_name=env.model_spec.name, n_latents=p.n_latents, dead_latent_threshold=p.dead_latent_threshold,
        random_seed=p.random_seed, dataset_name=meta["dataset"], llm_context_size=p.llm_context_size,
        llm_batch_size=p.llm_batch_size, llm_dtype=env.model_spec.dtype, buffer=p.buffer, no_overlap=p.no_overlap,
        act_threshold_frac=p.act_threshold_frac, total_tokens=meta["tokens"], scoring=True,
        max_tokens_in_explanation=p.max_tokens_in_explanation, use_demos_in_explanation=p.use_demos_in_explanation,
        n_top_ex_for_generation=p.n_top_ex_for_generation, n_iw_sampled_ex_for_generation=p.n_iw_sampled_ex_for_generation,
        n_top_ex_for_scoring=p.n_top_ex_for_scoring, n_random_ex_for_scoring=p.n_random_ex_for_scoring,
        n_iw_sampled_ex_for_scoring=p.n_iw_sampled_ex_for_scoring,
    )  # fmt: skip


def _values(results: dict[int, dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in results.values() if r.get(key) is not None]


TOP_CONTEXTS_SHOWN = 3
"""Top contexts kept per example latent (the report shows them; the judge saw more)."""


def tier_examples(results: dict[int, dict[str, Any]], contexts: dict[int, LatentContexts], n: int,
                  str_tokens: dict[str, str], threshold_of: dict[int, float]) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Up to ``n`` latents per tier (lowest ids first) with explanation, correlation, the activation threshold
    the judge's marks used, and the top contexts as tokens with the latent's activation on each (so the report
    can highlight the max-activating token itself and escape every token)."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in TIERS}
    for latent in sorted(results):
        r = results[latent]
        if len(out[r["tier"]]) < n:
            out[r["tier"]].append({
                "latent": latent, "explanation": r["explanation"], "correlation": r["correlation"],
                "act_threshold": round(threshold_of[latent], 4),
                "top_contexts": [{"tokens": [str_tokens[str(t)] for t in w.tokens], "acts": [round(a, 4) for a in w.acts]}
                                 for w in contexts[latent].top[:TOP_CONTEXTS_SHOWN]],
            })  # fmt: skip
    return out


def build_output(p: AutointerpConfig, env: EvalEnv, sae: Any, meta: dict[str, Any], results: dict[int, dict[str, Any]],
                 contexts: dict[int, LatentContexts], extras: dict[str, Any]) -> AutoInterpEvalOutput:  # fmt: skip
    from sae_bench.evals.autointerp.eval_output import (
        AutoInterpEvalOutput,
        AutoInterpMetricCategories,
        AutoInterpMetrics,
    )

    from evals.autointerp import embedder
    from evals.autointerp.scorers import spread
    from evals.autointerp.tiers import tier_mix

    stats = {name: {"score": spread(_values(results, name), p.n_bootstrap, p.random_seed),
                    "null": spread(_values(results, f"{name}_null"), p.n_bootstrap, p.random_seed)}
             for name in SCORES}  # fmt: skip
    judge = extras["judge"]
    saepipe = {
        "judge": judge,
        "judge_note": SMALL_JUDGE_NOTE if p.judge_backend == "local" else f"judge {judge['model']} at {judge['base_url']}",
        "scores": stats,
        "unparsable_answers": extras["unparsable"],
        "tier_mix": tier_mix({k: r["tier"] for k, r in results.items()}),
        "tier_baseline": extras["tier_baseline"],
        "tier_rule": f"before/after window mean pairwise cosine > random-window baseline + {p.tier_margin} "
                     f"(windows of {p.tier_window} tokens; evals/autointerp/tiers.py)",
        "tier_examples": tier_examples(results, contexts, p.examples_per_tier, meta["str_tokens"],
                                       {k: c.act_threshold for k, c in contexts.items()}),
        "n_latents_sampled": extras["n_latents_sampled"], "n_latents_scored": len(results), "n_alive": extras["n_alive"],
        "data_source": meta["dataset"], "tokens": meta["tokens"], "hook": meta["hook"],
        "sampling": "SAEBench's top / importance-weighted / random windows, streamed over cached activations "
                    "(evals/autointerp/contexts.py); splits and example answers seeded per latent",
        "embedder": embedder.NAME,
    }  # fmt: skip
    mean = stats["score"]["score"]["mean"]
    metrics = AutoInterpMetrics(autointerp_score=math.nan if mean is None else mean,
                                autointerp_std_dev=math.nan if mean is None else stats["score"]["score"]["std"])  # fmt: skip
    unstructured: dict[str, Any] = {str(k): r for k, r in sorted(results.items())}
    unstructured["saepipe"] = saepipe
    return saebench_output(
        AutoInterpEvalOutput, eval_config(p, env, meta), sae, env,
        eval_result_metrics=AutoInterpMetricCategories(autointerp=metrics), eval_result_details=[],
        eval_result_unstructured=unstructured,
    )  # fmt: skip


def extract(result: dict[str, Any]) -> dict[str, float]:
    s = result["eval_result_unstructured"]["saepipe"]
    out: dict[str, float | None] = {"autointerp_score": result["eval_result_metrics"]["autointerp"]["autointerp_score"]}
    out["autointerp_null"] = s["scores"]["score"]["null"]["mean"]
    for name in ("detection", "fuzzing", "embedding"):
        out[name] = s["scores"][name]["score"]["mean"]
        out[f"{name}_null"] = s["scores"][name]["null"]["mean"]
    out |= {f"tier_{t}_frac": s["tier_mix"][t] for t in TIERS}
    asked = s["n_latents_scored"] * max(1, len(s["unparsable_answers"]))
    out["unparsable_frac"] = sum(s["unparsable_answers"].values()) / asked if asked else None
    out["judge_tokens"] = s["judge"]["total_tokens"]  # this SAE's judging, answered now or from the cache
    out["judge_cost_usd"] = s["judge"]["total_cost_usd"]
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(v)}


def summary_of(output: AutoInterpEvalOutput, extras: dict[str, Any]) -> dict[str, float]:
    """The manifest's headline numbers (the report's, plus the judge's request count and the time)."""
    from dataclasses import asdict

    out = extract(asdict(output))
    out |= {"judge_requests": float(extras["judge"]["requests"]), "judge_cache_hits": float(extras["judge"]["cache_hits"]),
            "latents": float(len(output.eval_result_unstructured) - 1), "seconds": extras["seconds"]}  # fmt: skip
    return {k: round(v, 4) for k, v in out.items()}


REPORTED = Reported(
    "Autointerp (LLM judge; the offline default's judge is SmolLM2-135M: exercises the pipeline, does not rank SAEs)",
    RESULT_FILE, extract,
    {
        "autointerp_score": Metric("higher", headline=True), "autointerp_null": Metric(None),
        "detection": Metric("higher"), "detection_null": Metric(None),
        "fuzzing": Metric("higher"), "fuzzing_null": Metric(None),
        "embedding": Metric("higher"), "embedding_null": Metric(None),
        "tier_*_frac": Metric(None), "unparsable_frac": Metric("lower"),
        "judge_tokens": Metric(None), "judge_cost_usd": Metric(None),
    },
)  # fmt: skip
