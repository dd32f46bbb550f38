"""Training throughput: saepipe SparseCoder (BatchTopK, no extras) vs sae-lens BatchTopKTrainingSAE.

Both train on the same Gaussian activations (d_in 576, d_sae 4096, k 32, batch 4096, fp32, Adam,
default torch threads): a warm-up, then timed steps of forward + backward + Adam step (+ decoder
renormalisation for SparseCoder). Also times a plain `x @ W_enc` of the encoder shape to get this
machine's achieved matmul GFLOP/s, and reports each trainer's effective fraction of that roofline counting the
FLOPs the dense path needs per step (6 matmuls of B*d_in*d_sae: encoder and decoder, forward and two
backward each). Prints JSON and writes bench/results/trainer.json.

Usage: nice -n 10 python bench/bench_trainer.py [--steps 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch

D_IN, D_SAE, K, BATCH = 576, 4096, 32, 4096


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Mean seconds per step after `warmup` untimed steps."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def saepipe_step(x: torch.Tensor) -> Callable[[], None]:
    from pipeline.recipes.coder import build_coder
    from pipeline.config.recipe import RecipeSpec

    coder = build_coder(RecipeSpec(), D_IN, D_SAE, K, seed=0)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-4)
    dead = torch.zeros(D_SAE, dtype=torch.bool)

    def step() -> None:
        out = coder.training_loss(x, 0, 1000, dead)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        coder.normalize_decoder()

    return step


def sae_lens_step(x: torch.Tensor) -> Callable[[], None]:
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(D_SAE, dtype=torch.bool)

    def step() -> None:
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(BATCH, D_IN)
    W = torch.randn(D_IN, D_SAE)
    matmul_s = time_steps(lambda: x @ W, args.warmup, args.steps)
    flop_matmul = 2 * BATCH * D_IN * D_SAE
    roofline = flop_matmul / matmul_s
    dense_step_flops = 6 * flop_matmul
    result: dict[str, object] = {
        "shape": {"d_in": D_IN, "d_sae": D_SAE, "k": K, "batch": BATCH, "dtype": "float32"},
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "matmul_gflops": roofline / 1e9,
        "dense_step_gflop": dense_step_flops / 1e9,
    }
    for name, make in (("sae_lens", sae_lens_step), ("saepipe", saepipe_step)):
        sec = time_steps(make(x), args.warmup, args.steps)
        result[name] = {
            "sec_per_step": sec,
            "samples_per_s": BATCH / sec,
            "effective_fraction_of_roofline": dense_step_flops / sec / roofline,
        }
    result["speedup_vs_sae_lens"] = result["sae_lens"]["sec_per_step"] / result["saepipe"]["sec_per_step"]  # type: ignore[index]
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
