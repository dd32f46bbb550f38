"""One prepared GPU check (< 10 min on an H200; `--skip` a part to shorten it): training speed at the Gemma shape, a synthetic run on
CUDA against the same run on the CPU, a random TransformerLens model end to end on CUDA, and a
checkpoint written on CUDA read back on the CPU. Writes `gpu_check.json` into --out (default $OUT)
and prints a summary. Every part records its error and the others go on, so a missing peer package
(sae-lens, sparsify, transformer-lens) costs only its own row.

    python bench/gpu/run_gpu_check.py --wheels .whl --out $OUT     # on the GPU machine
    python bench/gpu/run_gpu_check.py --smoke --out /tmp/gpucheck  # tiny shapes, CPU (the test)

Parts
  1. train_step: forward + backward + Adam at d_in 2304, d_sae 16384, k 64, batch 4096, fp32 and bf16
     autocast, for saepipe sparse ops, saepipe dense ops, sae-lens BatchTopK, sparsify TopK. Samples/s
     and the fraction of a measured bf16 matmul rate achieved, counting the 6 B*d_in*d_sae matmul
     FLOPs a dense step needs (so a sparse step can exceed 1: it skips most of them). Also the ops
     that `ops: auto` picks there (pipeline/training/ops_choice.py's probe).
  2. synthetic: `pipeline run` of a small synthetic config with `device: cuda`, then `device: cpu`
     (`synthetic.sampling_device: cpu`: samples drawn on the CPU both times, so both train on the
     same data): F1 and MCC must agree within SYNTH_TOL (the two differ only by fp32 summation order across devices).
  3. transformer_lens: a randomly initialised HookedTransformer on CUDA -> residual activations
     written as the pipeline's shards -> the pipeline's `train` stage on CUDA -> core-style metrics
     (FVU, CE loss with the SAE spliced in). Not the `eval_core` stage itself: the pipeline loads
     models by name, and a random model has none.
  4. checkpoint: saved from a CUDA module, loaded onto the CPU, equal.
  5. core_split: issue #12's per-SAE gain for `eval_core` at SAEBench's gemma setting, on a randomly
     initialised model of gemma-2-2b's shape (26 layers, d_model 2304, vocabulary 256,000, bf16; the
     hook at layer 12, as `gemma2b_l12.yaml`). It times the model work that differs per SAE:
     - sae-bench's (`run_evals`): per CE batch, a clean, an SAE-spliced and a zero-ablated full pass;
       per sparsity batch, a pass to the hook;
     - ours (`evals/core`): per CE batch, the tail from the cached residual with the SAE spliced in, and
       the clean tail again for KL's clean side (`clean_side`; at this scale the clean logits, 210 GB,
       are recomputed rather than stored), with core's own `Tail`, `Reused` and `kl_of_log_probs`.
     CE and sparsity batches keep SAEBench's 200 : 2,000 proportion (fewer of each). The SAE
     is a random TopK of width 16,384, identical on both sides. The pass counts predict 5.6×
     (docs/BENCHMARKS.md). Not the `eval_core` stage itself: that loads its model by name.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch

SYNTH_TOL = 0.03
"""|F1_cuda - F1_cpu| and |MCC_cuda - MCC_cpu| at most this (same data; fp32 reorderings only)."""
GEMMA = {"d_in": 2304, "d_sae": 16384, "k": 64, "batch": 4096}
SMOKE = {"d_in": 64, "d_sae": 256, "k": 8, "batch": 128}


def install_wheels(folder: str) -> str:
    """pip-install every wheel in `folder` (no index, no deps: the list is already closed)."""
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    if not wheels:
        return f"no wheels in {folder}"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels],
                          capture_output=True, text=True, check=False)
    return f"installed {len(wheels)} wheels" if proc.returncode == 0 else f"pip failed: {proc.stderr[-2000:]}"


def guarded(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    """Run one part; its result or its error (one line + traceback) goes into results[name]."""
    started = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 (a part failing must not cost the others)
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    print(f"[{name}] {time.perf_counter() - started:.1f}s", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - started) / steps


# -- 1. train step ------------------------------------------------------------------------------


def saepipe_step(shape: dict[str, int], device: torch.device, dense: bool, bf16: bool) -> Callable[[], None]:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.recipes.coder import build_coder

    coder = build_coder(RecipeSpec(), shape["d_in"], shape["d_sae"], shape["k"], dense=dense).to(device)
    opt = torch.optim.Adam(coder.parameters(), lr=1e-4)
    x = torch.randn(shape["batch"], shape["d_in"], device=device)
    dead = torch.zeros(shape["d_sae"], dtype=torch.bool, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = coder.training_loss(x, 0, 1000, dead).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        coder.normalize_decoder()

    return step


def sae_lens_step(shape: dict[str, int], device: torch.device, bf16: bool) -> Callable[[], None]:
    from sae_lens.saes.batchtopk_sae import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainStepInput

    cfg = BatchTopKTrainingSAEConfig(d_in=shape["d_in"], d_sae=shape["d_sae"], k=shape["k"], device=str(device))
    sae = BatchTopKTrainingSAE(cfg).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(shape["batch"], shape["d_in"], device=device)
    dead = torch.zeros(shape["d_sae"], dtype=torch.bool, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                           n_training_steps=0, is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def sparsify_step(shape: dict[str, int], device: torch.device, bf16: bool) -> Callable[[], None]:
    import sparsify  # EleutherAI's sparsify (TopK, fused sparse decoder)

    coder_cls = getattr(sparsify, "SparseCoder", None) or sparsify.Sae  # renamed in sparsify 1.x
    sae = coder_cls(shape["d_in"], sparsify.SaeConfig(num_latents=shape["d_sae"], k=shape["k"]), device=device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(shape["batch"], shape["d_in"], device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = sae(x)
        opt.zero_grad(set_to_none=True)
        out.fvu.backward()
        opt.step()

    return step


def matmul_rate(shape: dict[str, int], device: torch.device, warmup: int, steps: int) -> float:
    """Achieved FLOP/s of (batch, d_in) @ (d_in, d_sae) in bf16 (fp32 on the CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(shape["batch"], shape["d_in"], device=device, dtype=dtype)
    b = torch.randn(shape["d_in"], shape["d_sae"], device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, warmup, steps)
    return 2 * shape["batch"] * shape["d_in"] * shape["d_sae"] / seconds


def train_step_part(shape: dict[str, int], device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    rate = matmul_rate(shape, device, warmup, steps * 3)
    dense_flops = 6 * shape["batch"] * shape["d_in"] * shape["d_sae"]
    makers: dict[str, Callable[[bool], Callable[[], None]]] = {
        "saepipe_sparse": lambda bf16: saepipe_step(shape, device, False, bf16),
        "saepipe_dense": lambda bf16: saepipe_step(shape, device, True, bf16),
        "sae_lens_batchtopk": lambda bf16: sae_lens_step(shape, device, bf16),
        "sparsify_topk": lambda bf16: sparsify_step(shape, device, bf16),
    }
    rows: dict[str, Any] = {}
    for name, make in makers.items():
        for precision in ("fp32", "bf16"):
            label = f"{name}/{precision}"
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = timed(make(precision == "bf16"), device, warmup, steps)
                rows[label] = {
                    "seconds_per_step": seconds,
                    "samples_per_s": shape["batch"] / seconds,
                    "fraction_of_bf16_matmul_rate": dense_flops / seconds / rate,
                    "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
                }
            except Exception as exc:  # noqa: BLE001 (a missing peer package costs its row only)
                rows[label] = {"error": f"{type(exc).__name__}: {exc}"}
    from pipeline.config.recipe import RecipeSpec
    from pipeline.training.ops_choice import probe_ops

    probe = probe_ops(device, RecipeSpec(), shape["d_in"], shape["d_sae"], shape["k"], shape["batch"])
    return {"shape": shape, "matmul_flops_per_s": rate, "impls": rows,
            "ops_auto_probe_seconds": probe, "ops_auto_picks": min(probe, key=probe.get)}


# -- 2. synthetic, cuda vs cpu ------------------------------------------------------------------


def synth_config(name: str, device: str, smoke: bool) -> dict[str, Any]:
    features, dim, tokens = (128, 16, 20_480) if smoke else (1024, 64, 1_024_000)
    return {
        "name": name,
        "device": device,
        "synthetic": {"num_features": features, "hidden_dim": dim, "hierarchy": None, "correlation": None,
                      "orthogonalization": {"steps": 20}, "eval_samples": 4000 if smoke else 20_000,
                      "probe_samples": 4000 if smoke else 20_000, "seed": 42, "sampling_device": "cpu"},
        "activations": {"n_tokens": tokens, "contexts_per_shard": 4, "dtype": "float32"},
        "saes": [{"name": "btk", "recipe": {"activation": "batchtopk"}, "d_sae": features // 2, "k": 8,
                  "lr": 1e-3, "batch_size": 1024, "checkpoint_every": 200, "dead_after_tokens": 100_000}],
    }


def pipeline_run(config: dict[str, Any], workdir: Path) -> dict[str, dict[str, float]]:
    """`pipeline run` in a subprocess (as a user runs it); the synthetic eval's metrics per SAE variant."""
    import yaml

    path = workdir / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    artifacts = workdir / f"artifacts-{config['name']}"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path), "--artifacts", str(artifacts), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=420, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline run exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    found = {}
    for f in sorted(artifacts.glob("eval_synthetic/*/synthetic.json")):
        result = json.loads(f.read_text())
        found[f"{result['sae_id']}/{result['variant']}"] = result["metrics"]
    return found


def synthetic_part(device: torch.device, smoke: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {d: pipeline_run(synth_config(f"gpucheck_{d}", d, smoke), Path(tmp)) for d in (device.type, "cpu")}
    gpu, cpu = runs[device.type], runs["cpu"]
    gaps = {v: {m: abs(gpu[v][m] - cpu[v][m]) for m in ("f1", "mcc")} for v in cpu}
    ok = bool(cpu) and gpu.keys() == cpu.keys() and all(g <= SYNTH_TOL for v in gaps.values() for g in v.values())
    return {"tolerance": SYNTH_TOL, "ok": ok, "gaps": gaps, "runs": runs}


# -- 3. random TransformerLens model ------------------------------------------------------------


def transformer_lens_part(device: torch.device, smoke: bool) -> dict[str, Any]:
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as exc:
        return {"skipped": f"transformer_lens not importable ({exc})"}
    import numpy as np

    from pipeline.artifacts import ArtifactStore
    from pipeline.data.shards import SHARD_DIR, ShardIndex, write_shard
    from pipeline.executors.stage_runner import execute
    from pipeline.loading import parse_config
    from pipeline.plan import build_plan
    from pipeline.progress import Reporter
    from pipeline.recipes.saving import load_coder

    d_model, ctx_len, n_ctx = (64, 32, 64) if smoke else (512, 128, 1024)
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=d_model, d_head=32, n_heads=d_model // 32,
                                                      n_ctx=ctx_len, d_vocab=2000, act_fn="gelu", device=str(device)))
    hook = "blocks.1.hook_resid_post"
    tokens = torch.randint(0, 2000, (n_ctx, ctx_len), device=device)
    config = {"name": "tl_random", "device": str(device),
              "model": {"source": "hub", "name": "random-tl", "hook": hook},
              "data": {"source": "hf", "name": "none", "context_size": ctx_len},
              "activations": {"n_tokens": n_ctx * ctx_len, "contexts_per_shard": 64},
              "saes": [{"name": "btk", "d_sae": 4 * d_model, "k": 16, "batch_size": 512, "lr": 1e-3, "checkpoint_every": 100}],
              "evals": {"core": {"enabled": False}}}
    cfg = parse_config(config)
    acts_stage, train_stage = [next(s for s in build_plan(cfg) if s.kind == k) for k in ("activations", "train")]
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp))
        staging = store.staging_dir("activations", acts_stage.key)
        (staging / SHARD_DIR).mkdir()
        infos = []
        with torch.no_grad():
            for i, chunk in enumerate(tokens.split(64)):
                _, cache = model.run_with_cache(chunk, names_filter=hook)
                acts = cache[hook].reshape(-1, d_model).float().cpu().numpy()
                seq = np.repeat(np.arange(i * 64, i * 64 + len(chunk)), ctx_len)
                infos.append(write_shard(staging / SHARD_DIR, i, acts, chunk.reshape(-1).cpu().numpy(), seq, np.tile(np.arange(ctx_len), len(chunk))))
        ShardIndex(d_model, "float32", hook, ctx_len, ctx_len, infos).save(staging)
        store.commit("activations", acts_stage.key, staging, {"label": acts_stage.label, "params": acts_stage.params, "summary": {}})
        started = time.perf_counter()
        folder = execute(cfg, store, train_stage, Reporter(enabled=False))
        train_seconds = time.perf_counter() - started
        summary = store.manifest("train", train_stage.key)["summary"]
        coder = load_coder(folder / "sae").to(device)
    held_out = torch.randint(0, 2000, (16, ctx_len), device=device)
    with torch.no_grad():
        clean_loss, cache = model.run_with_cache(held_out, return_type="loss", names_filter=hook)
        x = cache[hook].reshape(-1, d_model)
        x_hat = coder(x)
        fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
        spliced = model.run_with_hooks(held_out, return_type="loss",
                                       fwd_hooks=[(hook, lambda act, hook: coder(act.reshape(-1, d_model)).reshape(act.shape))])
    return {"train_summary": summary, "train_seconds": train_seconds, "fvu": fvu,
            "ce_clean": float(clean_loss), "ce_with_sae": float(spliced),
            "ok": bool(summary["device"] == device.type and np.isfinite(fvu))}


