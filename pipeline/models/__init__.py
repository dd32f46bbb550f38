"""Model loading: the offline SmolLM2 default and TransformerLens hub models.

``load_model`` is the single entry point used by the pipeline;
``model_n_layers`` / ``model_d_model`` answer shape questions for config
validation without loading anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pipeline.config.facts import known_d_model, known_n_layers

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

SOURCES = ("smollm2_gguf", "hub")

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown model source {source!r}; expected one of {SOURCES}")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"float16"`` / ``"bfloat16"`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None


def load_model(
    source: str, name: str, dtype: str, device: str
) -> tuple["HookedTransformer", "PreTrainedTokenizerBase"]:
    """Load ``(model, tokenizer)``.

    ``source="smollm2_gguf"``: the embedded offline SmolLM2-135M-Instruct
    (``name`` is ignored). ``source="hub"``: ``name`` is a TransformerLens
    model name such as ``google/gemma-2-2b``.
    """
    _check_source(source)
    torch_dtype = parse_dtype(dtype)
    if source == "smollm2_gguf":
        from .smollm2 import load_smollm2

        return load_smollm2(dtype=torch_dtype, device=device)
    from .hub import load_hub_model

    return load_hub_model(name, dtype=torch_dtype, device=device)


def model_n_layers(source: str, name: str) -> int | None:
    """Number of layers if known offline, else ``None``."""
    _check_source(source)
    return known_n_layers(source, name)


def model_d_model(source: str, name: str) -> int | None:
    """Residual width if known offline, else ``None``."""
    _check_source(source)
    return known_d_model(source, name)
