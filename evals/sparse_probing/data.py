"""sae-probes' shipped datasets and SAEBench's hub datasets: names, splits, where they come from."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
from sae_bench.sae_bench_utils import dataset_utils

from evals.common import silenced

MAX_ROWS = 5000
"""sae-probes reads at most this many rows of a dataset before sampling (``MAX_AMT``)."""
DATA_SOURCE = (
    "sae-probes {version} binary probing datasets, shipped in the wheel "
    "(sae_probes/data/cleaned_data/*.csv.zst; index probing_datasets_MASTER.csv.zst)"
)
EXAMPLE_DATASETS = ("96_spam_is", "139_news_class_Politics", "113_movie_sent", "92_glue_sst2", "5_hist_fig_ismale")


def data_source(names: list[str]) -> str:
    hub = [n for n in names if n in HUB_DATASETS]
    shipped = [n for n in names if n not in HUB_DATASETS]
    parts = [DATA_SOURCE.format(version=version("sae-probes"))] if shipped else []
    if hub:
        parts.append("SAEBench's hub datasets " + ", ".join(hub) + " (sae-bench's get_multi_label_train_test_data)")
    return "; ".join(parts)


def available_datasets() -> list[str]:
    """sae-probes' binary dataset names ('{number}_{tag}'), as its runners spell them."""
    from sae_probes.utils_data import get_numbered_binary_tags

    return get_numbered_binary_tags()


HUB_DATASETS = tuple(SparseProbingEvalConfig().dataset_names)
"""SAEBench's default sparse-probing datasets (bias_in_bios, amazon, ag_news, europarl, github-code),
loaded from the Hugging Face hub by sae-bench's own ``get_multi_label_train_test_data``."""


def check_dataset_names(names: list[str]) -> None:
    valid = available_datasets()
    unknown = [n for n in names if n not in valid and n not in HUB_DATASETS]
    if unknown:
        from sae_probes.constants import DATA_PATH

        raise ValueError(
            f"evals.sparse_probing.datasets: unknown sae-probes dataset(s) {unknown}. Valid names look like "
            f"{', '.join(EXAMPLE_DATASETS)}; the full list "
            f"({len(valid)} binary datasets) is the 'Dataset save name' column of "
            f"{DATA_PATH.parent / 'probing_datasets_MASTER.csv.zst'} (binary rows), or "
            "sae_probes.utils_data.get_numbered_binary_tags(); SAEBench's hub datasets are "
            + ", ".join(HUB_DATASETS)
        )


def load_hub_split(name: str, n_train: int, n_test: int, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """SAEBench's own loader for its hub datasets (class name -> prompts, up to 5 classes, each probed
    one-vs-rest). Offline or gated, it fails with one line naming the dataset and the way out."""
    try:
        with silenced(stdout=False, categories=()):
            return dataset_utils.get_multi_label_train_test_data(name, n_train, n_test, seed)
    except Exception as exc:  # noqa: BLE001  (datasets raises several types for no network / no access)
        reason = str(exc).splitlines()[0][:200]
        raise RuntimeError(
            f"evals.sparse_probing: cannot load hub dataset {name!r} ({type(exc).__name__}: {reason}); it needs "
            "network access to huggingface.co, or a local HF datasets cache made once online (then set "
            "HF_DATASETS_OFFLINE=1); or use sae-probes' shipped datasets instead (e.g. 96_spam_is)"
        ) from None


def load_split(name: str, n_train: int, n_test: int, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Balanced, disjoint train/test prompts of one sae-probes dataset, as SAEBench's class dicts
    ``{"1": [...], "0": [...]}`` (label 1 is the class sae-probes' LabelEncoder maps to 1); SAEBench's
    hub datasets go through its own loader."""
    from sae_probes.utils_data import (
        get_train_test_indices,
        get_yvals,
        read_numbered_dataset_df,
    )

    if name in HUB_DATASETS:
        return load_hub_split(name, n_train, n_test, seed)

    df = read_numbered_dataset_df(name)
    prompts = df["prompt"].to_numpy()[:MAX_ROWS]
    y = np.asarray(get_yvals(name))[:MAX_ROWS]
    # An empty prompt is read as NaN and would pool to 0/0: drop it by marking its label unusable.
    usable = np.array([isinstance(p, str) and p.strip() != "" for p in prompts])
    y = np.where(usable, y, -1)
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    if set(np.unique(y[usable]).tolist()) != {0, 1}:
        raise ValueError(f"{name}: expected a binary target, got classes {sorted(np.unique(y[usable]).tolist())}")
    need = (n_train + n_test) // 2
    if min(counts.values()) < need:
        raise ValueError(
            f"{name}: needs {need} prompts per class for n_train={n_train} + n_test={n_test}, "
            f"has {counts} (of its first {MAX_ROWS} rows); lower n_train/n_test"
        )
    train_idx, test_idx = get_train_test_indices(y, n_train, n_test, pos_ratio=0.5, seed=seed)

    def by_class(idx: np.ndarray) -> dict[str, list[str]]:
        return {str(c): [str(prompts[i]) for i in idx if y[i] == c] for c in (1, 0)}

    return by_class(train_idx), by_class(test_idx)
