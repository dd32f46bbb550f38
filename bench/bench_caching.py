"""Caching throughput of the `activations` stage against a bare forward pass stopped at the same
layer, in the same process on the same contexts (target: stage >= 0.9x bare).

Usage: python bench/bench_caching.py [--tokens 30000] [--layer 11] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.artifacts import ArtifactStore
from pipeline.loading import parse_config
from pipeline.data.contexts import token_contexts
from pipeline.data.corpora import documents
from pipeline.executors.stage_runner import execute
from pipeline.models.cache import get_model
from pipeline.plan import build_plan
from pipeline.progress import Reporter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=30_000)
    parser.add_argument("--layer", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/caching.json")
    args = parser.parse_args()
    raw = {
        "name": "bench_caching",
        "model": {"source": "smollm2_gguf", "name": "SmolLM2-135M-Instruct", "hook": f"blocks.{args.layer}.hook_resid_post"},
        "data": {"source": "shipped", "name": "rotten_tomatoes", "context_size": 128},
        "activations": {"n_tokens": args.tokens, "contexts_per_shard": 64, "batch_size": 8, "skip_bos": False},
        "saes": [{"name": "unused", "d_sae": 64, "k": 4}],
    }
    cfg = parse_config(raw)
    model, tokenizer = get_model(cfg.model)
    n_contexts = args.tokens // 128
    contexts = list(itertools.islice(token_contexts(documents(cfg.data, heldout=False), tokenizer, 128, True), n_contexts))

    def bare() -> float:
        """The same batches, stopped at the same layer, nothing kept."""
        start = time.perf_counter()
        with torch.no_grad():
            for b in range(0, n_contexts, 8):
                model(torch.tensor(contexts[b : b + 8]), stop_at_layer=args.layer + 1)
        return time.perf_counter() - start

    def stage() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            execute(cfg, ArtifactStore(Path(tmp)), build_plan(cfg)[0], Reporter(enabled=False))
            return time.perf_counter() - start

    with torch.no_grad():  # warm-up
        model(torch.tensor(contexts[:8]), stop_at_layer=args.layer + 1)
    # interleaved rounds, so drift in machine load hits both sides alike; the median of each is kept
    rounds = [(bare(), stage()) for _ in range(args.rounds)]
    bare_s = statistics.median(r[0] for r in rounds)
    stage_s = statistics.median(r[1] for r in rounds)
    tokens = n_contexts * 128
    result = {
        "tokens": tokens,
        "layer": args.layer,
        "threads": torch.get_num_threads(),
        "bare_forward_tok_per_s": round(tokens / bare_s, 1),
        "activations_stage_tok_per_s": round(tokens / stage_s, 1),
        "ratio_stage_over_bare": round(bare_s / stage_s, 3),
        "rounds_seconds_bare_stage": [[round(a, 2), round(b, 2)] for a, b in rounds],
        "note": "stage time includes tokenising, the forward, Parquet writes, fsync and sha256 of every shard",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
