"""The tiny synthetic model and its activation shards, built once per test module that imports the fixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.artifacts import ArtifactStore
from pipeline.config import ActivationsSpec
from pipeline.config.synthetic import (
    CorrelationSpec,
    HierarchySpec,
    OrthogonalizationSpec,
    SyntheticSpec,
    ZipfFiringSpec,
)
from pipeline.dag import Stage
from pipeline.executors import stage_runner
from pipeline.loading import parse_config
from pipeline.plan import stage
from pipeline.progress import Reporter

REPO = Path(__file__).resolve().parent.parent
QUIET = Reporter(enabled=False)
TINY = SyntheticSpec(
    num_features=64,
    hidden_dim=32,
    hierarchy=HierarchySpec(n_roots=2, branching=3, depth=2),
    correlation=CorrelationSpec(rank=4, scale=0.1),
    orthogonalization=OrthogonalizationSpec(steps=10, lr=3e-4),
    firing=ZipfFiringSpec(exponent=0.5, max_prob=0.4, min_prob=0.02),
    seed=7,
    eval_samples=4000,
    probe_samples=4000,
)
N_TOKENS = 2500  # three shards of 1 "context" (1024 rows): 1024 + 1024 + 452


def cfg_for(spec: SyntheticSpec, n_tokens: int = N_TOKENS) -> Any:
    """A synthetic run's PipelineConfig (the stages read `synthetic` and `activations`)."""
    return parse_config(
        {
            "name": "synth_test",
            "synthetic": spec.model_dump(),
            "activations": {"n_tokens": n_tokens, "contexts_per_shard": 1},
            "saes": [{"name": "btk", "d_sae": 128, "k": 6}],
        }
    )


def model_stage(spec: SyntheticSpec) -> Stage:
    return stage("synthetic_model", "synthetic_model", {"synthetic": spec.model_dump()})


def acts_stage(spec: SyntheticSpec, model: Stage, n_tokens: int = N_TOKENS) -> Stage:
    params = {"synthetic": spec.model_dump(), "activations": ActivationsSpec(n_tokens=n_tokens, contexts_per_shard=1).model_dump()}
    return stage("synthetic_activations", "activations", params, {"synthetic_model": model})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model and its activations, each committed through `execute` like a real run."""
    store = ArtifactStore(tmp_path_factory.mktemp("synth"))
    cfg = cfg_for(TINY)
    m = model_stage(TINY)
    a = acts_stage(TINY, m)
    stage_runner.execute(cfg, store, m, QUIET)
    stage_runner.execute(cfg, store, a, QUIET)
    return {"store": store, "cfg": cfg, "model": m, "acts": a}


