"""Stages `synthetic_model` and `activations` (synthetic flavour).

`synthetic_model` (no inputs) builds the ground-truth model its params name (one shape of the run:
`spec_of`; a `saved` model is loaded instead) and saves it with sae-lens's `SyntheticModel.save` into
`<artifact>/model/` (the published 16k model takes ~26 min to
orthogonalise on CPU, so it is built once and shared by everything downstream).

`activations` (input "synthetic_model") samples `cfg.activations.n_tokens` hidden vectors and writes
them as the same Parquet shards as the language-model stage, so `train` reads them unchanged:
  * a "context" is a block of ROWS_PER_CONTEXT = 1024 samples, so a shard holds
    `contexts_per_shard * 1024` rows (the last one fewer); `shards.json` records hook "synthetic",
    context_size = rows_per_context = 1024;
  * columns: token_id 0, seq_id = block index, pos = position in the block (so the sample index is
    seq_id * 1024 + pos);
  * shard i is drawn from its own seeded stream (`derive_seed(spec.seed, "train", i)`), so a shard's
    content does not depend on which shards were written before: the stage resumes after a kill from
    `<work>/done.json` exactly as the language-model stage does (same helper) and gives identical shards.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from pipeline.config.synthetic import SyntheticSpec
from pipeline.dag import Stage
from pipeline.data.shard_progress import (
    finished_shards,
    publish_shards,
    record_finished,
)
from pipeline.data.shards import write_shard
from pipeline.stages.context import StageContext
from pipeline.synthetic.model import (
    MODEL_DIR,
    build_model,
    derive_seed,
    load_model,
    sample,
    sampling_device,
    sample_chunks,
)

ROWS_PER_CONTEXT = 1024
HOOK = "synthetic"
SUMMARY_SAMPLES = 8192


def spec_of(stage: Stage) -> SyntheticSpec:
    """The spec of the shape a stage belongs to: its own params (`synthetic_model`), else its model input's.
    Read from the plan, not the run's config, so each shape of a suite gets its own."""
    model_stage = stage if stage.kind == "synthetic_model" else stage.inputs["synthetic_model"]
    return SyntheticSpec.model_validate(model_stage.params["synthetic"])


def run_model(ctx: StageContext) -> dict[str, Any]:
    spec = spec_of(ctx.stage)
    started = time.perf_counter()
    ctx.reporter.log(f"{ctx.stage.label}: building the synthetic model")
    model = build_model(spec, sampling_device(spec, ctx.cfg.device))
    built = time.perf_counter() - started
    model.save(ctx.out / MODEL_DIR)
    _, feats = sample(model, SUMMARY_SAMPLES, derive_seed(spec.seed, "summary"), with_features=True)
    assert feats is not None
    probs = model.activation_generator.firing_probabilities
    return {
        "num_features": model.cfg.num_features,
        "hidden_dim": model.cfg.hidden_dim,
        "true_l0_estimate": float((feats > 0).sum(1).float().mean()),
        "expected_l0_without_hierarchy": float(probs.sum()),
        "build_seconds": round(built, 2),
    }


def run_activations(ctx: StageContext) -> dict[str, Any]:
    spec, acts = spec_of(ctx.stage), ctx.cfg.activations
    model = load_model(ctx.input_dir("synthetic_model"), sampling_device(spec, ctx.cfg.device))
    d_in = model.cfg.hidden_dim
    n_rows = acts.n_tokens
    rows_per_shard = acts.contexts_per_shard * ROWS_PER_CONTEXT
    n_shards = math.ceil(n_rows / rows_per_shard)
    np_dtype = np.float16 if acts.dtype == "float16" else np.float32

    done = finished_shards(ctx.work)
    if done:
        ctx.reporter.log(f"activations: resuming after {len(done)} complete shards ({sum(s.rows for s in done)} samples)")
    with ctx.reporter.bar("sampling synthetic activations", total=n_rows, unit="vec", completed=sum(s.rows for s in done)) as bar:
        for shard_i in range(len(done), n_shards):
            first = shard_i * rows_per_shard
            want = min(rows_per_shard, n_rows - first)
            acts_out = np.empty((want, d_in), dtype=np_dtype)  # each draw is copied once, into place
            at = 0
            for hidden, _ in sample_chunks(model, want, derive_seed(spec.seed, "train", shard_i)):
                acts_out[at : at + hidden.shape[0]] = hidden.cpu().numpy()
                at += hidden.shape[0]
                bar.advance(hidden.shape[0])
            index = np.arange(first, first + want)
            info = write_shard(
                ctx.work,
                shard_i,
                acts_out,
                np.zeros(want, dtype=np.int64),
                index // ROWS_PER_CONTEXT,
                index % ROWS_PER_CONTEXT,
            )
            done.append(info)
            record_finished(ctx.work, done)

    shard_index = publish_shards(
        ctx.work,
        ctx.out,
        done,
        d_in=d_in,
        dtype=acts.dtype,
        hook=HOOK,
        context_size=ROWS_PER_CONTEXT,
        rows_per_context=ROWS_PER_CONTEXT,
    )
    return {"tokens": shard_index.total_rows, "shards": len(done), "d_in": d_in}


def load_synthetic_model(ctx: StageContext, name: str = "synthetic_model") -> Any:
    """The SyntheticModel of an input artifact (for the evals), on the device its samples are drawn on."""
    return load_model(ctx.input_dir(name), sampling_device(spec_of(ctx.stage), ctx.cfg.device))
