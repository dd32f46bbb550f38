"""Entry point of a data-parallel `train` stage under torchrun: one process per GPU.

    torchrun --standalone --nproc_per_node N -m pipeline.training.worker CONFIG KEY --artifacts ROOT

Rank 0 is an ordinary `pipeline run-stage CONFIG KEY` (the stage lock, resume or start, the commit of
the artifact). The other ranks only join its training loop: they take no lock (rank 0 holds it for
the job), write nothing and commit nothing, and leave when the loop ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pipeline import cli
from pipeline.artifacts import ArtifactStore
from pipeline.loading import load_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter
from pipeline.stages import train
from pipeline.stages.context import StageContext


def join(config: str, key: str, artifacts: str) -> int:
    """A non-zero rank's part: the training loop of stage `key`, outputs discarded."""
    cfg, _ = load_config(config)
    stage = next((s for s in build_plan(cfg) if s.key == key), None)
    if stage is None or stage.kind != "train":
        print(f"error: no train stage with key {key!r} in {cfg.name}'s plan", file=sys.stderr)
        return 2
    store = ArtifactStore(Path(artifacts).resolve())
    if store.is_complete(stage.kind, stage.key):
        return 0  # rank 0 finds it complete too and trains nothing
    with tempfile.TemporaryDirectory() as scratch:
        ctx = StageContext(stage, cfg, store, Path(scratch), store.work_dir(stage.kind, stage.key), Reporter(enabled=False))
        train.run(ctx)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.worker", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("key")
    parser.add_argument("--artifacts", default=os.environ.get("SAEPIPE_ARTIFACTS", "artifacts"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        return cli.main(["run-stage", args.config, args.key, "--artifacts", args.artifacts, *(["--quiet"] if args.quiet else [])])
    return join(args.config, args.key, args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