# -- 4. checkpoint across devices ---------------------------------------------------------------


def checkpoint_part(device: torch.device) -> dict[str, Any]:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.training.trainables import build_trainable

    def trainable(on: torch.device, seed: int) -> tuple[Any, torch.optim.Optimizer]:
        t = build_trainable("saepipe", RecipeSpec(), 32, 128, 8, seed, on, "sparse")
        return t, torch.optim.Adam(t.module.parameters(), lr=1e-3)

    src, opt = trainable(device, 0)
    src.step(torch.randn(64, 32, device=device), 0, 10, torch.zeros(128, dtype=torch.bool, device=device)).loss.backward()
    opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp), 1, src.module, opt, {"since_fired": torch.zeros(128, device=device)}, {"log": [], "ops": "sparse"})
        dst, dst_opt = trainable(torch.device("cpu"), 1)
        extra, _ = load_checkpoint(path, dst.module, dst_opt, torch.device("cpu"))
    same = all(torch.equal(v.cpu(), dst.module.state_dict()[k]) for k, v in src.module.state_dict().items())
    return {"saved_on": str(device), "loaded_on": "cpu", "equal": same, "extra_device": str(extra["since_fired"].device)}


# -- 5. eval_core's split at the gemma shape ------------------------------------------------------

GEMMA_2_2B = {"n_layers": 26, "d_model": 2304, "d_head": 256, "n_heads": 8, "n_key_value_heads": 4, "d_mlp": 9216,
              "d_vocab": 256_000, "act_fn": "gelu_pytorch_tanh", "normalization_type": "RMS",
              "positional_embedding_type": "rotary", "gated_mlp": True, "use_normalization_before_and_after": True,
              "attn_scores_soft_cap": 50.0, "output_logits_soft_cap": 30.0, "final_rms": True}
