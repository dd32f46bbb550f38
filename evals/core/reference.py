"""sae-bench's own ``run_evals`` on the tokens prep stored: the whole model per SAE (clean, spliced and
zero-ablated passes, and a pass up to the hook per sparsity batch). What ``evaluate`` must agree with
(tests/evals/test_core.py) and what it is timed against (bench/bench_eval_suite.py)."""

from __future__ import annotations

from typing import Any

import datasets
import torch
from sae_bench.evals.core.main import run_evals
from sae_lens import ActivationsStore

from evals.contract import EvalEnv, Prepared
from evals.core.config import CoreConfig
from evals.core.evaluate import eval_config, saebench_output
from evals.core.output import OUTPUT
from evals.core.prepare import TOKENS


def saebench_core(prepared: Prepared, sae: Any, env: EvalEnv, p: CoreConfig) -> OUTPUT:
    model, _ = env.model()
    store = ActivationsStore.from_sae(
        model,
        sae,
        dataset=datasets.Dataset.from_dict({"tokens": prepared.tensor(TOKENS).tolist()}),
        context_size=prepared.meta["context_size"],
        streaming=False,
        store_batch_size_prompts=p.batch_size_prompts,
        device=env.model_spec.device,
    )
    eval_cfg = eval_config(env, p, prepared.meta["dataset"], prepared.meta["context_size"])
    with torch.no_grad():
        metrics, feature_metrics = run_evals(sae, store, model, eval_cfg, ignore_tokens=set(prepared.meta["ignore_tokens"]))
    return saebench_output(eval_cfg, metrics, feature_metrics, sae, env)
