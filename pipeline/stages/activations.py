"""Stage `activations`: hook the residual stream and cache it as fixed-size Parquet shards.

Streaming: one shard of contexts is in memory at a time, so peak memory does not grow with the token
budget. Resumable: every finished shard is recorded in ``<work>/done.json``; after a kill the stage
skips that many contexts of the (deterministic) token stream and goes on from the next shard.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch

from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents
from pipeline.data.shard_progress import finished_shards, publish_shards, record_finished
from pipeline.data.shards import write_shard
from pipeline.models.cache import get_model
from pipeline.stages.context import StageContext


@torch.no_grad()
def hooked_activations(model: Any, tokens: torch.Tensor, hook: str, layer: int) -> torch.Tensor:
    """Activations at ``hook`` for a batch of contexts, stopping the forward right after that layer."""
    captured: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> None:  # noqa: ARG001 - TransformerLens hook signature
        captured["act"] = act.detach()

    model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)], stop_at_layer=layer + 1)
    return captured["act"]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    spec, data = cfg.activations, cfg.data
    model, tokenizer = get_model(cfg.model)
    d_in = model.cfg.d_model
    skip = 1 if (spec.skip_bos and data.prepend_bos) else 0
    rows_per_context = data.context_size - skip
    n_contexts = math.ceil(spec.n_tokens / rows_per_context)
    n_shards = math.ceil(n_contexts / spec.contexts_per_shard)

    done = finished_shards(ctx.work)
    start_ctx = len(done) * spec.contexts_per_shard
    if done:
        ctx.reporter.log(f"activations: resuming after {len(done)} complete shards ({start_ctx} contexts)")
    stream = token_contexts(documents(data, heldout=False), tokenizer, data.context_size, data.prepend_bos)
    stream = itertools.islice(stream, start_ctx, n_contexts)
    np_dtype = np.float16 if spec.dtype == "float16" else np.float32

    with ctx.reporter.bar(
        "caching activations", total=n_contexts * rows_per_context, unit="tok", completed=start_ctx * rows_per_context
    ) as bar:
        for shard_i in range(len(done), n_shards):
            first = shard_i * spec.contexts_per_shard
            want = min(spec.contexts_per_shard, n_contexts - first)
            contexts = list(itertools.islice(stream, want))
            if len(contexts) < want:
                raise RuntimeError(
                    f"activations.n_tokens: corpus {data.name!r} ran out after {first + len(contexts)} contexts "
                    f"({(first + len(contexts)) * rows_per_context} tokens); lower n_tokens or use a larger corpus"
                )
            acts_parts = []
            for b in range(0, want, spec.batch_size):
                toks = torch.tensor(contexts[b : b + spec.batch_size], device=cfg.model.device)
                acts = hooked_activations(model, toks, cfg.model.hook, cfg.model.layer)[:, skip:, :]
                acts_parts.append(acts.float().cpu().numpy().astype(np_dtype, copy=False))
                bar.advance(acts.shape[0] * rows_per_context)
            tokens = np.asarray(contexts, dtype=np.int64)[:, skip:]
            info = write_shard(
                ctx.work,
                shard_i,
                np.concatenate(acts_parts).reshape(-1, d_in),
                tokens.reshape(-1),
                np.repeat(np.arange(first, first + want), rows_per_context),
                np.tile(np.arange(skip, data.context_size), want),
            )
            done.append(info)
            record_finished(ctx.work, done)

    index = publish_shards(
        ctx.work,
        ctx.out,
        done,
        d_in=d_in,
        dtype=spec.dtype,
        hook=cfg.model.hook,
        context_size=data.context_size,
        rows_per_context=rows_per_context,
    )
    return {"tokens": index.total_rows, "shards": len(done), "d_in": d_in}
