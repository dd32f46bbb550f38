"""Settings of the autointerp eval: SAEBench's ``AutoInterpEvalConfig`` fields (same names and defaults) plus
ours (judge backend, delphi-style scorers, feature tiers). README.md says where we differ."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import EvalConfig

Scorer = Literal["detection", "fuzzing", "embedding"]

PREP_FIELDS = ("model", "total_tokens", "llm_context_size", "llm_batch_size")
"""What ``prepare`` reads (the model's activations on the held-out text); every other field is per-SAE."""


def held_out_contexts(total_tokens: int, llm_context_size: int) -> int:
    """Contexts ``prepare`` reads: ``total_tokens`` in whole contexts, at least one."""
    return max(1, total_tokens // llm_context_size)


class AutointerpConfig(EvalConfig):
    """SAEBench's autointerp (explain from top contexts, score by detection) plus delphi-style scorers and tiers."""

    # --- SAEBench's AutoInterpEvalConfig (same names and defaults) ---
    n_latents: int = Field(1000, ge=1)
    """Latents sampled (seeded) among the alive ones and explained."""
    dead_latent_threshold: float = 15
    """A latent firing on at most this many held-out tokens counts as dead and is never sampled."""
    random_seed: int = 42
    """Seeds the latent sample, the example sampling and splits, and the judge's sampling."""
    total_tokens: int = Field(2_000_000, ge=1)
    """Held-out tokens (of the run's own corpus) the contexts are drawn from."""
    llm_context_size: int = Field(128, ge=4)
    """Tokens per held-out context."""
    llm_batch_size: int = Field(32, ge=1)
    """Contexts per model forward pass in ``prepare``."""
    buffer: int = Field(10, ge=1)
    """Tokens either side of the chosen token: every example is a window of 2 * buffer + 1 tokens."""
    no_overlap: bool = True
    """No two top examples within ``buffer`` of each other in one context."""
    act_threshold_frac: float = Field(0.01, ge=0, le=1)
    """A token counts as active above this fraction of the latent's top activation."""
    max_tokens_in_explanation: int = Field(30, ge=1)
    """Completion tokens allowed for an explanation."""
    use_demos_in_explanation: bool = True
    """Put SAEBench's four example explanations in the explanation prompt."""
    n_top_ex_for_generation: int = Field(10, ge=1)
    """Top-activating examples shown to the explainer."""
    n_iw_sampled_ex_for_generation: int = Field(5, ge=0)
    """Importance-weighted (activation squared) examples shown to the explainer."""
    n_top_ex_for_scoring: int = Field(2, ge=0)
    """Held-out top-activating examples in the scoring set."""
    n_random_ex_for_scoring: int = Field(10, ge=1)
    """Random examples (negatives) in the scoring set."""
    n_iw_sampled_ex_for_scoring: int = Field(2, ge=0)
    """Held-out importance-weighted examples in the scoring set."""

    # --- ours ---
    sae_batch_size: int = Field(64, ge=1)
    """Contexts encoded by the SAE at once (memory is this x llm_context_size x d_sae floats)."""
    scorers: tuple[Scorer, ...] = ("detection", "fuzzing", "embedding")
    """delphi-style scorers run beside SAEBench's (detection and fuzzing ask the judge; embedding does not)."""
    n_null_shuffles: int = Field(200, ge=1)
    """Label shuffles per latent for the detection / fuzzing null (the same answers against shuffled truth)."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap resamples of the latents for each score's 95% interval."""
    tier_window: int = Field(4, ge=1)
    """Tokens in the before / around / after windows of the correlation score (at most ``buffer``)."""
    tier_margin: float = Field(0.1, ge=0, le=1)
    """A window type is consistent when its mean pairwise cosine exceeds the random-window baseline by this."""
    examples_per_tier: int = Field(2, ge=0)
    """Latents per tier shown in the result, with their top contexts."""
    judge_backend: Literal["local", "openai"] = "local"
    """'local': the stage starts SmolLM2-135M-Instruct behind an OpenAI-compatible server on 127.0.0.1;
    'openai': any OpenAI-compatible endpoint (judge_base_url / SAEPIPE_JUDGE_BASE_URL)."""
    judge_base_url: str | None = None
    """Endpoint for the 'openai' backend (None: $SAEPIPE_JUDGE_BASE_URL, else OpenAI's own); for 'local', an
    already running judge_server (None: the stage starts one)."""
    judge_model: str | None = None
    """Model name sent to the endpoint; None: $SAEPIPE_JUDGE_MODEL, else gpt-4o-mini (SAEBench's judge)."""
    judge_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's key (keys never go in a config)."""
    judge_concurrency: int = Field(4, ge=1, le=64)
    """Judge requests in flight at once."""
    judge_max_retries: int = Field(4, ge=0, le=10)
    """Retries (exponential backoff from 1 s) of a failed request before the stage fails."""
    judge_timeout_s: float = Field(120, gt=0)
    """Seconds one request may take."""
    judge_temperature: float = Field(0.0, ge=0, le=2)
    """Sampling temperature of the judge (0: greedy; the format retries sample at 0.7)."""
    format_retries: int = Field(2, ge=0, le=5)
    """New samples asked when an answer cannot be parsed, before the answer counts as unparsable."""
    max_unparsable_frac: float = Field(0.5, ge=0, le=1)
    """The stage fails when more than this fraction of the scoring answers stays unparsable."""
    judge_price_in_per_mtok: float = Field(0.15, ge=0)
    """USD per million prompt tokens, for the cost count (gpt-4o-mini's; 0 for the local judge)."""
    judge_price_out_per_mtok: float = Field(0.60, ge=0)
    """USD per million completion tokens, for the cost count."""

    @model_validator(mode="after")
    def _windows_fit(self) -> AutointerpConfig:
        if self.model_fields_set <= set(PREP_FIELDS):  # eval_prep's view: only what prepare reads, windows at defaults
            return self
        if self.tier_window > self.buffer:
            raise ValueError(f"tier_window ({self.tier_window}) must be at most buffer ({self.buffer})")
        if self.llm_context_size <= 2 * self.buffer:
            raise ValueError(f"llm_context_size ({self.llm_context_size}) must exceed 2 * buffer ({2 * self.buffer})")
        return self

    @property
    def n_top_ex(self) -> int:
        return self.n_top_ex_for_generation + self.n_top_ex_for_scoring

    @property
    def n_iw_sampled_ex(self) -> int:
        return self.n_iw_sampled_ex_for_generation + self.n_iw_sampled_ex_for_scoring

    @property
    def n_ex_for_scoring(self) -> int:
        return self.n_top_ex_for_scoring + self.n_random_ex_for_scoring + self.n_iw_sampled_ex_for_scoring

    @property
    def n_correct_for_scoring(self) -> int:
        return self.n_top_ex_for_scoring + self.n_iw_sampled_ex_for_scoring

    @property
    def max_tokens_in_prediction(self) -> int:
        """SAEBench's bound on a detection answer: comma-separated single-token numbers."""
        return 2 * self.n_ex_for_scoring + 5


PREP_EXCLUDE = tuple(name for name in AutointerpConfig.model_fields if name not in PREP_FIELDS and name != "enabled")
