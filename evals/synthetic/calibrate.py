"""Matched L0: scale an SAE's fitted inference thresholds by one common factor so its mean L0 is its k.

A threshold-type SAE's inference L0 is whatever its fitted threshold gives (BatchTopK's running estimate,
JumpReLU's trained thresholds), and recipes differ in where it settles: K annealing leaves the full
recipe's 6-12% above k. Comparing F1 or MCC at different L0s mixes sparsity into the recipe comparison,
so the eval can first move every threshold by the same factor s (the ordering of latents' thresholds,
which training chose, is kept) until the mean L0 on calibration samples equals the target. TopK needs
nothing (its L0 is k by construction); an SAE without thresholds (ReLU + L1) cannot be matched this way
and is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from sae_lens import TopKSAE
from torch import Tensor

from pipeline.recipes.activation import BatchTopK, JumpReLU

LOG_BRACKET = (math.log(1e-6), math.log(1e6))
"""Range of log s searched: wide, since a JumpReLU whose L0 penalty never bit needs s in the thousands."""
REL_TOL = 1e-3
"""Stop once the mean L0 is within this fraction of the target (a step of 1/n samples finer than any
difference the report marks, which is 5%)."""
MAX_STEPS = 60


class Thresholds:
    """The inference thresholds of one SAE, held at their fitted values and scaled together."""

    def __init__(self, tensors: list[Tensor], logs: list[bool]) -> None:
        self.tensors, self.logs = tensors, logs
        self.fitted = [t.detach().clone() for t in tensors]

    @torch.no_grad()
    def scale(self, s: float) -> None:
        """Set every threshold to s x its fitted value (a log-parametrised one to its log + log s)."""
        for t, fitted, is_log in zip(self.tensors, self.fitted, self.logs, strict=True):
            t.copy_(fitted + math.log(s) if is_log else fitted * s)

    def all_zero(self) -> bool:
        return all(not is_log and not bool(f.any()) for f, is_log in zip(self.fitted, self.logs, strict=True))


def thresholds_of(sae: Any) -> Thresholds | None:
    """The thresholds `sae.encode` compares against (a saepipe coder's activation, a sae-lens JumpReLU's
    ``threshold``; through a leave-one-out wrapper), or None when it has none (TopK, ReLU + L1)."""
    inner = getattr(sae, "sae", None)  # LooSAE wraps a sae-lens SAE
    if inner is not None:
        return thresholds_of(inner)
    coder = getattr(sae, "coder", None)  # CoderAsSAE
    if coder is not None:
        act = coder.activation
        if isinstance(act, BatchTopK):
            return Thresholds([act.threshold_global, act.threshold_latent], [False, False])
        if isinstance(act, JumpReLU):
            return Thresholds([act.direct_threshold], [False]) if act.direct else Thresholds([act.log_threshold], [True])
        return None
    threshold = getattr(sae, "threshold", None)
    return Thresholds([threshold], [False]) if isinstance(threshold, Tensor) else None


def is_topk(sae: Any) -> bool:
    """A TopK SAE (saepipe's coder or sae-lens's), through a leave-one-out wrapper."""
    sae = getattr(sae, "sae", sae)
    coder = getattr(sae, "coder", None)
    return coder.recipe.activation == "topk" if coder is not None else isinstance(sae, TopKSAE)


@torch.no_grad()
def mean_l0(sae: Any, x: Tensor, rows: int) -> float:
    """Mean active latents per sample of `sae.encode` on `x`, as sae-lens's eval counts them (codes != 0)."""
    active = sum(int((sae.encode(x[i : i + rows]) != 0).sum()) for i in range(0, x.shape[0], rows))
    return active / x.shape[0]


@dataclass(frozen=True)
class Calibration:
    """Where the common factor landed."""

    method: str
    """'threshold_scale', or why nothing was scaled ('topk: L0 <= k by construction', ...)."""
    factor: float | None
    """s (1.0 when nothing was scaled); None when the SAE has no thresholds."""
    l0: float
    """Mean L0 on the calibration samples at s."""
    l0_fitted: float
    """Mean L0 on the calibration samples at the fitted thresholds."""
    reached: bool
    """Whether l0 is within `REL_TOL` of the target (False: the bracket or the SAE's form could not get there)."""
    steps: int


def calibrate(sae: Any, x: Tensor, target: float, rows: int) -> Calibration:
    """Bisection on log s until the mean L0 of `sae` on `x` is within `REL_TOL` of `target`; leaves the
    SAE's thresholds at the factor found (the end of the bracket nearest the target if none reaches it).
    The L0 is measured through the SAE's whole inference (LISTA refinement and LOO pruning included)."""
    fitted = mean_l0(sae, x, rows)
    near = lambda l0: abs(l0 - target) <= REL_TOL * target
    th = thresholds_of(sae)
    if th is None:
        why = "topk: L0 <= k by construction" if is_topk(sae) else "no inference threshold"
        return Calibration(why, None, fitted, fitted, near(fitted), 0)
    if near(fitted):
        return Calibration("threshold_scale", 1.0, fitted, fitted, True, 0)
    if th.all_zero():
        return Calibration("threshold_scale: fitted thresholds all zero, nothing to scale", 1.0, fitted, fitted, False, 0)
    lo, hi = LOG_BRACKET  # L0 falls as s grows
    best = (abs(fitted - target), 0.0, fitted)
    steps = 0
    while steps < MAX_STEPS:
        mid = (lo + hi) / 2
        th.scale(math.exp(mid))
        l0 = mean_l0(sae, x, rows)
        steps += 1
        best = min(best, (abs(l0 - target), mid, l0))
        if near(l0):
            break
        lo, hi = (mid, hi) if l0 > target else (lo, mid)
    _, log_s, l0 = best
    th.scale(math.exp(log_s))
    return Calibration("threshold_scale", math.exp(log_s), l0, fitted, near(l0), steps)
