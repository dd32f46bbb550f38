"""Settings of the core eval (SAEBench's ``CoreEvalConfig``; its field names given in each docstring)."""

from __future__ import annotations

from pydantic import NonNegativeInt

from pipeline.config import EvalConfig
from pipeline.config.base import PositiveInt


class CoreConfig(EvalConfig):
    """SAEBench core metrics (language-model runs only; a synthetic run has no model to splice into)."""

    enabled: bool = True
    """Run this eval (not part of any stage key)."""
    batch_size_prompts: PositiveInt = 8
    """Held-out contexts per forward pass (SAEBench's batch_size_prompts)."""
    n_reconstruction_batches: PositiveInt = 4
    """Batches for reconstruction, CE and KL (SAEBench's n_eval_reconstruction_batches)."""
    n_sparsity_batches: PositiveInt = 4
    """Batches for sparsity and variance (SAEBench's n_eval_sparsity_variance_batches)."""
    context_size: PositiveInt | None = None
    """Tokens per held-out context (SAEBench's context_size, 128 by default there; CE and KL depend on it).
    None: the run's ``data.context_size``."""
    clean_logits_max_mib: NonNegativeInt = 1024
    """Prep stores the clean side of KL (the clean pass's probabilities, as many bytes as its logits) when
    it takes at most this many MiB (contexts x context size x vocabulary x the model's float size); above
    it each SAE's eval reruns the model's clean tail from the cached residual instead. Both give the same
    numbers: disk against one more tail pass per reconstruction batch. Not a SAEBench setting."""

    @property
    def n_reconstruction_contexts(self) -> int:
        """Held-out contexts the CE/KL passes read (the first ones; the sparsity passes restart from the first too)."""
        return self.batch_size_prompts * self.n_reconstruction_batches

    @property
    def n_contexts(self) -> int:
        """Held-out contexts the eval reads: enough for the larger of its two batch counts."""
        return self.batch_size_prompts * max(self.n_reconstruction_batches, self.n_sparsity_batches)

    def tokens_per_context(self, run_context_size: int | None) -> int | None:
        """``context_size``, else the run's."""
        return self.context_size or run_context_size

    def clean_logits_bytes(self, context_size: int, d_vocab: int, float_bytes: int) -> int | None:
        """Bytes of the clean probabilities when prep stores them (within ``clean_logits_max_mib``), else None."""
        n = self.n_reconstruction_contexts * context_size * d_vocab * float_bytes
        return n if n <= self.clean_logits_max_mib * 2**20 else None
