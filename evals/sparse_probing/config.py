"""Settings of sparse probing (SAEBench's ``SparseProbingEvalConfig``, our names where the section had them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.config import EvalConfig
from pipeline.config.base import PositiveInt


class SparseProbingConfig(EvalConfig):
    """k-sparse probes on SAE latents beside probes on the model's own activations (SAEBench),
    on the real probing datasets shipped in the `sae-probes` package."""

    enabled: bool = False
    """Run this eval (not part of any stage key)."""
    datasets: list[str] = Field(default_factory=lambda: ["96_spam_is", "139_news_class_Politics"], min_length=1)
    """sae-probes dataset names, or SAEBench's hub datasets (SAEBench's dataset_names); one prep stage each."""
    n_train: PositiveInt = 400
    """Training prompts per dataset, half per class (SAEBench's probe_train_set_size)."""
    n_test: PositiveInt = 200
    """Test prompts per dataset, half per class (SAEBench's probe_test_set_size)."""
    k_values: list[Literal[1, 2, 5, 10, 20, 50, 100]] = Field(default_factory=lambda: [1, 2, 5, 10, 20], min_length=1)
    """Latents per k-sparse probe; SAEBench's JSON has fields for these k only."""
    context_size: PositiveInt = 128
    """Tokens per prompt, BOS included (SAEBench's context_length)."""
    batch_size: PositiveInt = 8
    """Prompts per forward pass (SAEBench's llm_batch_size); also rows per SAE encoding batch."""
    seed: int = 42
    """Seeds the train/test draw (sae-probes' sampler) and torch before each dataset's probes."""

    @field_validator("n_train", "n_test")
    @classmethod
    def _even(cls, n: int) -> int:
        if n < 4 or n % 2:
            raise ValueError("must be an even number >= 4 (classes are balanced, n/2 each)")
        return n

    @field_validator("k_values", "datasets")
    @classmethod
    def _no_repeats(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError("repeated values")
        return values
