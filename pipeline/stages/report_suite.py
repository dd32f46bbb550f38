"""The report's suite section: each recipe on each synthetic shape, and "better on N of M shapes".

A recipe that wins on one synthetic model may lose on another (other superposition, Zipf exponent,
hierarchy depth, correlation), so a suite's claim is a count: spec A is better than spec B on a shape
when Welch's test over seeds separates them (p < 0.05, `report_stats.within_noise`) and A's mean is on
the metric's better side; the count comes with each shape's difference and its 95% interval. Baselines
(``pca``, ``random``) appear in the tables, never as a shape's best and in no count. Recipes are meant to
be compared at matched inference L0: a cell whose mean L0 on that shape is more than 5% from the shape's
best's, and a pair's shape where the two L0s are that far apart, are marked † (still counted). A shape's
best whose mean is worse than a baseline's is marked ‡ and named under the table: on that shape no recipe
beat an untrained SAE or PCA. A probe ceiling whose F1 moved by 0.01 or more when its samples were
doubled is marked ✗ (not converged in its sample count).
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.report_stats import (
    L0_TOLERANCE,
    beats,
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
    return not within_noise(a, b) and beats(difference(a, b)[0], 0.0, better)


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
        "matched_l0": any("l0_fitted" in a for a in agg),
        "below_baseline": {m: below_baseline(table[m], list(shapes), run_level["better"][m], baselines) for m in metrics},
        "probe_ceiling": {s: {**p["metrics"], "probe_samples": p.get("probe_samples"), "doubling": p.get("doubling")} for s, p in probes.items()},
        "pairs": pairs,
    }


def _best(table: dict[str, dict[str, Any]], shape: str, better: str, baselines: list[str]) -> tuple[str, dict[str, Any]] | None:
    """(spec, cell) of the shape's best non-baseline mean, or None when no contender has a value there."""
    rivals = [(s, t[shape]) for s, t in table.items() if shape in t and s not in baselines]
    if not rivals:
        return None
    return (max if better == "higher" else min)(rivals, key=lambda r: r[1]["mean"])


def below_baseline(table: dict[str, dict[str, Any]], shapes: list[str], better: str, baselines: list[str]) -> dict[str, dict[str, Any]]:
    """Per shape where some baseline's mean is better than the best spec's: the best, and each such
    baseline's mean with whether the seeds separate the two (Welch, p < 0.05)."""
    out = {}
    for shape in shapes:
        top = _best(table, shape, better, baselines)
        if top is None:
            continue
        spec, cell = top
        above = {b: {"mean": table[b][shape]["mean"], "separated": not within_noise(table[b][shape]["values"], cell["values"])}
                 for b in baselines if shape in table[b] and beats(table[b][shape]["mean"], cell["mean"], better)}  # fmt: skip
        if above:
            out[shape] = {"best": spec, "mean": cell["mean"], "baselines": above}
    return out


def _mark(table: dict[str, dict[str, Any]], spec: str, shape: str, better: str, baselines: list[str], below: dict[str, Any]) -> str:
    """'mean ± ci', bold when the shape's best mean ('‡' too when a baseline's mean is better: `below`),
    '≈' when the seeds cannot tell it from that best, '†' when its mean L0 is not matched to that best's
    (baselines are marked against the best but are never it)."""
    here = table[spec].get(shape)
    top = _best(table, shape, better, baselines)
    if here is None or top is None:
        return "" if here is None else f"{here['mean']:.4g} ± {here['ci95']:.2g}"
    best = top[1]
    text = f"{here['mean']:.4g} ± {here['ci95']:.2g}"
    if here is best:
        return f"**{text}**" + (" ‡" if shape in below else "")
    return text + (" ≈" if within_noise(here["values"], best["values"]) else "") + (" †" if l0_apart(here["l0"], best["l0"]) else "")


def below_lines(below: dict[str, Any], shapes: list[str]) -> list[str]:
    """One plain sentence per shape whose best scores below a baseline, in shape order."""
    out = []
    for shape in [s for s in shapes if s in below]:
        b = below[shape]
        them = "; ".join(f"{name} {v['mean']:.4g} ({'separated by the seeds' if v['separated'] else 'the seeds cannot separate them'})"
                         for name, v in b["baselines"].items())  # fmt: skip
        out.append(f"‡ {shape}: the best spec, {b['best']} ({b['mean']:.4g}), scores below a baseline: {them}.")
    return out


def unstable(ceiling: dict[str, Any]) -> bool:
    """The doubling check ran and twice the samples moved the ceiling's F1 by its tolerance or more."""
    return (ceiling.get("doubling") or {}).get("stable") is False


def ceiling_cells(p: dict[str, Any]) -> str:
    """'F1 (samples; change)' of the probe on twice the samples, ✗ when the change reaches the tolerance."""
    d = p.get("doubling")
    if not d:
        return "not run"
    return f"{d['f1']:.4g} ({d['probe_samples']}; {d['change']:+.4f})" + ("" if d["stable"] else f" ✗ not converged (|change| ≥ {d['tolerance']})")


def markdown(suite: dict[str, Any]) -> list[str]:
    """The suite's section of report.md: a spec × shape table per headline metric, then the N-of-M counts."""
    shapes = suite["shapes"]
    lines = ["## Suite: each spec on each shape", "",
             *(["Scores at matched L0 (each SAE's inference thresholds scaled so its mean L0 is its k; see the notes)."]
               if suite.get("matched_l0") else []),
             "Mean ± 95% interval over seeds; bold: the shape's best; ≈: Welch's test over seeds cannot tell it",
             "from that best (p ≥ 0.05); italic: a baseline, never a shape's best and in no count below;",
             f"†: its mean L0 on that shape differs from the best's by more than {L0_TOLERANCE:.0%} (not a matched-L0 comparison);",
             "‡: the shape's best scores below a baseline (named under the table); ✗ on the probe ceiling: twice its",
             "samples moved its F1 by 0.01 or more (not converged in its sample count)."]  # fmt: skip
    for m, better in suite["metrics"].items():
        lines += ["", f"### {m} ({better} is better)", "", "| spec | " + " | ".join(shapes) + " |", "|" + "---|" * (len(shapes) + 1)]
        baselines = suite.get("baselines", [])
        below = suite.get("below_baseline", {}).get(m, {})
        lines += [f"| {f'*{spec}* (baseline)' if spec in baselines else spec} | "
                  + " | ".join(_mark(suite["per_shape"][m], spec, s, better, baselines, below) for s in shapes) + " |" for spec in suite["specs"]]  # fmt: skip
        if m == "f1" and suite["probe_ceiling"]:
            ceiling = suite["probe_ceiling"]
            lines.append("| *probe ceiling* | " + " | ".join(f"{ceiling[s]['f1']:.4g}" + (" ✗" if unstable(ceiling[s]) else "") if s in ceiling else ""
                                                           for s in shapes) + " |")  # fmt: skip
        if below:
            lines += ["", *below_lines(below, shapes)]
    if suite["probe_ceiling"]:
        lines += ["", "Probe ceiling per shape (one logistic probe per true feature, fitted to convergence; the doubling check:",
                  "the same probe on twice the samples, its F1, samples and change):", "",
                  "| shape | F1 | samples | min train positives | features < 100 positives | converged | at 2× samples |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for s, p in suite["probe_ceiling"].items():
            lines.append(f"| {s} | {p['f1']:.4g} | {p.get('probe_samples')} | {p.get('min_train_positives', '')} | "
                         f"{p.get('features_below_target', '')} | {p.get('converged', '')} | {ceiling_cells(p)} |")  # fmt: skip
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
