"""The report as one self-contained HTML page: tables across SAEs and seeds, and plots as inline SVG
(no scripts, no network), so it opens offline from a laptop or a cluster's file browser. Every table sits
in a horizontally scrolling wrapper, so a wide one scrolls instead of being cut off at the page's width."""

from __future__ import annotations

import html
import io
from typing import Any

import matplotlib
import numpy as np

from pipeline.stages import report_curves, report_examples, report_suite
from pipeline.stages.report_facts import baselines_text, differs_text
from pipeline.stages.report_stats import L0_TOLERANCE, best_by_metric, marks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 1500px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; border: 1px solid #eee; }
.note { color: #555; }
.wide { overflow-x: auto; max-width: 100%; }
.wide table { margin: 0.5em 0; }
td { white-space: nowrap; }
.wrap { display: inline-block; white-space: normal; min-width: 12em; text-align: left; }
pre.note { overflow-x: auto; }
tr.baseline td { font-style: italic; color: #555; }
.tag { font-size: 11px; font-style: normal; background: #e8e8e8; border-radius: 3px; padding: 0 4px; margin-left: 4px; }
.example { margin: 0.4em 0 0.8em; }
.example code { white-space: pre-wrap; font-size: 12px; }
mark { background: #ffd54f; font-weight: bold; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 6px 10px; }
"""


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _table(header: list[str], body: list[list[str]], baseline_rows: list[bool] | None = None) -> str:
    """Cells are HTML already; rows flagged in ``baseline_rows`` are styled as baselines."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    flags = baseline_rows or [False] * len(body)
    rows = "".join(('<tr class="baseline">' if b else "<tr>") + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                   for r, b in zip(body, flags))  # fmt: skip
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """Points not beaten by another with lower (or equal) L0 and a better (or equal) metric."""
    sign = 1 if higher_is_better else -1
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * y > sign * front[-1][1]:
            front.append((x, y))
    return front


def metric_vs_l0(agg: list[dict[str, Any]], metric: str, better: str | None) -> str | None:
    """Each spec at its L0 with both intervals; the Pareto front over the trained SAEs (baselines are drawn as
    crosses and are not on it)."""
    pts = [(a["sae"], a["l0"], a[metric], a.get("baseline", False)) for a in agg if "l0" in a and metric in a]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for name, l0, m, base in pts:
        ax.errorbar(l0["mean"], m["mean"], xerr=l0["ci95"] or None, yerr=m["ci95"] or None, fmt="x" if base else "o",
                    capsize=3, label=f"{name} (baseline)" if base else name)  # fmt: skip
    front = pareto_front([(l0["mean"], m["mean"]) for _, l0, m, base in pts if not base], better != "lower")
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel(metric + (" (lower is better)" if better == "lower" else ""))
    ax.set_title(f"{metric} vs L0 (mean ± 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _svg(fig)


def probing_bars(agg: list[dict[str, Any]]) -> str | None:
    specs = [a for a in agg if "probe_llm_acc" in a]
    if not specs:
        return None
    ks = sorted({int(c.removeprefix("probe_sae_top").removesuffix("_acc")) for a in specs for c in a if c.startswith("probe_sae_top")})
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    width = 0.8 / max(1, len(specs))
    for i, a in enumerate(specs):
        ys = [a[f"probe_sae_top{k}_acc"]["mean"] for k in ks]
        ax.bar([j + i * width for j in range(len(ks))], ys, width, label=a["sae"])
    ax.axhline(specs[0]["probe_llm_acc"]["mean"], color="k", ls="--", lw=1, label="model activations (all dims)")
    ax.set_xticks([j + width * (len(specs) - 1) / 2 for j in range(len(ks))], [f"k={k}" for k in ks])
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.set_title("sparse probing: k SAE latents vs the model baseline", fontsize=9)
    ax.legend(fontsize=7)
    return _svg(fig)


def _spread(m: dict[str, Any]) -> str:
    if len(m["values"]) < 2:
        return f"{m['mean']:.4g}"  # the seeds column says 1: there is no spread to show
    return f"{m['mean']:.4g} ± {m['ci95']:.2g} <small>(sd {m['std']:.2g}, {len(m['values'])} seeds)</small>"


def _marked(a: dict[str, Any], col: str, best: dict[str, dict[str, Any]]) -> str:
    """The spread, bold when best; ≈ within noise of the best; † at an L0 not matched to the best's."""
    if col not in a:
        return ""
    top, approx, off_l0 = marks(a, col, best)
    text = _spread(a[col])
    return f"<b>{text}</b>" if top else text + (" ≈" if approx else "") + (" †" if off_l0 else "")


def _name(r: dict[str, Any]) -> str:
    return html.escape(r["sae"]) + ('<span class="tag">baseline</span>' if r.get("baseline") else "")


def training_curves(curves: dict[str, dict[str, list[float]]], names: dict[str, tuple[str, int]]) -> str | None:
    if not curves:
        return None
    return _svg(report_curves.figure(curves, names))


def _cell(value: Any) -> str:
    return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def density_histogram(densities: dict[str, list[float]]) -> str | None:
    """log10 firing frequency of every latent, one outline per SAE (SAEBench's feature density view):
    a mass at the left edge is dead latents, at the right dense ones."""
    if not densities:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    bins = np.linspace(-7, 0, 36)
    for sae_id, values in sorted(densities.items()):
        logs = np.log10(np.clip(np.asarray(values, dtype=float), 1e-7, 1.0))
        ax.hist(logs, bins=bins, histtype="step", lw=1.2, label=sae_id)
    ax.set_xlabel("log10(fraction of tokens the latent fires on); -7 = never")
    ax.set_ylabel("latents")
    ax.set_title("feature density (held-out tokens)", fontsize=9)
    ax.legend(fontsize=7)
    return _svg(fig)


def render(
    run: str,
    rows: list[dict[str, Any]],
    agg: list[dict[str, Any]],
    groups: list[tuple[str, list[str]]],
    titles: dict[str, str],
    run_level: dict[str, Any],
    markdown_notes: str,
    suite_text: str = "",
    curve_names: dict[str, tuple[str, int]] | None = None,
) -> str:
    """Scoreboard and plots first (what a reader scans), then the SAEs, their training, one section per eval
    (mean ± 95% CI over seeds, per seed) and the autointerp examples."""
    facts = ["sae", "seed", "trainer", "d_sae", "k", "train_tokens"]
    sae_rows = [[_name(r)] + [_cell(r.get(c, "")) for c in facts[1:]] + [f'<span class="wrap">{html.escape(differs_text(r.get("differs_from_reference")))}</span>']
                for r in rows]  # fmt: skip
    sections = ["<h2>SAEs</h2><p class=\"note\">Baselines (trainers pca, random) are italic and tagged and never count as best; "
                "<i>differs from reference</i>: the settings in which a trainer departs from sae-lens's defaults.</p>"
                + _table(facts + ["differs from reference"], sae_rows, [bool(r.get("baseline")) for r in rows])]  # fmt: skip
    if curves_svg := training_curves(run_level.get("training_curves") or {}, curve_names or {}):
        sections.append("<h2>Training curves</h2><p class=\"note\">Per-step training log, bin means; one colour per spec, "
                        f"one line style per seed.</p><figure>{curves_svg}</figure>")  # fmt: skip
    board = [[html.escape(report_suite.metric_at(b)), str(b["better"]), f"<b>{html.escape(b['best'])}</b>",
              html.escape(", ".join(b["indistinguishable"])), html.escape(", ".join(b["l0_not_matched"])), html.escape(baselines_text(b))]
             for b in run_level.get("scoreboard", [])]  # fmt: skip
    scoreboard = (
        "<h2>Scoreboard</h2><p class=\"note\">Best spec per metric (baselines excluded); ≈: the seeds cannot tell it from the best "
        f"(Welch, p ≥ 0.05); †: its mean L0 differs from the best's by more than {L0_TOLERANCE:.0%} (not a matched-L0 comparison); "
        "baselines: each baseline's mean, ≈ when the best is not distinguishable from it.</p>"
        + _table(["metric", "better", "best", "≈ best", "† L0 not matched", "baselines"], board)
    ) if board else ""  # fmt: skip
    by_shape = report_suite.by_shape(agg)
    for kind, cols in groups:
        bests = {shape: best_by_metric(sub, cols, run_level["better"]) for shape, sub in by_shape.items()}
        summary_rows = [[_name(a), str(a["n_seeds"])] + [_marked(a, c, bests[a.get("shape", "")]) for c in cols] for a in agg]
        source = run_level.get("data_sources", {}).get(kind)
        sections.append(
            f"<h2>{html.escape(titles.get(kind, kind))}</h2>"
            + (f'<p class="note">Data: {html.escape(source)}</p>' if source else "")
            + "<h3>Mean ± 95% interval over seeds</h3>" + _table(["sae", "seeds"] + cols, summary_rows, [a["baseline"] for a in agg])
            + "<h3>Per seed</h3>"
            + _table(["sae", "seed"] + cols, [[_name(r), str(r["seed"])] + [_cell(r.get(c, "")) for c in cols] for r in rows],
                     [bool(r.get("baseline")) for r in rows])
        )  # fmt: skip
    sections.append(report_examples.section_html(run_level.get("tier_examples") or {}))
    extra = [probing_bars(agg), density_histogram(run_level.get("feature_density", {}))]
    headline = (metric_vs_l0(agg, m, run_level["better"].get(m)) for m in run_level.get("headline", []))
    plots = [p for p in headline if p] + [p for p in extra if p]
    figures = "".join(f"<figure>{p}</figure>" for p in plots)
    missing = run_level.get("missing_inputs") or []
    banner = (
        '<p class="warn"><b>Incomplete:</b> these stages failed or did not run, so their results are missing: '
        + ", ".join(f"<code>{html.escape(m)}</code>" for m in missing) + ". Run the same command again to retry them alone.</p>"
    ) if missing else ""  # fmt: skip
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>saepipe report: {html.escape(run)}</title><style>{STYLE}</style></head>
<body>
<h1>saepipe report: {html.escape(run)}</h1>
{banner}
{scoreboard}
{f'<h2>Suite</h2><pre class="note">{html.escape(suite_text)}</pre>' if suite_text else ""}
<h2>Plots</h2><div class="plots">{figures}</div>
{"".join(sections)}
<h2>Notes</h2><pre class="note">{html.escape(markdown_notes)}</pre>
</body></html>
"""
