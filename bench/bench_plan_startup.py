"""Start-up cost of planning: `pipeline plan default` in a fresh interpreter, this checkout against an
older revision (a git worktree of it), interleaved, with the CPU seconds and wall time of each run and
the ratio of medians. Also the fp32 GEMM rate of this CPU on the eval's shapes, the floor that
docs/BENCHMARKS.md's per-SAE core estimate divides by.

Usage: python bench/bench_plan_startup.py --against a2cbe23 [--repeats 3]
Results: bench/results/plan_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GEMM_SHAPES = [(1024, 576, 576), (1024, 576, 1536), (1024, 1536, 576), (1024, 576, 49152)]
"""(tokens, in, out) of SmolLM2-135M's attention, MLP and unembedding matmuls on one 8 x 128 batch."""


def timed_plan(checkout: Path, artifacts: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `pipeline plan default` run from ``checkout``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "plan", "default", "--artifacts", str(artifacts)],
                   cwd=checkout, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def gemm_rates(threads: int = 2, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of fp32 ``a @ b`` per shape (3 warm-up calls)."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the older revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.against], cwd=REPO, check=True)
        try:
            runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for _ in range(args.repeats):
                runs["before"].append(timed_plan(old, Path(tmp) / "a"))
                runs["after"].append(timed_plan(REPO, Path(tmp) / "a"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=True)
    cpu = {side: [c for c, _ in r] for side, r in runs.items()}
    result = {
        "against": args.against, "load_average": os.getloadavg(),
        "cpu_s": cpu, "wall_s": {side: [w for _, w in r] for side, r in runs.items()},
        "cpu_ratio_before_over_after": statistics.median(cpu["before"]) / statistics.median(cpu["after"]),
        "gemm_gflops_2_threads": gemm_rates(),
    }
    out = REPO / "bench" / "results" / "plan_startup.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
