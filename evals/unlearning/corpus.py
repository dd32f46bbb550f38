"""The forget and retain corpora: SAEBench's token rows, their hook activations (stored in ``prepare``),
and each latent's firing rate on them (per SAE, in ``evaluate``)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from sae_bench.sae_bench_utils.activation_collection import get_bos_pad_eos_mask
from sae_bench.sae_bench_utils.dataset_utils import tokenize_and_concat_dataset

from evals.contract import EvalEnv, Prepared, TensorSink
from evals.unlearning.config import UnlearningParams
from evals.unlearning.stored import CORPUS_ACTS


def corpus_tokens(tokenizer: Any, docs: list[str], p: UnlearningParams, sample_docs: bool) -> torch.Tensor:
    """SAEBench's rows: (forget: ``dataset_size`` sampled documents) joined by SAEBench's
    ``tokenize_and_concat_dataset`` into ``seq_len`` rows with BOS at position 0, rows shuffled, the
    first ``dataset_size`` kept (``get_shuffled_forget_retain_tokens``). As in SAEBench, the EOS joining
    documents is dropped when the tokenizer's pad token is its EOS (SmolLM2's is)."""
    if sample_docs:
        docs = random.Random(p.random_seed).sample(docs, min(p.dataset_size, len(docs)))
    tokens = tokenize_and_concat_dataset(tokenizer, docs, seq_len=p.seq_len)
    if len(tokens) == 0:
        raise ValueError(f"evals.unlearning: a corpus has fewer than seq_len={p.seq_len} tokens")
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(p.random_seed))
    return tokens[order][: p.dataset_size]


@torch.no_grad()
def hook_acts(model: Any, tokens: torch.Tensor, hook: str, layer: int) -> torch.Tensor:
    """Activations at ``hook`` [batch, pos, d_model], running no block past it."""
    _, cache = model.run_with_cache(tokens.to(model.cfg.device), stop_at_layer=layer + 1, names_filter=hook)
    return cache[hook]


def store_corpus(env: EvalEnv, model: Any, tokenizer: Any, name: str, tokens: torch.Tensor, p: UnlearningParams,
                 sink: TensorSink) -> int:  # fmt: skip
    """Hook activations of a corpus' counted tokens (SAEBench's BOS/EOS/pad mask), streamed to the sink."""
    spec = env.model_spec
    kept = 0
    with env.reporter.bar(f"unlearning: {name} corpus activations", total=len(tokens), unit="row") as bar:
        for i in range(0, len(tokens), p.llm_batch_size):
            batch = tokens[i : i + p.llm_batch_size]
            acts = hook_acts(model, batch, spec.hook, spec.layer)
            mask = get_bos_pad_eos_mask(batch, tokenizer).to(acts.device)
            sink.append(CORPUS_ACTS[name], acts[mask])
            kept += int(mask.sum())
            bar.advance(len(batch))
    return kept


@torch.no_grad()
def feature_sparsity(prepared: Prepared, name: str, sae: Any, batch_rows: int = 4096) -> np.ndarray:
    """Fraction of a corpus' counted tokens where each latent is > 0 (SAEBench's
    ``get_feature_activation_sparsity`` with ``mask_bos_pad_eos_tokens=True``), from the cached activations."""
    count = torch.zeros(sae.W_dec.shape[0], dtype=torch.float32)
    n = 0
    for acts in prepared.batches(CORPUS_ACTS[name], batch_rows):
        acts = acts.to(sae.W_dec.device, sae.W_dec.dtype)
        count += (sae.encode(acts) > 0).to(torch.float32).sum(0).cpu()
        n += len(acts)
    return (count / n).numpy()
