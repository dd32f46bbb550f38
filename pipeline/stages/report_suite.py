"""The report's suite section: each recipe on each synthetic shape, and "better on N of M shapes".

A recipe that wins on one synthetic model may lose on another (other superposition, Zipf exponent,
hierarchy depth, correlation), so a suite's claim is a count: spec A is better than spec B on a shape
when Welch's test over seeds separates them (p < 0.05, `report_stats.within_noise`) and A's mean is on
the metric's better side; the count comes with each shape's difference and its 95% interval. Baselines
(``pca``, ``random``) appear in the tables, never as a shape's best and in no count. Recipes are meant to
be compared at matched inference L0: a cell whose mean L0 on that shape is more than 5% from the shape's
best's, and a pair's shape where the two L0s are that far apart, are marked † (still counted).
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.report_stats import (
    L0_TOLERANCE,
    difference,
    interval95,
    l0_apart,
    l0_mismatch,
    within_noise,
)

PROBE = "probe_baseline"
"""Run-level name of a shape's probe ceiling (`probe_baseline@<shape>`)."""


def by_shape(agg: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Aggregates per shape, in order ("" holds a single-model run's)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in agg:
        out.setdefault(a.get("shape", ""), []).append(a)
    return out


def metric_at(board_entry: dict[str, Any]) -> str:
    """A scoreboard entry's metric with its shape (`f1@deep`)."""
    return board_entry["metric"] + (f"@{board_entry['shape']}" if "shape" in board_entry else "")


def _beats(a: list[float], b: list[float], better: str) -> bool:
    """a separated from b by the seeds, on the better side."""
    diff, _ = difference(a, b)
    return not within_noise(a, b) and (diff > 0 if better == "higher" else diff < 0)


def summarise(agg: list[dict[str, Any]], run_level: dict[str, Any]) -> dict[str, Any]:
    """Per headline metric: every spec's mean ± 95% interval on every shape, the probe ceiling per shape,
    and for every pair of specs the shapes each is better on (with the per-shape difference)."""
    shapes = by_shape(agg)
    specs = sorted({a["spec"] for a in agg})
    baselines = sorted({a["spec"] for a in agg if a.get("baseline")})
    contenders = [s for s in specs if s not in baselines]
    cell = {(a["shape"], a["spec"]): a for a in agg}
    metrics = [m for m in run_level.get("headline", []) if run_level["better"].get(m)]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    pairs = []
    for m in metrics:
        better = run_level["better"][m]
        table[m] = {
            spec: {s: {"mean": cell[s, spec][m]["mean"], "ci95": interval95(cell[s, spec][m]["values"])[0],
                       "values": cell[s, spec][m]["values"], "l0": cell[s, spec].get("l0", {}).get("mean")}
                   for s in shapes if (s, spec) in cell and m in cell[s, spec]}
            for spec in specs
        }  # fmt: skip
        for i, x in enumerate(contenders):
            for y in contenders[i + 1 :]:
                common = [s for s in shapes if s in table[m][x] and s in table[m][y]]
                diffs = {s: difference(table[m][x][s]["values"], table[m][y][s]["values"]) for s in common}
                pairs.append({
                    "metric": m, "better": better, "a": x, "b": y, "shapes": len(common),
                    "a_better_on": [s for s in common if _beats(table[m][x][s]["values"], table[m][y][s]["values"], better)],
                    "b_better_on": [s for s in common if _beats(table[m][y][s]["values"], table[m][x][s]["values"], better)],
                    "difference": {s: {"a_minus_b": d, "ci95": h} for s, (d, h) in diffs.items()},
                    "l0_not_matched": [s for s in common if l0_mismatch(cell[s, x], cell[s, y])],
                })  # fmt: skip
    probes = {s: run_level[f"{PROBE}@{s}"] for s in shapes if f"{PROBE}@{s}" in run_level}
    return {
        "shapes": list(shapes),
        "specs": specs,
        "baselines": baselines,
        "metrics": {m: run_level["better"][m] for m in metrics},
        "per_shape": table,
        "probe_ceiling": {s: {**p["metrics"], "probe_samples": p.get("probe_samples")} for s, p in probes.items()},
        "pairs": pairs,
    }


def _mark(table: dict[str, dict[str, Any]], spec: str, shape: str, better: str, baselines: list[str]) -> str:
    """'mean ± ci', bold when the shape's best mean, '≈' when the seeds cannot tell it from that best,
    '†' when its mean L0 is not matched to that best's (baselines are marked against the best but are never it)."""
    here = table[spec].get(shape)
    rivals = [t[shape] for s, t in table.items() if shape in t and s not in baselines]
    if here is None or not rivals:
        return "" if here is None else f"{here['mean']:.4g} ± {here['ci95']:.2g}"
    best = (max if better == "higher" else min)(rivals, key=lambda r: r["mean"])
    text = f"{here['mean']:.4g} ± {here['ci95']:.2g}"
    if here is best:
        return f"**{text}**"
    return text + (" ≈" if within_noise(here["values"], best["values"]) else "") + (" †" if l0_apart(here["l0"], best["l0"]) else "")


def markdown(suite: dict[str, Any]) -> list[str]:
    """The suite's section of report.md: a spec × shape table per headline metric, then the N-of-M counts."""
    shapes = suite["shapes"]
    lines = ["## Suite: each spec on each shape", "",
             "Mean ± 95% interval over seeds; bold: the shape's best; ≈: Welch's test over seeds cannot tell it",
             "from that best (p ≥ 0.05); italic: a baseline, never a shape's best and in no count below;",
             f"†: its mean L0 on that shape differs from the best's by more than {L0_TOLERANCE:.0%} (not a matched-L0 comparison)."]  # fmt: skip
    for m, better in suite["metrics"].items():
        lines += ["", f"### {m} ({better} is better)", "", "| spec | " + " | ".join(shapes) + " |", "|" + "---|" * (len(shapes) + 1)]
        baselines = suite.get("baselines", [])
        lines += [f"| {f'*{spec}* (baseline)' if spec in baselines else spec} | "
                  + " | ".join(_mark(suite["per_shape"][m], spec, s, better, baselines) for s in shapes) + " |" for spec in suite["specs"]]  # fmt: skip
        if m == "f1" and suite["probe_ceiling"]:
            ceiling = suite["probe_ceiling"]
            lines.append("| *probe ceiling* | " + " | ".join(f"{ceiling[s]['f1']:.4g}" if s in ceiling else "" for s in shapes) + " |")
    if suite["probe_ceiling"]:
        lines += ["", "Probe ceiling per shape (one logistic probe per true feature, fitted to convergence):", "",
                  "| shape | F1 | samples | min train positives | features < 100 positives | converged |", "|---|---|---|---|---|---|"]  # fmt: skip
        for s, p in suite["probe_ceiling"].items():
            lines.append(f"| {s} | {p['f1']:.4g} | {p.get('probe_samples')} | {p.get('min_train_positives', '')} | "
                         f"{p.get('features_below_target', '')} | {p.get('converged', '')} |")  # fmt: skip
    lines += ["", "### Better on N of M shapes", "",
              "A is better than B on a shape when Welch's test over seeds separates them (p < 0.05) on the metric's",
              "better side; each shape's A − B is shown with its 95% Welch interval, † where A's and B's mean L0",
              f"differ by more than {L0_TOLERANCE:.0%} there (counted, but not a matched-L0 comparison).", "",
              "| metric | A | B | A better on | B better on | A − B per shape | L0 not matched |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in suite["pairs"]:
        n = p["shapes"]
        off = p.get("l0_not_matched", [])
        diffs = ", ".join(f"{s} {d['a_minus_b']:+.3g} ± {d['ci95']:.2g}" + (" †" if s in off else "") for s, d in p["difference"].items())
        lines.append(f"| {p['metric']} | {p['a']} | {p['b']} | {len(p['a_better_on'])} of {n} | {len(p['b_better_on'])} of {n} | {diffs} "
                     f"| {', '.join(off) or 'none'} |")  # fmt: skip
    return lines
