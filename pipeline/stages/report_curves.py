"""The report's training curves: loss, L0 and dead latents against training tokens, from each train
artifact's ``train_log.json`` (one entry per step).

A log holds one entry per step (tens of thousands on a long run), so each curve is reduced to at most
``POINTS`` bin means: the page stays small and a bin mean is less noisy than a single step. A metric a
trainer did not log (older artifacts have no ``dead_latents``) is simply absent from its curve.
"""

from __future__ import annotations

from typing import Any

CURVE_METRICS = ("loss", "l0", "dead_latents")
POINTS = 100
"""Bins per curve."""
TABLE_AT = (0.25, 0.5, 1.0)
"""Fractions of training shown in report.md's compact table."""


def reduce_log(steps: list[dict[str, float]], batch_size: int, points: int = POINTS) -> dict[str, list[float]]:
    """``tokens`` (at each bin's last step) and the bin mean of every logged curve metric."""
    n = len(steps)
    if n == 0:
        return {}
    width = -(-n // points)  # ceil: at most `points` bins
    bins = [steps[i : i + width] for i in range(0, n, width)]
    out: dict[str, list[float]] = {"tokens": [float(min(i + width, n) * batch_size) for i in range(0, n, width)]}
    for metric in CURVE_METRICS:
        if all(metric in s for s in steps):
            out[metric] = [sum(s[metric] for s in b) / len(b) for b in bins]
    return out


def at_fraction(curve: dict[str, list[float]], metric: str, frac: float) -> float | None:
    """The bin mean at ``frac`` of the curve's tokens (the first bin at or past it)."""
    if metric not in curve:
        return None
    target = frac * curve["tokens"][-1]
    i = next(j for j, t in enumerate(curve["tokens"]) if t >= target)
    return curve[metric][i]


def markdown(curves: dict[str, dict[str, list[float]]], names: dict[str, tuple[str, int]]) -> list[str]:
    """A compact table: each SAE × seed's loss, L0 and dead latents at 25%, 50% and 100% of its training."""
    header = [f"{m} @{int(f * 100)}%" for m in CURVE_METRICS for f in TABLE_AT]
    lines = ["## Training curves", "",
             "Bin means of the per-step training log (the HTML page plots every curve; - : not logged by that trainer).", "",
             "| sae | seed | tokens | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 3)]  # fmt: skip
    for sae_id in sorted(curves, key=lambda s: names[s]):
        c = curves[sae_id]
        cells = [at_fraction(c, m, f) for m in CURVE_METRICS for f in TABLE_AT]
        text = ["-" if v is None else f"{v:.4g}" for v in cells]
        lines.append(f"| {names[sae_id][0]} | {names[sae_id][1]} | {c['tokens'][-1]:.0f} | " + " | ".join(text) + " |")
    return lines


def figure(curves: dict[str, dict[str, list[float]]], names: dict[str, tuple[str, int]]) -> Any:
    """Three panels; one colour per spec, one line style per seed (seeds overlaid)."""
    import matplotlib.pyplot as plt

    specs = sorted({names[s][0] for s in curves})
    colour = {spec: plt.get_cmap("tab10")(i % 10) for i, spec in enumerate(specs)}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(12, 3.4))
    titles = {"loss": "training loss (log scale)", "l0": "L0 (active latents per token)", "dead_latents": "dead latents"}
    for ax, metric in zip(axes, CURVE_METRICS):
        drawn = False
        for sae_id in sorted(curves, key=lambda s: names[s]):
            spec, seed = names[sae_id]
            c = curves[sae_id]
            if metric in c:
                ax.plot(c["tokens"], c[metric], styles[seed % len(styles)], color=colour[spec], lw=1.2, label=f"{spec} s{seed}")
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="#777")
        elif metric == "loss":
            ax.set_yscale("log")
        ax.set_title(titles[metric], fontsize=9)
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(6, len(labels)), bbox_to_anchor=(0.5, 1.12))
    return fig
