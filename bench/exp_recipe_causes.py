"""Issue 11: which training details make our BatchTopK beat sae-lens's, and which reverse Matryoshka.

Each run trains one SAE with our trainer (`SparseCoder`, the `train` stage's step: Adam, grad-norm clip
1.0, decoder projection, dead mask for AuxK) on a fixed pool of samples from a synthetic model, and
scores it with the `eval_synthetic` metrics (sae-lens's `eval_sae_on_synthetic_data`) twice: with the
fitted BatchTopK threshold ("fit") and with the global threshold calibrated so the mean L0 on fresh
samples equals k ("cal", matched L0). All runs of a shape share the pool and the eval samples; a seed
sets the SAE init and the batch order, so per-seed differences between settings are paired.

    nice -n 10 python bench/exp_recipe_causes.py run switch      # switch-one grid on the tiny shape
    nice -n 10 python bench/exp_recipe_causes.py run budget      # BatchTopK vs Matryoshka, longer (1,000 steps: switch)
    nice -n 19 python bench/exp_recipe_causes.py run budget_small  # the same on synth_small's shape, 1k/2k/4k/8k steps
    python bench/exp_recipe_causes.py summary switch             # markdown tables from the results file
    nice -n 10 python bench/exp_recipe_causes.py baselines switch  # untrained-SAE baseline + probe ceiling
    nice -n 19 python bench/exp_recipe_causes.py parity run      # ours vs trainer sae_lens, per architecture
    EXP_PARITY_STEPS=4000 nice -n 19 python bench/exp_recipe_causes.py parity budget  # JumpReLU rows, longer
    python bench/exp_recipe_causes.py parity summary             # its table

`parity` trains each architecture (TopK, BatchTopK, Matryoshka, JumpReLU) with our trainer at its defaults
and with sae-lens's own training SAE at sae-lens's defaults (`trainer: sae_lens`, `SaeLensTrainable`), and
scores both as sae-lens inference SAEs (saved and loaded back), fitted and at matched L0.

Results append to bench/results/exp_recipe_causes/<grid>.jsonl (one JSON line per run; a rerun skips
what is there). Pools are cached under $EXP_POOL_DIR (default /tmp/exp_recipe_causes).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file

from evals.synthetic.calibrate import calibrate as match_l0
from evals.synthetic.evaluate import CoderAsSAE, flat_metrics, score
from pipeline.config.recipe import RecipeSpec
from pipeline.config.synthetic import SyntheticSpec
from pipeline.loading import load_config
from pipeline.recipes.coder import SparseCoder, build_coder
from pipeline.synthetic.model import build_model, sample

RESULTS = Path(__file__).parent / "results" / "exp_recipe_causes"
POOLS = Path(os.environ.get("EXP_POOL_DIR", "/tmp/exp_recipe_causes"))
BATCH = 1024
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
"""Two-sided 95% t quantiles by degrees of freedom (seeds - 1)."""

TINY = SyntheticSpec.model_validate({
    "num_features": 512, "hidden_dim": 64,
    "firing": {"exponent": 0.5, "max_prob": 0.4, "min_prob": 5e-4},
    "hierarchy": {"n_roots": 8, "branching": 4, "depth": 2, "mutually_exclusive": 1.0, "scale_children_by_parent": True},
    "correlation": {"rank": 10, "scale": 0.1}, "orthogonalization": {"steps": 100, "lr": 3e-4},
    "seed": 7, "eval_samples": 20_000, "probe_samples": 40_000,
})
"""synth_small's recipe of a model at a quarter of its size: 512 features in 64 dims (8x superposition)."""

SAE_LENS_AUX = {"coefficient": 1.0, "scale_by_dead": True, "relu": False}
"""sae-lens's AuxK (with k_aux = d_in // 2, filled in per shape)."""
OURS_DEAD, SAE_LENS_DEAD = 100_000, 1000 * BATCH
"""Rows without firing before a latent counts dead: synth_small's setting vs sae-lens's 1,000 steps."""


