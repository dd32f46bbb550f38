"""Stage `train`: one BatchTopK SAE (sae-lens's classes) trained from the cached shards.

The step mirrors sae-lens's trainer (training_forward_pass with the dead-latent mask, grad-norm clip 1.0,
Adam), but the data comes from our streaming shard reader and the loop checkpoints everything a
bit-for-bit resume needs. The result is saved with ``save_inference_model`` (BatchTopK becomes JumpReLU
with the learned threshold), so ``sae_lens.SAE.load_from_disk`` opens it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainStepInput

from pipeline.data.shards import SHARD_DIR, ShardIndex
from pipeline.stages.context import StageContext
from pipeline.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pipeline.training.preemption import Preempted, stop_on_sigterm
from pipeline.training.stream import ShardStream

SAE_DIR = "sae"
LOG_FILE = "train_log.json"


def build_sae(ctx: StageContext, d_in: int) -> BatchTopKTrainingSAE:
    p, cfg = ctx.stage.params, ctx.cfg
    metadata = SAEMetadata(
        model_name=cfg.model.name,
        hook_name=cfg.model.hook,
        context_size=cfg.data.context_size,
        prepend_bos=cfg.data.prepend_bos,
        dataset_path=f"{cfg.data.source}:{cfg.data.name}",
        exclude_special_tokens=bool(cfg.activations.skip_bos),
    )
    sae_cfg = BatchTopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=p["d_sae"],
        k=p["k"],
        aux_loss_coefficient=p["aux_loss_coefficient"],
        dtype="float32",
        device="cpu",
        metadata=metadata,
    )
    return BatchTopKTrainingSAE(sae_cfg)


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
    sae = build_sae(ctx, index.d_in)
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
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x,
                    coefficients={},
                    dead_neuron_mask=since_fired > p["dead_after_tokens"],
                    n_training_steps=step,
                    is_logging_step=False,
                )
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                fired = (out.feature_acts > 0).sum(0)
                since_fired += batch
                since_fired[fired > 0] = 0
                fired_count += fired.long()
            step += 1
            entry = {k: float(v.detach()) for k, v in out.losses.items()} | {"loss": float(out.loss.detach())}
            log.append(entry)
            bar.advance(batch, extra=f"mse {entry['mse_loss']:.3g}")
            if step % p["checkpoint_every"] == 0 and step < n_steps:
                checkpoint()

    sae.cfg.metadata.num_dead_features = int((since_fired > p["dead_after_tokens"]).sum())
    sae.save_inference_model(ctx.out / SAE_DIR)
    (ctx.out / LOG_FILE).write_text(json.dumps({"steps": log, "fired_count": fired_count.tolist()}))
    return {
        "steps": n_steps,
        "tokens": n_steps * batch,
        "final_mse": log[-1]["mse_loss"],
        "dead_latents": sae.cfg.metadata.num_dead_features,
        "seconds_this_attempt": round(time.perf_counter() - started, 2),
    }
