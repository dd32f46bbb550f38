"""The report's statistics over seeds: intervals, "within noise", a difference with its interval, and who
is best on a metric.

One place for the rules every comparison in the report uses: Welch's t-test, p < 0.05 to claim a difference;
baselines (trainers ``pca`` and ``random``, not SAEs anyone would ship) are shown beside the SAEs but never
win and never count in a comparison; a comparison at L0s more than 5% apart is marked.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import stats

ALPHA = 0.05


def interval95(values: list[float]) -> tuple[float, float]:
    """Half-width of the 95% t interval of the mean, and the std (0 for a single seed)."""
    if len(values) < 2:
        return 0.0, 0.0
    std = statistics.stdev(values)
    return float(stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))), std


def within_noise(a: list[float], b: list[float]) -> bool:
    """True when seeds cannot tell the two apart (Welch's t-test p ≥ 0.05, or < 2 seeds on a side)."""
    if len(a) < 2 or len(b) < 2:
        return True
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return statistics.fmean(a) == statistics.fmean(b)
    return bool(stats.ttest_ind(a, b, equal_var=False).pvalue >= ALPHA)


def difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95% Welch interval (0 when a side has < 2 seeds)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, 0.0
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, float(stats.t.ppf(0.975, df) * math.sqrt(va + vb))


def beats(x: float, y: float, better: str) -> bool:
    """x's mean is on the better side of y's (no test: say separately whether the seeds separate them)."""
    return x > y if better == "higher" else x < y


BASELINE_TRAINERS = ("pca", "random")
"""Trainers whose SAEs are reference points (SAEBench's PCA baseline, an untrained SAE), not contenders."""
L0_TOLERANCE = 0.05
"""Recipes are compared at matched L0: a spec whose mean L0 is further than this from the best's is marked."""


def is_baseline(trainer: str | None) -> bool:
    return trainer in BASELINE_TRAINERS


def best_by_metric(agg: list[dict[str, Any]], cols: list[str], better: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The best non-baseline spec per metric, in the direction its kind declares (none for a metric not won)."""
    best: dict[str, dict[str, Any]] = {}
    for col in cols:
        direction = better.get(col)
        scored = [a for a in agg if col in a and not a.get("baseline")]
        if direction is not None and scored:
            best[col] = (max if direction == "higher" else min)(scored, key=lambda a: a[col]["mean"])
    return best


def l0_apart(x: float | None, y: float | None) -> bool:
    """True when both mean L0s are known and differ by more than ``L0_TOLERANCE`` of the larger."""
    if x is None or y is None:
        return False
    return abs(x - y) > L0_TOLERANCE * max(abs(x), abs(y), 1e-12)


def l0_mismatch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """`l0_apart` for two aggregated specs (False when either has no L0)."""
    return l0_apart(a["l0"]["mean"] if "l0" in a else None, b["l0"]["mean"] if "l0" in b else None)


def marks(a: dict[str, Any], col: str, best: dict[str, dict[str, Any]]) -> tuple[bool, bool, bool]:
    """(is the best, within noise of the best, L0 not matched to the best's) for one spec's metric."""
    top = best.get(col)
    if top is None or col not in a:
        return False, False, False
    if top is a:
        return True, False, False
    return False, within_noise(a[col]["values"], top[col]["values"]), l0_mismatch(a, top)
