"""Wall time of the eval suite for 1 and 4 SAEs, against sae-bench's own per-SAE runners, and the
peak memory of each eval stage.

* ours: ``pipeline run`` (a fresh process, as a user runs it) on a store where activations and the
  SAEs are already trained, so only eval stages and the report run. Once with 1 SAE, once with 4
  (four seeds of one spec). Model work on eval data is shared: prep stages run once for all SAEs.
* sae-bench: its per-SAE runners on the same model object, SAEs and prompts. sae-bench recomputes the
  model's activations on the eval data for every SAE (its ``run_eval_single_sae`` -> per dataset
  ``get_dataset_activations`` -> ``get_all_llm_activations``); only the hub download is replaced by the
  same prompts we use. Evals whose sae-bench runner cannot run here (hub-only) are timed on our side only.
* peak memory: each eval stage of the 1-SAE run as its own ``pipeline run-stage`` process (what a SLURM
  job runs), max RSS from ``wait4``.

* core per SAE: sae-bench's ``run_evals`` against our ``evaluate`` on the same prep (``--core-only``
  runs just this, on 1 SAE).

* grouped evals: one eval's stages for the 4 SAEs as 4 ``run-stage`` processes (a SLURM job each)
  against one ``run-stage`` of all 4 keys (a grouped job), with their preps done.

Usage: python bench/bench_eval_suite.py [--config default] [--tokens 300000] [--out bench/results/eval_suite.json]
       [--work DIR] [--core-only | --memory-only | --ratio-only | --skip-reference]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.artifacts import ArtifactStore  # noqa: E402
from pipeline.loading import load_config, parse_config  # noqa: E402
from pipeline.executors.local import run_local  # noqa: E402
from pipeline.plan import build_plan  # noqa: E402
from pipeline.progress import Reporter  # noqa: E402


def is_eval(kind: str) -> bool:
    """Every eval stage kind, the shared preps included (a fixed list missed eval_sae_probes)."""
    return kind.startswith("eval_")


def bench_config(base: str, tokens: int, n_saes: int, train_tokens: int = 300_000) -> dict[str, Any]:
    """The base config's model, data and evals; one SAE spec trained with ``n_saes`` seeds. Trained on the
    demo's token budget (``train_tokens``, passes over the cached ``tokens`` when more): briefly trained SAEs have no latent under unlearning's retain-frequency bar, so
    its clamp (the costly part per SAE) would never run. Autointerp has its own benchmark
    (bench_autointerp.py) and is left out: its judge server would dominate the wall time."""
    cfg, _ = load_config(base)
    raw = cfg.model_dump(mode="json")
    raw["name"] = f"bench_evals_{n_saes}"
    raw["activations"]["n_tokens"] = tokens
    spec = next(s for s in raw["saes"] if s["trainer"] == "saepipe")
    raw["saes"] = [{**spec, "name": "sae", "seeds": list(range(n_saes)), "checkpoint_every": 1000, "train_tokens": train_tokens}]
    if "autointerp" in raw["evals"]:
        raw["evals"]["autointerp"]["enabled"] = False
    raw.pop("executor")
    return raw


def load_average() -> list[float]:
    """The 1/5/15-minute load averages: the machine is shared, so every phase records them."""
    return [round(x, 2) for x in os.getloadavg()]


def unlearning_clamps(store: ArtifactStore, raw: dict[str, Any]) -> dict[str, Any]:
    """Per SAE: the candidate latents unlearning found and the settings it clamped (0 candidates: the
    clamp never ran, and the eval's per-SAE cost is not what a trained SAE costs)."""
    out = {}
    for s in build_plan(parse_config(raw)):
        if s.kind == "eval_unlearning" and store.is_complete(s.kind, s.key):
            res = json.loads((store.path(s.kind, s.key) / "unlearning.json").read_text())["eval_result_unstructured"]
            out[s.label] = {"candidates": res["candidate_features"], "settings_clamped": sum(r["n_features_selected"] > 0 for r in res["settings"])}
    return out


def write(raw: dict[str, Any], folder: Path) -> Path:
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_all(raw: dict[str, Any], store: ArtifactStore) -> None:
    cfg = parse_config(raw)
    stages = [s for s in build_plan(cfg) if s.kind in ("activations", "train")]
    outcomes = run_local(cfg, stages, store, set(), Reporter(enabled=False))
    bad = [o.stage.label for o in outcomes if o.status == "failed"]
    if bad:
        sys.exit(f"training failed: {bad}")


def clone_upstream(src: ArtifactStore, dst: Path, kinds: tuple[str, ...] = ("activations", "train")) -> ArtifactStore:
    """A store holding only the activations and trained SAEs (evals start from nothing); ``kinds`` adds
    more (the preps, to time per-SAE evals alone). Replaces what an earlier run left at ``dst``."""
    shutil.rmtree(dst, ignore_errors=True)
    for kind in kinds:
        shutil.copytree(src.root / kind, dst / kind, ignore=shutil.ignore_patterns(".work", ".staging", ".trash"))
    return ArtifactStore(dst)


def stage_seconds(store: ArtifactStore, raw: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in build_plan(parse_config(raw)):
        if is_eval(s.kind) and store.is_complete(s.kind, s.key):
            out[s.label] = store.manifest(s.kind, s.key)["timings"]["seconds"]
    return out


def by_kind(seconds: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, sec in seconds.items():
        kind = label.split(":")[0] + (":" + label.split(":")[1] if label.startswith("eval_prep") else "")
        out[kind] = round(out.get(kind, 0.0) + sec, 2)
    return out


def run_ours(raw: dict[str, Any], store: ArtifactStore, folder: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(write(raw, folder)), "--artifacts", str(store.root), "--quiet"]
    wall, cpu = timed(cmd)
    seconds = stage_seconds(store, raw)
    return {"wall_s": wall, "cpu_s": cpu, "eval_stage_s": round(sum(seconds.values()), 2), "by_kind_s": by_kind(seconds),
            "unlearning": unlearning_clamps(store, raw)}


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU seconds) of a child process. CPU time (user + system, the child's threads summed) is
    the figure that holds up when other jobs share the cores; wall time is what a user waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(wall, 2), round(cpu, 2)


def bench_groups(raw: dict[str, Any], store: ArtifactStore, folder: Path, kind: str = "eval_core") -> dict[str, Any]:
    """One eval's stages for every SAE, with their preps done: each as its own ``run-stage`` process (a
    job per SAE: imports, model load, prep read each time) against all of them in one ``run-stage``
    (a grouped SLURM job: once). Separate first, then grouped, each on a fresh copy of the store."""
    cfg_path = write(raw, folder)
    keys = [s.key for s in build_plan(parse_config(raw)) if s.kind == kind]
    base = [sys.executable, "-m", "pipeline.cli", "run-stage", str(cfg_path)]
    out: dict[str, Any] = {"kind": kind, "saes": len(keys)}
    for mode in ("separate", "grouped"):
        copy = clone_upstream(store, folder / f"groups-{mode}", ("activations", "train", "eval_prep"))
        tail = ["--artifacts", str(copy.root), "--quiet"]
        runs = [timed([*base, k, *tail]) for k in keys] if mode == "separate" else [timed([*base, *keys, *tail])]
        out[mode] = {"processes": len(runs), "model_loads": len(runs), "wall_s": round(sum(w for w, _ in runs), 2),
                     "cpu_s": round(sum(c for _, c in runs), 2)}
    out["cpu_ratio_separate_vs_grouped"] = round(out["separate"]["cpu_s"] / out["grouped"]["cpu_s"], 2)
    return out


# Linux carries a process's peak RSS across exec: a child forked from this (model-holding) process
# would report at least our own size. So each stage is started by a bare Python launcher, whose own
# footprint is ~10 MB, and the launcher reports its child's peak.
LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
)


def peak_memory(raw: dict[str, Any], store: ArtifactStore, folder: Path) -> dict[str, float]:
    """Max RSS (MiB) of each eval stage run alone in its own process, in plan order."""
    cfg_path = write(raw, folder)
    out = {}
    for s in build_plan(parse_config(raw)):
        if not is_eval(s.kind):
            continue
        cmd = [sys.executable, "-m", "pipeline.cli", "run-stage", str(cfg_path), s.key, "--artifacts", str(store.root), "--quiet"]
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=REPO, capture_output=True, text=True)
        code, max_kib = proc.stdout.split()
        if code != "0":
            sys.exit(f"{cmd} failed")
        out[s.label] = round(int(max_kib) / 1024, 1)  # KiB on Linux
    return out


def bench_core(raw: dict[str, Any], store: ArtifactStore, folder: Path, rounds: int = 2) -> dict[str, Any]:
    """``eval_core`` per SAE: sae-bench's ``run_evals`` (the whole model per SAE) against our ``evaluate``
    (the SAE on cached activations, the model's tail from the cached residual), same model, SAE, tokens,
    interleaved rounds in one process with the model loaded; prep (once per run) timed apart."""
    from sae_bench.sae_bench_utils.general_utils import load_and_format_sae

    from evals.contract import EvalEnv, prepare_in_memory
    from evals.core import prepare as core_prep
    from evals.core.evaluate import evaluate
    from evals.core.reference import saebench_core
    from pipeline.models.cache import get_model
    from pipeline.recipes.as_trained import load_as_trained

    cfg = parse_config(raw)
    train = next(s for s in build_plan(cfg) if s.kind == "train")
    sae = load_and_format_sae(cfg.name, load_as_trained(store.path("train", train.key) / "sae"), "cpu")[1]
    env = EvalEnv(cfg.model, cfg.data.prepend_bos, Reporter(enabled=False), "sae-s0", cfg.name, data=cfg.data)
    p = cfg.evals.core
    get_model(cfg.model)
    start = time.perf_counter()
    prepared = prepare_in_memory(core_prep.prepare, env, p, folder / "core_prep")
    prep_s = time.perf_counter() - start
    times: dict[str, list[float]] = {"saebench": [], "ours": []}
    for _ in range(rounds):
        for side, fn in (("saebench", saebench_core), ("ours", lambda *a: evaluate(*a)[0])):
            start = time.perf_counter()
            fn(prepared, sae, env, p)
            times[side].append(round(time.perf_counter() - start, 2))
    best = {side: min(t) for side, t in times.items()}
    cache_mib = sum(f.stat().st_size for f in (folder / "core_prep").rglob("*") if f.is_file()) / 2**20
    return {
        "hook": cfg.model.hook, "contexts": prepared.meta["contexts"], "context_size": cfg.data.context_size,
        "batch_size_prompts": p.batch_size_prompts, "n_reconstruction_batches": p.n_reconstruction_batches,
        "n_sparsity_batches": p.n_sparsity_batches, "clean_probs": prepared.meta["clean_probs"],
        "prep_s": round(prep_s, 2), "prep_cache_mib": round(cache_mib, 1), "per_sae_s": times,
        "speedup_per_sae": round(best["saebench"] / best["ours"], 2),
    }  # fmt: skip


def saebench_sparse_probing(raw: dict[str, Any], store: ArtifactStore, n_saes: int) -> float:
    """sae-bench's ``run_eval_single_dataset`` per SAE and dataset, its activations recomputed each time
    as its runner does (``get_dataset_activations``: tokenize, ``get_all_llm_activations``)."""
    import torch
    from sae_bench.evals.sparse_probing import main as saebench_main
    from sae_bench.evals.sparse_probing import probe_training
    from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
    from sae_bench.sae_bench_utils import activation_collection
    from sae_lens import SAE

    from evals.sparse_probing import data as sp_data
    from evals.sparse_probing import probes as sp
    from pipeline.models.cache import get_model

    cfg = parse_config(raw)
    p = cfg.evals.sparse_probing
    model, tokenizer = get_model(cfg.model)
    hook, layer = cfg.model.hook, cfg.model.layer
    splits = {name: sp_data.load_split(name, p.n_train, p.n_test, p.seed) for name in p.datasets}

    def get_dataset_activations(name: str, *_: Any) -> tuple[dict, dict]:
        out = []
        for text in splits[name]:
            tok = sp.tokenize(text, tokenizer, p.context_size, "cpu", cfg.data.prepend_bos)
            out.append(activation_collection.get_all_llm_activations(tok, model, p.batch_size, layer, hook, mask_bos_pad_eos_tokens=True))
        return out[0], out[1]

    saebench_main.get_dataset_activations = get_dataset_activations
    # the jaxtyping clash (see evals/sparse_probing.py): call the undecorated function
    probe_training.train_sklearn_probe = getattr(probe_training.train_sklearn_probe, "__wrapped__", probe_training.train_sklearn_probe)
    config = SparseProbingEvalConfig(
        random_seed=p.seed, dataset_names=list(p.datasets), probe_train_set_size=p.n_train, probe_test_set_size=p.n_test,
        context_length=p.context_size, llm_batch_size=p.batch_size, llm_dtype="float32", model_name=cfg.model.name,
        k_values=list(p.k_values),
    )  # fmt: skip
    trains = [s for s in build_plan(cfg) if s.kind == "train"][:n_saes]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for train in trains:
            sae = SAE.load_from_disk(str(store.path("train", train.key) / "sae"))
            for name in p.datasets:
                torch.manual_seed(p.seed)
                with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
                    sp._quiet(saebench_main.run_eval_single_dataset, name, config, sae, model, layer, hook, "cpu", tmp, False)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="default")
    parser.add_argument("--tokens", type=int, default=300_000, help="activation tokens cached")
    parser.add_argument("--train-tokens", type=int, default=300_000, help="tokens each SAE trains on (several passes when above --tokens)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "eval_suite.json"))
    parser.add_argument("--work", help="keep the stores here (default: a temp dir): a rerun reuses the activations and SAEs")
    parser.add_argument("--memory-only", action="store_true", help="only the per-stage peak memory (1 SAE)")
    parser.add_argument("--core-only", action="store_true", help="only eval_core per SAE, against sae-bench's run_evals")
    parser.add_argument("--groups-only", action="store_true", help="only grouped vs separate run-stage processes (4 SAEs)")
    parser.add_argument("--skip-reference", action="store_true", help="leave out sae-bench's own runners (sparse probing, core)")
    parser.add_argument("--ratio-only", action="store_true", help="only ours with 1 and with 4 SAEs (the 4-vs-1 ratio)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        tmp.mkdir(parents=True, exist_ok=True)
        if args.core_only or args.memory_only or args.groups_only:
            part = one_part(args, tmp)
            print(json.dumps(part[1], indent=2))
            previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
            save({**previous, part[0]: {**part[1], "load_after": load_average()}}, args.out)
            return
        suite(args, tmp)


def one_part(args: argparse.Namespace, tmp: Path) -> tuple[str, Any]:
    """One part of the suite on its own: (its name in the results, what it measured)."""
    if args.groups_only:
        raw4 = bench_config(args.config, args.tokens, 4, args.train_tokens)
        base = ArtifactStore(tmp / "base")
        train_all(raw4, base)
        if not (tmp / "s4" / "eval_prep").exists():  # the preps, as the suite's 4-SAE run leaves them
            run_ours(raw4, clone_upstream(base, tmp / "s4"), tmp)
        return "groups", bench_groups(raw4, ArtifactStore(tmp / "s4"), tmp)
    raw1 = bench_config(args.config, args.tokens, 1, args.train_tokens)
    store = ArtifactStore(tmp / "base")
    train_all(raw1, store)
    if args.core_only:
        return "core_per_sae", bench_core(raw1, store, tmp)
    return "peak_rss_mib_1_sae", peak_memory(raw1, clone_upstream(store, tmp / "mem"), tmp)


def suite(args: argparse.Namespace, tmp: Path) -> None:
    """Every part, saved after each: ours 1 vs 4 SAEs, peak memory, grouped evals, then sae-bench's runners."""
    result: dict[str, Any] = {"config": args.config, "torch_threads": os.cpu_count(), "tokens": args.tokens, "train_tokens": args.train_tokens,
                              "load_at_start": load_average()}
    raw4 = bench_config(args.config, args.tokens, 4, args.train_tokens)
    base = ArtifactStore(tmp / "base")
    train_all(raw4, base)
    result["load_after_training"] = load_average()
    raw1 = {**raw4, "name": "bench_evals_1", "saes": [{**raw4["saes"][0], "seeds": [0]}]}
    result["evals"] = sorted(n for n, s in parse_config(raw4).evals.sections().items() if s.enabled)
    for n, raw in ((1, raw1), (4, raw4)):
        result[f"ours_{n}_sae"] = {**run_ours(raw, clone_upstream(base, tmp / f"s{n}"), tmp), "load_after": load_average()}
        print(f"ours, {n} SAE(s): {result[f'ours_{n}_sae']}", flush=True)
    for measure in ("eval_stage_s", "cpu_s"):
        result[f"ours_ratio_4_vs_1_{measure}"] = round(result["ours_4_sae"][measure] / result["ours_1_sae"][measure], 3)
    save(result, args.out)
    if args.ratio_only:
        return
    result["peak_rss_mib_1_sae"] = peak_memory(raw1, clone_upstream(base, tmp / "mem"), tmp)
    result["load_after_memory"] = load_average()
    print(f"peak RSS: {result['peak_rss_mib_1_sae']}", flush=True)
    save(result, args.out)
    with_preps = ArtifactStore(tmp / "s4")  # the 4-SAE run's store: its preps are done
    result["groups"] = {**bench_groups(raw4, with_preps, tmp), "load_after": load_average()}
    print(f"groups: {result['groups']}", flush=True)
    save(result, args.out)
    if args.skip_reference:
        return
    if parse_config(raw4).evals.sparse_probing.enabled:
        ref = {n: saebench_sparse_probing(raw4, base, n) for n in (1, 4)}
        ours = {n: sum(v for k, v in result[f"ours_{n}_sae"]["by_kind_s"].items() if "sparse_probing" in k) for n in (1, 4)}
        result["sparse_probing"] = {
            "saebench_s": ref,
            "ours_s": ours,
            "speedup_vs_saebench": {n: round(ref[n] / ours[n], 2) for n in (1, 4)},
            "load_after": load_average(),
        }
        print(f"sparse probing: {result['sparse_probing']}", flush=True)
        save(result, args.out)
    result["core_per_sae"] = {**bench_core(raw1, base, tmp), "load_after": load_average()}
    print(f"core per SAE: {result['core_per_sae']}", flush=True)
    save(result, args.out)


def save(result: dict[str, Any], out: str) -> None:
    """Written after every phase, so a long run cut short keeps what it measured."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
