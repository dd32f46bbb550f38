"""The train stage's machinery: device, device-independent checkpoints, bf16 autocast, the ops
choice recorded and kept on resume, metrics read back on logging steps, and the prefetching reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.artifacts import ArtifactStore, sha256_file
from pipeline.config import ConfigError
from pipeline.config.recipe import RecipeSpec
from pipeline.data.shards import SHARD_DIR, CorruptShardError, ShardIndex, read_shard
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.progress import Reporter
from pipeline.training.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from pipeline.training.device import resolve_device
from pipeline.training.ops_choice import probe_ops, resolve_ops
from pipeline.training.prefetch import prefetch
from pipeline.training.stream import ShardStream
from pipeline.training.trainables import build_trainable
from tests.conftest import REPO
from tests.tiny_shards import train_config, train_stage, write_activations

QUIET = Reporter(enabled=False)


def trained(tmp_path: Path, name: str, **sae: object) -> tuple[ArtifactStore, Path]:
    """Train the tiny SAE with `sae` settings in its own store; (store, artifact folder)."""
    cfg = parse_config(train_config(**sae))
    store = ArtifactStore(tmp_path / name)
    write_activations(store, cfg)
    return store, execute(cfg, store, train_stage(cfg), QUIET)


# -- device -------------------------------------------------------------------------------------


def test_device_forms() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_bad_device_is_one_config_line_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**train_config(), "device": "gpu0"})
    assert err.value.problems == ["device: bad value 'gpu0': must be one of auto, cpu, cuda, cuda:N"]


def test_device_is_not_in_the_key() -> None:
    keys = {train_stage(parse_config({**train_config(), "device": d})).key for d in ("cpu", "cuda:1", "auto")}
    assert len(keys) == 1


# -- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_is_saved_from_cpu_copies_and_loads_onto_the_asked_device(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    trainable = build_trainable("saepipe", RecipeSpec(), 8, 32, 4, 0, cpu, "sparse")
    opt = torch.optim.Adam(trainable.module.parameters(), lr=1e-3)
    trainable.step(torch.randn(16, 8), 0, 10, torch.zeros(32, dtype=torch.bool)).loss.backward()
    opt.step()
    extra = {"since_fired": torch.arange(32)}
    path = save_checkpoint(tmp_path, 1, trainable.module, opt, extra, {"log": [], "ops": "sparse"})
    assert all(t.device == cpu for t in load_file(path / "state.safetensors").values())

    fresh = build_trainable("saepipe", RecipeSpec(), 8, 32, 4, 1, cpu, "sparse")
    fresh_opt = torch.optim.Adam(fresh.module.parameters(), lr=1e-3)
    got, info = load_checkpoint(path, fresh.module, fresh_opt, cpu)
    assert info["ops"] == "sparse" and got["since_fired"].device == cpu
    for name, value in trainable.module.state_dict().items():
        assert torch.equal(fresh.module.state_dict()[name], value), name
    assert fresh_opt.state_dict()["state"][0]["step"].device == cpu  # Adam keeps `step` on the CPU


# -- bf16 ---------------------------------------------------------------------------------------

BF16_RTOL = 0.05
"""bf16 keeps 8 bits of mantissa in the encoder matmul; over 100 steps the final MSE stays within 5%."""


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path) -> None:
    fp32_store, fp32 = trained(tmp_path, "fp32")
    bf16_store, bf16 = trained(tmp_path, "bf16", autocast="bf16")
    mse = lambda store, folder: store.manifest("train", folder.name)["summary"]["final_mse"]
    first = json.loads((fp32 / "train_log.json").read_text())["steps"][0]["mse"]
    assert mse(fp32_store, fp32) < 0.5 * first  # it did learn
    assert mse(bf16_store, bf16) == pytest.approx(mse(fp32_store, fp32), rel=BF16_RTOL)
    assert load_file(bf16 / "sae" / "sae_weights.safetensors")["W_enc"].dtype == torch.float32


# -- ops ----------------------------------------------------------------------------------------


def test_auto_ops_is_sparse_on_cpu_and_the_probe_times_both() -> None:
    cpu = torch.device("cpu")
    assert resolve_ops("auto", cpu, RecipeSpec(), 8, 32, 4, 16) == "sparse"
    assert resolve_ops("dense", cpu, RecipeSpec(), 8, 32, 4, 16) == "dense"
    seconds = probe_ops(cpu, RecipeSpec(), 8, 32, 4, 16, warmup=1, steps=1)
    assert set(seconds) == {"sparse", "dense"} and all(s > 0 for s in seconds.values())


def test_resume_keeps_the_ops_recorded_in_the_checkpoint(tmp_path: Path) -> None:
    """An `auto` run whose checkpoint says 'dense' resumes dense: the same bits as an explicit dense run."""
    _, dense = trained(tmp_path, "dense", ops="dense")
    cfg = parse_config(train_config())
    store = ArtifactStore(tmp_path / "auto")
    write_activations(store, cfg)
    train = train_stage(cfg)
    ckpts = store.work_dir("train", train.key) / "checkpoints"
    ckpts.mkdir()
    torch.manual_seed(0)
    start = build_trainable("saepipe", RecipeSpec(), 16, 64, 4, 0, torch.device("cpu"), "dense")
    opt = torch.optim.Adam(start.module.parameters(), lr=3e-3)
    extra = {"since_fired": torch.zeros(64, dtype=torch.long), "fired_count": torch.zeros(64, dtype=torch.long)}
    save_checkpoint(ckpts, 0, start.module, opt, extra, {"log": [], "ops": "dense"})
    resumed = execute(cfg, store, train, QUIET)
    assert store.manifest("train", train.key)["summary"]["ops"] == "dense"
    weights = "sae/sae_weights.safetensors"
    assert sha256_file(resumed / weights) == sha256_file(dense / weights)


def test_summary_and_checkpoints_record_the_resolved_ops(tmp_path: Path) -> None:
    cfg = parse_config(train_config(train_tokens=64 * 35))
    store = ArtifactStore(tmp_path / "s")
    write_activations(store, cfg)
    train = train_stage(cfg)
    folder = execute(cfg, store, train, QUIET)
    summary = store.manifest("train", train.key)["summary"]
    assert (summary["ops"], summary["device"], summary["autocast"]) == ("sparse", "cpu", "none")
    log = json.loads((folder / "train_log.json").read_text())
    assert log["log_every"] == 1 and len(log["steps"]) == 35 == summary["steps"]


# -- feeding ------------------------------------------------------------------------------------


def shards(tmp_path: Path) -> tuple[Path, ShardIndex]:
    cfg = parse_config(train_config())
    store = ArtifactStore(tmp_path)
    acts = write_activations(store, cfg, n_shards=7, rows=300)
    folder = store.path("activations", acts.key)
    return folder / SHARD_DIR, ShardIndex.load(folder)


@pytest.mark.parametrize("start", [0, 37, 1234, 2100 + 5])  # mid-window, window edge region, next epoch
def test_prefetching_stream_yields_the_synchronous_batches(tmp_path: Path, start: int) -> None:
    folder, index = shards(tmp_path)
    stream = ShardStream(folder, index, seed=3, window=2)
    plain = stream.batches(start, 128)
    ahead = stream.batches(start, 128, window_as=lambda a: torch.from_numpy(a).float())
    for _ in range(40):  # > one epoch of 2100 rows
        assert torch.equal(next(ahead), torch.from_numpy(next(plain)))


def test_reader_error_reaches_the_trainer_with_its_message(tmp_path: Path) -> None:
    folder, index = shards(tmp_path)
    victim = index.shards[np.random.default_rng([3, 0]).permutation(7)[2]]  # in the second window
    data = bytearray((folder / victim.file).read_bytes())
    data[100] ^= 0xFF
    (folder / victim.file).write_bytes(bytes(data))
    with pytest.raises(CorruptShardError) as direct:
        read_shard(folder, victim)
    batches = ShardStream(folder, index, seed=3, window=2).batches(0, 100, window_as=torch.from_numpy)
    with pytest.raises(CorruptShardError) as via_reader:
        for _ in range(100):
            next(batches)
    assert str(via_reader.value) == str(direct.value)


def test_reader_holds_at_most_two_items() -> None:
    made: list[int] = []
    for i in prefetch(iter(range(20)), lambda v: made.append(v) or v, depth=2):
        assert len(made) <= i + 2  # the one in hand and at most one read ahead
        sum(range(20_000))  # give the reader time to run ahead if it could


# -- the GPU check, on the CPU ------------------------------------------------------------------


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_cpu(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/gpu/run_gpu_check.py", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["train_step"] and results["synthetic"]["ok"], results
    split = results["core_split"]  # the tail from the cached residual computes what the full pass does
    assert split["per_sae_s"]["ours"] > 0 and split["agree"]["ce_max_abs_diff"] < 1e-4 * split["agree"]["ce_mean"], split
    assert split["agree"]["kl_max_abs_diff"] < 1e-4 and split["agree"]["kl_mean"] > 1e-3, split
