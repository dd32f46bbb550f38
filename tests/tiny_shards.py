"""A committed `activations` artifact of tiny synthetic shards, for training tests that need no model.

Rows are sparse non-negative combinations of a fixed random dictionary plus noise, so an SAE has
something to learn; they are written with the real shard writer under the plan's own key, so the
`train` stage (and `pipeline run-stage`) read them exactly as cached model activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.data.shards import SHARD_DIR, ShardIndex, write_shard
from pipeline.plan import Stage, build_plan
from tests.conftest import tiny_config


def train_config(**sae: Any) -> dict[str, Any]:
    """The tiny LM config with one small SAE and no evals (only `activations` and `train` matter)."""
    spec = {"name": "s", "d_sae": 64, "k": 4, "batch_size": 64, "train_tokens": 6400, "checkpoint_every": 10, "lr": 3e-3, **sae}
    return tiny_config(saes=[spec], evals={"core": {"enabled": False}}, device="cpu")


def write_activations(store: ArtifactStore, cfg: PipelineConfig, d_in: int = 16, n_shards: int = 6, rows: int = 500, seed: int = 0) -> Stage:
    """Commit shards for `cfg`'s activations stage; returns that stage."""
    acts = next(s for s in build_plan(cfg) if s.kind == "activations")
    staging = store.staging_dir(acts.kind, acts.key)
    (staging / SHARD_DIR).mkdir()
    rng = np.random.default_rng(seed)
    dictionary = rng.standard_normal((48, d_in)).astype(np.float32)
    infos = []
    for i in range(n_shards):
        codes = rng.exponential(1.0, (rows, 48)) * (rng.random((rows, 48)) < 0.08)
        x = (codes @ dictionary + 0.05 * rng.standard_normal((rows, d_in))).astype(np.float32)
        ids = np.zeros(rows)
        infos.append(write_shard(staging / SHARD_DIR, i, x, ids, ids + i, np.arange(rows)))
    ShardIndex(d_in, "float32", "synthetic", rows, rows, infos).save(staging)
    store.commit(acts.kind, acts.key, staging, {"label": acts.label, "params": acts.params, "summary": {}})
    return acts


def train_stage(cfg: PipelineConfig) -> Stage:
    return next(s for s in build_plan(cfg) if s.kind == "train")
