"""Tensors written in bounded chunks and read back streaming.

Long eval runs die on one multi-GB ``torch.save``: memory doubles while it serialises and a crash
mid-write leaves nothing usable. Here a tensor is a folder of safetensors parts, each at most
``max_bytes``, cut along the first dimension, plus an ``index.json`` naming the parts in order. A
writer holds at most one part in memory; a reader yields one part at a time.

Layout of a tensor ``NAME`` under ``root``::

    NAME/index.json          {"dtype", "shape", "parts": [{"file", "rows"}...], "max_bytes"}
    NAME/part-00000.safetensors   one tensor "data" of shape [rows, *shape[1:]]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.data.reused import Reused
from pipeline.fsutil import atomic_write_json

DEFAULT_MAX_BYTES = 256 * 2**20
"""256 MiB: small enough to write and verify quickly, large enough that parts stay few."""

INDEX = "index.json"


def _row_bytes(t: torch.Tensor) -> int:
    return t[0].numel() * t.element_size() if len(t) else 0


class ChunkedWriter:
    """Append rows (dim 0) to one tensor; parts are flushed to disk as they fill."""

    def __init__(self, root: Path, name: str, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.max_bytes = name, max_bytes
        self.parts: list[dict[str, Any]] = []
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0
        self.tail: tuple[int, ...] | None = None
        self.dtype: torch.dtype | None = None

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to("cpu").contiguous()
        if rows.dim() == 0:
            raise ValueError(f"{self.name}: append rows along dim 0, got a scalar")
        if self.tail is None:
            self.tail, self.dtype = tuple(rows.shape[1:]), rows.dtype
        elif tuple(rows.shape[1:]) != self.tail or rows.dtype != self.dtype:
            raise ValueError(
                f"{self.name}: appended rows {tuple(rows.shape[1:])} {rows.dtype} differ from earlier "
                f"{self.tail} {self.dtype}"
            )
        row_bytes = _row_bytes(rows)
        if row_bytes > self.max_bytes:
            raise ValueError(
                f"{self.name}: one row is {row_bytes} bytes, over the chunk bound of {self.max_bytes}; "
                "raise the bound (evals.max_chunk_mib) or store the tensor with a longer first dimension"
            )
        per_part = max(1, self.max_bytes // max(1, row_bytes))
        while len(rows):
            take = min(len(rows), per_part - self.pending_rows)
            self.pending.append(rows[:take])
            self.pending_rows += take
            rows = rows[take:]
            if self.pending_rows == per_part:
                self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        part = torch.cat(self.pending)
        file = f"part-{len(self.parts):05d}.safetensors"
        save_file({"data": part}, str(self.dir / file))
        self.parts.append({"file": file, "rows": len(part)})
        self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        """Flush the last part and write the index (the tensor is readable only after this)."""
        self._flush()
        if self.tail is None:
            raise ValueError(f"{self.name}: nothing was written")
        index = {
            "dtype": str(self.dtype).removeprefix("torch."),
            "shape": [sum(p["rows"] for p in self.parts), *self.tail],
            "parts": self.parts,
            "max_bytes": self.max_bytes,
        }
        atomic_write_json(self.dir / INDEX, index)


def write_tensor(root: Path, name: str, tensor: torch.Tensor, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Write a whole tensor in bounded parts (a 0-d tensor is stored as one row)."""
    writer = ChunkedWriter(root, name, max_bytes)
    writer.append(tensor.reshape(1) if tensor.dim() == 0 else tensor)
    writer.close()


Opener = Callable[[str], Path]
"""Maps a path relative to the root to a readable file; artifact readers verify its checksum here."""


class ChunkedReader:
    """Streams a tensor written by ``ChunkedWriter``, part by part."""

    def __init__(self, root: Path, name: str, opener: Opener | None = None):
        self.root, self.name = root, name
        self.open = opener or (lambda rel: root / rel)
        index_file = self.open(f"{name}/{INDEX}")
        if not index_file.exists():
            raise FileNotFoundError(f"no chunked tensor {name!r} under {root} (missing {name}/{INDEX})")
        self.index = json.loads(index_file.read_text())
        self.shape = tuple(self.index["shape"])
        self.dtype = getattr(torch, self.index["dtype"])

    def parts(self) -> Iterator[torch.Tensor]:
        for part in self.index["parts"]:
            data = load_file(str(self.open(f"{self.name}/{part['file']}")))["data"]
            if len(data) != part["rows"] or data.dtype != self.dtype:
                raise ValueError(f"{self.name}/{part['file']}: holds {len(data)} rows of {data.dtype}, index says "
                                 f"{part['rows']} of {self.dtype}")  # fmt: skip
            yield data

    def batches(self, rows: int, reuse: bool = False) -> Iterator[torch.Tensor]:
        """Consecutive slices of ``rows`` rows (the last may be shorter), across part boundaries. A batch
        inside one part is a view of it; only one that spans parts is copied (joining the rest of a part
        again for every batch copied it once per batch: 0.5 s of core's 11 s per SAE). ``reuse``: batches
        that span parts are joined into one tensor kept from one to the next, so each is valid only until
        the next is asked for; for large batches read once each, where writing new memory costs more in
        page faults than the copy (core's clean probabilities: 200 MB a batch)."""
        carry: list[torch.Tensor] = []  # the start of the next batch, from earlier parts
        held = 0
        kept = Reused() if reuse else None

        def join(pieces: list[torch.Tensor]) -> torch.Tensor:
            if kept is None:
                return torch.cat(pieces)
            return torch.cat(pieces, out=kept.get("joined", (sum(len(p) for p in pieces), *pieces[0].shape[1:]), pieces[0]))

        for part in self.parts():
            at = 0
            while held + len(part) - at >= rows:
                piece = part[at : at + rows - held]
                yield join([*carry, piece]) if carry else piece
                at, carry, held = at + len(piece), [], 0
            if at < len(part):
                carry.append(part[at:])
                held += len(part) - at
        if held:
            yield join(carry) if len(carry) > 1 else carry[0]

    def read(self) -> torch.Tensor:
        """The whole tensor (for tensors that fit in memory)."""
        parts = list(self.parts())
        if not parts:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.cat(parts)


def tensor_names(root: Path) -> list[str]:
    return sorted(p.parent.relative_to(root).as_posix() for p in root.rglob(INDEX))
