"""Once per (model, hook, corpus): held-out contexts of the run's own text and the model's activations on them.

Every SAE's autointerp encodes these cached activations, so the model runs once however many SAEs are scored.
Tensors: ``tokens`` [n, L] int64, ``mask`` [n, L] bool (False at BOS / EOS / pad, whose latent activations
SAEBench zeroes), ``acts`` [n, L, d_model] at the model's dtype. ``meta`` also keeps each token id's string
(the tokenizer's per-token decode, as ``to_str_tokens``) so ``evaluate`` never loads the model or tokenizer.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from evals.autointerp.config import AutointerpConfig, held_out_contexts
from evals.contract import EvalEnv, TensorSink
from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents

MIN_CONTEXTS = 4


def special_mask(tokens: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """True where a token is neither BOS, EOS nor pad (sae-bench's ``get_bos_pad_eos_mask``)."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return ~torch.isin(tokens, torch.tensor(sorted(ids), dtype=tokens.dtype))


def prepare(env: EvalEnv, p: AutointerpConfig, sink: TensorSink) -> dict[str, Any]:
    data, spec = env.data, env.model_spec
    model, tokenizer = env.model()
    stream = token_contexts(documents(data, heldout=True), tokenizer, p.llm_context_size, data.prepend_bos)
    wanted = held_out_contexts(p.total_tokens, p.llm_context_size)
    found, seen = 0, set()
    with env.reporter.bar(f"autointerp prep {spec.hook}", total=wanted, unit="ctx") as bar:
        while batch := list(itertools.islice(stream, min(p.llm_batch_size, wanted - found))):
            tokens = torch.tensor(batch, dtype=torch.int64)
            with torch.no_grad():
                _, cache = model.run_with_cache(tokens.to(spec.device), names_filter=[spec.hook], stop_at_layer=spec.layer + 1)
            sink.append("tokens", tokens)
            sink.append("mask", special_mask(tokens, tokenizer))
            sink.append("acts", cache[spec.hook].cpu())
            seen.update(tokens.unique().tolist())
            found += len(batch)
            bar.advance(len(batch))
    if found < MIN_CONTEXTS:
        raise RuntimeError(
            f"evals.autointerp: the held-out split of {data.name!r} has only {found} contexts of "
            f"{p.llm_context_size} tokens; lower llm_context_size"
        )
    return {
        "contexts": found,
        "tokens": found * p.llm_context_size,
        "tokens_requested": p.total_tokens,
        "dataset": f"{data.source}:{data.name} (held-out: one document in {data.holdout_every}, by text hash)",
        "hook": spec.hook,
        "str_tokens": {str(i): tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in sorted(seen)},
    }
