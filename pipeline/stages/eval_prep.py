"""Stage `eval_prep`: an eval's SAE-independent work (model activations on its data, labels, probes on
the model's own activations), computed once per (model, hook, eval data) and read by every SAE's eval.

Tensors are written in bounded chunks under ``tensors/`` (``evals.max_chunk_mib``); ``meta.json``
holds the small facts. Every file is checksummed by the artifact manifest and verified on read.
"""

from __future__ import annotations

import json
import time
from typing import Any

from evals.prepared import EvalEnv, Prepared, TensorSink
from evals.registry import EVALS, PREP_MODULES
from pipeline.artifacts import ArtifactStore
from pipeline.fsutil import atomic_write_json
from pipeline.plan import Stage
from pipeline.stages.context import StageContext

TENSORS = "tensors"
META = "meta.json"


def env_for(ctx: StageContext, label: str = "") -> EvalEnv:
    cfg = ctx.cfg
    assert cfg.model is not None and cfg.data is not None
    return EvalEnv(cfg.model, cfg.data.prepend_bos, ctx.reporter, label, cfg.name)


def params_class(family: str) -> Any:
    """The settings class of the evals in a prep family (they share one prepare, and one class)."""
    from pipeline.config import eval_params_class

    return eval_params_class(next(d.name for d in EVALS.values() if d.prep == family))


def run(ctx: StageContext) -> dict[str, Any]:
    family = ctx.stage.params["eval"]
    module = __import__(PREP_MODULES[family], fromlist=["prepare"])
    params = params_class(family).model_validate(ctx.stage.params["params"])
    started = time.perf_counter()
    sink = TensorSink(ctx.out / TENSORS, ctx.cfg.evals.max_chunk_mib * 2**20)
    meta = module.prepare(env_for(ctx), params, sink)
    sink.close()
    atomic_write_json(ctx.out / META, meta)
    return {"tensors": sorted(sink.writers), "seconds": round(time.perf_counter() - started, 2)}


def open_prepared(store: ArtifactStore, stage: Stage) -> Prepared:
    """The prep artifact as a ``Prepared`` whose every read checks the file's sha256."""
    meta = json.loads(store.verified_file(stage.kind, stage.key, META).read_text())
    root = store.path(stage.kind, stage.key) / TENSORS
    return Prepared(root, meta, lambda rel: store.verified_file(stage.kind, stage.key, f"{TENSORS}/{rel}"))
