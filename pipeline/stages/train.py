"""Stage `train`: one SAE trained from the cached shards, streaming, checkpointed, resumable.

The SAE is either our recipe trainer (``trainer: saepipe``, every recipe piece, sparse or dense ops) or
sae-lens's own training SAE for the recipe's architecture (``trainer: sae_lens``, at sae-lens's
defaults, stepped as sae-lens's SAETrainer steps it: ``pipeline/training/reference.py``). The loop
checkpoints everything a bit-for-bit resume needs. The baselines (``trainer: pca`` / ``random``,
``pipeline/training/baselines.py``) skip the loop. Every result is in the sae-lens format, so
``sae_lens.SAE.load_from_disk`` opens it, and the stage's result records the trainer and
``differs_from_reference``: {setting: [ours, sae-lens default]} for every setting that differs.

It runs on ``cfg.device`` (not part of the key), optionally with bf16 autocast (``autocast``, fp32
master weights). Under ``torchrun`` it is data parallel: each rank takes its slice of every global
batch, the recipes' batch statistics are all-reduced (``pipeline/recipes/collective.py``), so the
result equals the one-process run; rank 0 writes checkpoints and the artifact. For N GPUs:

    torchrun --standalone --nproc_per_node N -m pipeline.training.worker CONFIG KEY --artifacts ROOT

(`pipeline/training/worker.py`: rank 0 is the ordinary `run-stage`, the others only join the loop).
"""

from __future__ import annotations

import itertools
import json
import time
from functools import partial
from typing import Any

import torch

from pipeline.config.recipe import RecipeSpec
from pipeline.data.shards import SHARD_DIR, ShardIndex
from pipeline.progress import Reporter
from pipeline.recipes.collective import settle
from pipeline.stages.context import StageContext
from pipeline.training.baselines import (
    BASELINES,
    pca_weights,
    random_weights,
    save_topk,
)
from pipeline.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_info,
    save_checkpoint,
)
from pipeline.training.contract import ADAM_BETAS, GRAD_CLIP
from pipeline.training.distributed import (
    Ranks,
    any_rank,
    barrier,
    data_parallel,
    synced_step,
)
from pipeline.training.metrics import MetricLog
from pipeline.training.ops_choice import resolve_ops
from pipeline.training.preemption import Preempted, stop_on_sigterm
from pipeline.training.stream import ShardStream, as_tensor
from pipeline.training.trainables import build_trainable

SAE_DIR = "sae"
LOG_FILE = "train_log.json"
LOG_EVERY = 25
"""Steps between read-backs of the metrics from the device (every step still gets its log entry)."""


def sae_metadata(ctx: StageContext) -> dict[str, Any]:
    """What sae-lens and sae-bench need to know to run the SAE on the model."""
    cfg = ctx.cfg
    if cfg.model is None or cfg.data is None:  # a synthetic run: no language model behind the vectors
        return {"model_name": f"synthetic:{cfg.name}", "hook_name": "synthetic", "saepipe_stage": ctx.stage.label}
    return {
        "model_name": cfg.model.name,
        "hook_name": cfg.model.hook,
        "context_size": cfg.data.context_size,
        "prepend_bos": cfg.data.prepend_bos,
        "dataset_path": f"{cfg.data.source}:{cfg.data.name}",
        "exclude_special_tokens": bool(cfg.activations.skip_bos),
        "saepipe_stage": ctx.stage.label,
    }


def run(ctx: StageContext) -> dict[str, Any]:
    if ctx.stage.params["trainer"] in BASELINES:
        return fit_baseline(ctx)
    with data_parallel(ctx.cfg.device) as ranks:
        return train(ctx, ranks)


def n_train_steps(p: dict[str, Any], index: ShardIndex) -> int:
    total_rows = p["train_tokens"] or index.total_rows
    if total_rows < p["batch_size"]:
        raise ValueError(f"train_tokens ({total_rows}) is smaller than batch_size ({p['batch_size']}); cache more tokens")
    return total_rows // p["batch_size"]


def dead_after_tokens(p: dict[str, Any]) -> int:
    """The spec's dead_after_tokens; unset (trainer sae_lens), sae-lens's dead_feature_window of passes."""
    if "dead_after_tokens" in p:
        return p["dead_after_tokens"]
    from pipeline.training.reference import default_dead_window_steps

    return default_dead_window_steps() * p["batch_size"]


def fit_baseline(ctx: StageContext) -> dict[str, Any]:
    """`pca` (fitted on the rows an SAE of this spec would train on, in their order) or `random`."""
    p = ctx.stage.params
    acts_dir = ctx.input_dir("activations")
    index = ShardIndex.load(acts_dir)
    if p["trainer"] == "pca":
        shards = ShardStream(acts_dir / SHARD_DIR, index, seed=p["seed"], window=p["shuffle_shards"])
        batches = itertools.islice(shards.batches(0, p["batch_size"], window_as=as_tensor), n_train_steps(p, index))
        weights, rows = pca_weights(batches, index.d_in, p["d_sae"])
    else:
        weights, rows = random_weights(index.d_in, p["d_sae"], p["seed"]), 0
    save_topk(weights, p["k"], ctx.out / SAE_DIR, sae_metadata(ctx) | {"saepipe_baseline": p["trainer"]})
    return {"trainer": p["trainer"], "steps": 0, "tokens": rows, "differs_from_reference": None, "device": "cpu"}


