"""The matmul floor of core's per-SAE work: one pass of the model's tail over the CE/KL tokens.

With the clean and ablated sides cached by prep, each SAE's ``eval_core`` runs the blocks after the
hook and the unembedding once over ``batch_size_prompts x n_reconstruction_batches x context_size``
tokens (``evals/core/downstream.py``). This times fp32 matmuls of exactly those shapes on this CPU, so
the measured per-SAE core time can be set against the least a tail pass can cost here.

Shapes are the default config's: SmolLM2-135M (d_model 576, 9 query / 3 key-value heads of 64, gated
MLP 1,536, vocabulary 49,152, 30 blocks), hook after block 11, so blocks 12-29 run; 4 x 8 x 128 tokens.

Usage: python bench/bench_core_floor.py [--tokens 4096] [--blocks 18] [--out bench/results/core_floor.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_trainer import time_steps

D_MODEL, D_KV, D_MLP, D_VOCAB = 576, 192, 1536, 49_152
PER_BLOCK = {"q, o": ((D_MODEL, D_MODEL), 2), "k, v": ((D_MODEL, D_KV), 2),
             "mlp gate, up": ((D_MODEL, D_MLP), 2), "mlp down": ((D_MLP, D_MODEL), 1)}  # fmt: skip


def seconds(tokens: int, k: int, m: int) -> float:
    """Mean wall time of a (tokens x k) @ (k x m) fp32 matmul, after one warm-up."""
    a, b = torch.randn(tokens, k), torch.randn(k, m)
    return time_steps(lambda: a @ b, warmup=1, steps=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--blocks", type=int, default=18)
    ap.add_argument("--out", type=Path, default=Path("bench/results/core_floor.json"))
    args = ap.parse_args()
    out = {"tokens": args.tokens, "blocks": args.blocks, "threads": torch.get_num_threads(), "matmuls": {}}
    rows = [(name, shape, n * args.blocks) for name, (shape, n) in PER_BLOCK.items()] + [("unembed", (D_MODEL, D_VOCAB), 1)]
    for name, (k, m), count in rows:
        dt = seconds(args.tokens, k, m)
        gflops = 2 * args.tokens * k * m / dt / 1e9
        out["matmuls"][name] = {"shape": [k, m], "count": count, "seconds": dt, "gflop_per_s": gflops}
        print(f"{name:14s} {k}x{m}: {gflops:6.0f} GFLOP/s, {dt * 1e3:7.1f} ms x {count}")
    out["floor_s"] = total = sum(r["seconds"] * r["count"] for r in out["matmuls"].values())
    args.out.write_text(json.dumps(out, indent=1))
    print(f"threads {torch.get_num_threads()}; matmul floor of one tail pass over {args.tokens} tokens: {total:.2f} s")


if __name__ == "__main__":
    main()
