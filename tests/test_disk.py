"""Disk preflight: `pipeline plan` shows each stage's bytes; `pipeline run` refuses a plan that cannot fit,
naming the setting, with nothing written; the estimates match what the stages really write."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import disk
from pipeline.cli import planned_bytes
from pipeline.loading import load_config
from pipeline.plan import build_plan
from pipeline.stages.registry import kind_of
from tests.conftest import run_cli, tiny_config, write_config, written_bytes


def test_run_refuses_a_plan_that_cannot_fit_and_writes_nothing(tmp_path: Path) -> None:
    huge = tiny_config(activations={"n_tokens": 10**13})  # 10^13 tokens x 576 x 4 bytes: 23 PB
    cfg = write_config(tmp_path, huge)
    artifacts = tmp_path / "artifacts"
    proc = run_cli("run", str(cfg), artifacts=artifacts, check=False)
    assert proc.returncode == 2, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "error" in ln)
    assert line.count("activations.n_tokens") == 2 and "TB" in line
    assert "free" in line and "--skip-disk-check" in line
    assert not artifacts.exists() or not any(artifacts.rglob("*"))


def test_plan_shows_bytes_per_stage_and_free_space(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tiny_config())
    out = run_cli("plan", str(cfg), artifacts=tmp_path / "a").stderr
    assert "writes" in out and "still to write" in out and "free on the artifact filesystem" in out
    # 6,000 tokens x (576 x 4 + 16) bytes x 1.01 = 14.1 MB
    assert "14.1 MB" in out


@pytest.mark.parametrize("name", ["default", "gemma2b_l12", "synth_small", "synth_suite", "synth16k"])
def test_every_stage_of_a_shipped_config_has_a_size(name: str) -> None:
    """`pipeline plan` offline sizes every stage (no '?'), the real Gemma job's evals included."""
    unknown = [s.label for s in build_plan(load_config(name)[0]) if planned_bytes(s) is None]
    assert not unknown


def test_estimates_bound_what_the_stages_write(tiny_run) -> None:
    """Activation shards and the trained SAE, against the tiny run's real artifacts."""
    _, store, train = tiny_run
    acts = train.inputs["activations"]
    real = written_bytes(store.path(acts.kind, acts.key))
    est = kind_of(acts.kind).planned_bytes(acts)
    assert real <= est <= 1.1 * real, (real, est)
    sae = store.path(train.kind, train.key) / "sae" / "sae_weights.safetensors"
    est_sae = kind_of("train").planned_bytes(train)
    weights = est_sae // (1 + disk.CHECKPOINTS_KEPT * 3)
    assert sae.stat().st_size <= weights * 1.01 + 4096
