"""Settings of the unlearning eval, named as SAEBench's ``UnlearningEvalConfig``; defaults sized for 2 CPU
cores (SAEBench's values in each field's note)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config import EvalConfig

Scoring = Literal["cloze", "letter"]
SAE_ONLY = ("retain_thresholds", "n_features_list", "multipliers", "full_sweep")
"""Read only by the per-SAE half (latent selection and the clamp sweep): left out of the prep key."""


class UnlearningParams(EvalConfig):
    """Settings, named as SAEBench's ``UnlearningEvalConfig``; defaults sized for 2 CPU cores."""

    dataset: Literal["fixture", "hub"] = "fixture"
    """'fixture': offline hand-written FIXTURE questions and corpora; 'hub': SAEBench's WMDP/MMLU/wikitext."""
    forget_corpus_path: str | None = None
    """hub only: a local ``bio-forget-corpus.jsonl`` as SAEBench reads it (else the gated hub dataset)."""
    scoring: Scoring = "cloze"
    """'letter' is SAEBench's; 'cloze' scores the answer texts (small models cannot do letters)."""
    retain_thresholds: list[float] = Field(default_factory=lambda: [0.01])
    """Latents firing on more than this fraction of retain tokens are not clamped (SAEBench: [0.001, 0.01])."""
    n_features_list: list[int] = Field(default_factory=lambda: [10, 20])
    """How many of the top forget latents are clamped (SAEBench: [10, 20])."""
    multipliers: list[int] = Field(default_factory=lambda: [25, 100])
    """Clamp values, negated (SAEBench: [25, 50, 100, 200])."""
    full_sweep: bool = False
    """Run every kept question of every setting, as SAEBench does. Off: skip the questions no selected
    latent reaches and stop a setting once its retain accuracy cannot reach 0.99; the score is the same
    (evals/unlearning/setting.py says why), the per-setting table of a stopped setting is not."""
    dataset_size: int = Field(default=32, ge=1)
    """Rows of ``seq_len`` tokens per corpus for feature sparsity (SAEBench: 1024)."""
    seq_len: int = Field(default=128, ge=8)
    """Tokens per corpus row (SAEBench: 1024)."""
    llm_batch_size: int = Field(default=8, ge=1)
    """Corpus rows per forward pass."""
    random_seed: int = 42
    """Seeds the forget-document sample and the corpus row shuffles."""

    @field_validator("retain_thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 < t <= 1.0 for t in v):
            raise ValueError("give at least one threshold, each in (0, 1]")
        return v

    @field_validator("n_features_list", "multipliers")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("give at least one value, each positive")
        return v