def sae_lens_style(d_in: int) -> dict[str, Any]:
    """Recipe keys + dead window that make our trainer compute sae-lens's BatchTopK (tests/test_recipes.py)."""
    return {"decoder": {"norm": "rescale", "init_norm": 0.1}, "b_dec_init": "zeros",
            "aux_k": {"k_aux": d_in // 2, **SAE_LENS_AUX}, "dead_after": SAE_LENS_DEAD}


def ours_style() -> dict[str, Any]:
    return {"decoder": {"norm": "project", "init_norm": 1.0}, "b_dec_init": "data_mean",
            "aux_k": {"k_aux": 512, "coefficient": 1 / 32, "scale_by_dead": False, "relu": True}, "dead_after": OURS_DEAD}


def switch_grid(d_in: int) -> list[tuple[str, dict[str, Any]]]:
    """ours, sae-lens-style, and each knob switched alone from one to the other, both directions."""
    ours, sl = ours_style(), sae_lens_style(d_in)
    swaps = {
        "decoder": ("decoder",), "b_dec": ("b_dec_init",), "aux": ("aux_k",), "dead_window": ("dead_after",),
    }
    grid = [("ours", ours), ("sae_lens", sl)]
    for name, keys in swaps.items():
        grid.append((f"ours+{name}", {**ours, **{k: sl[k] for k in keys}}))
        grid.append((f"sae_lens-{name}", {**sl, **{k: ours[k] for k in keys}}))
    grid.append(("ours+rescale", {**ours, "decoder": {"norm": "rescale", "init_norm": 1.0}}))
    grid.append(("sae_lens-init_norm", {**sl, "decoder": {"norm": "rescale", "init_norm": 1.0}}))
    return grid


FULL = {"lista": {"steps": 1, "eta": 0.3}, "k_anneal": {"k_start": 100, "fraction": 0.5}, "term": {"t": 2.0e-3},
        "orthogonality": {"coefficient": 0.01}}
"""configs/synth_small.yaml's `full_recipe` on top of Matryoshka."""
RECIPE = {"ours+inner0.1-k_anneal": {"matryoshka": {"inner_weight": 0.1}, "recipe": {"k_anneal": None}}}
LISTA = {"ours+lista": {"recipe": {"lista": FULL["lista"]}}}
"""RESULTS §6c's best recipe (FULL with inner weight 0.1, without K annealing), and BatchTopK + LISTA alone."""
GRIDS: dict[str, dict[str, Any]] = {
    "switch": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "steps": {1000: [0, 1, 2]},
               "pool": 1_024_000, "lr": 1e-3},
    "budget": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "steps": {4000: [0, 1, 2], 16000: [0]},
               "pool": 1_024_000, "lr": 1e-3},
    "budget_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                     "steps": {8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "runs": {(8000, "ours")},
                     "eval_at": [1000, 2000, 4000]},
    "aux_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                  "steps": {2000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3,
                  "order": [(("ours", "ours+aux"), None)], "runs": {(2000, "ours"), (2000, "ours+aux")}},
    "mat_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                  "steps": {2000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3,
                  "extra": {"ours+levels5": {"matryoshka": {"levels": [64, 128, 256, 512, 1024]}},
                            "ours+detach": {"matryoshka": {"detach_inner": True}},
                            "ours+by_frequency": {"matryoshka": {"order_by_frequency": True}}},
                  "order": [(("ours+levels5", "ours+detach", "ours+by_frequency"), None)],
                  "runs": {(2000, "ours+levels5"), (2000, "ours+detach"), (2000, "ours+by_frequency")}},
    "lr_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                 "steps": {2000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "extra": {"ours+lr3e-4": {"lr": 3e-4}},
                 "order": [(("ours+lr3e-4",), None)], "runs": {(2000, "ours+lr3e-4")}},
    "k_small": {"shape": "synth_small", "d_sae": 1024, "k": 11, "levels": [128, 512, 1024],
                "steps": {8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000, 4000],
                "order": [(("ours",), None)], "runs": {(8000, "ours")}},
    "bands_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                    "steps": {2000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000],
                    "order": [(("ours",), None)], "runs": {(2000, "ours")}},
    "weight_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("matryoshka",),
                     "steps": {2000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3,
                     "extra": {f"ours+inner{w:g}": {"matryoshka": {"inner_weight": w}} for w in (0.1, 3.0, 0.3, 0.03)},
                     "order": [(("ours+inner0.1", "ours+inner3"), None), (("ours+inner0.3", "ours+inner0.03"), None)],
                     "runs": {(2000, f"ours+inner{w:g}") for w in (0.1, 3.0, 0.3, 0.03)}, "base_grid": "bands_small"},
    "weight_budget": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("matryoshka",),
                      "steps": {8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000, 4000],
                      "extra": {"ours+inner0.1": {"matryoshka": {"inner_weight": 0.1}}},
                      "order": [(("ours+inner0.1",), None)], "runs": {(8000, "ours+inner0.1")}, "base_grid": "budget_small"},
    "weight_tiny": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256],
                    "steps": {4000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000],
                    "extra": {"ours+inner0.1": {"matryoshka": {"inner_weight": 0.1}}},
                    "order": [(("ours",), None), (("ours+inner0.1",), None)], "archs": ("matryoshka", "batchtopk"),
                    "runs": {(4000, "ours"), (4000, "ours+inner0.1")}},
    "full_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("full",),
                   "steps": {2000: [0, 1, 2], 8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3,
                   "extra": {"ours+inner0.1": {"matryoshka": {"inner_weight": 0.1}}},
                   "order": [(("ours",), None), (("ours+inner0.1",), None)],
                   "runs": {(2000, "ours"), (2000, "ours+inner0.1"), (8000, "ours+inner0.1"), (8000, "ours")},
                   "base_grid": "budget_small"},
    "full_tiny": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "archs": ("full",),
                  "steps": {4000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3,
                  "extra": {"ours+inner0.1": {"matryoshka": {"inner_weight": 0.1}}},
                  "order": [(("ours", "ours+inner0.1"), None)], "runs": {(4000, "ours"), (4000, "ours+inner0.1")},
                  "base_grid": "weight_tiny"},
    "recipe_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("full",),
                     "steps": {8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000, 4000],
                     "extra": RECIPE,
                     "order": [(("ours+inner0.1-k_anneal",), None)], "runs": {(8000, "ours+inner0.1-k_anneal")},
                     "base_grid": "budget_small",
                     "against": [("lista_small", "batchtopk", "ours+lista"), ("full_small", "full", "ours+inner0.1")]},
    "lista_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("batchtopk",),
                    "steps": {8000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000, 4000],
                    "extra": LISTA,
                    "order": [(("ours+lista",), None)], "runs": {(8000, "ours+lista")}, "base_grid": "budget_small"},
    "recipe_tiny": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "archs": ("full",),
                    "steps": {4000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000], "extra": RECIPE,
                    "order": [(tuple(RECIPE), None)], "runs": {(4000, *RECIPE)}, "base_grid": "weight_tiny",
                    "against": [("lista_tiny", "batchtopk", *LISTA), ("full_tiny", "full", "ours+inner0.1")]},
    "lista_tiny": {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "archs": ("batchtopk",),
                   "steps": {4000: [0, 1, 2]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [1000, 2000], "extra": LISTA,
                   "order": [(tuple(LISTA), None)], "runs": {(4000, *LISTA)}, "base_grid": "weight_tiny"},
    "long_small": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024],
                   "steps": {32000: [0]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [16000], "runs": {(32000, "ours")},
                   "base_grid": "budget_small"},
    "long_recipe": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("full",),
                    "steps": {32000: [0]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [16000], "extra": RECIPE,
                    "order": [(tuple(RECIPE), None)], "runs": {(32000, *RECIPE)}, "base_grid": "long_small",
                    "against": [("long_lista", "batchtopk", *LISTA)]},
    "long_lista": {"shape": "synth_small", "d_sae": 1024, "k": 25, "levels": [128, 512, 1024], "archs": ("batchtopk",),
                   "steps": {32000: [0]}, "pool": 1_024_000, "lr": 1e-3, "eval_at": [16000], "extra": LISTA,
                   "order": [(tuple(LISTA), None)], "runs": {(32000, *LISTA)}, "base_grid": "long_small"},
}
"""`k_small`: k at synth_small's true L0 (10.65) instead of 2.4x it. `bands_small`: budget_small's 2,000-step
runs again (deterministic: the same numbers) with the never-firing latents counted per Matryoshka band.
`weight_small`: Matryoshka's inner-level losses weighted down (0.3, 0.1, 0.03) and up (3) against the plain
sum; `weight_budget`: inner weight 0.1 on budget_small's curve; `weight_tiny`: the same switch on the tiny
shape, where plain Matryoshka overtook BatchTopK at 4,000 steps (§4).
`full_small`: the full recipe (`FULL`) on budget_small's pool, seeds and eval, separate runs per budget
(its k anneals over the run, so a snapshot is not the shorter run), plain and with inner weight 0.1;
`full_tiny`: the same two on the tiny shape. `recipe_small`: the best recipe of RESULTS §6c (the full recipe with
inner weight 0.1 and without K annealing, so k is constant and snapshots are the shorter runs) on synth_small's
shape, where it was not picked; `lista_small`: BatchTopK + LISTA alone there; `long_small`: budget_small's
BatchTopK and Matryoshka at 4x its longest budget (32 passes over the pool), one seed; `long_recipe`,
`long_lista`: recipe_small's and lista_small's settings there. `recipe_tiny`, `lista_tiny`: the same two on
the tiny shape, against weight_tiny's BatchTopK and full_tiny's full recipe at inner weight 0.1. `archs`: default batchtopk and
matryoshka. `extra`: settings beyond the switch grid, each ours with overrides: `matryoshka` (merged into the
Matryoshka spec, for that arch only), `lr`, or `recipe` (recipe fields set last; None removes one).
`against`: other grids' (arch, setting) runs that `summary` also pairs this grid's runs with, by steps and seed."""
"""k / true L0: 10 / 4.1 on tiny, 25 / 10.65 on synth_small (both about 2.4). Steps -> seeds. `eval_at`: a run
is also scored at these steps, as its own row (lr and k are constant, so its state there is the shorter run's)."""
PRIORITY = [(("ours", "sae_lens"), None), (("ours+decoder", "sae_lens-decoder"), None),
            (("sae_lens-dead_window", "ours+rescale", "sae_lens-init_norm"), [0]), (("ours+b_dec", "sae_lens-b_dec"), None),
            (("ours+aux", "sae_lens-aux", "ours+dead_window"), [0]), (("sae_lens-dead_window",), [1, 2]),
            (("ours+rescale", "sae_lens-init_norm", "ours+aux", "sae_lens-aux", "ours+dead_window"), [1, 2])]
