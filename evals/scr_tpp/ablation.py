"""Zero-ablating SAE latents on the cached activations, without re-encoding: for an affine decoder the
ablated mean activation is the stored one minus the ablated latents' share (derivation in README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from sae_bench.evals.scr_and_tpp import main as saebench_scr_tpp
from sae_bench.sae_bench_utils import dataset_info

from evals.common import quiet
from evals.contract import Prepared
from evals.scr_tpp.config import ScrTppParams
from evals.scr_tpp.data import BIASED_KEY, SCR_ABLATED, SCR_EVAL_DATA
from evals.scr_tpp.probes import probe_accuracy, probe_from


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
            mask = quiet(saebench_scr_tpp.select_top_n_features, effects, n, key)
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
