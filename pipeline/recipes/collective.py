"""Global-batch statistics under data parallelism; the identity in a single process.

With torch.distributed initialised (``torchrun``), every rank holds a slice of the global batch.
Anything a recipe computes *from the batch* that steers training (BatchTopK's cut and threshold,
Matryoshka frequencies, TERM weights, co-occurrence, firing counts) goes through these functions, so
every rank sees the statistic of the whole global batch and the run equals the one-process run.
Without a process group (or with one process) each function returns its input: no cost, same bits.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> int:
    """Number of data-parallel ranks (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world() > 1 else 0


def _all_reduce(t: Tensor, op: dist.ReduceOp) -> Tensor:
    """``op`` over ranks into a new tensor (the input is left alone); the input itself with one rank."""
    if world() == 1:
        return t
    out = t.clone()
    dist.all_reduce(out, op=op)
    return out


def all_sum(t: Tensor) -> Tensor:
    return _all_reduce(t, dist.ReduceOp.SUM)


def all_min(t: Tensor) -> Tensor:
    return _all_reduce(t, dist.ReduceOp.MIN)


def all_max(t: Tensor) -> Tensor:
    return _all_reduce(t, dist.ReduceOp.MAX)


def all_cat(t: Tensor) -> Tensor:
    """Concatenate along dim 0 in rank order; tensors may differ in length between ranks."""
    n = world()
    if n == 1:
        return t
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    padded = t.new_zeros((max(lengths), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:m] for p, m in zip(parts, lengths)])
