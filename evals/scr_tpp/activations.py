"""The model's activations on SCR's and TPP's prompts: every unmasked token's, and their mean per prompt."""

from __future__ import annotations

from typing import Any

import torch
from sae_bench.sae_bench_utils import activation_collection, dataset_utils

from evals.common import quiet
from evals.contract import EvalEnv, TensorSink
from evals.scr_tpp.config import ScrTppParams


def tokenize(texts: list[str], tokenizer: Any, context_length: int, prepend_bos: bool) -> torch.Tensor:
    """SAEBench's ``tokenize_data_dictionary`` (right-pad / truncate to ``context_length``), with one BOS
    in front when the SAE's training contexts began with one and the tokenizer does not add it."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    add = prepend_bos and tokenizer("a")["input_ids"][:1] != [bos]
    enc = quiet(dataset_utils.tokenize_data_dictionary, {"x": texts}, tokenizer, context_length - int(add), "cpu")
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
