"""Shared fixtures: a tiny but real pipeline config (SmolLM2, layer 3, a few thousand tokens).

Tiers: `make test` runs everything; `make test-fast` (``-m "not slow"``) runs the unit and parity tests on
tiny tensors. A test is slow when it is marked so, or when it uses a fixture in ``SLOW_FIXTURES``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

SLOW_FIXTURES = {"tiny_run", "first_run", "smollm2", "slurm_cluster", "slurm_root"}
"""Fixtures that run the real model, real training or a real SLURM cluster."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {"source": "smollm2_gguf", "name": "SmolLM2-135M-Instruct", "hook": "blocks.3.hook_resid_post"},
    "data": {"source": "shipped", "name": "rotten_tomatoes", "context_size": 32},
    "activations": {"n_tokens": 6000, "contexts_per_shard": 32, "batch_size": 8},
    "saes": [{"name": "btk", "d_sae": 256, "k": 8, "batch_size": 256, "checkpoint_every": 5, "lr": 1.0e-3}],
    "evals": {"core": {"batch_size_prompts": 4, "n_reconstruction_batches": 2, "n_sparsity_batches": 2}},
}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A deep copy of TINY with top-level sections updated (dicts merged one level deep)."""
    cfg = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(folder: Path, cfg: dict[str, Any], name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_cli(*args: str, artifacts: Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`pipeline ...` in a subprocess, as a user runs it."""
    cmd = [sys.executable, "-m", "pipeline.cli", *args, "--artifacts", str(artifacts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"}, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}")
    return proc


def planned_prep_bytes(eval_def: Any, params: Any, model: Any, context_size: int | None) -> int:
    """What `pipeline plan` says a prep of ``eval_def`` with these settings writes, for this model spec."""
    from pipeline.config.facts import known_d_model
    from pipeline.disk import prep_bytes

    d_model = known_d_model(model.source, model.name)
    return prep_bytes(eval_def, params.model_dump(mode="json"), model.model_dump(), d_model, context_size)


def written_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@pytest.fixture(scope="session")
def shared_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact root for tests that may share cached stages (content keys keep them apart)."""
    return tmp_path_factory.mktemp("shared_artifacts")


@pytest.fixture(scope="session")
def tiny_run(shared_artifacts: Path) -> tuple:
    """The tiny config's activations and train stages, run in-process once for every test module:
    (config, store, train stage)."""
    from pipeline.artifacts import ArtifactStore
    from pipeline.loading import parse_config
    from pipeline.executors.stage_runner import execute
    from pipeline.plan import build_plan
    from pipeline.progress import Reporter

    cfg = parse_config(tiny_config())
    store = ArtifactStore(shared_artifacts)
    stages = build_plan(cfg)
    train = next(s for s in stages if s.kind == "train")
    for stage in (next(s for s in stages if s.kind == "activations"), train):
        if not store.is_complete(stage.kind, stage.key):
            execute(cfg, store, stage, Reporter(enabled=False))
    return cfg, store, train
