"""The report's statistics over seeds: intervals, "within noise", and a difference with its interval.

One place for the rule every comparison in the report uses (Welch's t-test, p < 0.05 to claim a difference).
"""

from __future__ import annotations

import math
import statistics

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
