"""The supervised probe baseline (the F1 ceiling), once per synthetic model: this eval's prep."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from evals.contract import EvalEnv, TensorSink
from evals.synthetic.config import SyntheticConfig
from evals.synthetic.rates import TARGET_POSITIVES, effective_rates, probe_sample_count
from pipeline.synthetic.model import derive_seed, sample_chunks

FEATURE_BLOCK = 512
"""Most probes fitted at once (the loss is separable, so a block changes nothing but memory)."""
MAX_ELEMENTS = 1 << 24
"""Largest (rows x probes) logit matrix held at once (64 MiB of float32)."""
ROWS_FLOOR = 20_000
"""Fewest training rows any probe fits on (frequent features need few rows for 100 positives, but a
128-parameter probe still wants many negatives)."""
RARITY_SPREAD = 2
"""A block holds features whose row needs differ by at most this factor (so none fits on far more rows than it needs)."""
MAX_ITERS = 500
TOLERANCE_GRAD = 1e-5
TOLERANCE_CHANGE = 1e-6
"""L-BFGS stops at `MAX_ITERS`, or when the largest gradient entry is below `TOLERANCE_GRAD`, or when the
loss or the step changes by less than its tolerance: `TOLERANCE_CHANGE` per probe of the block (the loss
sums one per-positive BCE of order 1 per probe, so this is float32-level convergence of every probe). A
block that hits `MAX_ITERS` is reported as not converged."""
L2 = 1e-4
"""Ridge on each probe's weights, against its loss per training positive (so rare probes are not shrunk harder)."""
TRAIN_FRACTION = 0.8
DOUBLING_TOLERANCE = 0.01
"""The ceiling is converged in its sample count when the same probe on twice the samples moves its F1 by
less than this (issue 11); the prep runs that check on every model and reports it."""
THRESHOLDS = torch.linspace(-8.0, 8.0, 33)


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))


def _counts(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (pred & y).sum(0).float(), (pred & ~y).sum(0).float(), (~pred & y).sum(0).float()


def fit_block(x: Tensor, y: Tensor, max_iter: int = MAX_ITERS, l2: float = L2) -> tuple[Tensor, Tensor, int]:
    """Logistic regressions of every column of `y` (N, F) bool on `x` (N, d), run to L-BFGS's stopping
    criterion: (W (d, F), b (F,), iterations used)."""
    d, f = x.shape[1], y.shape[1]
    W = torch.zeros(d, f, device=x.device, requires_grad=True)
    prior = y.float().mean(0).clamp(1e-6, 1 - 1e-6)
    b = torch.log(prior / (1 - prior)).detach().clone().requires_grad_(True)
    target = y.float()
    per_positive = 1.0 / y.sum(0).clamp_min(1).float()
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=TOLERANCE_GRAD, tolerance_change=TOLERANCE_CHANGE * f,
    )  # fmt: skip

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.addmm(b, x, W)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(0)
        loss = (bce * per_positive).sum() + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach(), int(opt.state[opt._params[0]]["n_iter"])


def blocks(rates: Tensor, n_train: int) -> list[tuple[Tensor, int]]:
    """Features grouped by rarity (frequent first): (feature indices, training rows the block fits on).
    A block fits on the prefix of the training split in which its rarest feature expects as many
    positives as the rarest feature of the model gets from the whole split (at least `ROWS_FLOOR`), so
    frequent features do not pay for the rare ones' sample count, and doubling the samples doubles every
    block's rows; a block's logits stay under `MAX_ELEMENTS`."""
    out: list[tuple[Tensor, int]] = []
    current: list[int] = []
    rows = first_want = 0
    rarest = float(rates.min().clamp_min(1e-12))
    for i in torch.argsort(rates, descending=True).tolist():
        want = min(n_train, max(ROWS_FLOOR, math.ceil(n_train * rarest / max(float(rates[i]), 1e-12))))
        full = len(current) >= FEATURE_BLOCK or want * (len(current) + 1) > MAX_ELEMENTS
        if current and (full or want > RARITY_SPREAD * first_want):
            out.append((torch.tensor(current), rows))
            current = []
        if not current:
            first_want = want
        current.append(i)
        rows = want
    if current:
        out.append((torch.tensor(current), rows))
    return out


class Positives:
    """Which features fire on which samples, kept sparse (samples x true L0 entries, not samples x
    features) and in row order, so a row range is a slice."""

    def __init__(self, rows: Tensor, cols: Tensor, num_features: int) -> None:
        self.rows, self.cols, self.num_features = rows, cols, num_features

    def dense(self, features: Tensor, first: int, last: int) -> Tensor:
        """(last - first, len(features)) bool: rows first..last-1, the given feature columns."""
        lo, hi = torch.searchsorted(self.rows, torch.tensor([first, last])).tolist()
        where = torch.full((self.num_features,), -1, dtype=torch.long)
        where[features] = torch.arange(len(features))
        col = where[self.cols[lo:hi]]
        hit = col >= 0
        out = torch.zeros(last - first, len(features), dtype=torch.bool)
        out[self.rows[lo:hi][hit] - first, col[hit]] = True
        return out


