"""Settings of the synthetic ground-truth eval (the model and its sample counts are the ``synthetic:`` section)."""

from __future__ import annotations

from typing import Any

from pipeline.config import EvalConfig


class SyntheticConfig(EvalConfig):
    """Ground-truth metrics (F1, MCC, uniqueness, EV, L0, dead) for synthetic runs, and the probe ceiling."""

    enabled: bool = True
    """Run this eval (not part of any stage key)."""
    loo_tau: float | None = None
    """Also score each SAE with leave-one-out pruning at inference (threshold tau) as its own variant
    ('+loo'); within a variant's stage, the tau that variant applies (None: plain)."""


def variants(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Plain, and '+loo' when ``loo_tau`` is set."""
    out = {"": {**settings, "loo_tau": None}}
    if settings["loo_tau"] is not None:
        out["+loo"] = settings
    return out
