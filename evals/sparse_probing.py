"""Stage `eval_sparse_probing`: SAEBench's sparse-probing metric on sae-probes' shipped datasets.

What is measured (SAEBench ``sparse_probing``, sae-bench 0.6.0, reproduced call for call):

* each prompt is tokenized with SAEBench's ``tokenize_data_dictionary`` (right-pad / truncate to
  ``context_size``; one BOS in front when ``data.prepend_bos``, as the SAE's training contexts had it),
  run to the SAE's hook with SAEBench's ``get_llm_activations`` with ``mask_bos_pad_eos_tokens=True``
  (BOS/EOS/pad positions zeroed), and mean-pooled over the positions that were not zeroed
  (``create_meaned_model_activations``);
* SAE latents are computed per token on those activations and pooled the same way
  (``get_sae_meaned_activations``: it multiplies the latents by the token mask, so ``encode(0) != 0``
  at masked positions cannot leak into the mean);
* probes, in SAEBench's order and with its settings (``train_probe_on_activations``): the full-width
  LLM probe (SAEBench's torch logistic regression, 100 epochs, lr 1e-2, batch 250), LLM top-k, the
  full-width SAE probe, then SAE top-k. Top-k keeps the k dimensions with the largest
  |mean(class 1) - mean(class 0)| on the training set (``get_top_k_mean_diff_mask``) and fits sklearn's
  L2 logistic regression (max_iter 1000) on them. As in SAEBench each class is probed one-vs-rest and
  a dataset's accuracy is the mean over its classes; for these binary datasets that is the same
  split probed twice with the labels mirrored.

Data: sae-probes' binary datasets shipped inside the ``sae-probes`` wheel
(``sae_probes/data/cleaned_data/*.csv.zst``), read offline with sae-probes' own readers; train and test
are drawn disjoint and class-balanced with sae-probes' ``get_train_test_indices`` (from the first 5000
rows, sae-probes' ``MAX_AMT``). These are not SAEBench's default sparse-probing datasets (bias_in_bios,
amazon, ag_news, ... from the HF hub); the JSON says so in ``eval_result_unstructured``.

Sharing and memory: ``prepare`` runs once per (model, hook, dataset) as an ``eval_prep`` stage. It
stores the per-token activations of every prompt ([n, context, d_model], masked positions zeroed) in
bounded chunks, and the model-side probes, which no SAE changes. Each SAE's ``evaluate`` streams those
activations batch by batch through its encoder and pools, so only the pooled [n, d_sae] matrices are
held, and the model is never loaded. The torch RNG state after the model-side probes is stored too, so
the SAE probes draw the random numbers SAEBench's single sequence would (parity is tested).

Known SAEBench conventions kept on purpose (see the module's tests):

* a token counts as masked when its activation vector sums to exactly 0 (SAEBench's pooling marks
  masked tokens by zeroing them, then counts the non-zero rows);
* the full-width probes (``llm_test_accuracy``, ``sae_test_accuracy``) report the best test accuracy
  over training epochs (SAEBench's ``train_probe_gpu`` early-stops on the test set), so they are
  optimistic. An sklearn full-width LLM probe with no test-set selection is also recorded, as
  ``llm_sklearn_test_accuracy`` in ``eval_result_unstructured``.
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
from sae_bench.evals.sparse_probing import probe_training
from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
from sae_bench.evals.sparse_probing.eval_output import (
    SparseProbingEvalOutput,
    SparseProbingLlmMetrics,
    SparseProbingMetricCategories,
    SparseProbingResultDetail,
    SparseProbingSaeMetrics,
)
from sae_bench.sae_bench_utils import activation_collection, dataset_utils, general_utils

from evals.prepared import EvalEnv, Prepared, TensorSink
from pipeline.config import SparseProbingSpec

RESULT_FILE = "sparse_probing.json"
MAX_ROWS = 5000
"""sae-probes reads at most this many rows of a dataset before sampling (``MAX_AMT``)."""
SCHEMA_K_VALUES = (1, 2, 5, 10, 20, 50, 100)
"""The k values SAEBench's output schema has fields for (``sae_top_{k}_test_accuracy``)."""
DATA_SOURCE = (
    "sae-probes {version} binary probing datasets, shipped in the wheel "
    "(sae_probes/data/cleaned_data/*.csv.zst; index probing_datasets_MASTER.csv.zst)"
)
EXAMPLE_DATASETS = ("96_spam_is", "139_news_class_Politics", "113_movie_sent", "92_glue_sst2", "5_hist_fig_ismale")
# SAEBench's settings for the full-width probes (sparse_probing/main.py::run_eval_single_dataset).
FULL_PROBE = {"use_sklearn": False, "batch_size": 250, "epochs": 100, "lr": 1e-2}


