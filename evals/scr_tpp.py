"""SAEBench's SCR (spurious correlation removal) and TPP (targeted probe perturbation) evals.

Both ask whether an SAE's latents isolate a concept well enough that zero-ablating a handful of them
removes that concept from a linear probe's view and nothing else. sae-bench 0.6.0 (``evals/scr_and_tpp``):

* **SCR**: texts labelled with a profession and a gender (bias_in_bios; or an Amazon category and a
  rating). A probe is trained on a perfectly biased set (male professors vs female nurses), so it
  reads gender as much as profession. The SAE latents most attributed to a *gender* probe
  (|mean latent difference male - female| x |gender-probe weight . decoder row|) are zero-ablated in
  every token's activation at the hook, the SAE's reconstruction error kept, the tokens re-pooled, and
  the biased probe re-tested on profession-balanced data: ``scr_dir1 = (acc_ablated - acc_biased) /
  (acc_profession_probe - acc_biased)``. ``scr_dir2`` is the mirror (ablate profession latents, test
  on gender), and ``scr_metric_threshold_n`` is whichever direction SAEBench deems relevant (dir1
  when the biased probe is worse on profession than on gender). n in ``n_values``.
* **TPP**: one probe per class (one-vs-rest, 5 professions). For each class, ablate its top-n latents
  (positive mean difference x probe-weight . decoder row) and measure the drop of that class's probe
  accuracy minus the mean drop of the other classes' probes (``tpp_threshold_n_total_metric``).

Split for the pipeline: ``prepare`` (once per model, hook and data, shared by SCR and TPP) runs the
model over the prompts and stores the per-token activations at the hook of every unmasked token
(BOS / EOS / pad masked exactly as ``get_llm_activations(mask_bos_pad_eos_tokens=True)`` does), the
number of such tokens per prompt, the mean-pooled activations, the probes (trained on the model's own
pooled activations, which do not depend on any SAE) and which prompts each probe is tested on.
``evaluate_scr`` / ``evaluate_tpp`` never load the model: ablation acts on the stored activations.

How ablation is computed: for an SAE whose decoder is affine (``decode(f) = f @ W_dec + b_dec``,
checked at run time), SAEBench's ``ablated_precomputed_activations`` (``decode(f with S zeroed) + (x -
decode(f))``, summed over all positions, divided by the unmasked count) equals
``pooled(x) - (sum over positions of f[S]) @ W_dec[S] / n``. So each prompt is encoded once per SAE
and every (class, n) ablation is a small matrix product. SAEBench sums over *all* L positions,
including masked ones where ``x = 0`` but ``encode(0)`` may have active latents; that term,
``(L - n) * encode(0)[S]``, is kept so the numbers are SAEBench's. The parity tests check this
against ``ablated_precomputed_activations`` and the latent attribution against
``get_effects_per_class_precomputed_acts``; latent selection (``select_top_n_features``) and the
metric arithmetic (``get_scr_plotting_dict``, ``create_tpp_plotting_dict``,
``average_results_dictionaries``) are sae-bench's own functions, called directly.

Data: ``dataset_names`` as in SAEBench (``LabHC/bias_in_bios_class_set1``,
``canrager/amazon_reviews_mcauley_1and5``; loaded with ``datasets.load_dataset`` and sae-bench's own
``get_spurious_corr_data`` / ``get_balanced_dataset``), or, the offline default,
``fixture:gendered_professions``: generated biographies (``evals/fixtures/gendered_professions.py``)
with bias_in_bios' columns, put through the same sae-bench functions. The JSON's
``eval_result_unstructured.data_source`` says which, and says FIXTURE for the fixture.

Deviations from SAEBench, all on purpose:

* randomness: SAEBench seeds once per SAE, runs its datasets / pairs one after another on that stream,
  and draws the negatives of each TPP probe's test set afresh for the clean accuracy and for every
  (class, n) ablation; so its TPP numbers carry sampling noise and differ between the first SAE (which
  trains the probes) and later ones (which load them). Here each run (one SCR pair, or one dataset's
  TPP) is seeded with ``random_seed`` in ``prepare``, which then makes SAEBench's calls in SAEBench's
  order (probe training, clean accuracies, node-effect draws): the first run is drawn exactly as
  SAEBench draws it for its first SAE. The test draws of the clean accuracies are then reused for
  every ablation, so every SAE is scored on the same prompts. (SCR's sets are whole classes: its
  draws only permute.)
* defaults are small (120 / 80 prompts, context 40, vs 4000 / 1000 and 128), so the probes get 50
  epochs instead of 20 (375 optimiser steps instead of 5000) and the metrics are coarse: one test
  prompt moves an SCR accuracy by 1/40.
* prompts that occur in several of SAEBench's class lists (SCR's six lists overlap) are run through
  the model once; the activations are the same.
* BOS: one BOS is put in front of every prompt when the SAE's training contexts had one
  (``prepend_bos``), then masked like pad/EOS; SAEBench tokenizes without adding one.
* ``n`` above the SAE's width is skipped (SAEBench asserts) and listed in ``eval_result_unstructured``.
* SCR's third probe direction (ablating the biased probe's own latents) is not run: SAEBench computes
  it but no metric reads it.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sae_bench.evals.scr_and_tpp import dataset_creation
from sae_bench.evals.scr_and_tpp import main as saebench_scr_tpp
from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig
from sae_bench.evals.scr_and_tpp.eval_output import (
    ScrEvalOutput,
    ScrMetricCategories,
    ScrMetrics,
    ScrResultDetail,
    TppEvalOutput,
    TppMetricCategories,
    TppMetrics,
    TppResultDetail,
)
from sae_bench.evals.sparse_probing import probe_training
from sae_bench.sae_bench_utils import activation_collection, dataset_info, dataset_utils, general_utils

from evals.fixtures import gendered_professions
from evals.prepared import EvalEnv, Prepared, TensorSink

FIXTURE = gendered_professions.DATASET_NAME
BIAS_IN_BIOS = ("LabHC/bias_in_bios_class_set1", "LabHC/bias_in_bios_class_set2", "LabHC/bias_in_bios_class_set3")
AMAZON = "canrager/amazon_reviews_mcauley_1and5"
DATASETS = (FIXTURE, *BIAS_IN_BIOS, AMAZON)
SCHEMA_N_VALUES = (2, 5, 10, 20, 50, 100, 500)
"""The n values SAEBench's SCR/TPP JSON schema has fields for."""

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


