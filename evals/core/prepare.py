"""Once per (model, hook, held-out data, settings): every model pass of SAEBench's core eval that no SAE
changes, so each SAE's eval costs the SAE plus the model's tail (``evals/core/tail.py``).

sae-bench's ``run_evals`` reads the held-out contexts in batches of ``batch_size_prompts``: the first
``n_reconstruction_batches`` for CE/KL (per batch a clean pass, a pass with the SAE spliced in and one
with the hook zero-ablated), then, from the first context again, ``n_sparsity_batches`` for the
reconstruction/sparsity metrics (a pass up to the hook). Stored here, in bounded chunks:

* ``tokens``: the contexts (max of both batch counts);
* ``acts``: the activations at the hook, one row per context (they feed the sparsity metrics, and are
  the tail's input for ``resid_pre``/``resid_post`` hooks);
* ``resid``: for other hooks only, the residual the tail starts from (``Tail.start_hook``);
* ``ce_clean``, ``ce_ablated``, ``kl_ablated``: per-token values at the positions that count, in
  sae-bench's order;
* ``clean_probs``, ``clean_plogp``: the clean side of KL (``measures.clean_side``: the clean pass's
  probabilities and per position sum p log p), when they fit ``clean_logits_max_mib``.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from evals.contract import EvalEnv, TensorSink
from evals.core.config import CoreConfig
from evals.core.measures import clean_side, counted_ce, counted_kl, special_mask
from evals.core.tail import Tail
from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents

TOKENS = "tokens"
ACTS = "acts"
RESID = "resid"
CE_CLEAN = "ce_clean"
CE_ABLATED = "ce_ablated"
KL_ABLATED = "kl_ablated"
CLEAN_PROBS = "clean_probs"
CLEAN_PLOGP = "clean_plogp"


def heldout_tokens(env: EvalEnv, p: CoreConfig, tokenizer: Any) -> Tensor:
    """The first ``p.n_contexts`` contexts of the run's held-out documents (never trained on)."""
    data = env.data
    stream = token_contexts(documents(data, heldout=True), tokenizer, p.tokens_per_context(data.context_size), data.prepend_bos)
    rows = list(itertools.islice(stream, p.n_contexts))
    if len(rows) < p.n_contexts:
        raise RuntimeError(
            f"evals.core: the held-out split of {data.name!r} has only {len(rows)} contexts, need {p.n_contexts}; "
            "lower n_reconstruction_batches / n_sparsity_batches / batch_size_prompts"
        )
    return torch.tensor(rows, dtype=torch.int64)


def ignored_tokens(tokenizer: Any) -> list[int]:
    """BOS/EOS/pad ids: left out of every metric, as sae-bench's runner does."""
    return sorted({t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) if t is not None})


def model_passes(model: Any, batch: Tensor, tail: Tail, hook: str, mask: Tensor, sink: TensorSink, keep_logits: bool) -> Tensor:
    """One CE/KL batch: the clean pass (capturing the hook's and the tail's input) and the zero-ablated
    pass; stores their per-token CE/KL; returns the hook's activations."""
    captured: dict[str, Tensor] = {}

    def capture(acts: Tensor, hook: Any) -> None:
        captured[hook.name] = acts.detach().clone()

    captures = [hook] if tail.starts_at_splice else [hook, tail.start_hook]
    clean_logits, ce_clean = model.run_with_hooks(
        batch, return_type="both", loss_per_token=True, fwd_hooks=[(name, capture) for name in captures]
    )
    ablated_logits, ce_ablated = model.run_with_hooks(
        batch, return_type="both", loss_per_token=True, fwd_hooks=[(hook, lambda acts, hook: torch.zeros_like(acts))]
    )
    probs, plogp = clean_side(clean_logits)
    sink.append(CE_CLEAN, counted_ce(ce_clean, mask))
    sink.append(CE_ABLATED, counted_ce(ce_ablated, mask))
    sink.append(KL_ABLATED, counted_kl(probs, plogp, ablated_logits, mask))
    if keep_logits:
        sink.append(CLEAN_PROBS, probs)
        sink.append(CLEAN_PLOGP, plogp)
    if not tail.starts_at_splice:
        sink.append(RESID, captured[tail.start_hook])
    return captured[hook]


def prepare(env: EvalEnv, p: CoreConfig, sink: TensorSink) -> dict[str, Any]:
    model, tokenizer = env.model()
    hook, device = env.model_spec.hook, env.model_spec.device
    tail = Tail.of(hook, model.cfg.n_layers)
    tokens = heldout_tokens(env, p, tokenizer)
    ignore = ignored_tokens(tokenizer)
    keep_logits = p.clean_logits_bytes(tokens.shape[1], model.cfg.d_vocab, model.cfg.dtype.itemsize) is not None
    sink.append(TOKENS, tokens)
    batches = max(p.n_reconstruction_batches, p.n_sparsity_batches)
    with env.reporter.bar("core prep", total=batches, unit="batch") as bar, torch.no_grad():
        for i, batch in enumerate(tokens.to(device).split(p.batch_size_prompts)):
            if i < p.n_reconstruction_batches:
                acts = model_passes(model, batch, tail, hook, special_mask(batch, ignore), sink, keep_logits)
            else:
                _, cache = model.run_with_cache(batch, prepend_bos=False, names_filter=[hook], stop_at_layer=env.model_spec.layer + 1)
                acts = cache[hook]
            sink.append(ACTS, acts)
            bar.advance(1)
    return {
        "contexts": len(tokens),
        "context_size": tokens.shape[1],
        "dataset": f"{env.data.source}:{env.data.name} (held-out: one document in {env.data.holdout_every}, by text hash)",
        "ignore_tokens": ignore,
        "clean_probs": "stored" if keep_logits else "recomputed per SAE from the cached residual",
    }