"""The switch grid's order on a shared 2-core machine: settings groups, each on every seed (None) or on
the seeds listed, so a cut-off run leaves the most important comparisons complete."""
BUDGET_ORDER = [(("ours", "sae_lens"), None)]
BUDGET_RUNS = {(4000, "ours"), (4000, "sae_lens"), (16000, "ours")}
"""The budget grid: ours and sae-lens-style at 4,000 steps, ours alone at 16,000 (1,000: the switch grid)."""


def shape_spec(name: str) -> SyntheticSpec:
    return TINY if name == "tiny" else load_config("synth_small")[0].synthetic  # type: ignore[return-value]


def pool(name: str, n: int, model: Any) -> torch.Tensor:
    """n training samples of the shape, sampled once and cached (the sampling costs more than training)."""
    path = POOLS / f"{name}_{n}.safetensors"
    if path.exists():
        return load_file(str(path))["x"]
    POOLS.mkdir(parents=True, exist_ok=True)
    x, _ = sample(model, n, seed=12345)
    save_file({"x": x.contiguous()}, str(path))
    return x


def batches(x: torch.Tensor, seed: int) -> Iterator[torch.Tensor]:
    """Batches of the pool in a seed's order, a fresh permutation per pass."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(x.shape[0], generator=gen)
        for first in range(0, x.shape[0] - BATCH + 1, BATCH):
            yield x[order[first:first + BATCH]]


def train(recipe: RecipeSpec, x: torch.Tensor, d_sae: int, k: int, seed: int, steps: int, lr: float, dead_after: int,
          dense: bool = False, on_step: Callable[[int, SparseCoder, float], None] | None = None) -> tuple[SparseCoder, dict[str, float]]:
    """The `train` stage's loop for trainer saepipe (pipeline/stages/train.py), without its I/O."""
    torch.manual_seed(seed)
    coder = build_coder(recipe, x.shape[1], d_sae, k, seed, dense=dense)
    opt = torch.optim.Adam(coder.parameters(), lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    max_dead = 0
    stream = batches(x, seed)
    started = time.perf_counter()
    for step in range(steps):
        xb = next(stream)
        if step == 0:
            coder.init_b_dec(xb)
        dead = since_fired > dead_after
        max_dead = max(max_dead, int(dead.sum()))
        out = coder.training_loss(xb, step, steps, dead)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(coder.parameters(), 1.0)
        opt.step()
        coder.normalize_decoder()
        with torch.no_grad():
            fired = torch.zeros(d_sae, dtype=torch.long).index_add_(0, out.active.latents, (out.active.values != 0).long())
            since_fired += BATCH
            since_fired.masked_fill_(fired > 0, 0)
        if on_step is not None:
            on_step(step + 1, coder, time.perf_counter() - started)
    coder.fold_decoder_norm()
    return coder, {"train_s": time.perf_counter() - started, "final_mse": float(out.stats["mse"]),
                   "dead_at_end": int((since_fired > dead_after).sum()), "max_dead_in_training": max_dead}


@torch.no_grad()
def calibrate(coder: SparseCoder, x: torch.Tensor) -> float:
    """Set the global inference threshold so the mean L0 on `x` is k (BatchTopK over x); returns it."""
    W_enc, b_enc, _ = coder.effective_weights()
    h = ((x - coder.b_dec) @ W_enc + b_enc).relu().flatten()
    cut = torch.topk(h, coder.k * x.shape[0]).values.min()
    coder.activation.threshold_global.fill_(float(cut))
    return float(cut)


@torch.no_grad()
def band_stats(coder: SparseCoder, x: torch.Tensor, levels: list[int]) -> list[dict[str, float]]:
    """Per Matryoshka band of latent indices [levels[i-1], levels[i]) (the same index bands for BatchTopK,
    as a control), at the calibrated threshold on `x`: latents never firing, the band's share of all
    firings, and the mean nonzero activation. Shows whether the rare latents sit in the outer bands."""
    codes = coder.encode_dense(x)
    counts = (codes != 0).sum(0)
    total = float(counts.sum())
    out, lo = [], 0
    for hi in levels:
        band, c = codes[:, lo:hi], counts[lo:hi]
        nonzero = band[band != 0]
        out.append({"band": f"{lo}-{hi}", "never": int((c == 0).sum()), "share": float(c.sum()) / max(total, 1.0),
                    "mean_act": float(nonzero.mean()) if nonzero.numel() else 0.0})
        lo = hi
    return out


def run_grid(grid_name: str) -> None:
    g = GRIDS[grid_name]
    spec = shape_spec(g["shape"])
    model = build_model(spec, on="cpu")
    x = pool(g["shape"], g["pool"], model)
    calib, _ = sample(model, 16_384, seed=999)
    d_in = x.shape[1]
    out_path = RESULTS / f"{grid_name}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["setting"], r["arch"], r["seed"], r["steps"]) for r in map(json.loads, out_path.open())} if out_path.exists() else set()
    settings = switch_grid(d_in)
    by_name = dict(settings) | {name: {**ours_style(), **extra} for name, extra in g.get("extra", {}).items()}
    plan = [(steps, seed, arch, name, by_name[name]) for names, only in (PRIORITY if grid_name == "switch" else g.get("order", BUDGET_ORDER))
            for steps, seeds in g["steps"].items() for seed in (seeds if only is None else only)
            for arch in g.get("archs", ("batchtopk", "matryoshka")) for name in names
            if (grid_name == "switch" or (steps, name) in g.get("runs", BUDGET_RUNS))
            and not (arch == "batchtopk" and "matryoshka" in by_name[name])]  # a Matryoshka switch leaves BatchTopK as it is
    only_steps, only_arch = os.environ.get("EXP_STEPS"), os.environ.get("EXP_ARCH")  # to split a grid over processes
    only_seed = os.environ.get("EXP_SEED")
    for steps, seed, arch, name, s in plan:
        if (name, arch, seed, steps) in done or (only_steps and int(only_steps) != steps) or (only_arch and only_arch != arch) \
                or (only_seed and int(only_seed) != seed):
            continue
        recipe = {"activation": "batchtopk", "decoder": s["decoder"], "b_dec_init": s["b_dec_init"], "aux_k": s["aux_k"]}
        if arch in ("matryoshka", "full"):
            recipe["matryoshka"] = {"levels": g["levels"], **s.get("matryoshka", {})}  # a grid's Matryoshka switches
        if arch == "full":
            recipe |= FULL
        recipe = {key: v for key, v in (recipe | s.get("recipe", {})).items() if v is not None}
        lr = s.get("lr", g["lr"])
        row = {"setting": name, "arch": arch, "seed": seed, "shape": g["shape"], "lr": lr,
               "d_sae": g["d_sae"], "k": g["k"], "recipe": recipe, "dead_after": s["dead_after"]}

        def record(coder: SparseCoder, info: dict[str, Any], at: int, row: dict[str, Any] = row) -> None:
            coder.eval()
            fit = flat_metrics(score(CoderAsSAE(coder), model, spec.eval_samples, seed=4242))
            info["threshold_fit"] = float(coder.activation.threshold_global)
            if coder.recipe.lista is not None:  # the code is refined past the pre-activations: match through the whole inference
                info["threshold_cal"] = match_l0(CoderAsSAE(coder), calib, coder.k, rows=4096).factor
            else:
                info["threshold_cal"] = calibrate(coder, calib)
            cal = flat_metrics(score(CoderAsSAE(coder), model, spec.eval_samples, seed=4242))
            info["bands"] = band_stats(coder, calib, g["levels"])
            with out_path.open("a") as f:
                f.write(json.dumps({**row, "steps": at, "fit": fit, "cal": cal, **info}) + "\n")
            print(f"{row['setting']:22s} {row['arch']:10s} s{row['seed']} {at:5d} steps  F1 fit {fit['f1']:.3f} (L0 {fit['l0']:.1f})"
                  f"  cal {cal['f1']:.3f}  MCC {cal['mcc']:.3f}  {info['train_s']:.0f}s", flush=True)

        def snapshot(at: int, live: SparseCoder, elapsed: float, row: dict[str, Any] = row, steps: int = steps) -> None:
            """Score a copy at the grid's `eval_at` steps (the shorter runs, for the price of one)."""
            if at in g.get("eval_at", ()) and at < steps and (row["setting"], row["arch"], row["seed"], at) not in done:
                c = copy.deepcopy(live)
                c.fold_decoder_norm()
                record(c, {"train_s": elapsed, "snapshot_of": steps}, at)

        coder, info = train(RecipeSpec.model_validate(recipe), x, g["d_sae"], g["k"], seed, steps, lr, s["dead_after"],
                            on_step=snapshot)
        record(coder, info, steps)


def baselines(grid_name: str) -> None:
    """Beside every score: an untrained SAE of the same shape (threshold calibrated to L0 k, 3 seeds)
    and the supervised-probe ceiling (one logistic probe per true feature, the eval_synthetic prep)."""
    from evals.synthetic.prepare import run_probes

    g = GRIDS[grid_name]
    spec = shape_spec(g["shape"])
    model = build_model(spec, on="cpu")
    calib, _ = sample(model, 16_384, seed=999)
    out: dict[str, Any] = {"random": []}
    for seed in (0, 1, 2):
        coder = build_coder(RecipeSpec(), calib.shape[1], g["d_sae"], g["k"], seed)
        coder.init_b_dec(calib)
        coder.eval()
        calibrate(coder, calib)
        out["random"].append(flat_metrics(score(CoderAsSAE(coder), model, spec.eval_samples, seed=4242)))
    probe = run_probes(model, spec.probe_samples, seed=31337)
    out["probe"] = {k: v for k, v in probe.items() if k != "per_feature_f1"}
    (RESULTS / f"{grid_name}_baselines.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({"random_f1": [r["f1"] for r in out["random"]], "random_mcc": [r["mcc"] for r in out["random"]],
                      "probe": out["probe"]}, indent=1))