def _default_column1_vals() -> dict[str, list[tuple[str, str]]]:
    saebench = ScrAndTppEvalConfig().column1_vals_lookup
    return {FIXTURE: [("professor", "nurse")], **{k: [tuple(p) for p in v] for k, v in saebench.items()}}


class ScrTppParams(BaseModel):
    """Settings of SCR and TPP (one prepare serves both). Names are SAEBench's ``ScrAndTppEvalConfig``'s;
    defaults are sized for a 2-core CPU run (SAEBench: 4000 / 1000 prompts, context 128)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    context_length: int = Field(40, ge=4)
    """Tokens per prompt, BOS included (fixture bios are 27-40 tokens; SAEBench 128)."""
    llm_batch_size: int = Field(32, gt=0)
    sae_batch_size: int = Field(125, gt=0)
    """Prompts' worth of tokens per SAE encode in evaluate (SAEBench's default)."""
    probe_train_batch_size: int = Field(16, gt=0)
    """SAEBench warns: the batch size sets how much of the spurious signal the probe learns."""
    probe_test_batch_size: int = Field(500, gt=0, le=500)
    probe_epochs: int = Field(50, gt=0)
    """SAEBench: 20 epochs of 4000 prompts (5000 steps). On 120 prompts 20 epochs leave the probes short of
    converged (professor/nurse probe ~0.85 vs ~0.98 at 50); 50 epochs are 375 steps."""
    probe_lr: float = Field(1e-3, gt=0)
    probe_l1_penalty: float = Field(1e-3, ge=0)
    early_stopping_patience: int = Field(50, gt=0)
    """SAEBench sets it to the number of epochs, so every probe trains for the same number of steps."""
    random_seed: int = 42

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


# --- data ------------------------------------------------------------------------------------------


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
    import datasets

    hub_name = metadata_key(dataset)
    try:
        loaded = datasets.load_dataset(hub_name)
    except Exception as err:  # offline, gated, not cached: one line saying what to do
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise RuntimeError(
            f"scr/tpp: cannot load {hub_name!r} with datasets.load_dataset ({reason}); run once with network "
            f"(or pre-download it into HF_DATASETS_CACHE and set HF_DATASETS_OFFLINE=1), or use "
            f"dataset_names: [{FIXTURE!r}]"
        ) from None
    return pd.DataFrame(loaded["train"]), pd.DataFrame(loaded["test"])


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """sae-bench prints per probe / epoch / warning and draws tqdm bars; keep the progress display clean."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)


