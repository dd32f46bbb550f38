"""Autointerp with the offline judge: server start time, judge tokens/s, the eval's wall time per SAE,
and the cache hit rate of a re-run (target 100%).

* server: ``LocalJudgeServer`` start (model load to the READY line), then a few chat completions of a
  SAEBench-sized explanation prompt, timed from the client: decode tokens/s (completion tokens / seconds)
  and prompt tokens/s.
* eval: the SAE given (``--sae``; its hook replaces the config's), the config's autointerp section, prepared
  on the config's held-out text; ``evaluate`` twice with a fresh judge cache: the first pays for every answer (its
  time includes starting the server), the second must be served wholly from the cache.

Usage: python bench/bench_autointerp.py --sae artifacts/train/<key>/sae [--config default] [--out bench/results/autointerp.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evals.autointerp.config import AutointerpConfig
from evals.autointerp.judge_server import MODEL_NAME, LocalJudgeServer
from evals.contract import EvalEnv, prepare_in_memory
from pipeline.loading import load_config


def bench_server(n_requests: int) -> dict[str, Any]:
    from openai import OpenAI

    prompt = [{"role": "system", "content": "We're studying neurons in a neural network. " * 20},
              {"role": "user", "content": "The activating documents are given below:\n\n" +
               "\n".join(f"{i}. the <<movie>> was great and the acting superb" for i in range(1, 11))}]  # fmt: skip
    with LocalJudgeServer() as server:
        client = OpenAI(base_url=server.base_url, api_key="local")
        runs = []
        for i in range(n_requests):
            started = time.perf_counter()
            r = client.chat.completions.create(model=MODEL_NAME, messages=prompt, max_tokens=32, temperature=0, seed=i)
            runs.append((time.perf_counter() - started, r.usage.prompt_tokens, r.usage.completion_tokens))
        start = server.start_seconds
    seconds = sum(t for t, _, _ in runs)
    return {"server_start_s": round(start, 2), "requests": n_requests, "prompt_tokens": runs[0][1],
            "completion_tokens_per_s": round(sum(c for _, _, c in runs) / seconds, 2),
            "seconds_per_request": round(seconds / n_requests, 2)}  # fmt: skip


def bench_eval(config: str, sae_path: str) -> dict[str, Any]:
    from sae_lens import SAE

    from evals.autointerp.evaluate import evaluate
    from evals.autointerp.prepare import prepare

    cfg, _ = load_config(config)
    params = AutointerpConfig.model_validate(cfg.evals.sections()["autointerp"].model_dump())
    sae = SAE.load_from_disk(sae_path)
    spec = cfg.model.model_copy(update={"hook": sae.cfg.metadata.hook_name})  # the config's model at the SAE's hook
    env = EvalEnv(model_spec=spec, prepend_bos=cfg.data.prepend_bos, data=cfg.data, label="bench", run_name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAEPIPE_JUDGE_CACHE"] = str(Path(tmp) / "judge")
        started = time.perf_counter()
        prepared = prepare_in_memory(prepare, env, params, Path(tmp) / "prep")
        prep_s = time.perf_counter() - started
        runs = []
        for _ in range(2):
            started = time.perf_counter()
            _, summary = evaluate(prepared, sae, env, params)
            runs.append((time.perf_counter() - started, summary))
    (first_s, first), (second_s, second) = runs
    asked = second["judge_requests"] + second["judge_cache_hits"]
    return {
        "config": config, "n_latents": params.n_latents, "latents_scored": first["latents"], "prep_s": round(prep_s, 1),
        "first_run_s": round(first_s, 1), "first_run_requests": first["judge_requests"],
        "rerun_s": round(second_s, 1), "rerun_requests": second["judge_requests"],
        "rerun_cache_hit_rate": second["judge_cache_hits"] / asked if asked else 1.0,
        "judge_tokens": first.get("judge_tokens"), "autointerp_score": first.get("autointerp_score"),
        "unparsable_frac": first.get("unparsable_frac"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True, help="an SAE folder (sae-lens format), e.g. artifacts/train/<key>/sae")
    parser.add_argument("--config", default="default")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "autointerp.json"))
    args = parser.parse_args()
    result = {"server": bench_server(args.requests), "eval": bench_eval(args.config, args.sae),
              "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
