"""Settings of SAEBench's ``sparse_probing_sae_probes`` (``SparseProbingSaeProbesEvalConfig``'s names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.config import EvalConfig
from pipeline.config.base import PositiveInt


class SaeProbesConfig(EvalConfig):
    """SAEBench's ``sparse_probing_sae_probes``: sae-probes' last-token probes with tuned regularisation,
    on its shipped datasets (the most reliable SAEBench metric in Chanin 2026)."""

    enabled: bool = False
    """Run this eval (not part of any stage key)."""
    datasets: list[str] = Field(default_factory=lambda: ["96_spam_is", "139_news_class_Politics"], min_length=1)
    """sae-probes dataset names (SAEBench's dataset_names); one prep stage each."""
    ks: list[Literal[1, 2, 5, 10, 20, 50, 100]] = Field(default_factory=lambda: [1, 2, 5], min_length=1)
    """Latents per k-sparse probe; SAEBench's JSON has fields for these k only."""
    reg_type: Literal["l1", "l2"] = "l1"
    """Penalty of the probes on SAE latents (sae-probes' reg_type)."""
    binarize: bool = False
    """Probe on 'latent fired' instead of its value (sae-probes' binarize)."""
    num_train: PositiveInt | None = None
    """Training prompts per dataset; default sae-probes' min(size - 100, 1024)."""
    num_test: PositiveInt | None = None
    """Cap on test prompts; default all the rest (sae-probes)."""
    max_seq_len: PositiveInt = 1024
    """Prompts are left-truncated to this many tokens (sae-probes)."""
    batch_size: PositiveInt = 8
    """Prompts per forward pass; also rows per SAE encoding batch."""
    seed: int = 42
    """Seeds the train/test draw and the probes (SAEBench's random_seed)."""

    @field_validator("ks", "datasets")
    @classmethod
    def _no_repeats(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError("repeated values")
        return values
