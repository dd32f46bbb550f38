"""Once per (model, hook, dataset): per-token model activations and the model-side probes."""

from __future__ import annotations

from typing import Any

import torch
from sae_bench.sae_bench_utils import activation_collection

from evals.contract import EvalEnv, TensorSink
from evals.sparse_probing.config import SparseProbingConfig
from evals.sparse_probing.data import check_dataset_names, load_split
from evals.sparse_probing.probes import (
    SPLITS,
    acts_name,
    class_means,
    llm_probes,
    pool_llm,
    sklearn_full_probe,
    tokenize,
)


def prepare(env: EvalEnv, p: SparseProbingConfig, sink: TensorSink) -> dict[str, Any]:
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
