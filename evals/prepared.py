"""The contract between an eval and the stages that run it.

An eval is split in two so model work is shared across SAEs:

* ``prepare(env, params, sink) -> meta``: everything that depends on the model, the hook and the
  eval's data but not on any SAE (model activations on the eval's prompts, labels, probes on the
  model's own activations). Runs once per (model, hook, eval data) as a stage ``eval_prep``; large
  tensors go to ``sink`` in bounded chunks, small facts into the returned JSON-able ``meta``.
* ``evaluate(prepared, sae, env, params) -> (output, summary)``: the per-SAE part, one stage per
  (SAE, eval). ``output`` is sae-bench's pydantic eval output (written as SAEBench's JSON), ``summary``
  a flat dict of headline numbers for the report.

An eval that needs the model in the loop per SAE (unlearning clamps latents inside forward passes)
gets it from ``env.model()``; one that does not never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.data.chunked import DEFAULT_MAX_BYTES, ChunkedReader, ChunkedWriter, Opener, tensor_names
from pipeline.progress import Reporter


class TensorSink:
    """Where ``prepare`` puts tensors: ``append`` streams rows, ``put`` stores a whole (small) tensor."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root, self.max_bytes = root, max_bytes
        self.writers: dict[str, ChunkedWriter] = {}

    def append(self, name: str, rows: torch.Tensor) -> None:
        if name not in self.writers:
            self.writers[name] = ChunkedWriter(self.root, name, self.max_bytes)
        self.writers[name].append(rows)

    def put(self, name: str, tensor: torch.Tensor) -> None:
        self.append(name, tensor.reshape(1) if tensor.dim() == 0 else tensor)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class Prepared:
    """Read side of ``prepare``'s output: tensors by name (checksum-verified when from an artifact)."""

    def __init__(self, root: Path, meta: dict[str, Any], opener: Opener | None = None):
        self.root, self.meta, self.opener = root, meta, opener

    def names(self) -> list[str]:
        return tensor_names(self.root)

    def reader(self, name: str) -> ChunkedReader:
        return ChunkedReader(self.root, name, self.opener)

    def tensor(self, name: str) -> torch.Tensor:
        return self.reader(name).read()

    def batches(self, name: str, rows: int) -> Iterator[torch.Tensor]:
        return self.reader(name).batches(rows)


@dataclass
class EvalEnv:
    """What an eval may use besides its params: the model spec, a lazy model loader, progress."""

    model_spec: Any
    """pipeline.config.ModelSpec (name, hook, layer, dtype, device)."""
    prepend_bos: bool
    """Whether the SAE's training contexts began with BOS (the run's data.prepend_bos)."""
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    label: str = ""
    """The SAE's id (e.g. 'matryoshka_k32-s0'), or '' in ``prepare``."""
    run_name: str = ""
    loader: Callable[[], tuple[Any, Any]] | None = None

    def model(self) -> tuple[Any, Any]:
        """(HookedTransformer, tokenizer), loaded once per process."""
        if self.loader is None:
            from pipeline.models.cache import get_model

            return get_model(self.model_spec)
        return self.loader()


def prepare_in_memory(prepare: Callable[..., dict[str, Any]], env: EvalEnv, params: Any, folder: Path,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> Prepared:  # fmt: skip
    """Run a ``prepare`` into a plain folder and open the result (tests, benchmarks)."""
    sink = TensorSink(folder, max_bytes)
    meta = prepare(env, params, sink)
    sink.close()
    return Prepared(folder, meta)
