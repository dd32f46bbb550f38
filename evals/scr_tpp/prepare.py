"""SCR's and TPP's SAE-independent half, shared by both: the model's activations on every prompt, the
probes on them and the test sets each probe is scored on (see README.md)."""

from __future__ import annotations

import time
from typing import Any

import torch

from evals.contract import EvalEnv, TensorSink
from evals.scr_tpp.activations import cache_prompts
from evals.scr_tpp.config import ScrTppParams
from evals.scr_tpp.data import build_runs, data_source
from evals.scr_tpp.probes import RowIds, probe_run, unique_rows


def prepare(env: EvalEnv, params: ScrTppParams, sink: TensorSink) -> dict[str, Any]:
    """Model activations on every SCR and TPP prompt, the probes on them and their test sets (SAE-free)."""
    started = time.perf_counter()
    runs = build_runs(params)  # data first: a missing dataset fails before the model loads
    model, tokenizer = env.model()
    texts: dict[str, list[str]] = {}
    ids: dict[tuple[str, str], RowIds] = {}  # by (run name, split)
    for kind in ("scr", "tpp"):
        kind_runs = [r for r in runs if r.kind == kind]
        for split in ("train", "test") if kind_runs else ():
            texts[f"{kind}_{split}"], split_ids = unique_rows([getattr(r, split) for r in kind_runs])
            ids.update({(r.name, split): i for r, i in zip(kind_runs, split_ids)})
    pooled: dict[str, torch.Tensor] = {}
    total = sum(len(t) for t in texts.values())
    with env.reporter.bar("scr/tpp prep: model activations", total=total, unit="prompt") as bar:
        for prefix, prompts in texts.items():
            pooled[prefix] = cache_prompts(prompts, prefix, model, tokenizer, env, params, sink, bar)
    run_meta = []
    with env.reporter.bar("scr/tpp prep: probes", total=len(runs), unit="run") as bar:
        for i, run in enumerate(runs):
            with torch.random.fork_rng(devices=[]):  # seeded inside; leave the caller's RNG alone
                probes, clean, sets = probe_run(
                    run, ids[run.name, "train"], ids[run.name, "test"], pooled[f"{run.kind}_train"],
                    pooled[f"{run.kind}_test"], params,
                )  # fmt: skip
            rid = f"{run.kind}{sum(r.kind == run.kind for r in runs[:i])}"
            sink.put(f"{rid}_probe_w", torch.cat([probes[k].net.weight.detach() for k in run.chosen]))
            sink.put(f"{rid}_probe_b", torch.cat([probes[k].net.bias.detach() for k in run.chosen]))
            sink.put(f"{rid}_rows", torch.cat(sets.rows))
            sink.put(f"{rid}_labels", torch.cat(sets.labels))
            run_meta.append({
                "id": rid, "kind": run.kind, "dataset": run.dataset, "name": run.name, "chosen": run.chosen,
                "column1_vals": list(run.column1_vals) if run.column1_vals else None, "clean_accuracies": clean,
                "sets": sets.spans,
                "n_prompts": {s: {c: len(v) for c, v in getattr(run, s).items()} for s in ("train", "test")},
            })  # fmt: skip
            own = ", ".join(f"{k} {v:.3f}" for k, v in clean.items() if " probe on " not in k)
            bar.advance(1, extra=f"{run.name}: {own}")
    return {
        "runs": run_meta,
        "n_unique_prompts": {k: len(v) for k, v in texts.items()},
        "context_length": params.context_length,
        "prepend_bos": env.prepend_bos,
        "hook": env.model_spec.hook,
        "model": env.model_spec.name,
        "data_source": data_source(params),
        "seconds": round(time.perf_counter() - started, 2),
    }
