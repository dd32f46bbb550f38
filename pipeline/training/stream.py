"""A deterministic, seekable, shuffled stream of activation rows read from shards.

Order: per epoch, shards are permuted (seeded) and grouped in windows of ``window`` shards; the rows of
a window are permuted together. The stream is a pure function of (seed, epoch, row index), so training
can resume at any row from a checkpoint without replaying data, and peak memory is one window (two
when a background reader loads the next one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.shards import ShardIndex, read_shard
from pipeline.training.prefetch import prefetch


class ShardStream:
    def __init__(self, folder: Path, index: ShardIndex, seed: int, window: int):
        self.folder = folder
        self.index = index
        self.seed = seed
        self.window = window
        self.rows_per_epoch = index.total_rows

    def _windows(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.index.shards))
        return [order[i : i + self.window].tolist() for i in range(0, len(order), self.window)]

    def _window_rows(self, shard_ids: list[int]) -> int:
        return sum(self.index.shards[i].rows for i in shard_ids)

    def _load_window(self, epoch: int, w: int, shard_ids: list[int]) -> np.ndarray:
        rows = np.concatenate([read_shard(self.folder, self.index.shards[i]) for i in shard_ids])
        perm = np.random.default_rng([self.seed, epoch, w, 1]).permutation(len(rows))
        return rows[perm]

    def rows(self, start: int) -> Iterator[np.ndarray]:
        """Chunks of consecutive stream rows, beginning at global row ``start`` (epochs wrap)."""
        epoch, offset = divmod(start, self.rows_per_epoch)
        while True:
            for w, shard_ids in enumerate(self._windows(epoch)):
                n = self._window_rows(shard_ids)
                if offset >= n:
                    offset -= n
                    continue
                yield self._load_window(epoch, w, shard_ids)[offset:]
                offset = 0
            epoch += 1

    def batches(self, start: int, batch_size: int, window_as: Callable[[np.ndarray], Any] | None = None) -> Iterator[Any]:
        """Batches of ``batch_size`` rows; a batch may span windows and epochs.

        With ``window_as`` (e.g. to a pinned float32 torch tensor) each window is read, checked and
        converted by a background reader while the previous one is consumed (`prefetch.py`); the
        rows and their order are the same either way.
        """
        chunks: Iterator[Any] = self.rows(start) if window_as is None else prefetch(self.rows(start), window_as)
        pending: list[Any] = []
        have = 0
        for chunk in chunks:
            while len(chunk):
                take = min(batch_size - have, len(chunk))
                pending.append(chunk[:take])
                have += take
                chunk = chunk[take:]
                if have == batch_size:
                    yield _concat(pending) if len(pending) > 1 else pending[0]
                    pending, have = [], 0


def as_tensor(rows: np.ndarray, pin: bool = False) -> torch.Tensor:
    """A window as float32 torch rows; pinned (page-locked) for non-blocking copies to a GPU."""
    t = torch.from_numpy(rows).float()
    return t.pin_memory() if pin else t


def _concat(parts: list[Any]) -> Any:
    return torch.cat(parts) if torch.is_tensor(parts[0]) else np.concatenate(parts)