# --- data -------------------------------------------------------------------------------------------


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
        with contextlib.redirect_stderr(io.StringIO()):
            return dataset_utils.get_multi_label_train_test_data(name, n_train, n_test, seed)
    except Exception as exc:  # datasets raises several types for no network / no access
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
    from sae_probes.utils_data import get_train_test_indices, get_yvals, read_numbered_dataset_df

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


# --- activations and pooling ------------------------------------------------------------------------


@torch.no_grad()
def pool_llm_and_sae(acts_BLD: torch.Tensor, sae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over unmasked tokens of the LLM activations and of the SAE latents, by SAEBench's functions
    (``create_meaned_model_activations``, ``get_sae_meaned_activations``). ``acts_BLD`` must have its
    masked tokens zeroed, as ``get_llm_activations(mask_bos_pad_eos_tokens=True)`` returns them."""
    llm_BD = pool_llm(acts_BLD)
    sae_BF = activation_collection.get_sae_meaned_activations({"x": acts_BLD}, sae, max(1, len(acts_BLD)))["x"]
    return llm_BD, sae_BF


def tokenize(
    split: dict[str, list[str]], tokenizer: Any, context_size: int, device: str, prepend_bos: bool = True
) -> dict[str, dict[str, torch.Tensor]]:
    """SAEBench's ``tokenize_data_dictionary`` (right-pad / truncate to ``context_size``), with one BOS in
    front when ``prepend_bos`` and the tokenizer does not add one itself (Gemma's does; SmolLM2's does
    not). The SAE was trained on contexts that start with BOS, with the BOS position left out: here BOS
    is masked out of the pooling like pad and EOS, and position 0 is not a real token either."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    adds_bos = tokenizer("a")["input_ids"][:1] == [bos]
    add = prepend_bos and not adds_bos
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm line
        out = dataset_utils.tokenize_data_dictionary(split, tokenizer, context_size - int(add), device)
    if add:
        for enc in out.values():
            n = len(enc["input_ids"])
            col = torch.full((n, 1), bos, dtype=enc["input_ids"].dtype, device=enc["input_ids"].device)
            enc["input_ids"] = torch.cat([col, enc["input_ids"]], dim=1)
            enc["attention_mask"] = torch.cat([torch.ones_like(col), enc["attention_mask"]], dim=1)
    return out


@torch.no_grad()
def pooled_activations(
    tokenized: dict[str, dict[str, torch.Tensor]],
    model: Any,
    sae: Any,
    layer: int,
    hook: str,
    batch_size: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per class: pooled LLM activations [n, d_model] and pooled SAE latents [n, d_sae]. SAEBench runs
    ``get_all_llm_activations`` over a whole class and then pools; we pool each LLM batch as it comes
    (the same per-row arithmetic), so [n, context, d] is never held."""
    llm: dict[str, torch.Tensor] = {}
    sae_out: dict[str, torch.Tensor] = {}
    for cls, enc in tokenized.items():
        tokens = enc["input_ids"]
        llm_parts, sae_parts = [], []
        for i in range(0, len(tokens), batch_size):
            acts = activation_collection.get_llm_activations(
                tokens[i : i + batch_size], model, batch_size, layer, hook,
                mask_bos_pad_eos_tokens=True, show_progress=False,
            )  # fmt: skip
            llm_BD, sae_BF = pool_llm_and_sae(acts, sae)
            llm_parts.append(llm_BD)
            sae_parts.append(sae_BF)
        llm[cls] = torch.cat(llm_parts)
        sae_out[cls] = torch.cat(sae_parts)
    return llm, sae_out


# --- probing ------------------------------------------------------------------------------------------


def top_k_latents(acts_BD: torch.Tensor, labels_B: torch.Tensor, k: int) -> list[int]:
    """SAEBench's k-sparse selection: the k dimensions with the largest |mean(pos) - mean(neg)|."""
    mask_D = probe_training.get_top_k_mean_diff_mask(acts_BD, labels_B.to(torch.int), k)
    return torch.nonzero(~mask_D).flatten().tolist()


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """sae-bench's probe trainers print every epoch / accuracy, and sklearn warns about its own
    deprecations and convergence; keep the progress display readable."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        return fn(*args, **kwargs)


def train_probes(
    train: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    select_top_k: int | None = None,
    use_sklearn: bool = True,
    batch_size: int = 16,
    epochs: int = 5,
    lr: float = 1e-3,
) -> dict[str, float]:
    """SAEBench's ``train_probe_on_activations`` (perform_scr=False, no l1), restated as the same calls
    to its building blocks in the same order, so it draws the same random numbers.

    Why not call it: in sae-bench 0.6.0 it is ``@jaxtyped`` and calls the ``@beartype`` ``train_sklearn_probe``
    with the 2n-row combined data, while its own memo has bound ``train_dataset_size`` to the n rows of
    one class; with jaxtyping 0.3 that raises ``BeartypeCallHintParamViolation`` on every sklearn probe
    (every top-k probe). Calling the building blocks one by one, each gets its own memo."""
    accs: dict[str, float] = {}
    with torch.enable_grad():  # SAEBench sets grad mode on globally here; scope it instead
        for cls in train:
            x_tr, y_tr = probe_training.prepare_probe_data(train, cls, False)
            x_te, y_te = probe_training.prepare_probe_data(test, cls, False)
            if select_top_k is not None:
                mask_D = probe_training.get_top_k_mean_diff_mask(x_tr, y_tr, select_top_k)
                x_tr = probe_training.apply_topk_mask_reduce_dim(x_tr, mask_D)
                x_te = probe_training.apply_topk_mask_reduce_dim(x_te, mask_D)
            if use_sklearn:
                _, acc = _quiet(probe_training.train_sklearn_probe, x_tr, y_tr, x_te, y_te, verbose=False)
            else:
                _, acc = _quiet(
                    probe_training.train_probe_gpu, x_tr, y_tr, x_te, y_te,
                    dim=x_tr.shape[1], batch_size=batch_size, epochs=epochs, lr=lr, verbose=False,
                    early_stopping_patience=10, l1_penalty=None,
                )  # fmt: skip
            accs[cls] = float(acc)
    return accs


def llm_probes(
    llm_train: dict[str, torch.Tensor], llm_test: dict[str, torch.Tensor], k_values: list[int]
) -> dict[str, dict[str, float]]:
    """The model-side half of SAEBench's probe sequence: full-width probe, then top-k probes."""
    out = {"llm_test_accuracy": train_probes(llm_train, llm_test, None, **FULL_PROBE)}
    for k in k_values:
        out[f"llm_top_{k}_test_accuracy"] = train_probes(llm_train, llm_test, select_top_k=k)
    return out


def sae_probes(
    sae_train: dict[str, torch.Tensor], sae_test: dict[str, torch.Tensor], k_values: list[int]
) -> dict[str, dict[str, float]]:
    """The SAE-side half: full-width probe on all latents, then k-sparse probes."""
    out = {"sae_test_accuracy": train_probes(sae_train, sae_test, None, **FULL_PROBE)}
    for k in k_values:
        out[f"sae_top_{k}_test_accuracy"] = train_probes(sae_train, sae_test, select_top_k=k)
    return out


def in_saebench_order(llm: dict[str, dict[str, float]], sae: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """SAEBench's key order: sae full, llm full, llm top-k..., sae top-k..."""
    rest = {k: v for k, v in sae.items() if k != "sae_test_accuracy"}
    return {"sae_test_accuracy": sae["sae_test_accuracy"], **llm, **rest}


def class_means(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: sum(accs.values()) / len(accs) for key, accs in per_class.items()}


def probe_dataset(
    llm_train: dict[str, torch.Tensor],
    llm_test: dict[str, torch.Tensor],
    sae_train: dict[str, torch.Tensor],
    sae_test: dict[str, torch.Tensor],
    k_values: list[int],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """SAEBench's probe sequence (``run_eval_single_dataset``): same probes, same order, so from the same
    torch seed the same random draws. Returns (metric -> mean over classes, metric -> class -> acc)."""
    llm = llm_probes(llm_train, llm_test, k_values)
    per_class = in_saebench_order(llm, sae_probes(sae_train, sae_test, k_values))
    return class_means(per_class), per_class


def sklearn_full_probe(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor]) -> float:
    """Full-width sklearn logistic regression (SAEBench's ``train_sklearn_probe``, as its top-k probes
    use) on every dimension: test accuracy at the end of fitting, with no test-set early stopping.
    Mean over the classes, like every other number here."""
    accs = train_probes(train, test)
    return sum(accs.values()) / len(accs)


def selected_latents(train: dict[str, torch.Tensor], k_values: list[int]) -> dict[str, Any]:
    """The SAE latents picked for each k, one-vs-rest per class as the probes pick them. A binary
    dataset's two classes pick the same latents (the score is an absolute mean difference), so only
    class '1' is listed, as {k: latents}; a multi-class one gets {class: {k: latents}}."""
    binary = set(train) == {"1", "0"}
    out = {}
    for cls in ["1"] if binary else list(train):
        x, y = probe_training.prepare_probe_data(train, cls, False)
        out[cls] = {str(k): top_k_latents(x, y, k) for k in k_values}
    return out["1"] if binary else out


# --- prepare (once per model, hook and dataset) / evaluate (per SAE) ---------------------------------

SPLITS = ("train", "test")


def acts_name(dataset: str, split: str, cls: str) -> str:
    return f"{dataset}/{split}/{cls}/acts"


@torch.no_grad()
def pool_llm(acts_BLD: torch.Tensor) -> torch.Tensor:
    """SAEBench's mean over unmasked tokens of the model's activations (masked tokens are zero)."""
    llm_BD = activation_collection.create_meaned_model_activations({"x": acts_BLD})["x"]
    empty = ~torch.isfinite(llm_BD).all(dim=1)  # 0 unmasked tokens: SAEBench's mean is 0/0
    if empty.any():
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(f"prompt(s) at batch rows {rows} have no token left after masking BOS/EOS/pad")
    return llm_BD


def prepare(env: EvalEnv, p: SparseProbingSpec, sink: TensorSink) -> dict[str, Any]:
    """Per dataset: per-token model activations of the train/test prompts (BOS/EOS/pad zeroed, as
    SAEBench masks them), and the model-side probes, which no SAE changes. The torch RNG state after
    those probes is kept so each SAE's probes draw exactly what SAEBench's single sequence would."""
    check_dataset_names(p.datasets)  # before the model loads: a typo fails in seconds
    model, tokenizer = env.model()
    spec = env.model_spec
    meta: dict[str, Any] = {}
    with env.reporter.bar("sparse probing: model activations", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            train_text, test_text = load_split(name, p.n_train, p.n_test, p.seed)
            pooled: dict[str, dict[str, torch.Tensor]] = {}
            for split, text in zip(SPLITS, (train_text, test_text), strict=True):
                tok = tokenize(text, tokenizer, p.context_size, spec.device, env.prepend_bos)
                pooled[split] = {}
                for cls in tok:
                    parts = []
                    tokens = tok[cls]["input_ids"]
                    for i in range(0, len(tokens), p.batch_size):
                        acts = activation_collection.get_llm_activations(
                            tokens[i : i + p.batch_size], model, p.batch_size, spec.layer, spec.hook,
                            mask_bos_pad_eos_tokens=True, show_progress=False,
                        )  # fmt: skip
                        sink.append(acts_name(name, split, cls), acts)
                        parts.append(pool_llm(acts))
                    pooled[split][cls] = torch.cat(parts)
            bar.advance(0, extra=f"{name}: model probes")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(p.seed)
                llm = llm_probes(pooled["train"], pooled["test"], list(p.k_values))
                sink.put(f"{name}/rng_after_llm_probes", torch.get_rng_state())
            meta[name] = {
                "classes": list(train_text),
                "llm_per_class": llm,
                "llm_sklearn_test_accuracy": sklearn_full_probe(pooled["train"], pooled["test"]),
                "n_train_per_class": {c: len(v) for c, v in train_text.items()},
                "n_test_per_class": {c: len(v) for c, v in test_text.items()},
            }
            bar.advance(1, extra=f"{name}: llm {class_means(llm)['llm_test_accuracy']:.3f}")
    return meta


@torch.no_grad()
def sae_pooled(prepared: Prepared, name: str, split: str, sae: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """Pooled SAE latents per class, streamed batch by batch from the cached activations
    (SAEBench's ``get_sae_meaned_activations``: latents at masked tokens are multiplied away)."""
    out = {}
    for cls in prepared.meta[name]["classes"]:
        parts = [
            activation_collection.get_sae_meaned_activations({"x": acts}, sae, batch_size)["x"]
            for acts in prepared.batches(acts_name(name, split, cls), batch_size)
        ]
        out[cls] = torch.cat(parts)
    return out


def evaluate(
    prepared: dict[str, Prepared], sae: Any, env: EvalEnv, p: SparseProbingSpec
) -> tuple[SparseProbingEvalOutput, dict[str, Any]]:
    started = time.perf_counter()
    dataset_results: dict[str, dict[str, float]] = {}
    per_class_results: dict[str, dict[str, dict[str, float]]] = {}
    extras: dict[str, dict[str, Any]] = {}
    with env.reporter.bar(f"sparse probing {env.label}", total=len(p.datasets), unit="dataset") as bar:
        for name in p.datasets:
            prep = prepared[name]
            facts = prep.meta[name]
            sae_train, sae_test = (sae_pooled(prep, name, split, sae, p.batch_size) for split in SPLITS)
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(prep.tensor(f"{name}/rng_after_llm_probes"))
                sae_side = sae_probes(sae_train, sae_test, list(p.k_values))
            per_class = in_saebench_order(facts["llm_per_class"], sae_side)
            key = f"{name}_results"  # SAEBench's naming of per-dataset entries
            dataset_results[key], per_class_results[key] = class_means(per_class), per_class
            extras[name] = {
                "llm_sklearn_test_accuracy": facts["llm_sklearn_test_accuracy"],
                "sae_top_k_latents": selected_latents(sae_train, list(p.k_values)),
                "n_train_per_class": facts["n_train_per_class"],
                "n_test_per_class": facts["n_test_per_class"],
            }
            first = p.k_values[0]
            bar.advance(1, extra=f"{name}: sae top-{first} {dataset_results[key][f'sae_top_{first}_test_accuracy']:.3f}")

    averaged = general_utils.average_results_dictionaries(dataset_results, list(p.datasets))
    eval_cfg = SparseProbingEvalConfig(
        random_seed=p.seed,
        dataset_names=list(p.datasets),
        probe_train_set_size=p.n_train,
        probe_test_set_size=p.n_test,
        context_length=p.context_size,
        sae_batch_size=p.batch_size,
        llm_batch_size=p.batch_size,
        llm_dtype=env.model_spec.dtype,
        model_name=env.model_spec.name,
        k_values=list(p.k_values),
        lower_vram_usage=False,
    )
    output = SparseProbingEvalOutput(
        eval_config=eval_cfg,
        eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(datetime.now().timestamp() * 1000),
        eval_result_metrics=SparseProbingMetricCategories(
            llm=SparseProbingLlmMetrics(**{k: v for k, v in averaged.items() if k.startswith("llm_")}),
            sae=SparseProbingSaeMetrics(**{k: v for k, v in averaged.items() if k.startswith("sae_")}),
        ),
        eval_result_details=[
            SparseProbingResultDetail(dataset_name=key, **res) for key, res in dataset_results.items()
        ],
        eval_result_unstructured={
            "data_source": data_source(list(p.datasets)),
            "sampling": f"sae-probes get_train_test_indices (balanced, disjoint, first {MAX_ROWS} rows), seed {p.seed}",
            "per_class_results": per_class_results,
            "per_dataset_extras": extras,
        },
        sae_bench_commit_hash=f"sae-bench=={version('sae-bench')}",
        sae_lens_id=env.label,
        sae_lens_release_id=env.run_name,
        sae_lens_version=sae.cfg.metadata.sae_lens_version or version("sae-lens"),
        sae_cfg_dict=sae.cfg.to_dict(),
    )
    summary: dict[str, Any] = {"datasets": len(p.datasets)}
    for key in ("llm_test_accuracy", "sae_test_accuracy"):
        summary[key] = round(averaged[key], 4)
    for k in p.k_values:
        summary[f"llm_top_{k}_test_accuracy"] = round(averaged[f"llm_top_{k}_test_accuracy"], 4)
        summary[f"sae_top_{k}_test_accuracy"] = round(averaged[f"sae_top_{k}_test_accuracy"], 4)
    summary["probe_seconds"] = round(time.perf_counter() - started, 2)
    return output, summary
