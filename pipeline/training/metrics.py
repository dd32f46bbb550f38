"""Per-step training metrics, kept on the device and read back in one transfer on logging steps.

Reading a GPU scalar (`float(loss)`) waits for the GPU to finish; doing it every step keeps the GPU
idle while Python catches up. So each step's metrics are stacked into one device tensor and the
pending rows are copied back together (and averaged over data-parallel ranks) on logging steps.
Every step still gets its own entry in the log.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.recipes.collective import all_sum, world


class MetricLog:
    def __init__(self, entries: list[dict[str, float]]):
        self.entries = entries
        """One dict per finished step, read back so far (restored from a checkpoint on resume)."""
        self._rows: list[Tensor] = []
        self._constants: list[dict[str, float]] = []
        self._names: list[str] = []

    def append(self, stats: dict[str, Tensor | float]) -> None:
        """Record one step's metrics without reading anything back."""
        tensors = {n: v for n, v in stats.items() if torch.is_tensor(v)}
        self._names = list(tensors)
        self._rows.append(torch.stack([v.detach().to(torch.float64) for v in tensors.values()]))
        self._constants.append({n: float(v) for n, v in stats.items() if not torch.is_tensor(v)})

    def flush(self) -> None:
        """Read the pending steps back (collective under data parallelism: every rank calls it)."""
        if not self._rows:
            return
        values = (all_sum(torch.stack(self._rows)) / world()).tolist()
        for row, constants in zip(values, self._constants):
            self.entries.append(dict(zip(self._names, row)) | constants)
        self._rows, self._constants = [], []

    @property
    def last(self) -> dict[str, float]:
        return self.entries[-1]
