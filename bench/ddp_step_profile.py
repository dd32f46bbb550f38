"""Where a data-parallel train step's time goes: forward (and in it the BatchTopK selection and its
all-gather), backward (with DDP's gradient all-reduce), clipping, Adam, the decoder projection and the
step's statistics (`settle`), per rank, median over the steps after 5 warm-up steps.

The same pieces as the train stage's loop (`build_trainable`, `synced_step`, `settle`) on random batches
held in memory (no reader). `--cpu` times each phase in this thread's CPU time instead of wall time,
which outside load inflates far less; the process's CPU time (gloo's threads included) is reported
beside it. `--no-grad-sync` skips the gradient all-reduce, to price it.

    torchrun --standalone --nproc_per_node 2 bench/ddp_step_profile.py --cpu     # 2 gloo ranks
    OMP_NUM_THREADS=1 python bench/ddp_step_profile.py --cpu --batch 512           # one process
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes import activation
from pipeline.recipes.collective import settle
from pipeline.training.contract import ADAM_BETAS, GRAD_CLIP
from pipeline.training.distributed import data_parallel, synced_step
from pipeline.training.trainables import build_trainable

PHASES = ("forward", "backward", "clip", "adam", "normalize", "settle", "step", "process_cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024, help="global batch (each rank takes its slice)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpu", action="store_true", help="this thread's CPU time, not wall time")
    parser.add_argument("--no-grad-sync", action="store_true", help="skip DDP's gradient all-reduce")
    args = parser.parse_args()
    clock = time.thread_time if args.cpu else time.perf_counter
    inner: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            started = clock()
            try:
                return fn(*a, **kw)
            finally:
                inner[name] = inner.get(name, 0.0) + clock() - started
        return wrapped

    activation.global_batch_topk_flat = timed("select", activation.global_batch_topk_flat)
    activation.batch_topk_flat = timed("select", activation.batch_topk_flat)
    activation.all_cat = timed("gather", activation.all_cat)

    with data_parallel("cpu") as (rank, world, device):
        trainable = build_trainable("saepipe", RecipeSpec(), args.d_in, args.d_sae, args.k, 0, device, "sparse")
        optimizer = torch.optim.Adam(trainable.module.parameters(), lr=1e-4, betas=ADAM_BETAS)
        forward = synced_step(trainable, device)
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch, args.d_in, generator=gen) for _ in range(8)]
        rows = slice(rank * args.batch // world, (rank + 1) * args.batch // world)
        dead = torch.zeros(args.d_sae, dtype=torch.bool)
        no_sync = args.no_grad_sync and world > 1
        per: dict[str, list[float]] = {p: [] for p in (*PHASES, "select", "gather")}
        for step in range(args.steps):
            inner.clear()
            x = batches[step % len(batches)][rows]
            t = [clock()]
            process0 = time.process_time()
            with forward.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[union-attr]
                out = forward(x, step, args.steps, dead)
                t.append(clock())
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                t.append(clock())
            torch.nn.utils.clip_grad_norm_(trainable.module.parameters(), GRAD_CLIP)
            t.append(clock())
            optimizer.step()
            t.append(clock())
            trainable.after_optimizer_step()
            t.append(clock())
            settle(out.fired)
            t.append(clock())
            if step >= 5:
                spans = [b - a for a, b in itertools.pairwise(t)] + [t[-1] - t[0], time.process_time() - process0]
                for phase, seconds in zip(PHASES, spans):
                    per[phase].append(seconds * 1e3)
                per["select"].append(inner.get("select", 0.0) * 1e3)
                per["gather"].append(inner.get("gather", 0.0) * 1e3)
        median = {p: round(statistics.median(v), 2) for p, v in per.items()}
        print(f"rank {rank}/{world} ({'CPU' if args.cpu else 'wall'} ms per step, {x.shape[0]} rows, "
              f"{torch.get_num_threads()} intra-op threads, cores {sorted(os.sched_getaffinity(0))}, load "
              f"{os.getloadavg()[0]:.1f}): {median}", flush=True)


if __name__ == "__main__":
    main()
