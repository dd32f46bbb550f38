"""The data-parallel pieces on their own: the ranks' BatchTopK search finds exactly the entries of the
exhaustive search (random, tied, mostly-zero and one-row-holds-everything batches), and ``settle``'s
single all-gather reduces sums (in rank order), minima and the returned sums as the per-op
all-reduces did, over two gloo processes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.recipes.activation import global_batch_topk_flat, global_batch_topk_mask
from pipeline.recipes.collective import defer, settle


def exhaustive(h: torch.Tensor, n_keep: int) -> torch.Tensor:
    return global_batch_topk_mask(h, n_keep).reshape(-1).nonzero().squeeze(1)


def batches() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    random = torch.randn(64, 256, generator=gen)
    tied = torch.randint(-3, 4, (64, 256), generator=gen).float()
    sparse = torch.where(torch.rand(64, 256, generator=gen) < 0.01, torch.rand(64, 256, generator=gen), torch.zeros(()))
    hot_row = random.clone()
    hot_row[5] += 100.0  # one row holds more winners than its candidates
    return {"random": random, "tied": tied, "mostly_zero": sparse, "hot_row": hot_row}


@pytest.mark.parametrize("name", ["random", "tied", "mostly_zero", "hot_row"])
@pytest.mark.parametrize("k", [1, 8, 64])
def test_candidate_search_finds_the_exhaustive_search_entries(name: str, k: int) -> None:
    h = batches()[name]
    n_keep = k * h.shape[0]
    found = torch.sort(global_batch_topk_flat(h, n_keep, min(h.shape[1], 4 * k))).values
    assert torch.equal(found, exhaustive(h, n_keep))


def _settle_in_rank(rank: int, world: int, init: str, results: dict[int, list[torch.Tensor]]) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        got: dict[str, torch.Tensor] = {}
        fvu = torch.tensor([0.1 * (rank + 1), 1e-17 * (rank + 1)], dtype=torch.float64)
        defer("sum", fvu, lambda t: got.setdefault("fvu", t))
        defer("min", torch.tensor([3.0 - rank, float("inf"), rank + 0.5]), lambda t: got.setdefault("minima", t))
        defer("sum", torch.arange(4) * (rank + 1), lambda t: got.setdefault("counts", t))
        (fired,) = settle(torch.tensor([rank, 2 * rank], dtype=torch.long))
        results[rank] = [got["fvu"], got["minima"], got["counts"], fired]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes
def test_settle_reduces_every_op_in_one_gather(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = mp.Manager().dict()
    mp.spawn(_settle_in_rank, args=(2, f"file://{tmp_path / 'store'}", results), nprocs=2)
    for rank in range(2):
        fvu, minima, counts, fired = results[rank]
        assert torch.equal(fvu, torch.tensor([0.1, 1e-17], dtype=torch.float64) + torch.tensor([0.2, 2e-17], dtype=torch.float64))
        assert torch.equal(minima, torch.tensor([2.0, float("inf"), 0.5]))
        assert torch.equal(counts, torch.arange(4) * 3) and counts.dtype == torch.long
        assert torch.equal(fired, torch.tensor([1, 2]))
