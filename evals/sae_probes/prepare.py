"""Once per (model, hook, dataset): last-token model activations and the tuned model-side baseline."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from evals.common import silenced
from evals.contract import EvalEnv, TensorSink
from evals.sae_probes.config import SaeProbesConfig
from evals.sparse_probing.data import check_dataset_names

MAX_AMT = 5000
"""sae-probes reads at most this many rows of a dataset (``get_xy_traintest``'s MAX_AMT)."""
METRICS = {"test_accuracy": "test_acc", "test_auc": "test_auc", "test_f1": "test_f1"}
"""Our metric name -> sae-probes' attribute of its probe metrics."""


def split_sizes(name: str, n_rows: int, p: SaeProbesConfig) -> tuple[int, int]:
    """sae-probes' normal setting: train ``min(size - 100, 1024)``, test the rest (minus one), as
    ``get_xy_traintest_specify`` sizes them; ``num_train`` / ``num_test`` shrink them for small runs."""
    from sae_probes.generate_sae_activations import DATASET_SIZES

    num_train = p.num_train or min(DATASET_SIZES[name] - 100, 1024)
    num_test = n_rows - num_train - 1
    if p.num_test is not None:
        num_test = min(num_test, p.num_test)
    if num_test < 20:
        raise ValueError(f"evals.sae_probes: {name} has {n_rows} rows; num_train={num_train} leaves {num_test} for test")
    return num_train, num_test


def load_split(name: str, p: SaeProbesConfig) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    from sae_probes.utils_data import (
        get_train_test_indices,
        get_yvals,
        read_numbered_dataset_df,
    )

    prompts = [str(t) for t in read_numbered_dataset_df(name)["prompt"].to_numpy()[:MAX_AMT]]
    y = np.asarray(get_yvals(name))[:MAX_AMT]
    num_train, num_test = split_sizes(name, len(prompts), p)
    train_idx, test_idx = get_train_test_indices(y, num_train, num_test, 0.5, p.seed)
    return [prompts[i] for i in train_idx], y[train_idx], [prompts[i] for i in test_idx], y[test_idx]


@contextlib.contextmanager
def tokenizer_sides(tokenizer: Any) -> Any:
    """sae-probes sets left truncation / right padding on the model's tokenizer and leaves it so; the
    model object is shared with other evals in this process, so put the sides back afterwards."""
    saved = tokenizer.truncation_side, tokenizer.padding_side
    try:
        yield
    finally:
        tokenizer.truncation_side, tokenizer.padding_side = saved


def last_token_activations(model: Any, texts: list[str], hook: str, p: SaeProbesConfig, device: str) -> torch.Tensor:
    from sae_probes.generate_model_activations import _process_activations

    with tokenizer_sides(model.tokenizer), silenced(stdout=False, categories=()):  # its tqdm bar
        return _process_activations(model, texts, p.batch_size, p.max_seq_len, [hook], None, device)[hook]


def quiet_fit(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` with sklearn's convergence and deprecation warnings swallowed."""
    with silenced(stdout=False, stderr=False):
        return fn(*args, **kwargs)


def prepare(env: EvalEnv, p: SaeProbesConfig, sink: TensorSink) -> dict[str, Any]:
    from sae_probes.utils_training import find_best_reg

    check_dataset_names(list(p.datasets))
    model, _ = env.model()
    spec = env.model_spec
    meta: dict[str, Any] = {}
    with env.reporter.bar("sae-probes: model activations", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            train_text, y_train, test_text, y_test = load_split(name, p)
            x_train = last_token_activations(model, train_text, spec.hook, p, spec.device).float()
            x_test = last_token_activations(model, test_text, spec.hook, p, spec.device).float()
            for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
                sink.put(f"{name}/{split}/acts", x)
                sink.put(f"{name}/{split}/labels", torch.as_tensor(y))
            baseline = quiet_fit(find_best_reg, x_train, y_train, x_test, y_test, seed=p.seed)
            meta[name] = {"llm": {k: getattr(baseline.metrics, v) for k, v in METRICS.items()},
                          "num_train": len(y_train), "num_test": len(y_test)}  # fmt: skip
            bar.advance(1, extra=f"{name}: model probe acc {baseline.metrics.test_acc:.3f}")
    return meta
