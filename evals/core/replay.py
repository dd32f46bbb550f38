"""Prep's cached hook activations, served to sae-bench's own sparsity/variance code.

With CE and KL switched off, sae-bench's ``run_evals`` reads only two things from its model and its
ActivationsStore: ``get_batch_tokens(n)`` and then ``run_with_cache(tokens, names_filter=[hook], ...)``'s
activations at the hook, batch after batch (``get_sparsity_and_variance_metrics``). ``CachedBatches``
answers both from the cache in that order, so every reconstruction, sparsity, shrinkage and density
metric is computed by sae-bench's code on exactly the activations its own pass would produce.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor


class CachedBatches:
    """The model and the activations store of ``run_evals``, replaying cached (tokens, activations) batches."""

    def __init__(self, tokens: Iterator[Tensor], acts: Iterator[Tensor], hook: str, batch_size: int, context_size: int, device: str):
        self.tokens, self.acts, self.hook, self.device = tokens, acts, hook, device
        self.store_batch_size_prompts, self.context_size = batch_size, context_size
        self.served: Tensor | None = None

    def get_batch_tokens(self, batch_size: int | None = None) -> Tensor:
        self.served = next(self.tokens).to(self.device)
        if batch_size is not None and len(self.served) != batch_size:
            raise ValueError(f"core: cached batches hold {len(self.served)} contexts, sae-bench asked for {batch_size}")
        return self.served

    def run_with_cache(self, tokens: Tensor, names_filter: list[str], **_: Any) -> tuple[None, dict[str, Tensor]]:
        if tokens is not self.served or names_filter != [self.hook]:
            raise ValueError(f"core: replay serves {self.hook!r} for the batch just handed out, got {names_filter}")
        return None, {self.hook: next(self.acts).to(self.device)}