def mean_ci(v: list[float]) -> tuple[float, float]:
    """Mean and 95% t half-width (0 for one value)."""
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, 0.0
    sd = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1))
    return m, T95[len(v) - 1] * sd / math.sqrt(len(v))


def ci_cell(values: list[float], digits: int = 3, sign: str = "") -> str:
    """Mean ± 95% t half-width; the mean alone for one value, which has no interval."""
    m, h = mean_ci(values)
    return f"{m:{sign}.{digits}f}" + (f" ± {h:.{digits}f}" if len(values) > 1 else "")


def summary(grid_name: str) -> None:
    """Per (steps, arch, setting): metric means ± 95% t over seeds, and F1 paired against the setting's base."""
    base_grid = GRIDS[grid_name].get("base_grid")  # the runs this grid's settings are compared with
    mine = [json.loads(line) for line in (RESULTS / f"{grid_name}.jsonl").open()]
    rows = mine + ([json.loads(line) for line in (RESULTS / f"{base_grid}.jsonl").open()] if base_grid else [])
    by: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["steps"], r["arch"], r["setting"]), {})[r["seed"]] = r
    print("| steps | arch | setting | seeds | F1 (cal) | ΔF1 vs base, paired | MCC (cal) | EV (cal) | F1 (fit) | L0 (fit) | dead |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (steps, arch, setting), seeds in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], not kv[0][2] in ("ours", "sae_lens"), kv[0][2])):
        base = by.get((steps, arch, "sae_lens" if setting.startswith("sae_lens") else "ours"), {})
        common = sorted(set(seeds) & set(base))
        cell = lambda key, var: ci_cell([seeds[s][var][key] for s in sorted(seeds)])  # noqa: E731
        delta = "—" if setting in ("ours", "sae_lens") or not common else ci_cell([seeds[s]["cal"]["f1"] - base[s]["cal"]["f1"] for s in common], sign="+")
        l0 = ci_cell([seeds[s]["fit"]["l0"] for s in sorted(seeds)], digits=1)
        dead = "%.0f" % mean_ci([seeds[s]["cal"]["dead_latents"] for s in sorted(seeds)])[0]
        print(f"| {steps} | {arch} | {setting} | {len(seeds)} | {cell('f1', 'cal')} | {delta} | {cell('mcc', 'cal')} "
              f"| {cell('explained_variance', 'cal')} | {cell('f1', 'fit')} | {l0} | {dead} |")
    print("\n| steps | arch | setting | seeds | arch − BatchTopK (ours), F1 (cal), paired | same, MCC |")
    print("|---|---|---|---|---|---|")
    for (steps, arch, setting), other in sorted(by.items()):
        btk = by.get((steps, "batchtopk", setting), by.get((steps, "batchtopk", "ours"), {})) if arch != "batchtopk" else {}
        common = sorted(set(other) & set(btk))
        if common:
            f1 = ci_cell([other[s]["cal"]["f1"] - btk[s]["cal"]["f1"] for s in common], sign="+")
            mcc = ci_cell([other[s]["cal"]["mcc"] - btk[s]["cal"]["mcc"] for s in common], sign="+")
            print(f"| {steps} | {arch} | {setting} | {len(common)} | {f1} | {mcc} |")
    for other_grid, other_arch, other_setting in GRIDS[grid_name].get("against", []):
        if not (RESULTS / f"{other_grid}.jsonl").exists():
            continue
        print(f"\n| steps | arch | setting | seeds | − {other_grid}'s {other_arch} {other_setting}, F1 (cal), paired | same, MCC |")
        print("|---|---|---|---|---|---|")
        theirs = [json.loads(line) for line in (RESULTS / f"{other_grid}.jsonl").open()]
        for r0 in sorted({(r["steps"], r["arch"], r["setting"]) for r in mine}):
            ours = by[r0]
            them = {r["seed"]: r for r in theirs if (r["steps"], r["arch"], r["setting"]) == (r0[0], other_arch, other_setting)}
            common = sorted(set(ours) & set(them))
            if common:
                f1 = ci_cell([ours[s]["cal"]["f1"] - them[s]["cal"]["f1"] for s in common], sign="+")
                mcc = ci_cell([ours[s]["cal"]["mcc"] - them[s]["cal"]["mcc"] for s in common], sign="+")
                print(f"| {r0[0]} | {r0[1]} | {r0[2]} | {len(common)} | {f1} | {mcc} |")
    banded = [(key, seeds) for key, seeds in sorted(by.items()) if all("bands" in r for r in seeds.values())]
    if banded:
        print("\n| steps | arch | setting | seeds | band: latents never firing (of the band), share of all firings, mean activation |")
        print("|---|---|---|---|---|")
        for (steps, arch, setting), seeds in banded:
            per = zip(*(seeds[s]["bands"] for s in sorted(seeds)))
            cells = ["%s: %.0f, %.3f, %.2f" % (b[0]["band"], *(sum(r[f] for r in b) / len(b) for f in ("never", "share", "mean_act"))) for b in per]
            print(f"| {steps} | {arch} | {setting} | {len(seeds)} | " + "; ".join(cells) + " |")


# -- parity: our trainer at its defaults vs sae-lens's training SAEs at theirs ---------------------

PARITY: dict[str, Any] = {"shape": "tiny", "d_sae": 256, "k": 10, "levels": [32, 128, 256], "steps": 1000,
                          "seeds": [0, 1, 2], "pool": 1_024_000, "lr": 1e-3, "l0_sweep": [0.01, 0.1, 1.0]}
"""The switch grid's shape, budget and lr (one lr for both trainers: the loop's setting, not the SAE's).
JumpReLU has no k: its L0 coefficient is swept on seed 0 and set, per trainer, to the value interpolated
(log-log) to a trained L0 of k; every other JumpReLU setting keeps the trainer's default."""
PARITY_ARCHS = ("topk", "batchtopk", "matryoshka", "jumprelu")
OURS_DEFAULT_DEAD = 200_000
"""SAESpec.dead_after_tokens' default (rows); trainer sae_lens: its dead_feature_window of 1,000 batches."""


SAE_LENS_THRESHOLD = {"threshold_param": "direct", "init_threshold": 0.01, "bandwidth": 0.05}
JUMPRELU_VARIANTS: dict[str, dict[str, Any]] = {
    "saepipe+sae_lens_threshold": {"jumprelu": SAE_LENS_THRESHOLD},
    "saepipe+direct": {"jumprelu": {"threshold_param": "direct"}},
    "saepipe_as_sae_lens": {"jumprelu": SAE_LENS_THRESHOLD, "decoder": {"norm": "free", "init_norm": 0.1}, "b_dec_init": "zeros"},
}
"""Our trainer with sae-lens's threshold settings alone, and with every setting that reproduces sae-lens's
JumpReLU (tests/test_recipes.py), at sae-lens's L0 coefficient: which detail makes the difference."""


def parity_recipe(arch: str, l0_coefficient: float | None, variant: str | None = None) -> RecipeSpec:
    """The recipe as a config would write it: activation (+ levels, + the L0 coefficient, + a variant's settings)."""
    raw: dict[str, Any] = {"activation": "batchtopk" if arch == "matryoshka" else arch}
    if arch == "matryoshka":
        raw["matryoshka"] = {"levels": PARITY["levels"]}
    extra = JUMPRELU_VARIANTS.get(variant or "", {})
    raw |= {k: v for k, v in extra.items() if k != "jumprelu"}
    if l0_coefficient is not None:
        raw["jumprelu"] = {"l0_coefficient": l0_coefficient, **extra.get("jumprelu", {})}
    return RecipeSpec.model_validate(raw)


def train_reference(recipe: RecipeSpec, x: torch.Tensor, d_sae: int, k: int, seed: int, steps: int, lr: float) -> tuple[Any, dict[str, float]]:
    """trainer sae_lens's loop (pipeline/stages/train.py with SaeLensTrainable), without its I/O."""
    from pipeline.training.reference import SaeLensTrainable, default_dead_window_steps

    trainable = SaeLensTrainable(recipe, x.shape[1], d_sae, k, seed, torch.device("cpu"), {})
    opt = torch.optim.Adam(trainable.module.parameters(), lr=lr, betas=(0.9, 0.999))
    dead_after = default_dead_window_steps() * BATCH
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    max_dead = 0
    stream = batches(x, seed)
    started = time.perf_counter()
    for step in range(steps):
        dead = since_fired > dead_after
        max_dead = max(max_dead, int(dead.sum()))
        out = trainable.step(next(stream), step, steps, dead)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable.module.parameters(), 1.0)
        opt.step()
        trainable.after_optimizer_step()
        with torch.no_grad():
            since_fired += BATCH
            since_fired.masked_fill_(out.fired > 0, 0)
    return trainable, {"train_s": time.perf_counter() - started, "final_mse": float(out.stats["mse"]),
                       "dead_at_end": int((since_fired > dead_after).sum()), "max_dead_in_training": max_dead}


