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
from transformer_lens.utilities.activation_functions import apply_softcap

from evals.core.measures import next_token_ce
from pipeline.config.model import HOOK_RE
from pipeline.data.reused import Reused

Replace = Callable[[Tensor], Tensor]
"""The activations at the splice hook -> what the rest of the model reads instead."""


def unembed(model: Any, resid: Tensor, reused: Reused | None = None) -> Tensor:
    """Logits from the last block's output as ``HookedTransformer.forward`` computes them after its
    blocks: ``ln_final``, then ``Unembed``'s ``F.linear(x, W_U.T.contiguous(), b_U)``, then the soft cap.
    The linear runs as the ``addmm`` that ``F.linear`` calls for a contiguous 3-d input, into a reused
    tensor (a new one without ``reused``): the same kernel, so the same bits (tests/evals/test_core.py).
    The vocabulary-sized tensors are what ``Reused`` is for: 8 x 128 x 49,152 floats a batch for the
    default."""
    x = model.ln_final(resid).contiguous()
    shape = (*x.shape[:-1], model.cfg.d_vocab_out)
    out = (reused or Reused()).get("logits", shape, x)
    torch.addmm(model.b_U, x.view(-1, x.shape[-1]), model.W_U.T.contiguous().t(), out=out.view(-1, shape[-1]))
    return apply_softcap(out, model.cfg.output_logits_soft_cap)


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

    def logits(self, model: Any, start: Tensor, tokens: Tensor, replace: Replace | None = None,
               reused: Reused | None = None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        """(logits, attention mask) of the full model on ``tokens``, computed from ``start`` (the
        activations at ``start_hook``), with ``replace`` applied at the splice hook. The attention mask
        and positional extras are what the full forward derives from the tokens. With ``reused``, the
        logits are written into its tensor (valid until the next batch)."""
        _, _, shortformer_pos_embed, attention_mask = model.input_to_embed(tokens)
        hooks = [] if replace is None else [(self.splice_hook, lambda acts, hook: replace(acts))]
        resid = model.run_with_hooks(
            start,
            start_at_layer=self.start_layer,
            stop_at_layer=model.cfg.n_layers,
            tokens=tokens,
            shortformer_pos_embed=shortformer_pos_embed,
            attention_mask=attention_mask,
            fwd_hooks=hooks,
        )
        return unembed(model, resid, reused), attention_mask

    def run(self, model: Any, start: Tensor, tokens: Tensor, replace: Replace | None = None,
            reused: Reused | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(log-probs, per-token CE) as ``logits`` runs them: the one log-softmax serves the CE
        (TransformerLens's, ``return_type="both"``) and KL. With ``reused``, logits and log-probs are
        its tensors (valid until the next batch)."""
        logits, attention_mask = self.logits(model, start, tokens, replace, reused)
        log_probs = torch.log_softmax(logits, dim=-1, out=(reused or Reused()).get("log_probs", logits.shape, logits))
        return log_probs, next_token_ce(log_probs, tokens, attention_mask)
