"""The model run in cached pieces on a key/value cache: the head all prompts share (once), a prompt's own
tokens, then its continuations as one batch on a frozen copy of the cache. With causal attention this is
the same computation as one pass per full sequence (the tests compare them), at a fraction of the cost on
CPU: the question is not repeated for each answer, nor the template for each question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities.activation_functions import apply_softcap


def new_cache(model: Any) -> TransformerLensKeyValueCache:
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size=1)


def fork(cache: TransformerLensKeyValueCache, n: int = 1, frozen: bool = False) -> TransformerLensKeyValueCache:
    """A cache continuing from ``cache`` (batch 1) for ``n`` sequences; frozen: its runs do not extend it.
    ``cache`` itself is never changed (appending builds new tensors)."""
    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys.expand(n, -1, -1, -1), e.past_values.expand(n, -1, -1, -1), frozen=frozen
        )
        for e in cache.entries
    ]
    return TransformerLensKeyValueCache(entries, cache.previous_attention_mask.expand(n, -1), frozen=frozen)


@torch.no_grad()
def run_piece(model: Any, x: torch.Tensor, cache: TransformerLensKeyValueCache, first_block: int,
              hook: str | None = None, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Run ``x`` after what ``cache`` holds, to the output of the last block. ``x`` is token ids [B, T] (the
    whole model runs) or hook activations [B, T, d] (blocks from ``first_block`` on run). With ``hook``,
    the activations there are returned too. ``mask`` (activations only): [B, cached + T], 0 at padding,
    so rows of different lengths share one run."""
    kwargs: dict[str, Any] = {"stop_at_layer": model.cfg.n_layers, "past_kv_cache": cache}
    if x.dtype == torch.long:  # an explicit mask: SmolLM2's pad id is also its <|im_end|>, which prompts contain
        kwargs["attention_mask"] = torch.ones_like(x)
    else:
        kwargs["start_at_layer"] = first_block
        if mask is not None:
            kwargs["attention_mask"] = mask
    if hook is None:
        return model(x, **kwargs), None
    saved: list[torch.Tensor] = []
    with model.hooks(fwd_hooks=[(hook, lambda act, hook: saved.append(act.detach()))]):
        out = model(x, **kwargs)
    return out, saved[0]


def final_logits(model: Any, resid_ND: torch.Tensor) -> torch.Tensor:
    """Logits at the given final-block residuals only: final norm, unembedding, soft cap as the model
    applies them (TransformerLens' Unembed copies W_U on every call, too slow for one row at a time)."""
    logits = model.ln_final(resid_ND[None])[0] @ model.W_U + model.b_U
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def pad_rows(pieces: list[torch.Tensor], fill: int | float = 0) -> torch.Tensor:
    """Right-pad [T_i, ...] pieces into one [n, max T_i, ...] batch (padding trails, so causal attention
    keeps it out of every real position)."""
    out = pieces[0].new_full((len(pieces), max(len(p) for p in pieces), *pieces[0].shape[1:]), fill)
    for i, p in enumerate(pieces):
        out[i, : len(p)] = p
    return out


@dataclass
class Ran:
    """What one prompt's run gives: the last prompt position's final residual, the continuations'
    final residuals, and (when asked) the hook activations of the prompt's own tokens and continuations."""

    last: torch.Tensor
    conts: torch.Tensor | None
    own_acts: torch.Tensor | None = None
    conts_acts: torch.Tensor | None = None


def run_prompt(model: Any, head: TransformerLensKeyValueCache, own: torch.Tensor, conts: torch.Tensor | None,
               first_block: int, hook: str | None = None) -> Ran:  # fmt: skip
    """One prompt after the shared head: its own tokens (or hook activations) [1, T], then its
    continuations [n, L] as one batch."""
    cache = fork(head)
    out, own_acts = run_piece(model, own, cache, first_block, hook)
    ran = Ran(out[0, -1], None, own_acts[0] if own_acts is not None else None)
    if conts is not None:
        ran.conts, conts_acts = run_piece(model, conts, fork(cache, len(conts), frozen=True), first_block, hook)
        ran.conts_acts = conts_acts
    return ran


def repeat_rows(cache: TransformerLensKeyValueCache, counts: torch.Tensor) -> TransformerLensKeyValueCache:
    """A frozen cache whose row i of ``cache`` is repeated ``counts[i]`` times (each question's cache,
    once per continuation)."""
    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys.repeat_interleave(counts, 0), e.past_values.repeat_interleave(counts, 0), frozen=True
        )
        for e in cache.entries
    ]
    mask = cache.previous_attention_mask
    return TransformerLensKeyValueCache(entries, mask.repeat_interleave(counts.to(mask.device), 0), frozen=True)


def lengths_mask(lengths: list[int], width: int) -> torch.Tensor:
    """[n, width] long: 1 at the first ``lengths[i]`` positions of row i, 0 at its padding."""
    return (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()


@torch.no_grad()
def run_prompts(model: Any, head: TransformerLensKeyValueCache, owns: list[torch.Tensor],
                conts: list[list[torch.Tensor]] | None, first_block: int) -> list[Ran]:  # fmt: skip
    """``run_prompt`` for many prompts in two runs, from hook activations: every prompt's own rows
    [T_i, d] as one right-padded batch after the shared head, then every continuation (``conts[i]``: the
    prompt's choices, [L, d] each) as one batch on its own prompt's cache. A prompt's padding sits between
    its tokens and its continuations, so it is masked out of attention, and rotary positions count real
    tokens only; trailing padding needs no mask (causal attention never reads ahead). Each row computes
    what its own run computes, up to float rounding, in two model calls instead of two per prompt: on
    this CPU, where a prompt's run is already mostly matmul, 6-28% less time per SAE in two measurements
    (docs/BENCHMARKS.md); on a GPU, where one prompt's small kernels leave it idle, the batch is what
    fills it (not measured)."""
    device = owns[0].device
    own_len = [len(o) for o in owns]
    n_head = head.entries[first_block].past_keys.shape[1]  # a head run from activations leaves no mask in the cache
    own_mask = lengths_mask(own_len, max(own_len)).to(device)
    mask = torch.cat([own_mask.new_ones(len(owns), n_head), own_mask], 1)
    cache = fork(head, len(owns))
    out, _ = run_piece(model, pad_rows(owns), cache, first_block, mask=mask)
    ran = [Ran(out[i, n - 1], None) for i, n in enumerate(own_len)]
    if conts is None:
        return ran
    counts = torch.tensor([len(c) for c in conts], device=device)
    x = pad_rows([row for c in conts for row in c])
    cont_mask = torch.cat([mask.repeat_interleave(counts, 0), mask.new_ones(len(x), x.shape[1])], 1)
    cont_out, _ = run_piece(model, x, repeat_rows(cache, counts), first_block, mask=cont_mask)
    for r, block in zip(ran, cont_out.split(counts.tolist()), strict=True):
        r.conts = block
    return ran


def start_layer(hook: str, layer: int) -> int:
    """The first block to run after the hook: resid_post of block L feeds block L + 1."""
    if hook.endswith("hook_resid_post"):
        return layer + 1
    if hook.endswith("hook_resid_pre"):
        return layer
    raise ValueError(f"evals.unlearning supports resid_pre / resid_post hooks, got {hook!r}")
