"""One loaded model per process: every stage that runs in this process shares it (loading takes ~15 s)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipeline.config import ModelSpec


@lru_cache(maxsize=1)
def _load(source: str, name: str, dtype: str, device: str) -> tuple[Any, Any]:
    from pipeline.models import load_model

    return load_model(source, name, dtype, device)


def get_model(spec: ModelSpec) -> tuple[Any, Any]:
    """(HookedTransformer, tokenizer) for a model spec, loaded once per process."""
    return _load(spec.source, spec.name, spec.dtype, spec.device)
