"""Activations, pooling and probes, SAEBench's calls in SAEBench's order (shared by prepare and evaluate)."""

from __future__ import annotations

from typing import Any

import torch
from sae_bench.evals.sparse_probing import probe_training
from sae_bench.sae_bench_utils import activation_collection, dataset_utils

from evals.common import silenced

# SAEBench's settings for the full-width probes (sparse_probing/main.py::run_eval_single_dataset).
FULL_PROBE = {"use_sklearn": False, "batch_size": 250, "epochs": 100, "lr": 1e-2}
SPLITS = ("train", "test")


def acts_name(dataset: str, split: str, cls: str) -> str:
    """Where prepare stores one class's per-token activations of one split."""
    return f"{dataset}/{split}/{cls}/acts"


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
    with silenced(stdout=False, categories=()):  # its tqdm line
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
    with silenced(stderr=False, categories=(UserWarning, FutureWarning)):
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


def _probe_sequence(prefix: str, train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], k_values: list[int]
                    ) -> dict[str, dict[str, float]]:  # fmt: skip
    """SAEBench's probe sequence on one side: a full-width probe, then top-k probes (the order draws the RNG)."""
    out = {f"{prefix}_test_accuracy": train_probes(train, test, None, **FULL_PROBE)}
    for k in k_values:
        out[f"{prefix}_top_{k}_test_accuracy"] = train_probes(train, test, select_top_k=k)
    return out


def llm_probes(llm_train: dict[str, torch.Tensor], llm_test: dict[str, torch.Tensor], k_values: list[int]) -> dict[str, dict[str, float]]:
    """The model-side half of SAEBench's probe sequence."""
    return _probe_sequence("llm", llm_train, llm_test, k_values)


def sae_probes(sae_train: dict[str, torch.Tensor], sae_test: dict[str, torch.Tensor], k_values: list[int]) -> dict[str, dict[str, float]]:
    """The SAE-side half, on the latents."""
    return _probe_sequence("sae", sae_train, sae_test, k_values)


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


@torch.no_grad()
def pool_llm(acts_BLD: torch.Tensor) -> torch.Tensor:
    """SAEBench's mean over unmasked tokens of the model's activations (masked tokens are zero)."""
    llm_BD = activation_collection.create_meaned_model_activations({"x": acts_BLD})["x"]
    empty = ~torch.isfinite(llm_BD).all(dim=1)  # 0 unmasked tokens: SAEBench's mean is 0/0
    if empty.any():
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(f"prompt(s) at batch rows {rows} have no token left after masking BOS/EOS/pad")
    return llm_BD
