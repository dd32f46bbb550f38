"""The ``evals:`` section, as data: ``max_chunk_mib`` plus one section per eval (``evals.<name>``).

``pipeline.config`` knows no eval: each section is validated by its eval's own config class (a subclass
of ``EvalConfig``, in ``evals/<name>/config.py``), plugged in at load time by ``pipeline.loading``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

from pipeline.config.base import Strict
from pipeline.config.model import ModelSpec


class EvalConfig(Strict):
    """What every eval's settings have: the switch, and optionally a model of its own."""

    enabled: bool = False
    """Run this eval (not part of any stage key)."""
    model: ModelSpec | None = None
    """Run this eval in another model than the run's (e.g. gemma-2-2b-it for unlearning with base-model
    SAEs, as SAEBench does); the SAE's hook must exist there. Part of the eval's prep key."""


class EvalsSpec(Strict):
    """Eval sections are kept as given here (``sections()``) and replaced by typed ``EvalConfig``s on load."""

    model_config = ConfigDict(extra="allow", frozen=True)
    max_chunk_mib: Annotated[int, Field(gt=0, le=4096)] = 256
    """Largest file any eval writes: bigger tensors are cut into parts of at most this size."""

    def sections(self) -> dict[str, Any]:
        """Every eval section by name (typed ``EvalConfig``s once loaded; raw mappings before)."""
        return dict(self.model_extra or {})
