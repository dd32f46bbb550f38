"""Stage `train`: one SAE trained from the cached shards, streaming, checkpointed, resumable.

The SAE is either our recipe trainer (``trainer: saepipe``, every recipe piece, sparse decoder) or
sae-lens's own BatchTopK SAE (``trainer: sae_lens``, stepped as sae-lens's trainer steps it: grad-norm
clip 1.0, Adam). The loop checkpoints everything a bit-for-bit resume needs. Either way the result is
in the sae-lens format, so ``sae_lens.SAE.load_from_disk`` opens it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from pipeline.data.shards import SHARD_DIR, ShardIndex
from pipeline.recipes.spec import RecipeSpec
from pipeline.stages.context import StageContext
from pipeline.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pipeline.training.preemption import Preempted, stop_on_sigterm
from pipeline.training.stream import ShardStream
from pipeline.training.trainables import build_trainable

SAE_DIR = "sae"
LOG_FILE = "train_log.json"


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
    p = ctx.stage.params
    acts_dir = ctx.input_dir("activations")
    index = ShardIndex.load(acts_dir)
    batch = p["batch_size"]
    total_rows = p["train_tokens"] or index.total_rows
    n_steps = total_rows // batch
    if n_steps == 0:
        raise ValueError(f"train_tokens ({total_rows}) is smaller than batch_size ({batch}); cache more tokens")

    torch.manual_seed(p["seed"])
    recipe = RecipeSpec.model_validate(p["recipe"])
    trainable = build_trainable(p["trainer"], recipe, index.d_in, p["d_sae"], p["k"], p["seed"])
    sae = trainable.module
    optimizer = torch.optim.Adam(sae.parameters(), lr=p["lr"], betas=(0.9, 0.999))
    since_fired = torch.zeros(p["d_sae"], dtype=torch.long)
    fired_count = torch.zeros(p["d_sae"], dtype=torch.long)
    log: list[dict[str, float]] = []
    step = 0

    ckpt_dir = ctx.work / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    if (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        extra, info = load_checkpoint(ckpt, sae, optimizer)
        since_fired, fired_count = extra["since_fired"], extra["fired_count"]
        step, log = info["step"], info["log"]
        ctx.reporter.log(f"train {ctx.stage.label}: resuming from {ckpt.name} (step {step}/{n_steps})")

    stream = ShardStream(acts_dir / SHARD_DIR, index, seed=p["seed"], window=p["shuffle_shards"]).batches(step * batch, batch)
    started = time.perf_counter()
    sae.train()

    def checkpoint() -> None:
        extra = {"since_fired": since_fired, "fired_count": fired_count}
        save_checkpoint(ckpt_dir, step, sae, optimizer, extra, {"log": log})

    bar_cm = ctx.reporter.bar(f"training {ctx.stage.label}", total=n_steps * batch, unit="tok", completed=step * batch)
    with bar_cm as bar, stop_on_sigterm() as stop:
        while step < n_steps:
            if stop.is_set():
                checkpoint()
                raise Preempted(f"{ctx.stage.label}: SIGTERM at step {step}; checkpoint saved, re-run to resume")
            x = torch.from_numpy(next(stream)).float()
            out = trainable.step(x, step, n_steps, since_fired > p["dead_after_tokens"])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            optimizer.step()
            trainable.after_optimizer_step()
            with torch.no_grad():
                since_fired += batch
                since_fired[out.fired > 0] = 0
                fired_count += out.fired.long()
            step += 1
            log.append(out.metrics)
            bar.advance(batch, extra=f"mse {out.metrics['mse']:.3g}")
            if step % p["checkpoint_every"] == 0 and step < n_steps:
                checkpoint()

    dead = int((since_fired > p["dead_after_tokens"]).sum())
    trainable.save(ctx.out / SAE_DIR, sae_metadata(ctx) | {"num_dead_features": dead})
    (ctx.out / LOG_FILE).write_text(json.dumps({"steps": log, "fired_count": fired_count.tolist()}))
    return {
        "steps": n_steps,
        "tokens": n_steps * batch,
        "final_mse": log[-1]["mse"],
        "dead_latents": dead,
        "seconds_this_attempt": round(time.perf_counter() - started, 2),
    }