def as_inference_sae(trained: Any, folder: Path) -> Any:
    """Both trainers' SAEs as sae-lens loads them from disk (what eval_synthetic scores)."""
    from sae_lens import SAE

    from pipeline.recipes.saving import save_coder

    if isinstance(trained, SparseCoder):
        save_coder(trained, folder)
    else:
        trained.save(folder, {})
    return SAE.load_from_disk(str(folder), device="cpu")


def parity_one(arch: str, trainer: str, seed: int, l0_coefficient: float | None, model: Any, x: torch.Tensor,
               calib: torch.Tensor, spec: SyntheticSpec, out_path: Path, g: dict[str, Any] = PARITY) -> dict[str, Any]:
    import tempfile

    recipe = parity_recipe(arch, l0_coefficient, trainer)
    if trainer.startswith("saepipe"):
        trained, info = train(recipe, x, g["d_sae"], g["k"], seed, g["steps"], g["lr"], OURS_DEFAULT_DEAD, dense=arch == "jumprelu")
    else:
        trained, info = train_reference(recipe, x, g["d_sae"], g["k"], seed, g["steps"], g["lr"])
    with tempfile.TemporaryDirectory() as tmp:
        sae = as_inference_sae(trained, Path(tmp))
    sae.eval()
    fit = flat_metrics(score(sae, model, spec.eval_samples, seed=4242))
    info["calibration_scale"] = match_l0(sae, calib, g["k"], rows=calib.shape[0]).factor  # the pipeline's matched L0 (calibrate.py)
    cal = fit if info["calibration_scale"] is None else flat_metrics(score(sae, model, spec.eval_samples, seed=4242))
    row = {"arch": arch, "trainer": trainer, "seed": seed, "steps": g["steps"], "shape": g["shape"], "lr": g["lr"],
           "d_sae": g["d_sae"], "k": g["k"], "l0_coefficient": l0_coefficient, "recipe": recipe.model_dump(mode="json"),
           "fit": fit, "cal": cal, **info}
    with out_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{arch:10s} {trainer:8s} s{seed} c={l0_coefficient}  F1 fit {fit['f1']:.3f} (L0 {fit['l0']:.1f})  cal {cal['f1']:.3f}"
          f"  MCC {cal['mcc']:.3f}  dead {cal['dead_latents']}  {info['train_s']:.0f}s", flush=True)
    return row


