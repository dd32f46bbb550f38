"""Unlearning's per-SAE half: feature sparsity from the cached corpus activations, SAEBench's latent
selection, then per setting a clamped pass over the kept questions it can change (this needs the model;
``setting.py`` says what is skipped and why the score stays SAEBench's)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pandas as pd
from sae_bench.evals.unlearning.eval_output import UnlearningEvalOutput
from sae_bench.evals.unlearning.main import get_unlearning_scores
from sae_bench.evals.unlearning.utils.feature_activation import get_top_features

from evals.contract import EvalEnv, Prepared
from evals.unlearning.config import UnlearningParams
from evals.unlearning.corpus import feature_sparsity
from evals.unlearning.data import HUB_FORGET
from evals.unlearning.output import RETAIN_ACCURACY_BAR, build_output
from evals.unlearning.prompts import answer_token_ids
from evals.unlearning.setting import SettingAnswers, answer_setting, reach
from evals.unlearning.stored import MCQ_HEAD, KeptQuestion, kept_questions
from pipeline.models.read_layout import weights_stored_as_read


def sweep(p: UnlearningParams, top_by_threshold: dict[float, np.ndarray]) -> list[dict[str, Any]]:
    """SAEBench's settings in its order: per retain threshold, ``itertools.product`` of the selected
    latent lists (top n for each n) and the multipliers (``generate_ablate_params_list``)."""
    out = []
    for thr in p.retain_thresholds:
        for n, mult in itertools.product(p.n_features_list, p.multipliers):
            feats = [int(f) for f in top_by_threshold[thr][:n]]
            out.append({"retain_threshold": thr, "n_features": n, "features": feats, "multiplier": mult})
    return out


def metrics_rows(meta: dict[str, Any], qs: list[KeptQuestion], settings: list[dict[str, Any]],
                 answers: list[SettingAnswers], layer: int) -> pd.DataFrame:  # fmt: skip
    """SAEBench's ``get_metrics_df`` rows: per setting the accuracy on each set, the pooled retain accuracy
    (``all_side_effects_mcq``), and the forget accuracy also under SAEBench's column name ``wmdp-bio``.
    A setting that stopped at the retain bar has no per-set accuracies and its retain upper bound."""
    names = [meta["forget"], *meta["retain"]]
    datasets = np.array([q.dataset for q in qs])
    rows = []
    for s, a in zip(settings, answers, strict=True):
        row: dict[str, Any] = dict.fromkeys(names, np.nan)  # NaN: not computed (the table stays numeric)
        if a.stopped:
            row["all_side_effects_mcq"] = a.retain_at_most
        else:
            ok = np.array(a.correct, dtype=float)
            row.update({name: float(ok[datasets == d].mean()) for d, name in enumerate(names) if (datasets == d).any()})
            row["all_side_effects_mcq"] = float(ok[datasets > 0].mean())
        row[HUB_FORGET] = row[meta["forget"]]
        row.update(layer=layer, retain_thres=s["retain_threshold"], n_features=s["n_features"],
                   n_features_selected=len(s["features"]), multiplier=s["multiplier"],
                   stopped_at_retain_bar=a.stopped, questions_run=a.run)  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(
    prepared: Prepared, sae: Any, env: EvalEnv, p: UnlearningParams
) -> tuple[UnlearningEvalOutput, dict[str, float]]:
    """Sparsity from the cached corpus activations, latent selection, then per setting an intervened pass
    over the kept questions the clamp can change, retain first (this needs the model: the clamp changes
    everything after the hook)."""
    started = time.perf_counter()
    meta = prepared.meta
    sae_hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if sae_hook is not None and sae_hook != meta["hook"]:
        raise ValueError(f"evals.unlearning: the SAE reads {sae_hook!r} but the prepared data is for {meta['hook']!r}")
    forget_sp, retain_sp = (feature_sparsity(prepared, name, sae) for name in ("forget", "retain"))
    top = {thr: get_top_features(forget_sp, retain_sp, retain_threshold=thr) for thr in p.retain_thresholds}
    settings = sweep(p, top)
    model, tokenizer = env.model()
    answer_ids = answer_token_ids(tokenizer) if meta["scoring"] == "letter" else None
    head_acts = prepared.tensor(MCQ_HEAD) if meta["head_length"] else None
    qs = kept_questions(prepared)
    first_block = meta["first_block_after_hook"]
    device, dtype = model.cfg.device, model.cfg.dtype
    latents = sorted({f for s in settings for f in s["features"]})
    reached = None if p.full_sweep else reach(sae, head_acts, qs, latents, device, dtype)
    done: dict[tuple[tuple[int, ...], int], SettingAnswers] = {}
    answers = []
    suspects: list[int] = []  # retain questions earlier settings got wrong, the latest setting's first
    with env.reporter.bar(f"unlearning {env.label}", total=len(settings), unit="setting") as bar, \
            weights_stored_as_read(model, first_block):  # fmt: skip
        for s in settings:
            key = (tuple(s["features"]), s["multiplier"])
            if key not in done:  # n larger than the candidates repeats a setting; none selected changes nothing
                touched = reached.touched(s["features"]) if reached is not None else None
                done[key] = SettingAnswers([True] * len(qs), 0) if not s["features"] else answer_setting(
                    model, sae, head_acts, qs, s["features"], s["multiplier"], first_block, answer_ids, touched,
                    RETAIN_ACCURACY_BAR, suspects,
                )  # fmt: skip
            a = done[key]
            broke = [i for i, ok in enumerate(a.correct) if ok is False and qs[i].dataset > 0]
            suspects = broke + [i for i in suspects if i not in broke]
            answers.append(a)
            state = (f"retain < {RETAIN_ACCURACY_BAR} after {a.run} questions" if a.stopped else
                     f"forget acc {np.mean([c for c, q in zip(a.correct, qs, strict=True) if q.dataset == 0]):.2f}")
            bar.advance(1, extra=f"n={s['n_features']} x{s['multiplier']}: {state}")
    df = metrics_rows(meta, qs, settings, answers, env.model_spec.layer)
    score = float(get_unlearning_scores(df))  # SAEBench's rule; adds its unlearning_effect_mmlu_0_99 column
    qualifying = df[df["all_side_effects_mcq"] >= RETAIN_ACCURACY_BAR]
    best = qualifying.loc[qualifying[HUB_FORGET].idxmin()] if len(qualifying) else None
    summary = {
        "unlearning_score": round(score, 4),
        "forget_accuracy_at_best": round(float(best[HUB_FORGET]), 4) if best is not None else 1.0,
        "retain_accuracy_at_best": round(float(best["all_side_effects_mcq"]), 4) if best is not None else 1.0,
        "settings_within_retain_bar": float(len(qualifying)),
        "settings": float(len(df)),
        "settings_stopped_at_retain_bar": float(df["stopped_at_retain_bar"].sum()),
        "questions_run": float(df["questions_run"].sum()),
        "forget_questions": float(meta["questions"][meta["forget"]]["kept"]),
        "retain_questions": float(sum(meta["questions"][n]["kept"] for n in meta["retain"])),
        "eval_seconds": round(time.perf_counter() - started, 2),
    }
    return build_output(p, env, sae, meta, df, score, top, forget_sp, retain_sp), summary
