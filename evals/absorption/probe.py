"""The first-letter probe on the model's own activations (sae-bench's trainer), and which letters it reads."""

from __future__ import annotations

import torch
from sae_bench.evals.absorption import probing
from sae_bench.evals.absorption.vocab import LETTERS
from sklearn import metrics

from evals.absorption.config import AbsorptionParams
from evals.absorption.quiet import quiet_saebench

PROBE_SETTINGS = {"batch_size": 64, "num_epochs": 50, "lr": 1e-2, "weight_decay": 1e-4}
"""The LLM probe's training settings in sae-bench's ``train_and_save_probes`` / ``train_linear_probe_for_task``."""


def train_letter_probe(acts: torch.Tensor, labels: torch.Tensor, seed: int, device: str = "cpu") -> probing.LinearProbe:
    """sae-bench's first-letter probe (``train_linear_probe_for_task``'s call of ``train_multi_probe``),
    returned on the CPU."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.enable_grad(), quiet_saebench():
        torch.manual_seed(seed)
        probe = probing.train_multi_probe(
            x_train=acts.float().to(dev), y_train=torch.nn.functional.one_hot(labels, len(LETTERS)).to(dev),
            num_probes=len(LETTERS), show_progress=False, verbose=False, device=dev, **PROBE_SETTINGS,
        )  # fmt: skip
    return probe.cpu().eval()


def probe_from_tensors(weight: torch.Tensor, bias: torch.Tensor) -> probing.LinearProbe:
    probe = probing.LinearProbe(weight.shape[1], num_outputs=weight.shape[0])
    with torch.no_grad():
        probe.fc.weight.copy_(weight)
        probe.fc.bias.copy_(bias)
    return probe.eval()


def letter_probe_stats(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per letter, the LLM probe's test F1 / precision / recall / AUC at logit 0 (``build_metrics_df``)."""
    out: dict[str, dict[str, float]] = {}
    y_all, s_all = labels.numpy(), scores.numpy()
    for i, letter in enumerate(LETTERS):
        y, s = y_all == i, s_all[:, i]
        out[letter] = {
            "f1": float(metrics.f1_score(y, s > 0.0, zero_division=0.0)),
            "precision": float(metrics.precision_score(y, s > 0.0, zero_division=0.0)),
            "recall": float(metrics.recall_score(y, s > 0.0, zero_division=0.0)),
            "auc": float(metrics.roc_auc_score(y, s)),
            "n_test": int(y.sum()),
        }
    return out


def letters_passing(probe_stats: dict[str, dict[str, float]], p: AbsorptionParams, hook: str) -> list[str]:
    """Letters whose LLM probe test F1 exceeds ``min_GT_probe_f1``; raises when fewer than
    ``min_feats_for_eval`` do, where SAEBench's ``run_eval`` stops without a result."""
    passing = [letter for letter, s in probe_stats.items() if s["f1"] > p.min_GT_probe_f1]
    if len(passing) < p.min_feats_for_eval:
        raise RuntimeError(
            f"absorption: the first-letter probe at {hook} has test F1 > min_GT_probe_f1={p.min_GT_probe_f1} for "
            f"{len(passing)} letters ({''.join(passing) or 'none'}), fewer than "
            f"min_feats_for_eval={p.min_feats_for_eval}; SAEBench reports no absorption result then "
            "(use more words_per_letter, a later layer, or lower the bounds)"
        )
    return passing