def matched_coefficient(sweep: list[dict[str, Any]], k: int) -> float:
    """The L0 coefficient whose trained L0 is k, interpolated log-log between the two sweep points around it;
    when no two bracket k, the sweep point whose L0 is nearest k (calibration then does all the matching)."""
    pts = sorted((math.log(r["l0_coefficient"]), math.log(max(r["fit"]["l0"], 1e-3))) for r in sweep)
    target = math.log(k)
    for (c0, l0a), (c1, l0b) in zip(pts, pts[1:]):
        if min(l0a, l0b) <= target <= max(l0a, l0b) and l0a != l0b:
            return float(f"{math.exp(c0 + (target - l0a) * (c1 - c0) / (l0b - l0a)):.3g}")
    return float(f"{math.exp(min(pts, key=lambda p: abs(p[1] - target))[0]):.3g}")


def parity_inputs(g: dict[str, Any], out_path: Path) -> tuple[SyntheticSpec, Any, torch.Tensor, torch.Tensor]:
    """The shape, its model, the training pool and the matched-L0 calibration samples of a parity setting
    (and the results folder, made)."""
    spec = shape_spec(g["shape"])
    model = build_model(spec, on="cpu")
    x = pool(g["shape"], g["pool"], model)
    calib, _ = sample(model, 16_384, seed=999)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return spec, model, x, calib


