"""Where training runs: the config's `device` (cpu | cuda | cuda:N | auto) as a torch.device.

The device is not part of any stage key: the same SAE trained on another device is the same artifact
(checkpoints are device-independent, so a run may even resume on another device).
"""

from __future__ import annotations

import torch

from pipeline.config.run import DEVICE_RE


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """`auto` is CUDA when present, else CPU. Under torchrun (`local_rank` given) a CUDA run takes
    the GPU of its local rank, whatever index the spec names."""
    if not DEVICE_RE.match(spec):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N; got {spec!r}")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    if local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(spec if ":" in spec else "cuda:0")
