"""Stage `eval_prep`: an eval's SAE-independent work (model activations on its data, labels, probes on
the model's own activations), computed once per (model, hook, eval data) and read by every SAE's eval.

One run for every eval: it calls the eval family's ``prepare`` (``evals/contract.py``). Tensors are
written in bounded chunks under ``tensors/`` (``evals.max_chunk_mib``); ``meta.json`` holds the small
facts. Every file is checksummed by the artifact manifest and verified on read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from evals.contract import EvalEnv, Prepared, TensorSink
from evals.registry import prep_family
from pipeline.artifacts import ArtifactStore
from pipeline.config import ModelSpec
from pipeline.dag import Stage
from pipeline.fsutil import atomic_write_json
from pipeline.stages.context import StageContext
from pipeline.synthetic.stages import load_synthetic_model, spec_of

TENSORS = "tensors"
META = "meta.json"
SYNTHETIC_MODEL = "synthetic_model"
"""The input naming a synthetic run's model artifact (for evals that run on synthetic models)."""


def env_for(ctx: StageContext, label: str = "") -> EvalEnv:
    """What the eval may use. The model is the one the stage's params name (an eval's own model, or the
    run's), placed where the run's model runs: where a stage runs is not part of its key."""
    cfg = ctx.cfg
    spec = None
    if "model" in ctx.stage.params:
        assert cfg.model is not None
        spec = ModelSpec.model_validate({**ctx.stage.params["model"], "device": cfg.model.device})
    elif cfg.model is not None:
        spec = cfg.model
    synth = ctx.input_dir(SYNTHETIC_MODEL) if SYNTHETIC_MODEL in ctx.stage.inputs else None
    return EvalEnv(
        spec,
        cfg.data.prepend_bos if cfg.data is not None else False,
        ctx.reporter,
        label,
        cfg.name,
        data=cfg.data,
        synthetic=spec_of(ctx.stage) if synth is not None else None,
        synthetic_loader=None if synth is None else (lambda: load_synthetic_model(ctx)),
        sae_k=ctx.stage.inputs["sae"].params.get("k") if "sae" in ctx.stage.inputs else None,
    )


def run(ctx: StageContext) -> dict[str, Any]:
    d = prep_family(ctx.stage.params["eval"])
    params = d.config.model_validate(ctx.stage.params["params"])
    started = time.perf_counter()
    sink = TensorSink(ctx.out / TENSORS, ctx.cfg.evals.max_chunk_mib * 2**20)
    meta = d.module("prepare").prepare(env_for(ctx), params, sink)
    sink.close()
    atomic_write_json(ctx.out / META, meta)
    return {"tensors": sorted(sink.writers), "seconds": round(time.perf_counter() - started, 2)}


def open_prepared(store: ArtifactStore, stage: Stage) -> Prepared:
    """The prep artifact as a ``Prepared`` whose every read checks the file's sha256."""
    meta = json.loads(store.verified_file(stage.kind, stage.key, META).read_text())
    root = store.path(stage.kind, stage.key) / TENSORS
    return Prepared(root, meta, lambda rel: store.verified_file(stage.kind, stage.key, f"{TENSORS}/{rel}"))
