"""Stage `report`: gather every train and eval result of the run into report.md and summary.json.

One row per SAE, seed and eval variant (``+loo`` for leave-one-out inference). Seeds of one spec are
then summarised as mean, std and a 95% interval (t distribution), and every spec is compared with the
best one on each metric by Welch's t-test over seeds: a value marked ``≈`` is within noise of the best
(p ≥ 0.05, or fewer than two seeds on a side, where no claim can be made). Baselines (trainers ``pca``
and ``random``) are shown in every table, marked, and never win (``report_stats``). Each SAE's training
curves come from its train artifact's log (``report_curves``).
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from pipeline.fsutil import atomic_write_json
from pipeline.stages import report_curves, report_examples, report_html, report_suite
from pipeline.stages.context import StageContext
from pipeline.stages.report_curves import reduce_log
from pipeline.stages.report_facts import (
    FACTS,
    baselines_text,
    differs_text,
    train_facts,
)
from pipeline.stages.report_stats import (
    L0_TOLERANCE,
    beats,
    best_by_metric,
    interval95,
    l0_mismatch,
    marks,
    within_noise,
)

Metrics = dict[str, float]


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def collect(ctx: StageContext) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per SAE × seed × variant) and run-level results (e.g. the probe baseline)."""
    trains: dict[str, dict[str, Any]] = {}
    evals: dict[tuple[str, str], dict[str, Any]] = {}
    run_level: dict[str, Any] = {"missing_inputs": [], "groups": {}, "data_sources": {}, "better": {}, "headline": [],
                                 "training_curves": {}}  # fmt: skip
    for label, inp in ctx.stage.inputs.items():
        if not ctx.store.is_complete(inp.kind, inp.key):
            run_level["missing_inputs"].append(label)  # failed or not run: the rest is still reported
            continue
        manifest = ctx.store.manifest(inp.kind, inp.key)
        if inp.kind == "eval_prep":  # a run-level result an eval declares (`EvalDef.report_prep`)
            run_level[label] = json.loads(ctx.store.verified_file(inp.kind, inp.key, "meta.json").read_text())
            continue
        sae_id = label.split(":", 1)[1]
        if inp.kind == "train":
            trains[sae_id] = train_facts(manifest)
            if "train_log.json" in manifest.get("files", {}):
                log = json.loads(ctx.store.verified_file(inp.kind, inp.key, "train_log.json").read_text())
                if curve := reduce_log(log["steps"], manifest["params"]["batch_size"]):  # {} for a log of no steps
                    run_level["training_curves"][sae_id] = curve
            continue
        base, _, variant = sae_id.partition("+")
        reported = ctx.kinds[inp.kind].reported
        assert reported is not None, f"{inp.kind} declares nothing for the report"
        result = json.loads(ctx.store.verified_file(inp.kind, inp.key, reported.result_file).read_text())
        metrics = reported.extract(result)
        for m in metrics:
            declared = reported.metric(m)
            run_level["better"][m] = declared.better
            if declared.headline and m not in run_level["headline"]:
                run_level["headline"].append(m)
        if inp.kind == "eval_autointerp" and (examples := report_examples.of_result(result)):
            run_level.setdefault("tier_examples", {})[sae_id] = examples
        if inp.kind == "eval_core" and result.get("eval_result_details"):  # per-latent density, for the histogram
            run_level.setdefault("feature_density", {})[sae_id] = [d["feature_density"] for d in result["eval_result_details"]]
        evals.setdefault((base, variant), {}).update(metrics)
        group = run_level["groups"].setdefault(inp.kind, [])
        group += [m for m in metrics if m not in group]
        source = (result.get("eval_result_unstructured") or {}).get("data_source") if isinstance(result, dict) else None
        if source:
            run_level["data_sources"][inp.kind] = source
    rows = []
    for (sae_id, variant), metrics in evals.items():
        rows.append({**row_names(sae_id, variant), **trains[sae_id], **metrics})
    for sae_id, facts in trains.items():  # SAEs with no eval still get their training row
        if not any(sae_id == k[0] for k in evals):
            rows.append({**row_names(sae_id, ""), **facts})
    return sorted(rows, key=lambda r: (r.get("shape", ""), r["sae"], r["seed"])), run_level


