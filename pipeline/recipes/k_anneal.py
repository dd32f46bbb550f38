"""K schedule for TopK-style activations.

Linear annealing: k(step) = round(k_start + (k - k_start) * min(1, step / (fraction * total_steps))),
starting dense and tightening to the target k (as used for TopK SAEs with K annealing, e.g.
"Sparse Autoencoders Trained on the Same Data Learn Different Features" / community practice).
A constant schedule is the special case k_start = k.
"""

from __future__ import annotations


class KSchedule:
    """Callable (step, total_steps) -> k."""

    def __init__(self, k: int, k_start: int | None = None, fraction: float = 0.5) -> None:
        self.k = k
        self.k_start = k if k_start is None else k_start
        self.fraction = fraction

    def __call__(self, step: int, total_steps: int) -> int:
        span = max(self.fraction * total_steps, 1e-12)
        progress = min(1.0, max(0.0, step / span))
        return int(round(self.k_start + (self.k - self.k_start) * progress))
