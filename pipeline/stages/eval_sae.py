"""Stages `eval_<name>` (sparse probing, absorption, SCR, TPP, unlearning): one eval of one SAE.

Reads the eval's prep artifacts and the SAE, calls the eval's ``evaluate``, writes sae-bench's JSON.
Each is its own stage, so one failing eval leaves the others' results and is retried alone.
"""

from __future__ import annotations

import time
from typing import Any

from evals.core import load_trained_sae
from evals.registry import EVALS
from pipeline.config import eval_params_class
from pipeline.stages.context import StageContext
from pipeline.stages.eval_prep import env_for, open_prepared


def run(ctx: StageContext) -> dict[str, Any]:
    name = ctx.stage.kind.removeprefix("eval_")
    spec = EVALS[name]
    params = eval_params_class(name).model_validate(ctx.stage.params["params"])
    preps = {n.removeprefix("prep:"): s for n, s in ctx.stage.inputs.items() if n.startswith("prep:")}
    prepared = {unit: open_prepared(ctx.store, stage) for unit, stage in preps.items()}
    sae = load_trained_sae(ctx)
    hook = ctx.cfg.model.hook
    if sae.cfg.metadata.hook_name != hook:
        raise ValueError(f"{ctx.stage.label}: the SAE was trained on {sae.cfg.metadata.hook_name!r}, the config hooks {hook!r}")
    started = time.perf_counter()
    sae_id = ctx.stage.label.split(":", 1)[-1]
    evaluate = getattr(spec.load(), spec.evaluate)
    output, summary = evaluate(prepared if spec.split_by else prepared["all"], sae, env_for(ctx, sae_id), params)
    output.sae_lens_id = sae_id
    output.sae_lens_release_id = ctx.cfg.name
    output.to_json_file(str(ctx.out / spec.result_file), indent=2)
    return {**summary, "seconds": round(time.perf_counter() - started, 2)}
