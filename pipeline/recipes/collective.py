"""Global-batch statistics under data parallelism; the identity in a single process.

With torch.distributed initialised (``torchrun``), every rank holds a slice of the global batch.
Anything a recipe computes *from the batch* that steers training (BatchTopK's cut and threshold,
Matryoshka frequencies, TERM weights, co-occurrence, firing counts) goes through these functions, so
every rank sees the statistic of the whole global batch and the run equals the one-process run.
Without a process group (or with one process) each function returns its input: no cost, same bits.

A statistic needed only after the step (a threshold's EMA, frequencies, firing counts, a logged FVU)
is ``defer``red instead: ``settle`` at the end of the step reduces all of them together, in one
collective over one flat float64 buffer, because at small shapes the collectives' latency,
not their bytes, is what data parallelism costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor

Op = Literal["sum", "min", "max"]
_PENDING: dict[Op, list[tuple[Tensor, Callable[[Tensor], None]]]] = {"sum": [], "min": [], "max": []}


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


def defer(op: Op, t: Tensor, apply: Callable[[Tensor], None]) -> None:
    """``apply(t reduced over ranks)`` at this step's ``settle``; at once, with ``t`` itself, in one process.
    Every rank must defer the same sequence of shapes (the recipes do: each rank runs the same code)."""
    if world() == 1:
        apply(t)
        return
    _PENDING[op].append((t, apply))


def settle(*sums: Tensor) -> tuple[Tensor, ...]:
    """Run the deferred reductions in one all-gather of one flat float64 buffer (every op's parts side
    by side; exact for counts below 2**53), each rank then reducing the gathered rows in rank order:
    one synchronisation instead of one per op. ``sums`` join the sum buffer and come back reduced, in order."""
    if world() == 1:
        return sums
    reduced_sums: list[Tensor] = []
    for t in sums:
        defer("sum", t, reduced_sums.append)
    pending = [(op, t, apply) for op, items in _PENDING.items() for t, apply in items]
    if not pending:
        return ()
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for _, t, _ in pending])
    parts = [torch.empty_like(flat) for _ in range(world())]
    dist.all_gather(parts, flat)
    gathered = torch.stack(parts)
    for (op, t, apply), part in zip(pending, gathered.split([t.numel() for _, t, _ in pending], dim=1)):
        apply(_REDUCE[op](part).view(t.shape).to(t.dtype))
    for items in _PENDING.values():
        items.clear()
    return tuple(reduced_sums)


def _sum_in_rank_order(rows: Tensor) -> Tensor:
    total = rows[0].clone()
    for row in rows[1:]:
        total += row
    return total


_REDUCE: dict[Op, Callable[[Tensor], Tensor]] = {
    "sum": _sum_in_rank_order,
    "min": lambda rows: rows.min(0).values,
    "max": lambda rows: rows.max(0).values,
}


def all_cat(t: Tensor, same_length: bool = False) -> Tensor:
    """Concatenate along dim 0 in rank order. Lengths may differ between ranks, unless ``same_length``
    (the caller knows they are equal: one all-gather instead of two)."""
    n = world()
    if n == 1:
        return t
    if same_length:
        parts = [torch.empty_like(t) for _ in range(n)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    padded = t.new_zeros((max(lengths), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:m] for p, m in zip(parts, lengths)])
