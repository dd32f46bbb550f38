"""SCR's and TPP's data: which datasets, classes and spurious attribute, loaded and split into SAEBench's
runs (one per SCR class pair, one per dataset for TPP) by sae-bench's own functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from sae_bench.evals.scr_and_tpp import dataset_creation
from sae_bench.evals.scr_and_tpp import main as saebench_scr_tpp
from sae_bench.sae_bench_utils import dataset_info, dataset_utils

from evals.common import OFFLINE_HINT, load_hub_dataset, quiet
from evals.fixtures import gendered_professions
from evals.scr_tpp.config import AMAZON, BIAS_IN_BIOS, FIXTURE, ScrTppParams

TPP_CLASSES: dict[str, list[str]] = {
    FIXTURE: dataset_info.chosen_classes_per_dataset["LabHC/bias_in_bios_class_set1"],
    **{name: dataset_info.chosen_classes_per_dataset[name] for name in (*BIAS_IN_BIOS, AMAZON)},
}
"""TPP's classes per dataset: SAEBench's ``chosen_classes_per_dataset``; the fixture uses class_set1's
professions (accountant, architect, attorney, dentist, filmmaker)."""
COLUMN2_VALS: dict[str, tuple[Any, Any]] = {
    FIXTURE: ("male", "female"),
    **{name: ("male", "female") for name in BIAS_IN_BIOS},
    AMAZON: saebench_scr_tpp.COLUMN2_VALS_LOOKUP[AMAZON],
}
"""SCR's spurious attribute (``COLUMN2_VALS_LOOKUP``): gender for bios, rating 1 vs 5 for Amazon."""
SCR_KEYS = list(dataset_info.PAIRED_CLASS_KEYS)  # "male / female", "professor / nurse", "male_professor / female_nurse"
GENDER_KEY, PROFESSION_KEY, BIASED_KEY = SCR_KEYS
SCR_ABLATED = (GENDER_KEY, PROFESSION_KEY)
"""The probes whose latents SCR ablates (dir1, dir2); SAEBench's ablation of the biased probe's own
latents is computed there but read by no metric."""
SCR_EVAL_DATA = (PROFESSION_KEY, GENDER_KEY)
"""Data the biased probe is re-tested on after an ablation (dir1, dir2)."""


Frames = tuple[pd.DataFrame, pd.DataFrame]


@dataclass
class Run:
    """One SAEBench run: an SCR class pair of a dataset, or a dataset's TPP."""

    kind: Literal["scr", "tpp"]
    dataset: str
    name: str
    """SAEBench's run name (``{dataset}_scr_{a}_{b}`` / ``{dataset}_tpp``); details are ``{name}_results``."""
    train: dict[str, list[str]]
    test: dict[str, list[str]]
    chosen: list[str]
    """Probes that are ablated and scored (SAEBench's ``chosen_classes``)."""
    column1_vals: tuple[str, str] | None = None


def metadata_key(dataset: str) -> str:
    """Key of sae-bench's ``dataset_metadata`` (columns, label maps); the fixture has bias_in_bios' columns."""
    return "LabHC/bias_in_bios" if dataset == FIXTURE else dataset.split("_class_set")[0]

def load_frames(dataset: str, params: ScrTppParams) -> Frames:
    """(train, test) frames: generated for the fixture, from the hub otherwise (SAEBench's loading)."""
    if dataset == FIXTURE:
        # get_spurious_corr_data needs more than 2 quadrants' worth in the biased cells.
        return gendered_professions.generate(2 * (params.train_set_size // 4) + 1, 2 * (params.test_set_size // 4) + 1)
    loaded = load_hub_dataset("scr/tpp", metadata_key(dataset), how=f"{OFFLINE_HINT}, or use dataset_names: [{FIXTURE!r}]")
    return pd.DataFrame(loaded["train"]), pd.DataFrame(loaded["test"])


def scr_run(dataset: str, frames: Frames, pair: tuple[str, str], params: ScrTppParams) -> Run:
    """SAEBench's six SCR class lists for one pair (``get_train_test_data(spurious_corr=True)``)."""
    key, col2 = metadata_key(dataset), COLUMN2_VALS[dataset]
    split = [
        quiet(dataset_creation.get_spurious_corr_data, df, tuple(pair), col2, key, size // 4, params.random_seed)
        for df, size in zip(frames, (params.train_set_size, params.test_set_size))
    ]
    train, test = dataset_utils.ensure_shared_keys(*split)
    name = f"{dataset}_scr_{pair[0]}_{pair[1]}"
    return Run("scr", dataset, name, train, test, list(SCR_KEYS), (pair[0], pair[1]))


def tpp_run(dataset: str, frames: Frames, params: ScrTppParams) -> Run:
    """SAEBench's TPP classes (``get_multi_label_train_test_data`` + ``filter_dataset``): per class,
    a quarter of the set size from each gender / rating."""
    key, chosen = metadata_key(dataset), TPP_CLASSES[dataset]
    split = [
        quiet(dataset_utils.get_balanced_dataset, df, key, size // 4, params.random_seed)
        for df, size in zip(frames, (params.train_set_size, params.test_set_size))
    ]
    train, test = dataset_utils.ensure_shared_keys(*split)
    missing = [c for c in chosen if c not in train]
    if missing:
        raise ValueError(f"{dataset}: TPP classes {missing} have too few rows for train/test_set_size")
    return Run("tpp", dataset, f"{dataset}_tpp", dataset_utils.filter_dataset(train, chosen),
               dataset_utils.filter_dataset(test, chosen), list(chosen))  # fmt: skip


def build_runs(params: ScrTppParams) -> list[Run]:
    """Every run, in SAEBench's order per kind: datasets in order, SCR pairs in order."""
    runs: list[Run] = []
    for dataset in params.dataset_names:
        frames = load_frames(dataset, params)
        runs += [scr_run(dataset, frames, pair, params) for pair in params.column1_vals_lookup.get(dataset, [])]
        runs.append(tpp_run(dataset, frames, params))
    return runs


def data_source(params: ScrTppParams) -> str:
    parts = []
    for name in params.dataset_names:
        if name == FIXTURE:
            parts.append(
                f"FIXTURE {FIXTURE}: GENERATED biographies (evals/fixtures/gendered_professions.py, seed "
                f"{gendered_professions.SEED}), NOT LabHC/bias_in_bios; bias_in_bios' columns and label codes"
            )
        else:
            parts.append(f"{metadata_key(name)} (Hugging Face hub, datasets.load_dataset; train/test splits) as {name}")
    return "; ".join(parts)
