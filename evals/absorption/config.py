"""Settings of the absorption eval: SAEBench's ``AbsorptionEvalConfig`` fields (same names and defaults
unless noted, see README.md) plus ours."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline.config import EvalConfig


class AbsorptionParams(EvalConfig):
    """SAEBench's ``AbsorptionEvalConfig`` fields (same names and defaults unless noted) plus ours."""

    random_seed: int = 42
    """Seeds the vocabulary split, the ICL examples, and torch before the LLM probe and the k-sparse probes."""
    f1_jump_threshold: float = 0.03
    """A larger k-sparse probe counts as a feature split when its test F1 rises by more than this."""
    max_k_value: int = Field(10, ge=1)
    """Largest k of the k-sparse probes on SAE latents."""
    prompt_template: str = "{word} has the first letter:"
    """ICL line for one word; must contain '{word}'."""
    prompt_token_pos: int = Field(-6, lt=0)
    """Position counted from the prompt's end (-6: the word's token for the default template)."""
    llm_batch_size: int = Field(64, ge=1)
    """Prompts per forward pass (SAEBench: 64 for the probe data, 10 for the calculator)."""
    k_sparse_probe_l1_decay: float = 0.01
    """L1 penalty of the probe that ranks latents for the k-sparse probes."""
    k_sparse_probe_batch_size: int = Field(4096, ge=1)
    """Rows per step when training the k-sparse probes."""
    k_sparse_probe_num_epochs: int = Field(50, ge=1)
    """Epochs of the k-sparse probes' training."""
    min_GT_probe_f1: float = 0.6
    """Letters whose LLM probe test F1 is at most this are left out of the result."""
    min_feats_for_eval: int = Field(8, ge=2)
    """Letters that must pass ``min_GT_probe_f1`` (SAEBench: 20; 8 here, see README.md)."""
    eval_k_sparse_probe_batch_size: int = Field(24, ge=1)
    """Rows per batch when scoring the k-sparse probes on the test words."""
    precalc_k_sparse_probe_sae_acts: bool = True
    """Encode the training words once (SAEBench's default is False; same numbers, faster for small SAEs)."""
    words_per_letter: int | None = Field(32, ge=5)
    """Ours: words sampled per letter, cut 80/20 within each letter; None = SAEBench's whole vocabulary."""
    max_icl_examples: int = Field(2, ge=1)
    """ICL examples per prompt (SAEBench hard-codes 10, ~83 tokens a prompt; 2 is ~19 tokens)."""

    @field_validator("prompt_template")
    @classmethod
    def _has_word(cls, template: str) -> str:
        if "{word}" not in template:
            raise ValueError("prompt_template must contain '{word}'")
        return template
