"""Where the CPU of a data-parallel train stage goes, robust to outside load: the real stage (shards,
reader, DDP) in one process and in 2 gloo ranks, and per process the CPU time of the main thread, of
the reader (its window reads, timed on the reader thread itself), of every other thread (gloo's,
OpenMP's), user vs system, and the wall time until the first batch arrives (the first window's read,
not overlapped with anything).

Each run is a fresh `pipeline.training.worker` (rank 0 = `run-stage`) launched through this file's
`--as-rank` mode, which installs the accounting and then runs the worker unchanged. Modes are
interleaved per repeat. `--steps-scale` multiplies the shards (so the steps) of `bench_feeding`'s DDP
shape, to see whether start-up dominates the bench's 16 or 48 steps.

    python bench/ddp_cpu_split.py --shape large --repeats 3 [--modes one_process,one_process_1_thread,two_ranks]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of every live thread of this process, by tid and name."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{task.name}:{comm}"] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def as_rank(report: Path, argv: list[str]) -> None:
    """Install the accounting, then run `python -m pipeline.training.worker argv` in this process."""
    from pipeline.training import stream

    reader = {"cpu": 0.0, "system": 0.0, "windows": 0, "first_batch_wait": None}
    original = stream.prefetch

    def accounted(items: Iterator[Any], transform: Any, depth: int = 2) -> Iterator[Any]:
        def timed_items() -> Iterator[Any]:
            while True:
                started = resource.getrusage(resource.RUSAGE_THREAD)  # runs on the reader thread: its own CPU
                try:
                    item = transform(next(items))
                except StopIteration:
                    return
                done = resource.getrusage(resource.RUSAGE_THREAD)
                reader["cpu"] += done.ru_utime + done.ru_stime - started.ru_utime - started.ru_stime
                reader["system"] += done.ru_stime - started.ru_stime
                reader["windows"] += 1
                yield item

        asked = time.perf_counter()
        first = True
        for got in original(timed_items(), lambda x: x, depth):
            if first:
                reader["first_batch_wait"] = time.perf_counter() - asked
                first = False
            yield got

    stream.prefetch = accounted
    marks: list[tuple[float, float, float, float]] = []  # at each batch handed to the loop: wall, main CPU, process user, system
    batches = stream.ShardStream.batches

    def marked(self: Any, *a: Any, **kw: Any) -> Iterator[Any]:
        for b in batches(self, *a, **kw):
            times = os.times()
            marks.append((time.perf_counter(), time.thread_time(), times.user, times.system))
            yield b

    stream.ShardStream.batches = marked
    if os.environ.get("SPLIT_PIN") and "LOCAL_RANK" in os.environ:  # experiment: each rank on its own core
        os.sched_setaffinity(0, {int(os.environ["LOCAL_RANK"]) % os.cpu_count()})
    main_tid = threading.get_native_id()

    def dump() -> None:
        times = os.times()
        steady = {}
        if len(marks) > 3:  # from step 1's batch to the last step's: steps 1 .. n-2 (no start-up, no final save)
            (w0, c0, u0, s0), (w1, c1, u1, s1) = marks[1], marks[-1]
            n = len(marks) - 2
            steady = {"steps": n, "wall_ms": (w1 - w0) / n * 1e3, "main_cpu_ms": (c1 - c0) / n * 1e3,
                      "process_user_ms": (u1 - u0) / n * 1e3, "process_system_ms": (s1 - s0) / n * 1e3}
        report.write_text(json.dumps({"steady_per_step": steady,
            "rank": int(os.environ.get("RANK", "0")), "main_thread_cpu": time.thread_time(), "main_tid": main_tid,
            "process_user": times.user, "process_system": times.system, "reader": reader,
            "threads": thread_cpu(), "affinity": sorted(os.sched_getaffinity(0)),
        }))

    atexit.register(dump)
    sys.argv = ["pipeline.training.worker", *argv]
    try:
        runpy.run_module("pipeline.training.worker", run_name="__main__")
    except SystemExit as done:
        if done.code:
            raise


def run_once(mode: str, tmp: Path, config: Path, train_key: str, acts_src: Path, acts_dst: Path) -> dict[str, Any]:
    from pipeline.artifacts import ArtifactStore

    root = tmp / f"run-{mode}-{time.monotonic_ns()}"
    shutil.copytree(acts_src, root / acts_dst, copy_function=os.link)
    reports = root / "reports"
    reports.mkdir()
    me = [str(Path(__file__).resolve()), "--as-rank", str(reports)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *me] \
        if mode == "two_ranks" else [sys.executable, *me]
    env = {**os.environ, "OMP_NUM_THREADS": "2" if mode == "one_process" else "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run([*launcher, "--", str(config), train_key, "--artifacts", str(root), "--quiet"], cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = ArtifactStore(root).manifest("train", train_key)["summary"]
    ranks = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    shutil.rmtree(root)
    return {"mode": mode, "load": load, "samples_per_s": summary["tokens"] / summary["seconds_this_attempt"],
            "loop_seconds": summary["seconds_this_attempt"], "job_wall": wall,
            "job_cpu_user": after.ru_utime - before.ru_utime, "job_cpu_system": after.ru_stime - before.ru_stime, "ranks": ranks}


def brief(run: dict[str, Any]) -> str:
    parts = []
    for r in run["ranks"]:
        others = sum(v for k, v in r["threads"].items() if not k.startswith(f"{r['main_tid']}:"))
        st = r["steady_per_step"]
        parts.append(f"r{r['rank']} per step: wall {st['wall_ms']:.1f} main {st['main_cpu_ms']:.1f} process usr {st['process_user_ms']:.1f} "
                     f"sys {st['process_system_ms']:.1f} ms; reader {r['reader']['cpu'] / max(1, r['reader']['windows']) * 1e3:.0f} ms/window "
                     f"(sys {r['reader']['system'] / max(1, r['reader']['windows']) * 1e3:.0f}), "
                     f"first batch after {r['reader']['first_batch_wait']:.2f}s, others-live {others:.2f}s")
    return (f"{run['mode']:>22}: {run['samples_per_s']:8.0f}/s loop {run['loop_seconds']:.2f}s wall {run['job_wall']:.2f}s "
            f"load {run['load']:.1f} | " + " | ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-rank", help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=["small", "large"], default="large")
    parser.add_argument("--steps-scale", type=int, default=1, help="shards (and steps) x this")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="one_process,one_process_1_thread,two_ranks")
    parser.add_argument("--out", type=Path, help="write every run's numbers here (JSON)")
    args, rest = parser.parse_known_args()
    if args.as_rank:
        report = Path(args.as_rank) / f"rank{os.environ.get('RANK', '0')}.json"
        as_rank(report, rest[1:] if rest[:1] == ["--"] else rest)
        return
    from bench.bench_feeding import DDP_SHAPES, ROWS, ddp_setup

    shape = DDP_SHAPES[args.shape]
    shape = shape._replace(shards=shape.shards * args.steps_scale)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        config, train, acts_root, acts_rel = ddp_setup(Path(tmp), shape)
        print(f"shape {shape}, {shape.shards * ROWS // shape.batch} steps", flush=True)
        for _ in range(args.repeats):
            for mode in args.modes.split(","):
                runs.append(run_once(mode, Path(tmp), config, train.key, acts_root / acts_rel, acts_rel))
                print(brief(runs[-1]), flush=True)
    for mode in args.modes.split(","):
        rates = [r["samples_per_s"] for r in runs if r["mode"] == mode]
        print(f"{mode}: median {statistics.median(rates):.0f} samples/s ({', '.join(f'{x:.0f}' for x in rates)})")
    if args.out:
        args.out.write_text(json.dumps({"shape": shape._asdict(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