def row_names(sae_id: str, variant: str) -> dict[str, Any]:
    """`batchtopk-s0` -> sae batchtopk, seed 0; a suite's `batchtopk-s0@deep` + variant loo -> sae
    `batchtopk+loo@deep` (so no table merges shapes), spec `batchtopk+loo`, shape `deep`."""
    name_seed, _, shape = sae_id.partition("@")
    name, seed = name_seed.rsplit("-s", 1)
    spec = name + (f"+{variant}" if variant else "")
    if not shape:
        return {"sae": spec, "seed": int(seed)}
    return {"sae": f"{spec}@{shape}", "spec": spec, "shape": shape, "seed": int(seed)}


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in FACTS and c not in cols]
    return cols


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std, 95% interval and seed count per SAE spec (and variant) for each metric."""
    out = []
    for name in sorted({r["sae"] for r in rows}):
        group = [r for r in rows if r["sae"] == name]
        agg: dict[str, Any] = {"sae": name, "n_seeds": len(group), "seeds": [r["seed"] for r in group]}
        agg |= {k: group[0][k] for k in ("spec", "shape") if k in group[0]}
        agg["baseline"] = any(r.get("baseline") for r in group)
        for col in metric_columns(group):
            values = [float(r[col]) for r in group if col in r]
            half, std = interval95(values)
            agg[col] = {"mean": statistics.fmean(values), "std": std, "ci95": half, "values": values}
        out.append(agg)
    return out


def seed_cell(a: dict[str, Any], col: str, best: dict[str, dict[str, Any]]) -> str:
    """'mean ± ci95', bold when best, '≈' when seeds cannot tell it from the best, '†' when its L0 is not
    matched to the best's (the comparison is then not at equal sparsity)."""
    if col not in a:
        return ""
    m = a[col]
    cell = f"{m['mean']:.4g} ± {m['ci95']:.2g}" if len(m["values"]) > 1 else f"{m['mean']:.4g}"  # 1 seed: no spread
    top, approx, off_l0 = marks(a, col, best)
    return f"**{cell}**" if top else cell + (" ≈" if approx else "") + (" †" if off_l0 else "")


def md_name(a: dict[str, Any]) -> str:
    """A row's SAE name, italic and tagged when it is a baseline."""
    return f"*{a['sae']}* (baseline)" if a.get("baseline") else a["sae"]


