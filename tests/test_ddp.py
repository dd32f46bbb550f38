"""Data-parallel training with torchrun: two CPU ranks (gloo) give the one-process result, and a
`kill -9` of the whole torchrun job (launcher and ranks, as a node failure or scancel does) resumes,
on re-run, to the same result bit-for-bit.

The recipe exercises every statistic the ranks must share: BatchTopK's global top-k and threshold,
Matryoshka frequency ordering, TERM weights, orthogonality co-occurrence and AuxK's dead mask.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipeline import cli
from pipeline.artifacts import ArtifactStore, sha256_file
from pipeline.loading import parse_config
from tests.conftest import REPO, write_config
from tests.tiny_shards import train_config, train_stage, write_activations

pytestmark = pytest.mark.slow  # torchrun with 2 gloo ranks, kill -9 and resume

RECIPE = {
    "matryoshka": {"levels": [16, 64], "order_by_frequency": True},
    "term": {"t": 0.5},
    "orthogonality": {"coefficient": 0.01},
    "aux_k": {"k_aux": 8},
}
STEPS = 200
WEIGHT_ATOL = 1e-5
"""fp32: the two runs sum the same numbers in a different order (slices of the batch, then ranks)."""


def torchrun(config: Path, key: str, artifacts: Path, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.training.worker", str(config), key, "--artifacts", str(artifacts)]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same stage trained in one process and in two ranks, each in its own artifact root."""
    root = tmp_path_factory.mktemp("ddp")
    raw = train_config(recipe=RECIPE, train_tokens=64 * STEPS, dead_after_tokens=128, checkpoint_every=20)
    config = write_config(root, raw)
    cfg = parse_config(raw)
    stores = {name: ArtifactStore(root / name) for name in ("one", "two", "killed", "termed-launcher", "termed-all")}
    for store in stores.values():
        write_activations(store, cfg)
    train = train_stage(cfg)
    assert cli.main(["run-stage", str(config), train.key, "--quiet", "--artifacts", str(stores["one"].root)]) == 0
    finish(torchrun(config, train.key, stores["two"].root))
    return {"config": config, "train": train, **stores}


def trained(store: ArtifactStore, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = store.path("train", key)
    return load_file(folder / "sae" / "saepipe_coder.safetensors"), json.loads((folder / "train_log.json").read_text())


def wait_for_checkpoint(proc: subprocess.Popen[str], ckpts: Path, step: int, timeout: float = 180) -> None:
    """Until a checkpoint at `step` or later exists, while the run is still going (so it can be interrupted)."""
    deadline = time.monotonic() + timeout
    while not any(p.name >= f"ckpt-{step:08d}" for p in ckpts.glob("ckpt-*")):
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def assert_same_result(store: ArtifactStore, reference: ArtifactStore, key: str) -> None:
    """The resumed run's weights are the uninterrupted run's, bit for bit, and so is its training log."""
    weights = "sae/sae_weights.safetensors"
    assert sha256_file(store.path("train", key) / weights) == sha256_file(reference.path("train", key) / weights)
    assert trained(store, key)[1] == trained(reference, key)[1]


def test_two_gloo_ranks_train_what_one_process_trains(runs: dict[str, Any]) -> None:
    key = runs["train"].key
    (w1, log1), (w2, log2) = trained(runs["one"], key), trained(runs["two"], key)
    assert runs["two"].manifest("train", key)["summary"]["data_parallel_ranks"] == 2
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=WEIGHT_ATOL, rtol=0, msg=name)
    assert len(log1["steps"]) == len(log2["steps"]) == STEPS
    assert any(s["loss/aux_k"] > 0 for s in log1["steps"])  # dead latents did occur, so the dead mask was shared
    for step, (a, b) in enumerate(zip(log1["steps"], log2["steps"])):
        for metric, value in a.items():
            assert b[metric] == pytest.approx(value, rel=1e-5, abs=1e-6), f"step {step + 1} {metric}"
    assert log1["fired_count"] == log2["fired_count"]


def test_kill_9_of_torchrun_then_rerun_resumes_to_the_same_result(runs: dict[str, Any]) -> None:
    key, killed = runs["train"].key, runs["killed"]
    ckpts = killed.root / "train" / ".work" / key / "checkpoints"
    proc = torchrun(runs["config"], key, killed.root, start_new_session=True)
    wait_for_checkpoint(proc, ckpts, 40)
    ranks = children(proc.pid)
    assert len(ranks) == 2
    for group in [proc.pid, *ranks]:  # torchrun starts each rank in its own session: kill all three groups
        os.killpg(group, signal.SIGKILL)
    proc.wait()
    assert not killed.is_complete("train", key)
    out = finish(torchrun(runs["config"], key, killed.root))
    assert "resuming from ckpt-" in out
    assert_same_result(killed, runs["two"], key)


@pytest.mark.parametrize("to", ["launcher", "all"])
def test_sigterm_to_torchrun_checkpoints_exits_and_resumes_to_the_same_result(runs: dict[str, Any], to: str) -> None:
    """SLURM's time-limit warning: SIGTERM to the launcher alone (it passes it on to its ranks), or to
    every process of the job step at once (as slurmstepd signals a step's tasks). Rank 0 must
    checkpoint, the whole job must exit (not hang, not lose the checkpoint), and a re-run finish with
    the weights of the uninterrupted run."""
    key, termed = runs["train"].key, runs[f"termed-{to}"]
    ckpts = termed.root / "train" / ".work" / key / "checkpoints"
    proc = torchrun(runs["config"], key, termed.root, start_new_session=True)
    wait_for_checkpoint(proc, ckpts, 40)
    for pid in [proc.pid, *(children(proc.pid) if to == "all" else [])]:
        os.kill(pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, "a pre-empted job must not look finished"
    found = re.search(r"SIGTERM at step (\d+); checkpoint saved", out)
    assert found, f"rank 0 did not checkpoint on SIGTERM; output:\n{out[-3000:]}"
    step = int(found.group(1))
    assert 40 <= step < STEPS and (ckpts / f"ckpt-{step:08d}").is_dir()
    assert not termed.is_complete("train", key)
    out = finish(torchrun(runs["config"], key, termed.root))
    assert f"resuming from ckpt-{step:08d}" in out
    assert_same_result(termed, runs["two"], key)
