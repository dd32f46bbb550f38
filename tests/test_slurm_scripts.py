"""What a SLURM job runs, without a cluster: a train stage with several GPUs trains data-parallel."""

from __future__ import annotations

from pipeline.executors.slurm.scripts import stage_command
from pipeline.loading import parse_config
from tests.conftest import tiny_config


def _cfg(train_gpus: int):
    slurm = {"defaults": {"gpus": 1}, "stages": {"train": {"gpus": train_gpus}, "report": {"gpus": 0}}}
    return parse_config(tiny_config(executor={"kind": "slurm", "slurm": slurm}))


def test_multi_gpu_train_runs_one_rank_per_gpu_under_torchrun() -> None:
    cmd = stage_command(_cfg(4), "train", "python", "cfg.yaml", "/root")
    assert cmd.startswith("exec srun --ntasks=1 python -m torch.distributed.run --standalone --nproc_per_node 4 ")
    assert '-m pipeline.training.worker cfg.yaml "$KEY" --artifacts /root' in cmd


def test_single_gpu_and_other_stages_run_the_stage_directly() -> None:
    for cfg, kind in ((_cfg(1), "train"), (_cfg(4), "eval_core"), (_cfg(4), "report")):
        assert stage_command(cfg, kind, "python", "cfg.yaml", "/root") == (
            'exec python -m pipeline.job run-stage cfg.yaml "$KEY" --artifacts /root --quiet'
        )


def test_a_warning_during_start_up_still_stops_training_at_a_checkpoint() -> None:
    """SIGTERM before the training loop listens (the job is still importing) is kept, not fatal."""
    import subprocess
    import sys

    code = (
        "import os, signal\n"
        "from pipeline.training.preemption import catch_sigterm_early, stop_on_sigterm\n"
        "catch_sigterm_early()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "with stop_on_sigterm() as stop:\n"
        "    assert stop.is_set(), 'the early warning was lost'\n"
        "print('kept')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "kept"
