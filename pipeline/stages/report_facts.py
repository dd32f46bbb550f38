"""What the report says about each SAE besides its scores: how it was trained (trainer, whether it is a
baseline, the settings in which it departs from sae-lens's defaults), and how a baseline reads beside the best."""

from __future__ import annotations

import json
from typing import Any

from pipeline.stages.report_stats import is_baseline

FACTS = ("sae", "spec", "shape", "seed", "trainer", "d_sae", "k", "train_tokens", "baseline", "differs_from_reference")
"""Row keys that describe an SAE rather than score it."""


def differs_text(differs: dict[str, Any] | None) -> str:
    """'lr 0.001 (sae-lens 0.0003)' per setting that differs from the reference trainer's default (the train
    stage records ``{setting: [ours, sae-lens default]}``); any other value is shown as it is."""
    if not differs:
        return ""
    parts = []
    for k, v in differs.items():
        if isinstance(v, list) and len(v) == 2:
            parts.append(f"{k} {_value(v[0])} (sae-lens {_value(v[1])})")
        else:
            parts.append(f"{k} {_value(v)}")
    return ", ".join(parts)


def _value(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, dict | list) else str(v)


def train_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of a train artifact; the trainer's ``differs_from_reference`` (settings unlike
    sae-lens's defaults) is read from its result or params, and absent when neither has it."""
    p, summary = manifest["params"], manifest.get("summary") or {}
    trainer = summary.get("trainer", p["trainer"])
    facts = {"trainer": trainer, "d_sae": p["d_sae"], "k": p["k"], "train_tokens": summary["tokens"],
             "baseline": is_baseline(trainer)}  # fmt: skip
    differs = summary.get("differs_from_reference", p.get("differs_from_reference"))
    if differs:
        facts["differs_from_reference"] = differs
    return facts


def baselines_text(board_entry: dict[str, Any]) -> str:
    """'pca 0.12 ≈, random 0.03': each baseline's mean; ≈ when the seeds cannot tell the best from it;
    '‡ best scores below it' when its mean is better than the best's."""
    return ", ".join(f"{name} {b['mean']:.4g}" + (" ≈" if b["within_noise_of_best"] else "")
                     + (" ‡ best scores below it" if b.get("beats_best") else "")
                     for name, b in board_entry.get("baselines", {}).items())  # fmt: skip
