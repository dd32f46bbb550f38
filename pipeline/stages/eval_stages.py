"""Eval stage kinds: ``eval_prep`` (an eval's SAE-independent work, shared) and ``eval_<name>`` (one SAE).

``eval_<name>`` reads the eval's prep artifacts and the SAE, calls the eval's ``evaluate``, writes its
result file. One run serves every eval (``evals/contract.py``); each is its own stage, so one failing
eval leaves the others' results and is retried alone. The registry declares one kind per registered eval.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from evals.contract import EvalDef, EvalEnv
from evals.registry import EVALS
from pipeline.stages.context import StageContext
from pipeline.stages.eval_prep import env_for, open_prepared

SAE_DIR = "sae"


def load_trained_sae(ctx: StageContext, device: str, name: str = "sae") -> Any:
    """The SAE of a train artifact (every file checksum verified) as it was trained (LISTA refinement and
    LOO pruning included: ``pipeline.recipes.as_trained``), standardised the way sae-bench's runner does."""
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    from pipeline.recipes.as_trained import load_as_trained

    sae = load_as_trained(verified_sae_folder(ctx, name), device)
    formatted = load_and_format_sae(ctx.cfg.name, sae, device)
    assert formatted is not None
    return formatted[1]


def verified_sae_folder(ctx: StageContext, name: str = "sae") -> Path:
    """The SAE folder of a train artifact, every file in it checksum verified."""
    inp = ctx.stage.inputs[name]
    for rel in ctx.store.manifest(inp.kind, inp.key)["files"]:
        if rel.startswith(f"{SAE_DIR}/"):
            ctx.store.verified_file(inp.kind, inp.key, rel)
    return ctx.store.path(inp.kind, inp.key) / SAE_DIR


def sae_for(ctx: StageContext, d: EvalDef, env: EvalEnv) -> Any:
    """What ``evaluate`` takes as ``sae``, in the form the eval declares."""
    if d.sae_format == "folder":
        return verified_sae_folder(ctx)
    sae = load_trained_sae(ctx, env.model_spec.device)
    if sae.cfg.metadata.hook_name != env.model_spec.hook:
        raise ValueError(f"{ctx.stage.label}: the SAE was trained on {sae.cfg.metadata.hook_name!r}, the eval hooks {env.model_spec.hook!r}")
    return sae


def run(ctx: StageContext) -> dict[str, Any]:
    d = EVALS[ctx.stage.kind.removeprefix("eval_")]
    params = d.config.model_validate(ctx.stage.params["params"])
    preps = {n.removeprefix("prep:"): s for n, s in ctx.stage.inputs.items() if n.startswith("prep:")}
    prepared = {unit: open_prepared(ctx.store, stage) for unit, stage in preps.items()}
    env = env_for(ctx, ctx.stage.label.split(":", 1)[-1])
    sae = sae_for(ctx, d, env)
    started = time.perf_counter()
    evaluate = getattr(d.module("evaluate"), d.evaluate)
    output, summary = evaluate(prepared if d.split_by else prepared["all"], sae, env, params)
    output.to_json_file(str(ctx.out / d.reported.result_file), indent=2)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}
