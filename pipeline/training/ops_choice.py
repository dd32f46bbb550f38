"""`ops: auto`: which decode ops train a saepipe SAE, sparse (embedding_bag) or dense (matmuls).

The rule, from measurements (docs/BENCHMARKS.md, "Sparse or dense ops"):
  * CPU: sparse. The dense path does 6 B x d_in x d_sae matmuls per step, the sparse one 2 (the
    encoder forward and nothing else dense); on CPU the matmuls are the step, so sparse wins at every
    shape measured.
  * CUDA: a short timed probe on the real shape (2 warm-up + 3 timed steps of each, on random data,
    on throw-away copies, under a forked RNG so training is unaffected). GPUs run dense matmuls near
    their peak while the sparse path's gathers and sorts are memory-bound, so which wins depends on
    k / d_sae and the GPU; measuring is cheaper than guessing (about a second at the Gemma shape).
Under data parallelism rank 0 decides for all. The choice is not in the stage key, so the train stage
records it (checkpoint info, artifact summary) and a resumed run keeps the recorded one.
"""

from __future__ import annotations

import time

import torch

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import build_coder
from pipeline.recipes.collective import all_max, rank, settle


def resolve_ops(choice: str, device: torch.device, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, batch: int,
                bf16: bool = False) -> str:
    """'sparse' or 'dense' for a saepipe SAE on `device` (`batch`: this rank's rows per step)."""
    if choice != "auto":
        return choice
    if device.type == "cpu":
        return "sparse"
    seconds = probe_ops(device, recipe, d_in, d_sae, k, batch, bf16)
    dense_wins = torch.tensor(int(rank() == 0 and seconds["dense"] < seconds["sparse"]), device=device)
    return "dense" if int(all_max(dense_wins)) else "sparse"


def probe_ops(device: torch.device, recipe: RecipeSpec, d_in: int, d_sae: int, k: int, batch: int,
              bf16: bool = False, warmup: int = 2, steps: int = 3) -> dict[str, float]:
    """Seconds per training step (forward, backward, Adam) of each ops on random data of the real shape."""
    devices = [device.index or 0] if device.type == "cuda" else []
    out = {}
    with torch.random.fork_rng(devices=devices):
        x = torch.randn(batch, d_in, device=device)
        dead = torch.zeros(d_sae, dtype=torch.bool, device=device)
        for ops in ("sparse", "dense"):
            coder = build_coder(recipe, d_in, d_sae, k, seed=0, dense=ops == "dense").to(device)
            opt = torch.optim.Adam(coder.parameters(), lr=1e-4)
            for i in range(warmup + steps):
                if i == warmup:
                    _sync(device)
                    started = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = coder.training_loss(x, 0, 1, dead).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                settle()  # the step's deferred statistics, as the train loop reduces them
            _sync(device)
            out[ops] = (time.perf_counter() - started) / steps
            del coder, opt
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
