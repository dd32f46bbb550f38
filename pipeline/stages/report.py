"""Stage `report`: gather every train and eval result of the run into report.md and summary.json.

Seeds of the same SAE spec are shown one row each and summarised as mean ± std, so a reader sees the
spread before comparing SAEs.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from pipeline.fsutil import atomic_write_json
from pipeline.stages.context import StageContext

CORE_COLUMNS = [
    ("explained_variance", "reconstruction_quality", "explained_variance"),
    ("mse", "reconstruction_quality", "mse"),
    ("cossim", "reconstruction_quality", "cossim"),
    ("l0", "sparsity", "l0"),
    ("ce_loss_score", "model_performance_preservation", "ce_loss_score"),
    ("ce_with_sae", "model_performance_preservation", "ce_loss_with_sae"),
    ("ce_clean", "model_performance_preservation", "ce_loss_without_sae"),
    ("kl_div_score", "model_behavior_preservation", "kl_div_score"),
    ("l2_ratio", "shrinkage", "l2_ratio"),
    ("frac_alive", "misc_metrics", "frac_alive"),
]


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def collect(ctx: StageContext) -> list[dict[str, Any]]:
    """One row per SAE (spec × seed): training facts plus core metrics."""
    rows: dict[str, dict[str, Any]] = {}
    for label, inp in ctx.stage.inputs.items():
        kind, sae_id = label.split(":", 1)
        name, seed = sae_id.rsplit("-s", 1)
        row = rows.setdefault(sae_id, {"sae": name, "seed": int(seed)})
        manifest = ctx.store.manifest(inp.kind, inp.key)
        if kind == "train":
            row |= {"d_sae": manifest["params"]["d_sae"], "k": manifest["params"]["k"]}
            row |= {"train_tokens": manifest["summary"]["tokens"], "train_key": inp.key}
        elif kind == "eval_core":
            core_file = ctx.store.verified_file(inp.kind, inp.key, "core.json")
            metrics = json.loads(core_file.read_text())["eval_result_metrics"]
            row |= {col: metrics[group][field] for col, group, field in CORE_COLUMNS}
            row["eval_core_key"] = inp.key
    return sorted(rows.values(), key=lambda r: (r["sae"], r["seed"]))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std and seed count per SAE spec for each core metric."""
    out = []
    for name in sorted({r["sae"] for r in rows}):
        group = [r for r in rows if r["sae"] == name]
        agg: dict[str, Any] = {"sae": name, "n_seeds": len(group)}
        for col, _, _ in CORE_COLUMNS:
            values = [r[col] for r in group if col in r]
            if values:
                agg[col] = statistics.fmean(values)
                agg[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(agg)
    return out


def markdown(run: str, rows: list[dict[str, Any]], agg: list[dict[str, Any]]) -> str:
    cols = ["sae", "seed", "d_sae", "k", "train_tokens"] + [c for c, _, _ in CORE_COLUMNS]
    lines = [f"# saepipe report: {run}", "", "## Core metrics, one row per SAE and seed", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    lines += ["", "## Mean ± std over seeds", ""]
    metric_cols = [c for c, _, _ in CORE_COLUMNS]
    lines += ["| sae | seeds | " + " | ".join(metric_cols) + " |", "|" + "---|" * (len(metric_cols) + 2)]
    for a in agg:
        cells = [f"{a[c]:.4g} ± {a[c + '_std']:.2g}" if c in a else "" for c in metric_cols]
        lines.append(f"| {a['sae']} | {a['n_seeds']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ce_loss_score = (CE with the hook zero-ablated − CE with the SAE spliced in) / (CE ablated − CE clean):",
        "1 means the SAE loses nothing, 0 means it is as bad as deleting the residual stream.",
        "Metrics computed by sae-bench 0.6.0's core functions on held-out documents of the run's corpus.",
    ]
    return "\n".join(lines) + "\n"


def run(ctx: StageContext) -> dict[str, Any]:
    rows = collect(ctx)
    agg = aggregate(rows)
    run_name = ctx.stage.params["run"]
    (ctx.out / "report.md").write_text(markdown(run_name, rows, agg))
    atomic_write_json(ctx.out / "summary.json", {"run": run_name, "saes": rows, "by_spec": agg})
    return {"saes": len(rows)}
