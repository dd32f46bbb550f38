"""Autointerp's per-SAE half: sample latents, stream their contexts from the cached activations, ask the
judge (explain, then score), embed, classify tiers. The model is never loaded."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sae_bench.evals.autointerp.eval_output import AutoInterpEvalOutput

from evals.autointerp import embedder, prompts, scorers, tiers
from evals.autointerp.config import AutointerpConfig
from evals.autointerp.contexts import (
    LatentContexts,
    firing_counts,
    gather_contexts,
    sample_latents,
    split_examples,
)
from evals.autointerp.judge_client import Judge, JudgeError, ask_parsed
from evals.autointerp.output import build_output, summary_of
from evals.contract import EvalEnv, Prepared

JUDGED = ("saebench", "detection", "fuzzing")


def judge_latent(judge: Judge, ctx: LatentContexts, p: AutointerpConfig, str_tokens: dict[str, str]) -> dict[str, Any]:
    """SAEBench's explain + detect for one latent, then the delphi-style judge scorers on the same held-out set."""
    generation, scoring = split_examples(ctx, p)
    thr = ctx.act_threshold
    rng = random.Random(f"{p.random_seed}:{ctx.latent}:score")
    raw = judge.ask(prompts.saebench_explain(generation, thr, str_tokens, p), p.max_tokens_in_explanation)
    explanation = prompts.parse_explanation(raw)
    # SAEBench labels its random windows inactive whatever the latent does there (their activations are not kept)
    is_active = [w.kind != "random" and any(prompts.active(w, thr)) for w in scoring]
    predictions, answer, _ = ask_parsed(judge, prompts.saebench_score(explanation, scoring, str_tokens, p, rng),
                                        p.max_tokens_in_prediction, prompts.parse_saebench_predictions,
                                        prompts.SAEBENCH_ANSWER_CHARS)  # fmt: skip
    out: dict[str, Any] = {
        "latent": ctx.latent, "explanation": explanation, "predictions": predictions,
        "correct seqs": [i for i, a in enumerate(is_active, start=1) if a],
        "score": None if predictions is None else scorers.saebench_accuracy(predictions, is_active),
        "logs": "\n".join(f"{i + 1}. {prompts.example_text(w, str_tokens, prompts.active(w, thr))}"
                          for i, w in enumerate(generation)),
        "raw_answers": {"explanation": raw, "saebench": answer},
    }  # fmt: skip
    if predictions is not None:
        pred = [int(i in predictions) for i in range(1, len(scoring) + 1)]
        truth = [int(a) for a in is_active]
        out["score_null"] = scorers.shuffled_null(pred, truth, p.n_null_shuffles, rng,
                                                  score=lambda a, b: sum(x == y for x, y in zip(a, b)) / len(b))  # fmt: skip
    examples = scorers.delphi_examples(scoring, ctx.negatives, rng)
    held = {"detection": scorers.detection_set(examples, thr, str_tokens)}
    if "fuzzing" in p.scorers:
        held["fuzzing"] = scorers.fuzzing_set(examples, thr, str_tokens, rng)
    systems = {"detection": prompts.DELPHI_DETECTION, "fuzzing": prompts.DELPHI_FUZZING}
    for name in ("detection", "fuzzing"):
        if name not in p.scorers:
            continue
        h, n = held[name], len(held[name].texts)
        labels, answer, _ = ask_parsed(judge, prompts.delphi_prompt(systems[name], explanation, h.texts), 3 * n + 10,
                                       lambda a, n=n: prompts.parse_binary_list(a, n), prompts.DELPHI_ANSWER_CHARS)  # fmt: skip
        out["raw_answers"][name] = answer
        out[name] = None if labels is None else scorers.balanced_accuracy(labels, h.labels)
        out[f"{name}_null"] = None if labels is None else scorers.shuffled_null(labels, h.labels, p.n_null_shuffles, rng)
    out["n_negatives"] = len(ctx.negatives)
    out["_held_out"] = held["detection"]
    return out


def check_format(results: dict[int, dict[str, Any]], p: AutointerpConfig, model: str) -> dict[str, int]:
    """Unparsable answers per judge scorer; too many is the judge's fault and fails the stage in one line."""
    keys = [("saebench", "score")] + [(s, s) for s in ("detection", "fuzzing") if s in p.scorers]
    bad = {name: sum(r[key] is None for r in results.values()) for name, key in keys}
    asked = len(results) * len(keys)
    if asked and sum(bad.values()) / asked > p.max_unparsable_frac:
        example = next((r["raw_answers"].get(n) for r in results.values() for n, k in keys if r[k] is None), "")
        raise JudgeError(
            f"evals.autointerp: the judge {model} answered {sum(bad.values())}/{asked} scoring prompts in the wrong "
            f"format after {p.format_retries} retries (e.g. {example[:60]!r}), over max_unparsable_frac="
            f"{p.max_unparsable_frac}; use a stronger judge (judge_model) or raise evals.autointerp.max_unparsable_frac"
        )
    return bad


def evaluate(prepared: Prepared, sae: Any, env: EvalEnv, params: AutointerpConfig) -> tuple[AutoInterpEvalOutput, dict[str, float]]:
    started = time.perf_counter()
    p, meta = params, prepared.meta
    str_tokens = meta["str_tokens"]
    name = env.label or "sae"
    with env.reporter.bar(f"autointerp {name}", total=3, unit="step") as bar:
        bar.advance(0, extra="sampling latents")
        counts, n_unmasked = firing_counts(prepared, sae, p)
        latents = sample_latents(counts, n_unmasked, meta["tokens"], p)
        contexts = gather_contexts(prepared, sae, latents, p)
        bar.advance(1, extra=f"judging {len(contexts)} latents")
        with Judge(p) as judge, ThreadPoolExecutor(p.judge_concurrency) as pool:
            done = list(pool.map(lambda c: judge_latent(judge, c, p, str_tokens), contexts.values()))
            judge_report = judge.report()
        results = {r["latent"]: r for r in done}
        unparsable = check_format(results, p, judge.model_id)
        bar.advance(1, extra="embedding, tiers")
        held = {k: r.pop("_held_out") for k, r in results.items()}
        if "embedding" in p.scorers and results:
            explanations = {k: r["explanation"] for k, r in results.items()}
            for k, (own, null) in scorers.embedding_scores(explanations, held, embedder.embed, p.random_seed).items():
                results[k]["embedding"], results[k]["embedding_null"] = own, null

        def text(ids: list[int]) -> str:
            return "".join(str_tokens[str(t)] for t in ids)

        baseline = tiers.correlation(tiers.baseline_windows([w for c in contexts.values() for w in c.random]),
                                     p.tier_window, text, embedder.embed)  # fmt: skip
        for k, c in contexts.items():
            results[k]["correlation"] = tiers.correlation(c.top, p.tier_window, text, embedder.embed)
            results[k]["tier"] = tiers.tier(results[k]["correlation"], baseline, p.tier_margin)
        bar.advance(1)
    extras = {"judge": judge_report, "unparsable": unparsable, "tier_baseline": baseline,
              "n_latents_sampled": len(latents), "n_alive": int((counts.double() / max(1, n_unmasked) * meta["tokens"]
                                                                  > p.dead_latent_threshold).sum()),
              "seconds": time.perf_counter() - started}  # fmt: skip
    output = build_output(p, env, sae, meta, results, contexts, extras)
    return output, summary_of(output, extras)
