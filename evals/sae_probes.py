"""Stage `eval_sae_probes`: SAEBench's ``sparse_probing_sae_probes`` eval (the sae-probes benchmark,
Kantamneni et al.), on the real probing datasets shipped in the ``sae-probes`` wheel.

Chanin (2026, "Are SAE Benchmarks Reliable?") found this the most reliable SAEBench metric. What is
measured, with sae-probes' own functions ("normal" setting):

* prompts and labels: sae-probes' readers; the first 5000 rows; train/test drawn balanced with its
  ``get_train_test_indices`` (train size ``min(size - 100, 1024)`` unless ``num_train`` is set, test the
  rest unless ``num_test`` caps it);
* model activations: sae-probes' ``_process_activations`` — the hook's activation at each prompt's
  **last token** (left truncation to ``max_seq_len``, right padding); computed once per (model, hook,
  dataset) in ``prepare`` and shared by every SAE;
* baseline: sae-probes' ``find_best_reg`` (logistic regression, C chosen on a validation split) on the
  model's activations — SAEBench's ``include_llm_baseline`` with method ``logreg``;
* per SAE: latents ``sae.encode`` of those activations; latents ranked by |mean difference| between
  classes after sae-probes' mean-activation normalisation (``get_sorted_indices``); for each k a
  ``find_best_reg`` probe (``reg_type`` penalty) on the top k. Test accuracy, AUC and F1.

sae-probes writes its activation caches and results with ``torch.save`` / JSON files of its own; none
of those paths is used here: activations go through our bounded-chunk files.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
import warnings
from datetime import datetime
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from sae_bench.evals.sparse_probing_sae_probes.eval_config import SparseProbingSaeProbesEvalConfig
from sae_bench.evals.sparse_probing_sae_probes.eval_output import (
    SaeProbesLlmMetrics,
    SaeProbesMetricCategories,
    SaeProbesResultDetail,
    SaeProbesSaeMetrics,
    SparseProbingSaeProbesEvalOutput,
)

from evals.prepared import EvalEnv, Prepared, TensorSink
from evals.sparse_probing import check_dataset_names
from pipeline.config import SaeProbesSpec

MAX_AMT = 5000
"""sae-probes reads at most this many rows of a dataset (``get_xy_traintest``'s MAX_AMT)."""
METRICS = {"test_accuracy": "test_acc", "test_auc": "test_auc", "test_f1": "test_f1"}


def split_sizes(name: str, n_rows: int, p: SaeProbesSpec) -> tuple[int, int]:
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


def load_split(name: str, p: SaeProbesSpec) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    from sae_probes.utils_data import get_train_test_indices, get_yvals, read_numbered_dataset_df

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


def last_token_activations(model: Any, texts: list[str], hook: str, p: SaeProbesSpec, device: str) -> torch.Tensor:
    from sae_probes.generate_model_activations import _process_activations

    with tokenizer_sides(model.tokenizer), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        return _process_activations(model, texts, p.batch_size, p.max_seq_len, [hook], None, device)[hook]


def _quiet_fit(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's convergence and deprecation warnings
        return fn(*args, **kwargs)


def prepare(env: EvalEnv, p: SaeProbesSpec, sink: TensorSink) -> dict[str, Any]:
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
            baseline = _quiet_fit(find_best_reg, x_train, y_train, x_test, y_test, seed=p.seed)
            meta[name] = {"llm": {k: getattr(baseline.metrics, v) for k, v in METRICS.items()},
                          "num_train": len(y_train), "num_test": len(y_test)}  # fmt: skip
            bar.advance(1, extra=f"{name}: model probe acc {baseline.metrics.test_acc:.3f}")
    return meta


@torch.no_grad()
def encode(sae: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """sae-probes' ``generate_sae_activations_normal``: encode in batches, float32 on CPU."""
    return torch.cat([sae.encode(x[i : i + batch_size]).cpu().float() for i in range(0, len(x), batch_size)])


def probe_sae(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, p: SaeProbesSpec
) -> dict[int, dict[str, Any]]:
    """sae-probes' ``run_sae_eval`` loop: rank latents once, then a tuned logistic probe per k."""
    from sae_probes.run_sae_evals import get_sorted_indices, mean_act_normalization
    from sae_probes.utils_training import find_best_reg

    order = get_sorted_indices(x_train, y_train, mean_act_normalization)
    out = {}
    for k in p.ks:
        top = order[:k]
        xtr, xte = x_train[:, top], x_test[:, top]
        if p.binarize:
            xtr, xte = xtr != 0, xte != 0
        res = _quiet_fit(find_best_reg, xtr, y_train, xte, y_test, n_jobs=-1, parallel=False, penalty=p.reg_type, seed=p.seed)
        out[k] = {**{m: float(getattr(res.metrics, v)) for m, v in METRICS.items()}, "indices": top.tolist()}
    return out


def evaluate(
    prepared: dict[str, Prepared], sae: Any, env: EvalEnv, p: SaeProbesSpec
) -> tuple[SparseProbingSaeProbesEvalOutput, dict[str, Any]]:
    started = time.perf_counter()
    details: list[SaeProbesResultDetail] = []
    per_dataset: dict[str, dict[int, dict[str, Any]]] = {}
    with env.reporter.bar(f"sae-probes {env.label}", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            prep = prepared[name]
            t = {f"{s}/{kind}": prep.tensor(f"{name}/{s}/{kind}") for s in ("train", "test") for kind in ("acts", "labels")}
            x_train, x_test = encode(sae, t["train/acts"], p.batch_size), encode(sae, t["test/acts"], p.batch_size)
            results = probe_sae(x_train, t["train/labels"], x_test, t["test/labels"], p)
            per_dataset[name] = results
            flat = {f"sae_top_{k}_{m}": r[m] for k, r in results.items() for m in METRICS}
            llm = {f"llm_{m}": v for m, v in prep.meta[name]["llm"].items()}
            by_k = {k: {m: r[m] for m in METRICS} for k, r in results.items()}
            details.append(SaeProbesResultDetail(dataset_name=name, sae_metrics_by_k=by_k, **llm, **flat))
            bar.advance(1, extra=f"{name}: top-{p.ks[0]} acc {results[p.ks[0]]['test_accuracy']:.3f}")

    def mean(key: str) -> float:
        return float(np.mean([getattr(d, key) for d in details]))

    sae_metrics = {f"sae_top_{k}_{m}": mean(f"sae_top_{k}_{m}") for k in p.ks for m in METRICS}
    llm_metrics = {f"llm_{m}": mean(f"llm_{m}") for m in METRICS}
    config = SparseProbingSaeProbesEvalConfig(
        model_name=env.model_spec.name, random_seed=p.seed, dataset_names=list(p.datasets), reg_type=p.reg_type,
        setting="normal", ks=list(p.ks), binarize=p.binarize, results_path="(not used: results are this JSON)",
        model_cache_path=None, include_llm_baseline=True, baseline_method="logreg",
    )  # fmt: skip
    output = SparseProbingSaeProbesEvalOutput(
        eval_config=config,
        eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(datetime.now().timestamp() * 1000),
        eval_result_metrics=SaeProbesMetricCategories(llm=SaeProbesLlmMetrics(**llm_metrics), sae=SaeProbesSaeMetrics(**sae_metrics)),
        eval_result_details=details,
        sae_metrics_by_k={k: {m: sae_metrics[f"sae_top_{k}_{m}"] for m in METRICS} for k in p.ks},
        eval_result_unstructured={
            "data_source": f"sae-probes {version('sae-probes')} binary datasets shipped in the wheel (real data)",
            "sizes": {n: {"num_train": prepared[n].meta[n]["num_train"], "num_test": prepared[n].meta[n]["num_test"]} for n in p.datasets},
            "max_seq_len": p.max_seq_len,
            "selected_latents": {n: {k: r["indices"] for k, r in res.items()} for n, res in per_dataset.items()},
        },
        sae_bench_commit_hash=f"sae-bench=={version('sae-bench')}",
        sae_lens_id=env.label,
        sae_lens_release_id=env.run_name,
        sae_lens_version=version("sae-lens"),
        sae_cfg_dict=sae.cfg.to_dict(),
    )
    summary = {"llm_test_accuracy": round(llm_metrics["llm_test_accuracy"], 4)}
    summary |= {f"sae_top_{k}_test_accuracy": round(sae_metrics[f"sae_top_{k}_test_accuracy"], 4) for k in p.ks}
    summary["probe_seconds"] = round(time.perf_counter() - started, 2)
    return output, summary
