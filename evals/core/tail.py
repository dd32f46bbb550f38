"""The part of the model after the SAE's hook, run from a cached residual.

CE loss and KL with the SAE spliced in depend on the SAE only from the hook on: the embedding and the
blocks below it compute the same thing for every SAE. So prep caches the residual where the tail
starts and each SAE's eval runs only the tail (``HookedTransformer.forward(start_at_layer=...)``).

For ``blocks.L.hook_resid_post`` the tail starts at block L+1 from the hook's own activations (block
L+1's ``hook_resid_pre`` receives exactly them); for ``hook_resid_pre`` it starts at block L from them;
for ``hook_resid_mid`` (and the last block's ``resid_post``, which no block reads) it starts at block L
from its ``hook_resid_pre`` and the splice happens inside block L.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from evals.core.measures import next_token_ce
from pipeline.config.model import HOOK_RE

Replace = Callable[[Tensor], Tensor]
"""The activations at the splice hook -> what the rest of the model reads instead."""


@dataclass(frozen=True)
class Tail:
    start_layer: int
    """First block the tail runs."""
    start_hook: str
    """The hook whose activations the tail starts from (cached by prep)."""
    splice_hook: str
    """Where the SAE's reconstruction replaces the activations inside the tail."""

    @classmethod
    def of(cls, hook: str, n_layers: int) -> Tail:
        match = HOOK_RE.match(hook)
        if match is None:
            raise ValueError(f"core: cannot splice at {hook!r}; expected blocks.<layer>.hook_resid_(pre|mid|post)")
        layer, site = int(match.group(1)), match.group(2)
        if site == "post" and layer + 1 < n_layers:
            nxt = f"blocks.{layer + 1}.hook_resid_pre"
            return cls(layer + 1, nxt, nxt)
        pre = f"blocks.{layer}.hook_resid_pre"
        return cls(layer, pre, pre if site == "pre" else hook)

    @property
    def starts_at_splice(self) -> bool:
        """The tail's input is the SAE hook's activations themselves (no separate residual to cache)."""
        return self.start_hook == self.splice_hook

    def logits(self, model: Any, start: Tensor, tokens: Tensor, replace: Replace | None = None) -> tuple[Tensor, Tensor | None]:
        """(logits, attention mask) of the full model on ``tokens``, computed from ``start`` (the
        activations at ``start_hook``), with ``replace`` applied at the splice hook. The attention mask
        and positional extras are what the full forward derives from the tokens."""
        _, _, shortformer_pos_embed, attention_mask = model.input_to_embed(tokens)
        hooks = [] if replace is None else [(self.splice_hook, lambda acts, hook: replace(acts))]
        logits = model.run_with_hooks(
            start,
            start_at_layer=self.start_layer,
            tokens=tokens,
            shortformer_pos_embed=shortformer_pos_embed,
            attention_mask=attention_mask,
            return_type="logits",
            fwd_hooks=hooks,
        )
        return logits, attention_mask

    def run(self, model: Any, start: Tensor, tokens: Tensor, replace: Replace | None = None) -> tuple[Tensor, Tensor]:
        """(log-probs, per-token CE) as ``logits`` runs them: the one log-softmax serves the CE
        (TransformerLens's, ``return_type="both"``) and KL."""
        logits, attention_mask = self.logits(model, start, tokens, replace)
        log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
        return log_probs, next_token_ce(log_probs, tokens, attention_mask)