def parity(command: str) -> None:
    """`run`: every (architecture, trainer, seed), skipping what the results file has; `summary`: the table."""
    out_path = RESULTS / "parity.jsonl"
    if command == "summary":
        return parity_summary(out_path)
    if command.startswith("budget"):
        return parity_budget(command)
    g = PARITY
    spec, model, x, calib = parity_inputs(g, out_path)
    rows = [json.loads(line) for line in out_path.open()] if out_path.exists() else []
    done = {(r["arch"], r["trainer"], r["seed"], r["l0_coefficient"]) for r in rows}
    only_arch, only_trainer = os.environ.get("EXP_ARCH"), os.environ.get("EXP_TRAINER")  # to split over processes
    for arch in PARITY_ARCHS:
        for trainer in ("saepipe", "sae_lens"):
            if (only_arch and only_arch != arch) or (only_trainer and only_trainer != trainer):
                continue
            coefficient = None
            if arch == "jumprelu":
                for c in g["l0_sweep"]:
                    if (arch, trainer, 0, c) not in done:
                        rows.append(parity_one(arch, trainer, 0, c, model, x, calib, spec, out_path))
                        done.add((arch, trainer, 0, c))
                sweep = [r for r in rows if r["arch"] == arch and r["trainer"] == trainer and r["seed"] == 0 and r["l0_coefficient"] in g["l0_sweep"]]
                coefficient = matched_coefficient(sweep, g["k"])
            for seed in g["seeds"]:
                if (arch, trainer, seed, coefficient) not in done:
                    rows.append(parity_one(arch, trainer, seed, coefficient, model, x, calib, spec, out_path))
    if only_arch in (None, "jumprelu") and only_trainer in (None, "variants"):
        for variant in JUMPRELU_VARIANTS:
            for seed in g["seeds"]:
                if ("jumprelu", variant, seed, 1.0) not in done:
                    parity_one("jumprelu", variant, seed, 1.0, model, x, calib, spec, out_path)


