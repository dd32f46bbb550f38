"""The supervised probe baseline (the F1 ceiling), once per synthetic model: this eval's prep."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from evals.contract import EvalEnv, TensorSink
from evals.synthetic.config import SyntheticConfig
from pipeline.synthetic.model import derive_seed, sample_chunks

FEATURE_BLOCK = 512
LBFGS_ITERS = 25
L2 = 1e-4
TRAIN_FRACTION = 0.8
THRESHOLDS = torch.linspace(-8.0, 8.0, 33)


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))


def _counts(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (pred & y).sum(0).float(), (pred & ~y).sum(0).float(), (~pred & y).sum(0).float()


def fit_block(x: Tensor, y: Tensor, iters: int = LBFGS_ITERS, l2: float = L2) -> tuple[Tensor, Tensor]:
    """Logistic regressions of every column of `y` (N, F) bool on `x` (N, d): (W (d, F), b (F,))."""
    d, f = x.shape[1], y.shape[1]
    W = torch.zeros(d, f, device=x.device, requires_grad=True)
    prior = y.float().mean(0).clamp(1e-6, 1 - 1e-6)
    b = torch.log(prior / (1 - prior)).detach().clone().requires_grad_(True)
    target = y.float()
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=iters, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.addmm(b, x, W)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(0).sum()
        loss = loss + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


@torch.no_grad()
def probe_f1(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, Any]:
    """Fit all probes and score them; returns per-feature test F1 and aggregates."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_feat = y_train.shape[1]
    f1_tuned, f1_half = torch.zeros(n_feat), torch.zeros(n_feat)
    prec, rec = torch.zeros(n_feat), torch.zeros(n_feat)
    grid = THRESHOLDS.to(x_train.device)
    for lo in range(0, n_feat, FEATURE_BLOCK):
        hi = min(n_feat, lo + FEATURE_BLOCK)
        with torch.enable_grad():
            W, b = fit_block(x_train, y_train[:, lo:hi])
        train_logits = torch.addmm(b, x_train, W)
        ytr = y_train[:, lo:hi]
        best = torch.full((hi - lo,), -1.0, device=x_train.device)
        best_t = torch.zeros(hi - lo, device=x_train.device)
        for t in grid:
            f = _f1(*_counts(train_logits > t, ytr))
            better = f > best
            best = torch.where(better, f, best)
            best_t = torch.where(better, t, best_t)
        test_logits = torch.addmm(b, x_test, W)
        yte = y_test[:, lo:hi]
        tp, fp, fn = _counts(test_logits > best_t, yte)
        f1_tuned[lo:hi] = _f1(tp, fp, fn).cpu()
        prec[lo:hi] = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp)).cpu()
        rec[lo:hi] = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp)).cpu()
        f1_half[lo:hi] = _f1(*_counts(test_logits > 0, yte)).cpu()
    has_pos = (y_test.sum(0) > 0).cpu()
    n_eval = int(has_pos.sum())
    return {
        "f1": float(f1_tuned[has_pos].mean()) if n_eval else 0.0,
        "f1_all": float(f1_tuned.mean()),
        "f1_at_half": float(f1_half[has_pos].mean()) if n_eval else 0.0,
        "precision": float(prec[has_pos].mean()) if n_eval else 0.0,
        "recall": float(rec[has_pos].mean()) if n_eval else 0.0,
        "features_with_test_positives": n_eval,
        "num_features": n_feat,
        "per_feature_f1": f1_tuned.tolist(),
    }


def prepare(env: EvalEnv, p: SyntheticConfig, sink: TensorSink) -> dict[str, Any]:
    """Probes on ``probe_samples`` fresh samples; the report shows the returned meta as ``probe_baseline``."""
    spec = env.synthetic
    n = spec.probe_samples
    model = env.synthetic_model()
    hidden_parts, y_parts = [], []
    for hidden, feats in sample_chunks(model, n, derive_seed(spec.seed, "probe"), with_features=True):
        assert feats is not None
        hidden_parts.append(hidden)
        y_parts.append(feats > 0)  # bool per chunk: the dense float features never exist all at once
    hidden, y = torch.cat(hidden_parts), torch.cat(y_parts)
    cut = int(n * TRAIN_FRACTION)
    result = probe_f1(hidden[:cut].float(), y[:cut], hidden[cut:].float(), y[cut:])
    return {
        "metrics": {k: v for k, v in result.items() if k != "per_feature_f1"},
        "method": "one logistic-regression probe per ground-truth feature (L-BFGS, train-tuned threshold)",
        "probe_samples": n,
        "train_samples": cut,
        "test_samples": n - cut,
        "per_feature_f1": result["per_feature_f1"],
    }