@torch.no_grad()
def probe_f1(x: Tensor, pos: Positives, rates: Tensor, n_train: int) -> dict[str, Any]:
    """Fit every probe on (a rarity-sized prefix of) the first `n_train` rows, tune its threshold there,
    score it on the rest: per-feature test F1 and aggregates."""
    x_train = x[:n_train]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    n_feat, n_test = len(rates), x.shape[0] - n_train
    f1_tuned, f1_half = torch.zeros(n_feat), torch.zeros(n_feat)
    prec, rec = torch.zeros(n_feat), torch.zeros(n_feat)
    train_pos, test_pos = torch.zeros(n_feat), torch.zeros(n_feat)
    iters: list[int] = []
    for feats, rows in blocks(rates, n_train):
        ytr = pos.dense(feats, 0, rows)
        with torch.enable_grad():
            W, b, used = fit_block(x[:rows], ytr)
        iters.append(used)
        train_logits = torch.addmm(b, x[:rows], W)
        best = torch.full((len(feats),), -1.0)
        best_t = torch.zeros(len(feats))
        for t in THRESHOLDS:
            f = _f1(*_counts(train_logits > t, ytr))
            better = f > best
            best, best_t = torch.where(better, f, best), torch.where(better, t, best_t)
        tuned, half = torch.zeros(3, len(feats)), torch.zeros(3, len(feats))
        step = max(1, MAX_ELEMENTS // len(feats))
        for first in range(n_train, x.shape[0], step):
            last = min(x.shape[0], first + step)
            yte = pos.dense(feats, first, last)
            logits = torch.addmm(b, x[first:last], W)
            tuned += torch.stack(_counts(logits > best_t, yte))
            half += torch.stack(_counts(logits > 0, yte))
        tp, fp, fn = tuned
        f1_tuned[feats], f1_half[feats] = _f1(tp, fp, fn), _f1(*half)
        prec[feats] = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
        rec[feats] = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp))
        train_pos[feats], test_pos[feats] = ytr.sum(0).float(), tp + fn
    has_pos = test_pos > 0
    n_eval = int(has_pos.sum())
    return {
        "f1": float(f1_tuned[has_pos].mean()) if n_eval else 0.0,
        "f1_all": float(f1_tuned.mean()),
        "f1_at_half": float(f1_half[has_pos].mean()) if n_eval else 0.0,
        "precision": float(prec[has_pos].mean()) if n_eval else 0.0,
        "recall": float(rec[has_pos].mean()) if n_eval else 0.0,
        "features_with_test_positives": n_eval,
        "num_features": n_feat,
        "min_train_positives": int(train_pos.min()),
        "features_below_target": int((train_pos < TARGET_POSITIVES).sum()),
        "lbfgs_max_iterations": max(iters),
        "converged": all(i < MAX_ITERS for i in iters),
        "test_samples": n_test,
        "per_feature_f1": f1_tuned.tolist(),
    }


def sample_positives(model: Any, n: int, seed: int) -> tuple[Tensor, Positives]:
    """`n` fresh samples: hidden vectors (n, d) and which features fire (sparse: the dense float features
    exist one chunk at a time)."""
    hidden_parts, rows, cols = [], [], []
    first = 0
    for hidden, feats in sample_chunks(model, n, seed, with_features=True):
        assert feats is not None
        hidden_parts.append(hidden.float().cpu())
        r, c = (feats > 0).nonzero(as_tuple=True)
        rows.append(r.cpu() + first)
        cols.append(c.cpu())
        first += hidden.shape[0]
    return torch.cat(hidden_parts), Positives(torch.cat(rows), torch.cat(cols), model.cfg.num_features)


def run_probes(model: Any, n: int, seed: int) -> dict[str, Any]:
    """The probe ceiling of `model` on `n` samples from stream `seed` (80% train, 20% test)."""
    hidden, pos = sample_positives(model, n, seed)
    n_train = int(n * TRAIN_FRACTION)
    return probe_f1(hidden, pos, effective_rates(model), n_train) | {"train_samples": n_train}


def doubling_check(once: dict[str, Any], twice: dict[str, Any], n: int) -> dict[str, Any]:
    """The probe on 2n samples beside the one on n: F1 at 2n, the change, and whether it is under the tolerance."""
    change = twice["f1"] - once["f1"]
    return {
        "probe_samples": 2 * n,
        "f1": twice["f1"],
        "change": change,
        "tolerance": DOUBLING_TOLERANCE,
        "stable": abs(change) < DOUBLING_TOLERANCE,
        "converged": twice["converged"],
        "lbfgs_max_iterations": twice["lbfgs_max_iterations"],
        "min_train_positives": twice["min_train_positives"],
    }


def prepare(env: EvalEnv, p: SyntheticConfig, sink: TensorSink) -> dict[str, Any]:
    """Probes on `probe_samples` fresh samples (chosen per model when the config leaves it out), then on
    twice as many from the same seeded stream (the doubling check); the report shows the returned meta as ``probe_baseline``. The ceiling is the first
    run's F1, the one the check vouches for."""
    spec = env.synthetic
    model = env.synthetic_model()
    n = probe_sample_count(model, spec.probe_samples, spec.probe_max_samples, TRAIN_FRACTION)
    seed = derive_seed(spec.seed, "probe")
    started = time.perf_counter()
    result = run_probes(model, n, seed)
    first = time.perf_counter()
    twice = run_probes(model, 2 * n, seed)
    return {
        "metrics": {k: v for k, v in result.items() if k not in ("per_feature_f1", "test_samples", "train_samples")},
        "method": "one logistic-regression probe per ground-truth feature (L-BFGS to convergence, train-tuned threshold)",
        "probe_samples": n,
        "train_samples": result["train_samples"],
        "test_samples": result["test_samples"],
        "per_feature_f1": result["per_feature_f1"],
        "doubling": doubling_check(result, twice, n),
        "seconds": {"probe": round(first - started, 1), "doubling": round(time.perf_counter() - first, 1)},
    }