PARITY_BUDGET_RUNS = (("jumprelu", "saepipe"), ("jumprelu", "sae_lens"), ("jumprelu", "saepipe+sae_lens_threshold"),
                      ("batchtopk", "saepipe"))
"""§7's JumpReLU rows at a longer budget (L0 coefficient 1.0, both trainers' default), beside our BatchTopK."""


def parity_budget(command: str) -> None:
    """`budget` runs PARITY_BUDGET_RUNS at $EXP_PARITY_STEPS (default 4,000) steps on a pool of one pass (fresh
    samples every step), with BatchTopK's k and every SAE's matched L0 at $EXP_PARITY_K (default 10);
    `budget summary` prints their table. Results: parity_<steps>.jsonl (parity_<steps>_k<k>.jsonl)."""
    steps, k = int(os.environ.get("EXP_PARITY_STEPS", "4000")), int(os.environ.get("EXP_PARITY_K", PARITY["k"]))
    g = PARITY | {"steps": steps, "pool": steps * BATCH, "k": k}
    out_path = RESULTS / (f"parity_{steps}.jsonl" if k == PARITY["k"] else f"parity_{steps}_k{k}.jsonl")
    if command.endswith("summary"):
        return parity_summary(out_path)
    spec, model, x, calib = parity_inputs(g, out_path)
    done = {(r["arch"], r["trainer"], r["seed"]) for r in map(json.loads, out_path.open())} if out_path.exists() else set()
    for seed in g["seeds"]:
        for arch, trainer in PARITY_BUDGET_RUNS:
            if (arch, trainer, seed) not in done:
                parity_one(arch, trainer, seed, 1.0 if arch == "jumprelu" else None, model, x, calib, spec, out_path, g)


def parity_summary(path: Path) -> None:
    """Mean ± 95% t per (architecture, trainer) over the seeds of the table's setting (for JumpReLU: the
    matched coefficient, i.e. the one run on every seed), beside the untrained-SAE baseline."""
    rows = [json.loads(line) for line in path.open()]
    base = json.loads((RESULTS / "switch_baselines.json").read_text())["random"]
    print("| architecture | trainer | seeds | F1 | MCC | EV | L0 | dead | F1 (as trained) | L0 (as trained) | JumpReLU L0 coef. |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arch in PARITY_ARCHS:
        for trainer in ("saepipe", "sae_lens", *(JUMPRELU_VARIANTS if arch == "jumprelu" else ())):
            mine = [r for r in rows if r["arch"] == arch and r["trainer"] == trainer]
            if not mine:
                continue
            coefficient = max({r["l0_coefficient"] for r in mine}, key=lambda c, m=mine: sum(r["l0_coefficient"] == c for r in m))
            table = list({r["seed"]: r for r in mine if r["l0_coefficient"] == coefficient}.values())  # a rerun: deterministic, same row
            cal = {key: ci_cell([r["cal"][key] for r in table]) for key in ("f1", "mcc", "explained_variance")}
            print(f"| {arch} | {trainer} | {len(table)} | {cal['f1']} | {cal['mcc']} | {cal['explained_variance']} "
                  f"| {ci_cell([r['cal']['l0'] for r in table], 1)} | {ci_cell([r['cal']['dead_latents'] for r in table], 1)} "
                  f"| {ci_cell([r['fit']['f1'] for r in table])} | {ci_cell([r['fit']['l0'] for r in table], 1)} "
                  f"| {coefficient if coefficient is not None else '—'} |")
    print(f"| untrained SAE (baseline) | — | {len(base)} | {ci_cell([r['f1'] for r in base])} | {ci_cell([r['mcc'] for r in base])} "
          f"| {ci_cell([r['explained_variance'] for r in base])} | {ci_cell([r['l0'] for r in base], 1)} "
          f"| {ci_cell([r['dead_latents'] for r in base], 1)} | | | |")
    print("\n| trainer | JumpReLU sweep (seed 0): L0 coefficient -> L0 as trained, F1 as trained |")
    print("|---|---|")
    for trainer in ("saepipe", "sae_lens"):
        sweep = sorted({r["l0_coefficient"]: r for r in rows if r["arch"] == "jumprelu" and r["trainer"] == trainer and r["seed"] == 0}.values(),
                       key=lambda r: r["l0_coefficient"])
        if sweep:
            print(f"| {trainer} | " + "; ".join(f"{r['l0_coefficient']:g} -> {r['fit']['l0']:.1f}, {r['fit']['f1']:.3f}" for r in sweep) + " |")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("EXP_THREADS", "1")))
    command, grid = sys.argv[1], sys.argv[2]
    {"run": run_grid, "summary": summary, "baselines": baselines, "parity": parity}[command](grid)