"""gemma-2-2b's shape (its local/global attention alternation left out: same matmuls)."""
CORE_GEMMA = {"layer": 12, "ce_batches": 4, "sparsity_batches": 40, "batch": 16, "ctx": 128, "d_sae": 16_384, "k": 64}
CORE_SMOKE = {"layer": 1, "ce_batches": 2, "sparsity_batches": 4, "batch": 2, "ctx": 16, "d_sae": 256, "k": 8}


def core_split_part(device: torch.device, smoke: bool) -> dict[str, Any]:
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as exc:
        return {"skipped": f"transformer_lens not importable ({exc})"}
    from evals.core.measures import clean_side, kl_of_log_probs
    from evals.core.tail import Tail
    from pipeline.data.reused import Reused

    c = CORE_SMOKE if smoke else CORE_GEMMA
    shape = {**GEMMA_2_2B, "n_layers": 3, "d_model": 64, "d_head": 16, "n_heads": 4, "n_key_value_heads": 2, "d_mlp": 128,
             "d_vocab": 1000} if smoke else GEMMA_2_2B  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.float32 if smoke else torch.bfloat16
    started = time.perf_counter()
    model = HookedTransformer(HookedTransformerConfig(**shape, n_ctx=c["ctx"], dtype=dtype, device=str(device))).eval()
    build_s = time.perf_counter() - started
    hook = f"blocks.{c['layer']}.hook_resid_post"
    tail = Tail.of(hook, model.cfg.n_layers)
    d = model.cfg.d_model
    w_enc = torch.randn(d, c["d_sae"], device=device, dtype=dtype) / d**0.5
    w_dec = torch.randn(c["d_sae"], d, device=device, dtype=dtype) / c["d_sae"] ** 0.5

    def sae(acts: torch.Tensor) -> torch.Tensor:
        pre = acts @ w_enc
        top = pre.topk(c["k"], dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu()) @ w_dec

    n = c["ce_batches"] + c["sparsity_batches"]
    batches = torch.randint(0, model.cfg.d_vocab, (n, c["batch"], c["ctx"]), device=device)
    with torch.no_grad():  # prep, once per run: the residual each CE batch's tail starts from
        starts = [model.run_with_cache(b, names_filter=[tail.start_hook], stop_at_layer=tail.start_layer + 1)[1][tail.start_hook]
                  for b in batches[: c["ce_batches"]]]  # fmt: skip

    def saebench_per_sae() -> None:
        for i, b in enumerate(batches):
            if i < c["ce_batches"]:
                model(b, return_type="both", loss_per_token=True)
                model.run_with_hooks(b, return_type="both", loss_per_token=True, fwd_hooks=[(hook, lambda a, hook: sae(a))])
                model.run_with_hooks(b, return_type="both", loss_per_token=True, fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))])
            else:
                model.run_with_cache(b, names_filter=[hook], stop_at_layer=c["layer"] + 1)

    def ours_per_sae() -> None:
        reused = Reused()
        for b, start in zip(batches[: c["ce_batches"]], starts, strict=True):
            log_q, _ = tail.run(model, start, b, sae, reused)
            probs, plogp = clean_side(tail.logits(model, start, b, None, reused)[0])  # as core's downstream reruns it
            kl_of_log_probs(probs, plogp, log_q, overwrite=True)

    with torch.no_grad():
        times = {name: timed(fn, device, 1, 1 if smoke else 3) for name, fn in (("saebench", saebench_per_sae), ("ours", ours_per_sae))}
        # both sides' numbers on the first batch: CE with the SAE, and KL(clean || spliced) in sae-bench's form
        b = batches[0]
        clean = model(b)
        spliced, ce_full = model.run_with_hooks(b, return_type="both", loss_per_token=True, fwd_hooks=[(hook, lambda a, hook: sae(a))])
        log_q, ce_tail = tail.run(model, starts[0], b, sae)
        p_clean = clean.float().softmax(-1)
        kl_full = (p_clean * (clean.float().log_softmax(-1) - spliced.float().log_softmax(-1))).sum(-1)
        kl_tail = kl_of_log_probs(*clean_side(tail.logits(model, starts[0], b)[0].float()), log_q.float())
        agree = {"ce_max_abs_diff": float((ce_full.float() - ce_tail.float()).abs().max()), "ce_mean": float(ce_full.float().mean()),
                 "kl_max_abs_diff": float((kl_full - kl_tail).abs().max()), "kl_mean": float(kl_full.mean())}  # fmt: skip
    return {"shape": "smoke" if smoke else "gemma-2-2b (random weights)", "settings": c, "model_build_s": round(build_s, 1),
            "per_sae_s": {k: round(v, 4) for k, v in times.items()}, "speedup": round(times["saebench"] / times["ours"], 2),
            "expected_from_pass_counts": 5.6, "agree": agree}  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", str(REPO / "bench" / "results" / "gpu")))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (tests the script, measures nothing)")
    parser.add_argument("--wheels", help="a folder of wheels to pip-install first (make gpu-wheels)")
    parser.add_argument("--skip", action="append", default=[], help="part to skip (train_step, synthetic, transformer_lens, checkpoint, core_split)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": args.smoke}
    if args.wheels:
        results["wheels"] = install_wheels(args.wheels)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    results["machine"] = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                          "cpu_threads": torch.get_num_threads()}
    shape, warmup, steps = (SMOKE, 1, 2) if args.smoke else (GEMMA, 3, 10)
    parts: dict[str, Callable[[], Any]] = {
        "checkpoint": lambda: checkpoint_part(device),
        "train_step": lambda: train_step_part(shape, device, warmup, steps),
        "synthetic": lambda: synthetic_part(device, args.smoke),
        "transformer_lens": lambda: transformer_lens_part(device, args.smoke),
        "core_split": lambda: core_split_part(device, args.smoke),
    }
    for name, fn in parts.items():
        if name not in args.skip:
            guarded(results, name, fn)
            (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))  # partial results survive a timeout
    print_summary(results)
    return 0


def print_summary(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}")
    step = results.get("train_step", {})
    if "impls" in step:
        print(f"train step at {step['shape']}: matmul {step['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s; auto picks {step['ops_auto_picks']}")
        for label, row in step["impls"].items():
            if "error" in row:
                print(f"  {label:28s} {row['error'][:100]}")
            else:
                print(f"  {label:28s} {row['samples_per_s']:12,.0f} samples/s  {row['fraction_of_bf16_matmul_rate']:.2f} of matmul rate")
    for name in ("synthetic", "transformer_lens", "checkpoint", "core_split"):
        part = results.get(name, {})
        brief = {k: v for k, v in part.items() if k in ("ok", "gaps", "error", "skipped", "fvu", "ce_clean", "ce_with_sae", "equal",
                                                         "per_sae_s", "speedup", "agree")}  # fmt: skip
        print(f"{name}: {json.dumps(brief, default=str)[:400]}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
