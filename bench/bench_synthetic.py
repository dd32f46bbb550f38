"""The synthetic path end to end: sae-lens's `SyntheticSAERunner` against our stages, in one run.

Both get the same synthetic model (configs/synth_small.yaml's, built once by our `synthetic_model`
stage and handed to the runner as `override_synthetic_model`), the same sample budget, one BatchTopK
SAE of the same width and k, batch 1024 and lr 3e-4 (the runner's default lr), on the CPU.

* sae-lens: `SyntheticSAERunner` with its defaults otherwise (fresh samples every step; final eval on
  `eval_samples` = 500k; wandb logging off). Sampling is timed inside its own data iterator (a subclass that only times
  `__next__`), training is the trainer's wall time less that, the eval is its final
  `eval_sae_on_synthetic_data` call.
* ours: `synthetic_activations` (sampling into shards) -> `train` -> `eval_synthetic` (plain, on the
  same 500k eval samples), each stage run as the pipeline runs it (`stage_runner.execute`). The probe
  ceiling (`eval_prep`, ours only) is timed and shown but left out of the comparable total.

Also the sampler's own rate at our draw size (`chunk_rows`) and the runner's (its batch), so the
effect of the draw size is on record. Repeats interleave the two sides. Writes
bench/results/synthetic.json.

Usage: nice -n 10 python bench/bench_synthetic.py [--samples 500000] [--eval-samples 500000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch

from pipeline.artifacts import ArtifactStore
from pipeline.executors.stage_runner import execute
from pipeline.loading import load_config, parse_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter

D_SAE, K, BATCH, LR = 1024, 25, 1024, 3e-4
"""Width and k of synth_small's SAEs; batch and lr are the runner's defaults (as is --eval-samples')."""
PROBE_SAMPLES = 1024
"""Our probe ceiling's samples (an input of `eval_synthetic`; ours only, not in the compared total)."""


def our_config(samples: int, eval_samples: int) -> dict[str, Any]:
    synthetic = load_config("synth_small")[0].synthetic.model_dump()
    return {
        "name": "bench_synthetic",
        "device": "cpu",
        "synthetic": {**synthetic, "eval_samples": eval_samples, "probe_samples": PROBE_SAMPLES},
        "activations": {"n_tokens": samples, "contexts_per_shard": 16, "dtype": "float32"},
        "saes": [{"name": "btk", "trainer": "saepipe", "recipe": {"activation": "batchtopk"}, "d_sae": D_SAE,
                  "k": K, "lr": LR, "batch_size": BATCH, "seeds": [0], "checkpoint_every": 1000}],
        "evals": {"synthetic": {"match_l0_samples": None}},  # fitted threshold only, as the runner's eval scores it
    }


def ours(root: Path, samples: int, eval_samples: int) -> tuple[dict[str, float], dict[str, float], Path]:
    """Seconds per stage kind of our chain, the synthetic eval's metrics, the model's folder."""
    cfg = parse_config(our_config(samples, eval_samples))
    store, quiet = ArtifactStore(root), Reporter(enabled=False)
    seconds: dict[str, float] = {}
    for stage in build_plan(cfg):
        if stage.kind == "report" or stage.label.endswith("+loo"):
            continue
        if stage.kind == "synthetic_model" and store.is_complete(stage.kind, stage.key):
            seconds[stage.kind] = 0.0  # built by an earlier repeat: the model is shared, as the runner's is
            continue
        started = time.perf_counter()
        execute(cfg, store, stage, quiet)
        seconds[stage.kind] = seconds.get(stage.kind, 0.0) + time.perf_counter() - started
    result = json.loads(next((root / "eval_synthetic").glob("[0-9a-f]*/synthetic.json")).read_text())
    model_dir = next((root / "synthetic_model").glob("*/model"))
    return seconds, result["metrics"], model_dir


def sae_lens_runner(model_dir: Path, samples: int, eval_samples: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of the runner's sampling, training and eval, and its final eval's metrics."""
    from sae_lens import BatchTopKTrainingSAEConfig, LoggingConfig
    from sae_lens.synthetic import SyntheticModel, eval_sae_on_synthetic_data
    from sae_lens.synthetic import synthetic_sae_runner as runner_module
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunner, SyntheticSAERunnerConfig

    sampling = [0.0]
    base = runner_module.SyntheticActivationIterator

    class TimedIterator(base):  # type: ignore[misc, valid-type]
        def __next__(self) -> torch.Tensor:
            started = time.perf_counter()
            batch = super().__next__()
            sampling[0] += time.perf_counter() - started
            return batch

    model = SyntheticModel.load_from_disk(str(model_dir), device="cpu")
    cfg = SyntheticSAERunnerConfig(
        synthetic_model=str(model_dir),
        sae=BatchTopKTrainingSAEConfig(d_in=model.cfg.hidden_dim, d_sae=D_SAE, k=K),
        training_samples=samples, batch_size=BATCH, lr=LR, eval_samples=eval_samples, device="cpu", run_final_eval=False,
        logger=LoggingConfig(log_to_wandb=False),  # offline; not a training setting
        output_path=None,  # its default writes ./output into the checkout
    )
    runner_module.SyntheticActivationIterator = TimedIterator
    try:
        runner = SyntheticSAERunner(cfg, override_synthetic_model=model)
        started = time.perf_counter()
        sae = runner.run().sae
        fit = time.perf_counter() - started
    finally:
        runner_module.SyntheticActivationIterator = base
    started = time.perf_counter()  # what run() does when run_final_eval is on, timed on its own
    final = eval_sae_on_synthetic_data(sae=sae, feature_dict=model.feature_dict, activations_generator=model.activation_generator,
                                       num_samples=cfg.eval_samples, batch_size=cfg.batch_size)
    evaluated = time.perf_counter() - started
    d = final.to_dict()
    metrics = {"f1": d["classification"]["f1_score"], "mcc": d["mcc"], "l0": d["sae_l0"], "dead_latents": d["dead_latents"]}
    return {"sampling": sampling[0], "training": fit - sampling[0], "eval": evaluated}, metrics


def draw_rates(model_dir: Path, n: int = 65_536) -> dict[str, float]:
    """Samples/s of the sampler drawing `chunk_rows` rows at a time (our stages) and 1024 (the runner's batch)."""
    from pipeline.synthetic.model import chunk_rows, load_model, sample_chunks

    model = load_model(model_dir.parent, "cpu")
    out = {}
    for rows in (chunk_rows(model), BATCH):
        started = time.perf_counter()
        for _ in sample_chunks(model, n, 0, step=rows):
            pass
        out[f"rows_per_draw={rows}"] = n / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=500_000)
    parser.add_argument("--eval-samples", type=int, default=500_000, help="the runner's default")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    load = {"before": os.getloadavg()}
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "sae_lens": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            seconds, metrics, model_dir = ours(Path(tmp) / "ours", args.samples, args.eval_samples)
            model_seconds = seconds.pop("synthetic_model")
            parts = {"sampling": seconds.pop("synthetic_activations"), "training": seconds.pop("train"),
                     "eval": seconds.pop("eval_synthetic")}
            runs["ours"].append({"parts": parts, "total": sum(parts.values()), "probe_ceiling": seconds.pop("eval_prep"),
                                 "model_build_not_counted": model_seconds, "metrics": metrics})
            parts, metrics = sae_lens_runner(model_dir, args.samples, args.eval_samples)
            runs["sae_lens"].append({"parts": parts, "total": sum(parts.values()), "metrics": metrics})
            print(json.dumps({k: v[-1] for k, v in runs.items()}, indent=1), flush=True)
        rates = draw_rates(model_dir)
    load["after"] = os.getloadavg()
    totals = {k: statistics.median(r["total"] for r in v) for k, v in runs.items()}
    result = {"samples": args.samples, "d_sae": D_SAE, "k": K, "batch": BATCH, "lr": LR, "eval_samples": args.eval_samples,
              "torch_threads": torch.get_num_threads(), "loadavg": load, "runs": runs, "draw_rates": rates,
              "median_total_seconds": totals, "ours_over_sae_lens_speed": totals["sae_lens"] / totals["ours"]}
    out = REPO / "bench" / "results" / "synthetic.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("median_total_seconds", "ours_over_sae_lens_speed", "draw_rates", "loadavg")}, indent=1))


if __name__ == "__main__":
    main()
