"""Feeding and data parallelism on the CPU: (a) the train loop fed from shards through the background
reader against the same trainer on the same batches held in memory; (b) 2-rank gloo DDP against one
process, in samples/s of the whole job.

(a) writes 24 shards of 4096 rows (d_in 256) and trains SparseCoder (BatchTopK, d_sae 2048, k 32,
batch 1024, Adam) for one epoch two ways: batches from `ShardStream.batches(..., window_as=...)`
(read + sha256 + decode + shuffle on the reader thread) and the same batches pre-loaded into a list.
(b) runs the train stage through `torchrun --nproc_per_node 2` and through one process on the same
shards (the stage's own `seconds_this_attempt`, so process start-up is not counted).
(b) also runs one process pinned to 1 thread, to separate the cost of data parallelism from that of
2-thread intra-op parallelism. Repeats, interleaved: 5 (a), 3 (b); reports the median and the range.
`--ddp-shape large` runs (b) at 512 -> 4096, k 32, batch 4096 (2048 rows per rank) instead, where the
step's compute grows with the batch and the gradient all-reduce does not. Writes
bench/results/feeding.json (`ddp`, or `ddp_large`).

Usage: nice -n 10 python bench/bench_feeding.py [--only feeding|ddp] [--ddp-shape small|large]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.artifacts import ArtifactStore
from pipeline.config.recipe import RecipeSpec
from pipeline.data.shards import SHARD_DIR, ShardIndex, write_shard
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from pipeline.recipes.coder import build_coder
from pipeline.training.stream import ShardStream

D_IN, D_SAE, K, BATCH, ROWS, SHARDS = 256, 2048, 32, 1024, 4096, 24


class Shape(NamedTuple):
    d_in: int
    d_sae: int
    k: int
    batch: int
    shards: int
    """Shards of ROWS rows the DDP run trains on (one epoch)."""


DDP_SHAPES = {"small": Shape(D_IN, D_SAE, K, BATCH, 12), "large": Shape(512, 4096, 32, 4096, 16)}


def write_shards(folder: Path, n: int = SHARDS, d_in: int = D_IN) -> ShardIndex:
    rng = np.random.default_rng(0)
    (folder / SHARD_DIR).mkdir(parents=True)
    infos = [write_shard(folder / SHARD_DIR, i, rng.standard_normal((ROWS, d_in), dtype=np.float32),
                         np.zeros(ROWS), np.zeros(ROWS), np.arange(ROWS)) for i in range(n)]
    index = ShardIndex(d_in, "float32", "bench", ROWS, ROWS, infos)
    index.save(folder)
    return index


def train_rate(batches, n_steps: int) -> float:
    """Samples/s of n_steps of SparseCoder training on the given batches (first step untimed)."""
    torch.manual_seed(0)
    coder = build_coder(RecipeSpec(), D_IN, D_SAE, K, seed=0)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-4)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    started = None
    for i in range(n_steps):
        if i == 1:
            started = time.perf_counter()
        loss = coder.training_loss(next(batches), i, n_steps, dead).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        coder.normalize_decoder()
    return (n_steps - 1) * BATCH / (time.perf_counter() - started)


def feeding(tmp: Path, repeats: int) -> dict[str, object]:
    index = write_shards(tmp / "feed")
    n_steps = SHARDS * ROWS // BATCH
    stream = ShardStream(tmp / "feed" / SHARD_DIR, index, seed=0, window=4)
    to_torch = lambda a: torch.from_numpy(a).float()
    held = [torch.from_numpy(b) for b, _ in zip(stream.batches(0, BATCH), range(n_steps))]
    shards, memory = [], []
    for _ in range(repeats):
        shards.append(train_rate(stream.batches(0, BATCH, window_as=to_torch), n_steps))
        memory.append(train_rate(iter(held), n_steps))
    ratios = [s / m for s, m in zip(shards, memory)]
    return {"steps": n_steps, "from_shards_samples_per_s": shards, "in_memory_samples_per_s": memory,
            "ratios": ratios, "ratio_median": statistics.median(ratios)}


def ddp_setup(tmp: Path, shape: Shape) -> tuple[Path, Any, Path, Path]:
    """The DDP part's config file, its train stage, and a store root holding its committed activations
    (at ``root / "activations"``: copy that folder into a fresh root for each run)."""
    spec = {"name": "b", "d_sae": shape.d_sae, "k": shape.k, "batch_size": shape.batch, "train_tokens": shape.shards * ROWS,
            "checkpoint_every": 1000, "lr": 1e-4}
    raw = {"name": "bench_ddp", "model": {"source": "smollm2_gguf", "name": "SmolLM2-135M-Instruct", "hook": "blocks.3.hook_resid_post"},
           "data": {"source": "shipped", "name": "rotten_tomatoes", "context_size": 32}, "activations": {"n_tokens": 1000},
           "saes": [spec], "evals": {"core": {"enabled": False}}, "device": "cpu"}
    cfg = parse_config(raw)
    config = tmp / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw))
    acts, train = [next(s for s in build_plan(cfg) if s.kind == k) for k in ("activations", "train")]
    store = ArtifactStore(tmp / "ddp-shards")
    staging = store.staging_dir("activations", acts.key)
    write_shards(staging, shape.shards, shape.d_in)
    store.commit("activations", acts.key, staging, {"label": acts.label, "params": acts.params, "summary": {}})
    return config, train, store.root, Path("activations")


def ddp(tmp: Path, repeats: int, shape: Shape) -> dict[str, object]:
    config, train, shards_root, acts = ddp_setup(tmp, shape)
    rates: dict[str, list[float]] = {"one_process": [], "one_process_1_thread": [], "two_ranks": []}
    for r in range(repeats):
        for mode, measured in rates.items():
            store = ArtifactStore(tmp / f"ddp-{mode}-{r}")
            shutil.copytree(shards_root / acts, store.root / acts, copy_function=os.link)
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pipeline.training.worker"] \
                if mode == "two_ranks" else [sys.executable, "-m", "pipeline.cli", "run-stage"]
            env = {**os.environ, "OMP_NUM_THREADS": "2" if mode == "one_process" else "1"}
            subprocess.run([*launcher, str(config), train.key, "--artifacts", str(store.root), "--quiet"], cwd=REPO, env=env, check=True,
                           capture_output=True)
            summary = store.manifest("train", train.key)["summary"]
            measured.append(summary["tokens"] / summary["seconds_this_attempt"])
    ratios = [two / one for two, one in zip(rates["two_ranks"], rates["one_process"])]
    per_thread = [two / one for two, one in zip(rates["two_ranks"], rates["one_process_1_thread"])]
    return {"shape": shape._asdict(), "steps": shape.shards * ROWS // shape.batch, **rates, "ratios_two_ranks_over_one_process": ratios, "ratio_median": statistics.median(ratios),
            "ratios_two_ranks_over_one_thread": per_thread, "ratio_over_one_thread_median": statistics.median(per_thread)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["feeding", "ddp"], help="run one part; the other's last results are kept")
    parser.add_argument("--ddp-shape", choices=list(DDP_SHAPES), default="small", help="the DDP part's SAE and batch")
    args = parser.parse_args()
    out = REPO / "bench" / "results" / "feeding.json"
    results = json.loads(out.read_text()) if args.only and out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        ddp_part = "ddp" if args.ddp_shape == "small" else f"ddp_{args.ddp_shape}"
        parts = (("feeding", lambda: feeding(Path(tmp), 5)), (ddp_part, lambda: ddp(Path(tmp), 3, DDP_SHAPES[args.ddp_shape])))
        for part, measure in parts:
            if args.only in (None, part.split("_")[0]):
                start = os.getloadavg()
                results[part] = {**measure(), "load_average_at_start": start, "load_average_at_end": os.getloadavg()}
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
