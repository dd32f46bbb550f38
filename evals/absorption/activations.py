"""The model's activations at the word position of each prompt (the only forward passes absorption makes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def tokenize_prompts(prompts: Sequence[str], tokenizer: Any, prepend_bos: bool) -> list[list[int]]:
    """Token ids, with one BOS in front when the SAE's training contexts had one."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if not prepend_bos:
        return [list(x) for x in ids]
    if tokenizer.bos_token_id is None:
        raise ValueError("prepend_bos is set but the tokenizer has no BOS token")
    return [[tokenizer.bos_token_id, *x] for x in ids]


@torch.no_grad()
def activations_at(
    model: Any, token_ids: Sequence[Sequence[int]], hook: str, layer: int, pos: int, batch_size: int,
    on_batch: Callable[[int], Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Activations at ``hook`` at position ``pos`` (from each prompt's end), float32 [n, d_model], and the
    token ids found there. Prompts are batched by equal length so no padding enters a forward pass, and
    cut just after ``pos``: attention is causal, so the tokens after it cannot change the activation
    there (for the default template this drops " has the first letter:", 5 of ~88 tokens)."""
    if any(len(ids) < -pos for ids in token_ids):
        raise ValueError(f"a prompt has fewer than {-pos} tokens: prompt_token_pos {pos} is out of range")
    order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), i))
    out: torch.Tensor | None = None
    found = torch.empty(len(token_ids), dtype=torch.long)
    start = 0
    while start < len(order):
        length = len(token_ids[order[start]])
        stop = start
        while stop < len(order) and stop - start < batch_size and len(token_ids[order[stop]]) == length:
            stop += 1
        rows = order[start:stop]
        tokens = torch.tensor([token_ids[i][: length + pos + 1] for i in rows], device=model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
        acts = cache[hook][:, -1, :].float().cpu()
        if out is None:
            out = torch.empty(len(token_ids), acts.shape[-1])
        out[rows] = acts
        found[rows] = tokens[:, -1].cpu()
        if on_batch is not None:
            on_batch(len(rows))
        start = stop
    assert out is not None
    return out, found
