"""Settings of SCR and TPP, one class for both (one prepare serves both): SAEBench's ``ScrAndTppEvalConfig``
names, defaults sized for a 2-core CPU run (see README.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from evals.fixtures import gendered_professions
from pipeline.config import EvalConfig

FIXTURE = gendered_professions.DATASET_NAME
BIAS_IN_BIOS = ("LabHC/bias_in_bios_class_set1", "LabHC/bias_in_bios_class_set2", "LabHC/bias_in_bios_class_set3")
AMAZON = "canrager/amazon_reviews_mcauley_1and5"
DATASETS = (FIXTURE, *BIAS_IN_BIOS, AMAZON)
SCHEMA_N_VALUES = (2, 5, 10, 20, 50, 100, 500)
"""The n values SAEBench's SCR/TPP JSON schema has fields for."""
SAE_ONLY = ("n_values", "sae_batch_size")
"""Read only by SCR's / TPP's per-SAE half: left out of the prep key, so SCR and TPP sections differing only
here share one prep."""


SAEBENCH_COLUMN1_VALS: dict[str, list[tuple[str, str]]] = {
    "LabHC/bias_in_bios_class_set1": [
        ("professor", "nurse"), ("architect", "journalist"), ("surgeon", "psychologist"), ("attorney", "teacher"),
    ],
    "canrager/amazon_reviews_mcauley_1and5": [
        ("Books", "CDs_and_Vinyl"), ("Software", "Electronics"), ("Pet_Supplies", "Office_Products"),
        ("Industrial_and_Scientific", "Toys_and_Games"),
    ],
}  # fmt: skip
"""SAEBench's default ``ScrAndTppEvalConfig().column1_vals_lookup`` (sae-bench 0.6.0), written out because the
default enters the prep key and the plan must not import sae-bench; tests/evals/test_scr_tpp.py checks it
against sae-bench's."""


def _default_column1_vals() -> dict[str, list[tuple[str, str]]]:
    return {FIXTURE: [("professor", "nurse")], **{k: list(v) for k, v in SAEBENCH_COLUMN1_VALS.items()}}


class ScrTppParams(EvalConfig):
    """Settings of SCR and TPP (one prepare serves both). Names are SAEBench's ``ScrAndTppEvalConfig``'s;
    defaults are sized for a 2-core CPU run (SAEBench: 4000 / 1000 prompts, context 128)."""

    dataset_names: list[str] = Field(default_factory=lambda: [FIXTURE], min_length=1)
    """Datasets; each gives one TPP run and one SCR run per pair in ``column1_vals_lookup``."""
    column1_vals_lookup: dict[str, list[tuple[str, str]]] = Field(default_factory=_default_column1_vals)
    """SCR's class pairs per dataset (the first of a pair is correlated with male / rating 1)."""
    n_values: list[Literal[2, 5, 10, 20, 50, 100, 500]] = Field(
        default_factory=lambda: list(SCHEMA_N_VALUES), min_length=1
    )
    """Numbers of latents ablated (SAEBench's JSON has fields for these only)."""
    train_set_size: int = Field(120, ge=8)
    """Prompts per probe's training set (a quarter per quadrant; SAEBench 4000)."""
    test_set_size: int = Field(80, ge=8)
    """Prompts per probe's test set (a quarter per quadrant; SAEBench 1000)."""
    context_length: int = Field(40, ge=4)
    """Tokens per prompt, BOS included (fixture bios are 27-40 tokens; SAEBench 128)."""
    llm_batch_size: int = Field(32, gt=0)
    """Prompts per forward pass of the model."""
    sae_batch_size: int = Field(125, gt=0)
    """Prompts' worth of tokens per SAE encode in evaluate (SAEBench's default)."""
    probe_train_batch_size: int = Field(16, gt=0)
    """SAEBench warns: the batch size sets how much of the spurious signal the probe learns."""
    probe_test_batch_size: int = Field(500, gt=0, le=500)
    """Prompts per batch when testing a probe."""
    probe_epochs: int = Field(50, gt=0)
    """Epochs of each probe's training (SAEBench 20 on 4000 prompts; 50 here, see README.md)."""
    probe_lr: float = Field(1e-3, gt=0)
    """Learning rate of the probes."""
    probe_l1_penalty: float = Field(1e-3, ge=0)
    """L1 penalty on the probes' weights."""
    early_stopping_patience: int = Field(50, gt=0)
    """SAEBench sets it to the number of epochs, so every probe trains for the same number of steps."""
    random_seed: int = 42
    """Seeds each run's probe training and test draws in prepare."""

    @model_validator(mode="after")
    def _check(self) -> ScrTppParams:
        unknown = [n for n in self.dataset_names if n not in DATASETS]
        if unknown:
            raise ValueError(f"dataset_names: unknown {unknown}; known: {list(DATASETS)}")
        if len(set(self.dataset_names)) != len(self.dataset_names):
            raise ValueError(f"dataset_names: repeated names in {self.dataset_names}")
        if len(set(self.n_values)) != len(self.n_values):
            raise ValueError(f"n_values: repeated values in {self.n_values}")
        have = set(gendered_professions.PROFESSIONS)
        missing = {c for pair in self.column1_vals_lookup.get(FIXTURE, []) for c in pair} - have
        if FIXTURE in self.dataset_names and missing:
            raise ValueError(f"column1_vals_lookup[{FIXTURE!r}]: the fixture has no {sorted(missing)}; "
                             f"it has {sorted(have)}")  # fmt: skip
        for field in ("train_set_size", "test_set_size"):
            if getattr(self, field) % 4:
                raise ValueError(f"{field}={getattr(self, field)}: must be a multiple of 4 (SAEBench cuts it in 4)")
        return self