def train(ctx: StageContext, ranks: Ranks) -> dict[str, Any]:
    p = ctx.stage.params
    rank, world, device = ranks
    acts_dir = ctx.input_dir("activations")
    index = ShardIndex.load(acts_dir)
    batch = p["batch_size"]
    if batch % world:
        raise ValueError(f"batch_size {batch} does not split evenly over {world} data-parallel ranks")
    rows = slice(rank * batch // world, (rank + 1) * batch // world)  # this rank's part of each global batch
    n_steps = n_train_steps(p, index)
    dead_after = dead_after_tokens(p)
    reporter = ctx.reporter if rank == 0 else Reporter(enabled=False)

    ckpt_dir = ctx.work / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    ckpt = latest_checkpoint(ckpt_dir)
    torch.manual_seed(p["seed"])
    recipe = RecipeSpec.model_validate(p["recipe"])
    bf16 = p["autocast"] == "bf16"
    if p["trainer"] == "sae_lens":
        ops = "sae_lens"
    elif ckpt is not None:
        ops = read_info(ckpt)["ops"]  # `auto` may choose differently today; the run keeps its choice
    else:
        ops = resolve_ops(p["ops"], device, recipe, index.d_in, p["d_sae"], p["k"], batch // world, bf16)
    trainable = build_trainable(p["trainer"], recipe, index.d_in, p["d_sae"], p["k"], p["seed"], device, ops, p.get("sae_lens_config"))
    sae = trainable.module
    optimizer = torch.optim.Adam(sae.parameters(), lr=p["lr"], betas=ADAM_BETAS)
    since_fired = torch.zeros(p["d_sae"], dtype=torch.long, device=device)
    fired_count = torch.zeros(p["d_sae"], dtype=torch.long, device=device)
    log = MetricLog([])
    step = 0
    if ckpt is not None:
        extra, info = load_checkpoint(ckpt, sae, optimizer, device)
        since_fired, fired_count = extra["since_fired"], extra["fired_count"]
        step, log = info["step"], MetricLog(info["log"])
        reporter.log(f"train {ctx.stage.label}: resuming from {ckpt.name} (step {step}/{n_steps})")
    forward = synced_step(trainable, device)  # gradients averaged over ranks (a no-op in one process)

    shards = ShardStream(acts_dir / SHARD_DIR, index, seed=p["seed"], window=p["shuffle_shards"])
    stream = shards.batches(step * batch, batch, window_as=partial(as_tensor, pin=device.type == "cuda"))  # read ahead
    started = time.perf_counter()
    sae.train()

    saved_step = step if ckpt is not None else -1

    def checkpoint() -> None:
        """Save this step's state, unless a checkpoint already holds it (SIGTERM just after one, or at resume)."""
        nonlocal saved_step
        log.flush()
        if rank == 0 and step != saved_step:
            extra = {"since_fired": since_fired, "fired_count": fired_count}
            save_checkpoint(ckpt_dir, step, sae, optimizer, extra, {"log": log.entries, "ops": ops})
        saved_step = step

    shown = step
    bar_cm = reporter.bar(f"training {ctx.stage.label}", total=n_steps * batch, unit="tok", completed=step * batch)
    with bar_cm as bar, stop_on_sigterm() as stop:
        while step < n_steps:
            if (world == 1 or step % LOG_EVERY == 0) and any_rank(stop.is_set(), device):  # ranks stop together
                checkpoint()
                raise Preempted(f"{ctx.stage.label}: SIGTERM at step {step}; checkpoint saved, re-run to resume")
            x = next(stream)[rows].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = forward(x, step, n_steps, since_fired > dead_after)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), GRAD_CLIP)
            optimizer.step()
            trainable.after_optimizer_step()
            with torch.no_grad():
                (fired,) = settle(out.fired)  # with the recipes' deferred statistics: one collective
                since_fired += batch
                since_fired.masked_fill_(fired > 0, 0)
                fired_count += fired
            step += 1
            # every trainer's curve gets L0 (unless it logs its own) and the dead-latent count (the report plots both)
            log.append({"l0": fired.sum() / batch, **out.stats, "dead_latents": (since_fired > dead_after).sum()})
            if step % LOG_EVERY == 0 or step == n_steps:
                log.flush()
                bar.advance((step - shown) * batch, extra=f"mse {log.last['mse']:.3g}")
                shown = step
            if step % p["checkpoint_every"] == 0 and step < n_steps:
                checkpoint()

    seconds = time.perf_counter() - started  # the loop alone: saving below imports sae-lens (seconds, not a rate)
    dead = int((since_fired > dead_after).sum())
    if rank == 0:
        trainable.save(ctx.out / SAE_DIR, sae_metadata(ctx) | {"num_dead_features": dead})
        train_log = {"steps": log.entries, "log_every": 1, "fired_count": fired_count.tolist()}
        (ctx.out / LOG_FILE).write_text(json.dumps(train_log))
    barrier()
    window = dead_after // batch if dead_after % batch == 0 else dead_after / batch
    return {
        "trainer": p["trainer"],
        "differs_from_reference": trainable.differences(p["lr"], window, bf16),
        "steps": n_steps,
        "tokens": n_steps * batch,
        "final_mse": log.last["mse"],
        "dead_latents": dead,
        "ops": ops,
        "autocast": p["autocast"],
        "device": device.type,
        "data_parallel_ranks": world,
        "seconds_this_attempt": round(seconds, 2),
    }