Frames = tuple[pd.DataFrame, pd.DataFrame]


def scr_run(dataset: str, frames: Frames, pair: tuple[str, str], params: ScrTppParams) -> Run:
    """SAEBench's six SCR class lists for one pair (``get_train_test_data(spurious_corr=True)``)."""
    key, col2 = metadata_key(dataset), COLUMN2_VALS[dataset]
    split = [
        _quiet(dataset_creation.get_spurious_corr_data, df, tuple(pair), col2, key, size // 4, params.random_seed)
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
        _quiet(dataset_utils.get_balanced_dataset, df, key, size // 4, params.random_seed)
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


# --- prepare: model activations, probes, test sets --------------------------------------------------


def tokenize(texts: list[str], tokenizer: Any, context_length: int, prepend_bos: bool) -> torch.Tensor:
    """SAEBench's ``tokenize_data_dictionary`` (right-pad / truncate to ``context_length``), with one BOS
    in front when the SAE's training contexts began with one and the tokenizer does not add it."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    add = prepend_bos and tokenizer("a")["input_ids"][:1] != [bos]
    enc = _quiet(dataset_utils.tokenize_data_dictionary, {"x": texts}, tokenizer, context_length - int(add), "cpu")
    ids = enc["x"]["input_ids"]
    if add:
        ids = torch.cat([torch.full((len(ids), 1), bos, dtype=ids.dtype), ids], dim=1)
    return ids


@torch.no_grad()
def cache_prompts(texts: list[str], prefix: str, model: Any, tokenizer: Any, env: EvalEnv, params: ScrTppParams,
                  sink: TensorSink, bar: Any) -> torch.Tensor:  # fmt: skip
    """Runs the model on ``texts`` and writes ``{prefix}_acts`` (the unmasked tokens' activations at the
    hook, prompt after prompt), ``{prefix}_n_tokens`` (how many per prompt) and ``{prefix}_pooled``
    (their mean, SAEBench's ``create_meaned_model_activations``). Returns the pooled activations."""
    tokens = tokenize(texts, tokenizer, params.context_length, env.prepend_bos)
    spec, pooled = env.model_spec, []
    for i in range(0, len(tokens), params.llm_batch_size):
        acts_BLD = activation_collection.get_llm_activations(
            tokens[i : i + params.llm_batch_size].to(spec.device), model, params.llm_batch_size, spec.layer,
            spec.hook, mask_bos_pad_eos_tokens=True, show_progress=False,
        ).cpu()  # fmt: skip
        keep_BL = acts_BLD.sum(-1) != 0  # SAEBench's own test for a masked position
        if not keep_BL.any(1).all():
            raise ValueError(f"{prefix}: a prompt has no token left after masking BOS/EOS/pad")
        sink.append(f"{prefix}_acts", acts_BLD[keep_BL])
        sink.append(f"{prefix}_n_tokens", keep_BL.sum(1))
        pooled_BD = activation_collection.create_meaned_model_activations({"x": acts_BLD})["x"]
        sink.append(f"{prefix}_pooled", pooled_BD)
        pooled.append(pooled_BD)
        bar.advance(len(acts_BLD), extra=prefix)
    return torch.cat(pooled)


def unique_rows(splits: list[dict[str, list[str]]]) -> tuple[list[str], list[dict[str, torch.Tensor]]]:
    """The distinct texts of several class dicts, and each dict as class -> row ids, shaped [n, 1] as
    float so sae-bench's ``prepare_probe_data`` (which wants activations) can draw rows from them."""
    rows: dict[str, int] = {}
    ids = []
    for split in splits:
        ids.append({c: torch.tensor([[float(rows.setdefault(t, len(rows)))] for t in v]) for c, v in split.items()})
    return list(rows), ids


def draw(ids: dict[str, torch.Tensor], key: str, scr: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One of SAEBench's ``prepare_probe_data`` draws (positives, negatives, shuffle), as row ids."""
    rows, labels = probe_training.prepare_probe_data(ids, key, scr)
    return rows[:, 0].long(), labels


class IndexSets:
    """Named (rows, labels) sets, stored as two concatenated tensors plus offsets in meta."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.spans: dict[str, list[int]] = {}
        self.size = 0

    def add(self, name: str, rows: torch.Tensor, labels: torch.Tensor) -> None:
        self.rows.append(rows)
        self.labels.append(labels.to(torch.int32))
        self.spans[name] = [self.size, self.size + len(rows)]
        self.size += len(rows)


RowIds = dict[str, torch.Tensor]
"""class key -> row ids [n, 1] (float, see ``unique_rows``)."""


def probe_run(
    run: Run, ids_tr: RowIds, ids_te: RowIds, pooled_tr: torch.Tensor, pooled_te: torch.Tensor, params: ScrTppParams
) -> tuple[dict[str, probe_training.Probe], dict[str, float], IndexSets]:
    """SAEBench's model-side sequence for one run, seeded, same calls in the same order so the same draws:
    ``train_probe_on_activations`` (one probe per class key, SAEBench's torch probe), the clean
    ``get_probe_test_accuracy`` (its test draws are kept: every ablation is scored on them), then the
    node-effect draws of ``get_all_node_effects_for_one_sae`` (kept: latent attribution uses them)."""
    scr = run.kind == "scr"
    sets = IndexSets()
    probes: dict[str, probe_training.Probe] = {}
    torch.manual_seed(params.random_seed)
    with torch.enable_grad():
        for key in ids_tr:
            (tr, y_tr), (te, y_te) = draw(ids_tr, key, scr), draw(ids_te, key, scr)
            probes[key], _ = _quiet(
                probe_training.train_probe_gpu, pooled_tr[tr], y_tr, pooled_te[te], y_te, dim=pooled_tr.shape[1],
                batch_size=params.probe_train_batch_size, epochs=params.probe_epochs, lr=params.probe_lr,
                early_stopping_patience=params.early_stopping_patience, l1_penalty=params.probe_l1_penalty,
            )  # fmt: skip
    clean: dict[str, float] = {}
    for key in run.chosen:
        rows, labels = draw(ids_te, key, scr)
        sets.add(f"test:{key}", rows, labels)
        clean[key] = probe_accuracy(probes[key], pooled_te[rows], labels, params.probe_test_batch_size)
    if scr:  # get_scr_probe_test_accuracy: each SCR probe on the other two probes' data
        for data_key in run.chosen:
            rows, labels = draw(ids_te, data_key, True)
            for probe_key in (k for k in SCR_KEYS if k != data_key):
                acc = probe_accuracy(probes[probe_key], pooled_te[rows], labels, params.probe_test_batch_size)
                clean[f"{probe_key} probe on {data_key} data"] = acc
    for key in run.chosen:
        sets.add(f"effect:{key}", *draw(ids_tr, key, scr))
    return {k: probes[k] for k in run.chosen}, clean, sets


def probe_accuracy(probe: probe_training.Probe, acts: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return float(probe_training.test_probe_gpu(acts, labels.to(torch.int), batch_size, probe))


def prepare(env: EvalEnv, params: ScrTppParams, sink: TensorSink) -> dict[str, Any]:
    """Model activations on every SCR and TPP prompt, the probes on them and their test sets (SAE-free)."""
    started = time.perf_counter()
    runs = build_runs(params)  # data first: a missing dataset fails before the model loads
    model, tokenizer = env.model()
    texts: dict[str, list[str]] = {}
    ids: dict[tuple[str, str], RowIds] = {}  # by (run name, split)
    for kind in ("scr", "tpp"):
        kind_runs = [r for r in runs if r.kind == kind]
        for split in ("train", "test") if kind_runs else ():
            texts[f"{kind}_{split}"], split_ids = unique_rows([getattr(r, split) for r in kind_runs])
            ids.update({(r.name, split): i for r, i in zip(kind_runs, split_ids)})
    pooled: dict[str, torch.Tensor] = {}
    total = sum(len(t) for t in texts.values())
    with env.reporter.bar("scr/tpp prep: model activations", total=total, unit="prompt") as bar:
        for prefix, prompts in texts.items():
            pooled[prefix] = cache_prompts(prompts, prefix, model, tokenizer, env, params, sink, bar)
    run_meta = []
    with env.reporter.bar("scr/tpp prep: probes", total=len(runs), unit="run") as bar:
        for i, run in enumerate(runs):
            with torch.random.fork_rng(devices=[]):  # seeded inside; leave the caller's RNG alone
                probes, clean, sets = probe_run(
                    run, ids[run.name, "train"], ids[run.name, "test"], pooled[f"{run.kind}_train"],
                    pooled[f"{run.kind}_test"], params,
                )  # fmt: skip
            rid = f"{run.kind}{sum(r.kind == run.kind for r in runs[:i])}"
            sink.put(f"{rid}_probe_w", torch.cat([probes[k].net.weight.detach() for k in run.chosen]))
            sink.put(f"{rid}_probe_b", torch.cat([probes[k].net.bias.detach() for k in run.chosen]))
            sink.put(f"{rid}_rows", torch.cat(sets.rows))
            sink.put(f"{rid}_labels", torch.cat(sets.labels))
            run_meta.append({
                "id": rid, "kind": run.kind, "dataset": run.dataset, "name": run.name, "chosen": run.chosen,
                "column1_vals": list(run.column1_vals) if run.column1_vals else None, "clean_accuracies": clean,
                "sets": sets.spans,
                "n_prompts": {s: {c: len(v) for c, v in getattr(run, s).items()} for s in ("train", "test")},
            })  # fmt: skip
            own = ", ".join(f"{k} {v:.3f}" for k, v in clean.items() if " probe on " not in k)
            bar.advance(1, extra=f"{run.name}: {own}")
    return {
        "runs": run_meta,
        "n_unique_prompts": {k: len(v) for k, v in texts.items()},
        "context_length": params.context_length,
        "prepend_bos": env.prepend_bos,
        "hook": env.model_spec.hook,
        "model": env.model_spec.name,
        "data_source": data_source(params),
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- evaluate: SAE latents, attribution, ablation -----------------------------------------------------


@torch.no_grad()
def check_affine_decoder(sae: Any, f_BF: torch.Tensor) -> None:
    """The fast ablation needs ``decode`` to be ``f @ W_dec + b_dec`` (sae-lens' decoders are, unless an
    activation normaliser rescales per token; SAEBench's own ablation breaks on those as well)."""
    zero = torch.zeros_like(f_BF[:1])
    want = f_BF @ sae.W_dec + sae.decode(zero)
    got = sae.decode(f_BF)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max().clamp(min=1.0))):
        norm = getattr(sae.cfg, "normalize_activations", "?")
        raise ValueError(f"scr/tpp: the SAE's decode is not affine (normalize_activations={norm!r}); "
                         "ablating latents on cached activations needs it")  # fmt: skip


@torch.no_grad()
def summed_latents(batches: Iterator[torch.Tensor], n_tokens: torch.Tensor, sae: Any) -> torch.Tensor:
    """Per prompt, the sum over its unmasked tokens of ``sae.encode`` [n_prompts, d_sae] (float32), from
    the packed token activations ``prepare`` wrote."""
    owner = torch.repeat_interleave(torch.arange(len(n_tokens)), n_tokens)
    out = torch.zeros(len(n_tokens), sae.W_dec.shape[0], dtype=torch.float32)
    start, checked = 0, False
    for acts in batches:
        f = sae.encode(acts.to(sae.W_dec.device, sae.W_dec.dtype))
        if not checked:
            check_affine_decoder(sae, f[:8])
            checked = True
        out.index_add_(0, owner[start : start + len(acts)], f.float().cpu())
        start += len(acts)
    assert start == len(owner), (start, len(owner))
    return out


def node_effects(latents_BF: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, probe_w_D: torch.Tensor,
                 W_dec_FD: torch.Tensor, scr: bool) -> torch.Tensor:  # fmt: skip
    """SAEBench's ``get_effects_per_class_precomputed_acts`` on mean-pooled latents: (mean over positives
    - mean over negatives) times each decoder row's dot product with the probe weight; SCR takes the
    absolute value, TPP keeps only latents more active on the positive class."""
    acts = latents_BF[rows]
    pos, neg = labels == dataset_info.POSITIVE_CLASS_LABEL, labels == dataset_info.NEGATIVE_CLASS_LABEL
    diff = acts[pos].mean(0) - acts[neg].mean(0)
    dot = W_dec_FD.float() @ probe_w_D.float()
    if not scr:
        diff = diff.clamp(min=0.0)
    effects = diff * dot
    return effects.abs() if scr else effects


def ablated_pooled(pooled_BD: torch.Tensor, summed_BF: torch.Tensor, n_tokens_B: torch.Tensor, context_length: int,
                   f_zero_F: torch.Tensor, W_dec_FD: torch.Tensor, ablate_F: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """SAEBench's ``ablated_precomputed_activations`` without re-encoding: zeroing latents S at every one
    of the L positions (masked ones included, where the input is 0 but ``encode(0)`` need not be)
    changes the summed activations by ``-(sum of f[S]) @ W_dec[S]``; divide by the unmasked count."""
    idx = torch.nonzero(ablate_F).flatten()
    n = n_tokens_B.to(torch.float32)[:, None]
    removed_BS = summed_BF[:, idx] + (context_length - n) * f_zero_F[idx]
    return pooled_BD - ((removed_BS @ W_dec_FD[idx].float()) / n).to(pooled_BD.dtype)


def probe_from(w_D: torch.Tensor, b: torch.Tensor) -> probe_training.Probe:
    """A sae-bench ``Probe`` holding stored weights (built without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        probe = probe_training.Probe(len(w_D), w_D.dtype)
    with torch.no_grad():
        probe.net.weight.copy_(w_D[None])
        probe.net.bias.copy_(b.reshape(1))
    return probe


@dataclass
class SplitData:
    """One split's stored model side plus this SAE's latents on it."""

    pooled: torch.Tensor
    n_tokens: torch.Tensor
    summed: torch.Tensor
    """Per prompt, the SAE latents summed over its unmasked tokens."""


def load_split(prepared: Prepared, prefix: str, sae: Any, params: ScrTppParams) -> SplitData:
    n_tokens = prepared.tensor(f"{prefix}_n_tokens").long()
    batches = prepared.batches(f"{prefix}_acts", params.sae_batch_size * prepared.meta["context_length"])
    return SplitData(prepared.tensor(f"{prefix}_pooled"), n_tokens, summed_latents(batches, n_tokens, sae))


Accuracies = dict[str, dict[int, dict[str, float]]]
"""[ablated probe][n][measured]: SAEBench's ``perform_feature_ablations`` result."""


@torch.no_grad()
def score_run(
    run: dict[str, Any], prepared: Prepared, data: dict[str, SplitData], sae: Any, n_values: list[int],
    params: ScrTppParams,
) -> tuple[Accuracies, dict[str, dict[int, list[int]]]]:  # fmt: skip
    """Accuracies after each ablation, for what SAEBench's metrics read (SCR: the biased probe on
    profession and on gender data; TPP: every class's probe on its own data), and the latents ablated."""
    rid, scr, chosen = run["id"], run["kind"] == "scr", run["chosen"]
    rows, labels = prepared.tensor(f"{rid}_rows"), prepared.tensor(f"{rid}_labels")
    weights, biases = prepared.tensor(f"{rid}_probe_w"), prepared.tensor(f"{rid}_probe_b")
    probes = {k: probe_from(weights[i], biases[i]) for i, k in enumerate(chosen)}

    def stored(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = run["sets"][name]
        return rows[a:b], labels[a:b]

    train, test = data[f"{run['kind']}_train"], data[f"{run['kind']}_test"]
    W_dec = sae.W_dec.detach().float().cpu()
    f_zero = encode_zero(sae)
    mean_latents = train.summed / train.n_tokens[:, None].float()
    if scr:
        ablated, measured = SCR_ABLATED, [(BIASED_KEY, k, f"{BIASED_KEY} probe on {k} data") for k in SCR_EVAL_DATA]
    else:
        ablated, measured = chosen, [(k, k, k) for k in chosen]
    accs: Accuracies = {}
    latents: dict[str, dict[int, list[int]]] = {}
    for key in ablated:
        effects = node_effects(mean_latents, *stored(f"effect:{key}"), weights[chosen.index(key)], W_dec, scr)
        accs[key], latents[key] = {}, {}
        for n in n_values:
            mask = _quiet(saebench_scr_tpp.select_top_n_features, effects, n, key)
            pooled = ablated_pooled(test.pooled, test.summed, test.n_tokens, prepared.meta["context_length"],
                                    f_zero, W_dec, mask)  # fmt: skip
            accs[key][n] = {}
            for probe_key, data_key, out_key in measured:
                r, y = stored(f"test:{data_key}")
                accs[key][n][out_key] = probe_accuracy(probes[probe_key], pooled[r], y, params.probe_test_batch_size)
            latents[key][n] = torch.nonzero(mask).flatten().tolist()
    return accs, latents


@torch.no_grad()
def encode_zero(sae: Any) -> torch.Tensor:
    """``sae.encode`` of an all-zero activation: what SAEBench's ablation sees at masked positions."""
    zero = torch.zeros(1, sae.W_dec.shape[1], dtype=sae.W_dec.dtype, device=sae.W_dec.device)
    return sae.encode(zero)[0].float().cpu()


def _evaluate(
    kind: str, prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams
) -> tuple[Any, dict[str, float]]:
    """Scores every run of ``kind`` and averages them as SAEBench's ``run_eval_single_sae`` does."""
    started = time.perf_counter()
    runs = [r for r in prepared.meta["runs"] if r["kind"] == kind]
    if not runs:
        raise ValueError(f"{kind}: nothing to score: column1_vals_lookup has no class pair for {params.dataset_names}")
    if prepared.meta["hook"] != env.model_spec.hook:
        raise ValueError(f"{kind}: prepared at {prepared.meta['hook']!r}, the model spec hooks {env.model_spec.hook!r}")
    d_sae = int(sae.W_dec.shape[0])
    n_values = [n for n in params.n_values if n <= d_sae]  # SAEBench asserts n <= d_sae
    results: dict[str, dict[str, float]] = {}
    per_class: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    with env.reporter.bar(f"{kind} {env.label}", total=len(runs) + 1, unit="step") as bar:
        bar.advance(0, extra="encoding the cached activations")
        data = {f"{kind}_{s}": load_split(prepared, f"{kind}_{s}", sae, params) for s in ("train", "test")}
        bar.advance(1, extra="ablations")
        for run in runs:
            accs, latents = score_run(run, prepared, data, sae, n_values, params)
            clean = run["clean_accuracies"]
            if kind == "scr":
                processed = _quiet(saebench_scr_tpp.get_scr_plotting_dict, accs, clean)
            else:
                own = {k: clean[k] for k in run["chosen"]}
                processed, per_class[run["dataset"]] = _quiet(saebench_scr_tpp.create_tpp_plotting_dict, accs, own)
            results[f"{run['name']}_results"] = processed
            extras[run["name"]] = {"clean_accuracies": clean, "ablated_accuracies": accs, "ablated_latents": latents,
                                   "n_prompts": run["n_prompts"]}  # fmt: skip
            bar.advance(1, extra=run["name"])
    averaged = general_utils.average_results_dictionaries(results, [r["name"] for r in runs])
    unstructured: dict[str, Any] = {
        "data_source": prepared.meta["data_source"],
        "runs": extras,
        "skipped_n_values": [n for n in params.n_values if n > d_sae],
        "latents_active_at_masked_positions": int((encode_zero(sae) > 0).sum()),
        "n_unique_prompts": prepared.meta["n_unique_prompts"],
        "prepend_bos": prepared.meta["prepend_bos"],
        "deviations": "test draws fixed per run and reused for every ablation; prompts shared by class lists run "
        "once; BOS prepended when the SAE's training contexts had it; see evals/scr_tpp.py",
        "seconds": round(time.perf_counter() - started, 2),
    }
    header = {
        "eval_config": eval_config(env, params, perform_scr=kind == "scr"),
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(datetime.now().timestamp() * 1000),
        "sae_bench_commit_hash": f"sae-bench=={version('sae-bench')}",
        "sae_lens_id": env.label,
        "sae_lens_release_id": env.run_name,
        "sae_lens_version": getattr(sae.cfg.metadata, "sae_lens_version", None) or version("sae-lens"),
        "sae_cfg_dict": sae.cfg.to_dict(),
    }
    if kind == "scr":
        output: Any = ScrEvalOutput(
            eval_result_metrics=ScrMetricCategories(scr_metrics=ScrMetrics(**averaged)),
            eval_result_details=[ScrResultDetail(dataset_name=k, **v) for k, v in results.items()],
            eval_result_unstructured=unstructured, **header,
        )  # fmt: skip
        headline = [f"scr_metric_threshold_{n}" for n in n_values]
    else:
        unstructured["per_dataset_class_results"] = per_class  # what SAEBench puts in unstructured
        output = TppEvalOutput(
            eval_result_metrics=TppMetricCategories(tpp_metrics=TppMetrics(**averaged)),
            eval_result_details=[TppResultDetail(dataset_name=k, **v) for k, v in results.items()],
            eval_result_unstructured=unstructured, **header,
        )  # fmt: skip
        parts = ("total_metric", "intended_diff_only", "unintended_diff_only")
        headline = [f"tpp_threshold_{n}_{m}" for n in n_values for m in parts]
    summary = {k: round(float(averaged[k]), 4) for k in headline if _finite(averaged.get(k))}
    return output, summary


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(x)


def eval_config(env: EvalEnv, params: ScrTppParams, perform_scr: bool) -> ScrAndTppEvalConfig:
    """SAEBench's config object, filled from ours (it goes into the JSON)."""
    return ScrAndTppEvalConfig(
        random_seed=params.random_seed,
        dataset_names=list(params.dataset_names),
        perform_scr=perform_scr,
        early_stopping_patience=params.early_stopping_patience,
        train_set_size=params.train_set_size,
        test_set_size=params.test_set_size,
        context_length=params.context_length,
        probe_train_batch_size=params.probe_train_batch_size,
        probe_test_batch_size=params.probe_test_batch_size,
        probe_epochs=params.probe_epochs,
        probe_lr=params.probe_lr,
        probe_l1_penalty=params.probe_l1_penalty,
        sae_batch_size=params.sae_batch_size,
        llm_batch_size=params.llm_batch_size,
        llm_dtype=env.model_spec.dtype,
        lower_vram_usage=False,
        model_name=env.model_spec.name,
        n_values=list(params.n_values),
        column1_vals_lookup={
            k: [tuple(p) for p in v] for k, v in params.column1_vals_lookup.items() if k in params.dataset_names
        },
    )


def evaluate_scr(
    prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams
) -> tuple[ScrEvalOutput, dict[str, float]]:
    """SCR for one SAE on ``prepare``'s activations and probes (never loads the model)."""
    return _evaluate("scr", prepared, sae, env, params)


def evaluate_tpp(
    prepared: Prepared, sae: Any, env: EvalEnv, params: ScrTppParams
) -> tuple[TppEvalOutput, dict[str, float]]:
    """TPP for one SAE on ``prepare``'s activations and probes (never loads the model)."""
    return _evaluate("tpp", prepared, sae, env, params)
