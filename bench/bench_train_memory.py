"""Peak RSS of the `train` stage at 1x and 4x the token budget (target: flat — training streams
shards, so memory must not grow with the number of tokens).

Each budget trains in a fresh subprocess (so ru_maxrss is that run's own peak) on a shard cache of
that size. The shards hold Gaussian vectors of the default config's shape (d_in 576, 8,128 rows per
shard): memory depends on shapes and streaming, not on what the numbers are, and this keeps the
benchmark to minutes instead of caching 1.2M real tokens.

Usage: python bench/bench_train_memory.py [--base-tokens 300000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.data.shards import SHARD_DIR, ShardIndex, write_shard

ROWS, D = 8128, 576

CHILD = """
import json, resource, sys
from pathlib import Path
from pipeline.artifacts import ArtifactStore
from pipeline.loading import parse_config
from pipeline.executors.stage_runner import execute
from pipeline.plan import build_plan
from pipeline.progress import Reporter
raw, root = json.loads(sys.argv[1]), Path(sys.argv[2])
cfg = parse_config(raw)
acts, train = build_plan(cfg)[:2]
store = ArtifactStore(root)
execute(cfg, store, train, Reporter(enabled=False))
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fake_cache(folder: Path, n_rows: int) -> Path:
    """The staged payload of an `activations` artifact, filled with Gaussian rows."""
    staging = folder / "staging"
    (staging / SHARD_DIR).mkdir(parents=True)
    rng = np.random.default_rng(0)
    infos = []
    for i in range(-(-n_rows // ROWS)):
        rows = min(ROWS, n_rows - i * ROWS)
        acts = rng.standard_normal((rows, D), dtype=np.float32)
        infos.append(write_shard(staging / SHARD_DIR, i, acts, np.zeros(rows), np.zeros(rows), np.zeros(rows)))
    ShardIndex(D, "float32", "blocks.11.hook_resid_post", 128, 127, infos).save(staging)
    return staging


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-tokens", type=int, default=300_000)
    parser.add_argument("--out", default="bench/results/train_memory.json")
    args = parser.parse_args()
    from pipeline.artifacts import ArtifactStore
    from pipeline.loading import parse_config
    from pipeline.plan import build_plan

    results = []
    for mult in (1, 4):
        n = args.base_tokens * mult
        raw = {
            "name": f"bench_mem_{mult}x",
            "model": {"source": "smollm2_gguf", "name": "SmolLM2-135M-Instruct", "hook": "blocks.11.hook_resid_post"},
            "data": {"source": "shipped", "name": "rotten_tomatoes"},
            "activations": {"n_tokens": n, "contexts_per_shard": 64},
            "saes": [{"name": "m", "d_sae": 2304, "k": 32, "batch_size": 1024, "checkpoint_every": 100}],
        }
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "artifacts"
            store = ArtifactStore(root)
            acts = build_plan(parse_config(raw))[0]
            store.commit("activations", acts.key, fake_cache(Path(tmp), n), {"params": acts.params})
            child = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(raw), str(root)], capture_output=True, text=True, check=True
            )
            rss = json.loads(child.stdout.strip().splitlines()[-1])["maxrss_mb"]
        results.append({"tokens": n, "multiple": mult, "peak_rss_mb": round(rss, 1)})
        print(results[-1], flush=True)
    out = {"runs": results, "ratio_4x_over_1x": round(results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"], 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
