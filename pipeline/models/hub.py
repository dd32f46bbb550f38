"""Hub models (e.g. ``google/gemma-2-2b``) through TransformerLens' own loader.

This is the code path for a GPU machine with network access (or a populated
HF cache): ``HookedTransformer.from_pretrained_no_processing`` downloads the
HF checkpoint and converts it, with no weight processing (no LayerNorm
folding / centering), so cached activations are those of the original model.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def load_hub_model(
    name: str,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> tuple["HookedTransformer", "PreTrainedTokenizerBase"]:
    """Load a TransformerLens-supported model by name; returns ``(model, tokenizer)``."""
    from transformer_lens import HookedTransformer

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # TL 3.9 deprecates HookedTransformer in favour of TransformerBridge; the
        # pipeline (and sae-lens) deliberately build on HookedTransformer.
        warnings.filterwarnings(
            "ignore", message=r"HookedTransformer is deprecated", category=DeprecationWarning
        )
        model = HookedTransformer.from_pretrained_no_processing(name, dtype=dtype, device=device)
    model.eval()
    logger.info("loaded %s in %.1fs, dtype=%s device=%s", name, time.perf_counter() - t0, dtype, device)
    return model, model.tokenizer
