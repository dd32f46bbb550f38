"""Sparse vs dense decode ops on the CPU: the measurement behind `ops: auto` choosing sparse there.

SparseCoder (BatchTopK + AuxK default recipe) training steps (forward, backward, Adam, decoder
renormalisation) with `SparseOps` and with `DenseOps`, at three shapes; 1 warm-up + 4 timed steps,
the two ops interleaved. Writes bench/results/ops.json.

Usage: nice -n 10 python bench/bench_ops.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import build_coder

SHAPES = [(256, 2048, 32, 1024), (576, 4096, 32, 1024), (2304, 16384, 64, 256)]


def seconds_per_step(d_in: int, d_sae: int, k: int, batch: int, dense: bool, steps: int = 4) -> float:
    coder = build_coder(RecipeSpec(), d_in, d_sae, k, seed=0, dense=dense)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-4)
    x, dead = torch.randn(batch, d_in), torch.zeros(d_sae, dtype=torch.bool)
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        loss = coder.training_loss(x, 0, 100, dead).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        coder.normalize_decoder()
    return (time.perf_counter() - started) / steps


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for d_in, d_sae, k, batch in SHAPES:
        sparse, dense = seconds_per_step(d_in, d_sae, k, batch, False), seconds_per_step(d_in, d_sae, k, batch, True)
        rows.append({"d_in": d_in, "d_sae": d_sae, "k": k, "batch": batch, "sparse_s": sparse, "dense_s": dense, "dense_over_sparse": dense / sparse})
    out = {"threads": torch.get_num_threads(), "load_average": os.getloadavg(), "rows": rows}
    (Path(__file__).parent / "results" / "ops.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