def scoreboard(agg: list[dict[str, Any]], groups: list[tuple[str, list[str]]], better: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scored metric: the best spec, the specs the seeds cannot tell from it, those at another L0, and
    each baseline's mean (with whether the best is distinguishable from it, and whether its mean is better
    than the best's: the best SAE then scores below a baseline)."""
    board = []
    for (shape, shape_agg), (_, cols) in ((s, g) for s in report_suite.by_shape(agg).items() for g in groups):
        for col, top in best_by_metric(shape_agg, cols, better).items():
            others = [a for a in shape_agg if col in a and a is not top and not a["baseline"]]
            baselines = [a for a in shape_agg if col in a and a["baseline"]]
            board.append({
                "metric": col,
                **({"shape": shape} if shape else {}),
                "better": better[col],
                "best": top["sae"],
                "indistinguishable": [a["sae"] for a in others if within_noise(a[col]["values"], top[col]["values"])],
                "l0_not_matched": [a["sae"] for a in others if l0_mismatch(a, top)],
                "baselines": {a["sae"]: {"mean": a[col]["mean"], "within_noise_of_best": within_noise(a[col]["values"], top[col]["values"]),
                                         "beats_best": beats(a[col]["mean"], top[col]["mean"], better[col])}
                              for a in baselines},
            })  # fmt: skip
    return board


def groups_of(rows: list[dict[str, Any]], run_level: dict[str, Any], order: list[str]) -> list[tuple[str, list[str]]]:
    """(eval kind, its metric columns) in registry order; columns of no known eval go last."""
    found = run_level.get("groups", {})
    out = [(kind, found[kind]) for kind in order if kind in found]
    known = {c for _, cols in out for c in cols}
    rest = [c for c in metric_columns(rows) if c not in known]
    return out + ([("other", rest)] if rest else [])


def markdown(run: str, rows: list[dict[str, Any]], agg: list[dict[str, Any]], run_level: dict[str, Any],
             groups: list[tuple[str, list[str]]], titles: dict[str, str]) -> str:  # fmt: skip
    fact_cols = ["sae", "seed", "trainer", "d_sae", "k", "train_tokens"]
    lines = [f"# saepipe report: {run}", ""]
    if run_level.get("missing_inputs"):
        lines += ["**Incomplete:** these stages failed or did not run, so their results are missing below: "
                  + ", ".join(f"`{m}`" for m in run_level["missing_inputs"])
                  + ". Run the same command again to retry them alone.", ""]  # fmt: skip
    lines += ["## SAEs", "", ("Baselines (trainers pca, random) are italic and tagged; they never count as best. "
                             "*differs from reference*: the settings in which a trainer departs from sae-lens's defaults."), "",
              "| " + " | ".join(fact_cols) + " | differs from reference |", "|" + "---|" * (len(fact_cols) + 1)]  # fmt: skip
    lines += ["| " + " | ".join([md_name(r), *(_fmt(r.get(c, "")) for c in fact_cols[1:])])
              + f" | {differs_text(r.get('differs_from_reference')).replace('|', chr(92) + '|')} |" for r in rows]  # fmt: skip
    lines += ["", "## Scoreboard", "", "Best spec per metric (baselines excluded); ≈ lists the specs the seeds cannot tell from it",
              f"(Welch, p ≥ 0.05); † lists the specs whose mean L0 differs from the best's by more than {L0_TOLERANCE:.0%}",
              "(not a matched-L0 comparison); baselines shows each baseline's mean, ≈ when the best is not distinguishable from it,",
              "and says so when the best scores below it.", "",
              "| metric | better | best | ≈ best | † L0 not matched | baselines |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {report_suite.metric_at(b)} | {b['better']} | {b['best']} | {', '.join(b['indistinguishable'])} | "
              f"{', '.join(b['l0_not_matched'])} | {baselines_text(b)} |" for b in run_level["scoreboard"]]  # fmt: skip
    if run_level.get("training_curves"):
        lines += ["", *report_curves.markdown(run_level["training_curves"], curve_names(run_level["training_curves"]))]
    if "suite" in run_level:
        lines += ["", *report_suite.markdown(run_level["suite"])]
    for kind, cols in groups:
        bests = {shape: best_by_metric(sub, cols, run_level["better"]) for shape, sub in report_suite.by_shape(agg).items()}
        lines += ["", f"## {titles.get(kind, kind)}", ""]
        if source := run_level.get("data_sources", {}).get(kind):
            lines += [f"Data: {source}", ""]
        lines += ["Mean ± 95% interval over seeds (a single seed shows its value: no spread to estimate):", ""]
        lines += ["| sae | seeds | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
        lines += [f"| {md_name(a)} | {a['n_seeds']} | " + " | ".join(seed_cell(a, c, bests[a.get("shape", "")]) for c in cols) + " |" for a in agg]
        lines += ["", "Per seed:", "", "| sae | seed | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
        lines += [f"| {md_name(r)} | {r['seed']} | " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    if run_level.get("tier_examples"):
        lines += ["", *report_examples.markdown(run_level["tier_examples"])]
    return "\n".join(lines + ["", "## Notes", "", notes(metric_columns(rows), run_level)]) + "\n"


def curve_names(curves: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Train label id -> (the spec its table rows use, seed)."""
    out = {}
    for sae_id in curves:
        n = row_names(sae_id, "")
        out[sae_id] = (n["sae"], n["seed"])
    return out


def notes(cols: list[str], run_level: dict[str, Any]) -> str:
    """How to read the numbers: noise marks, baselines, definitions."""
    lines = [
        "Bold: best mean. ≈: not distinguishable from the best by Welch's t-test over seeds (p ≥ 0.05),",
        "or fewer than two seeds on a side — then no difference can be claimed.",
        f"†: the spec's mean L0 differs from the best's by more than {L0_TOLERANCE:.0%}, so the two are not compared at",
        "matched sparsity; read the difference as partly a sparsity difference.",
        "Italic, (baseline): an SAE of trainer pca (principal directions) or random (untrained): a reference point,",
        "never bold, never counted as better or worse than a trained SAE.",
    ]
    if "probe_baseline" in run_level:
        pb = run_level["probe_baseline"]["metrics"]
        lines += [
            "",
            f"Supervised probe baseline (the F1 ceiling: one logistic probe per true feature): F1 {pb['f1']:.4g}; "
            + doubling_text(run_level["probe_baseline"].get("doubling")) + ".",
            "SAE F1 averages over latents (each matched to its best-cosine true feature), the probe's over features.",
        ]
    if "l0_fitted" in cols:
        lines += [
            "",
            "Synthetic ground truth at matched L0: before scoring, a threshold-type SAE's inference thresholds are scaled",
            "by one common factor (threshold_scale) so that its mean L0 on calibration samples (their own stream) is its k;",
            "TopK SAEs (the pca and random baselines too) need none. l0_fitted, f1_fitted, mcc_fitted: the same SAE at its",
            "fitted thresholds, on the same samples (shown, never ranked: they are not at matched L0).",
        ]
    if any(c.startswith("ce_") for c in cols):
        lines += [
            "",
            "ce_loss_score = (CE with the hook zero-ablated − CE with the SAE spliced in) / (CE ablated − CE clean):",
            "1 means the SAE loses nothing, 0 means it is as bad as deleting the residual stream.",
            "Core metrics computed by sae-bench 0.6.0's core functions on held-out documents of the run's corpus.",
            "frac_dense_10pct: fraction of latents firing on more than 10% of tokens (dense latents are usually not",
            "interpretable); the HTML page has the histogram of every latent's firing frequency.",
        ]
    if any(c.startswith("probe_") for c in cols):
        lines += [
            "",
            "probe_llm_acc: logistic probe on the model's own mean-pooled activations (the baseline);",
            "probe_sae_topK_acc: probe on the K SAE latents whose class means differ most (SAEBench sparse probing),",
            "averaged over the sae-probes datasets listed in the config.",
        ]
    if any(c.startswith("absorption") or c == "full_absorption" for c in cols):
        lines += ["", "absorption_fraction / full_absorption: SAEBench's first-letter absorption (lower is better)."]
    if any(c.startswith(("scr@", "tpp@")) for c in cols):
        lines += [
            "",
            "scr@n / tpp@n: SAEBench's SCR and TPP metrics when the top n latents are ablated. Both are known to be",
            "noisy (Chanin 2026 found them the least reliable SAEBench metrics): read them with the seed spread.",
        ]
    if "unlearning_score" in cols:
        lines += ["", "unlearning_score: 1 - forget-set accuracy at the best setting that keeps retain accuracy (SAEBench)."]
    return "\n".join(lines)


def doubling_text(d: dict[str, Any] | None) -> str:
    """The probe ceiling's doubling check in words."""
    if not d:
        return "doubling check not run"
    verdict = "converged" if d["stable"] else f"NOT converged in its sample count (|change| ≥ {d['tolerance']})"
    return f"on twice the samples ({d['probe_samples']}) F1 {d['f1']:.4g}, change {d['change']:+.4f}: {verdict}"


def run(ctx: StageContext) -> dict[str, Any]:
    rows, run_level = collect(ctx)
    agg = aggregate(rows)
    run_name = ctx.stage.params["run"]
    titles = {name: k.reported.title for name, k in ctx.kinds.items() if k.reported is not None}
    groups = groups_of(rows, run_level, list(ctx.kinds))
    run_level["scoreboard"] = scoreboard(agg, groups, run_level["better"])
    if any("shape" in r for r in rows):
        run_level["suite"] = report_suite.summarise(agg, run_level)
    (ctx.out / "report.md").write_text(markdown(run_name, rows, agg, run_level, groups, titles))
    curves = run_level.get("training_curves") or {}
    cols = metric_columns(rows)
    suite_text = "\n".join(report_suite.markdown(run_level["suite"])) if "suite" in run_level else ""
    page = report_html.render(run_name, rows, agg, groups, titles, run_level, notes(cols, run_level), suite_text,
                              curve_names(curves))  # fmt: skip
    (ctx.out / "report.html").write_text(page)
    run_level.pop("feature_density", None)  # per-latent lists stay in core.json; the summary stays small
    run_level.pop("tier_examples", None)  # kept in autointerp.json
    atomic_write_json(ctx.out / "summary.json", {"run": run_name, "saes": rows, "by_spec": agg, **run_level})
    return {"saes": len(rows), "missing_inputs": run_level["missing_inputs"]}
