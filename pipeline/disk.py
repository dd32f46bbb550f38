"""Disk sizing before anything runs: the bytes each stage will write, and whether the plan fits.

Each stage kind names its estimator in its ``StageKind`` declaration (``planned_bytes``); the formulas
live here, in one place, from the stage's params alone (a plan is sized without loading a model).
Estimates are upper-ish bounds on what the artifact and its ``.work`` scratch hold at their peak.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from evals.contract import EvalDef, PrepSize
from evals.registry import prep_family
from pipeline.config.facts import known_d_model, known_d_vocab
from pipeline.dag import Stage

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
ROW_IDS = 16
"""token_id (int32), seq_id (int64), pos (int32) per activation row."""
PARQUET_OVERHEAD = 1.01
"""Page headers, statistics and footers (measured: shards are within 1% of the raw bytes, since the
activations are written plain, without dictionary or compression)."""
CHECKPOINTS_KEPT = 2
"""pipeline.training.checkpoint.KEEP."""


def activation_width(acts: Stage) -> int | None:
    """d_model of an activations stage (a language model's, or a synthetic model's hidden dim)."""
    if "model" in acts.params:
        model = acts.params["model"]
        return known_d_model(model["source"], model["name"])
    synth = acts.inputs.get("synthetic_model")
    return synthetic_dims(synth.params["synthetic"])[1] if synth is not None else None


def synthetic_dims(spec: dict[str, Any]) -> tuple[int, int]:
    """(num_features, hidden_dim) of a synthetic spec in any of its forms (keys, `sae_lens`, `saved`)."""
    if spec.get("saved"):
        spec = json.loads((Path(spec["saved"]) / "synthetic_model_config.json").read_text())
    elif spec.get("sae_lens"):
        spec = spec["sae_lens"]
    return int(spec["num_features"]), int(spec["hidden_dim"])


def activation_shards(stage: Stage) -> int | None:
    """Tokens × (d_model × dtype + ids), plus Parquet overhead."""
    width = activation_width(stage)
    if width is None:
        return None
    acts = stage.params["activations"]
    return int(acts["n_tokens"] * (width * DTYPE_BYTES[acts["dtype"]] + ROW_IDS) * PARQUET_OVERHEAD)


def sae_training(stage: Stage) -> int | None:
    """The saved SAE (fp32 W_enc, W_dec, biases) plus the checkpoints kept at the peak: weights and Adam's two moments each."""
    d_in = activation_width(stage.inputs["activations"])
    if d_in is None:
        return None
    d_sae = stage.params["d_sae"]
    weights = 4 * (2 * d_in * d_sae + d_sae + d_in)
    return weights + CHECKPOINTS_KEPT * 3 * weights


def synthetic_model(stage: Stage) -> int:
    """Feature directions (fp32) and the correlation factors, a few copies' worth at most."""
    num_features, hidden_dim = synthetic_dims(stage.params["synthetic"])
    return 4 * num_features * (hidden_dim + 64) + 2**20


PREP_OVERHEAD = 2**18
"""Bytes of an eval prep beyond its tensors' own: its meta JSON and the chunk files' headers and index
(measured: 35 kB for a 4.7 MB prep cut into 64 kB chunks, the tests' smallest)."""


def eval_prep(stage: Stage) -> int | None:
    """An ``eval_prep`` stage's bytes, from its eval family's declaration."""
    width = activation_width(stage)
    if width is None:
        return None
    context_size = stage.params.get("data", {}).get("context_size")
    return prep_bytes(prep_family(stage.params["eval"]), stage.params["params"], stage.params.get("model"), width, context_size)


def prep_bytes(d: EvalDef, settings: dict[str, Any], model: dict[str, Any] | None, d_model: int, context_size: int | None) -> int | None:
    """What an eval declares its prep writes (``EvalDef.prep_bytes``) at a model's sizes (``model`` is None
    for a synthetic run's preps), plus ``PREP_OVERHEAD``; None when the eval declares nothing."""
    if d.prep_bytes is None:
        return None
    size = PrepSize(
        d_model=d_model,
        d_vocab=known_d_vocab(model["source"], model["name"]) if model else None,
        float_bytes=DTYPE_BYTES[model["dtype"]] if model else 4,
        context_size=context_size,
    )
    return d.prep_bytes(settings, size) + PREP_OVERHEAD


def small(stage: Stage) -> int:
    """JSON results and reports: a few MB at most."""
    return 4 * 2**20


def free_bytes(root: Path) -> int:
    """Free space of the filesystem that holds (or will hold) the artifact root."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


FIELD_OF_KIND = {"activations": "activations.n_tokens", "synthetic_activations": "activations.n_tokens", "train": "saes[].d_sae"}
"""The setting to lower when a kind's stages do not fit."""


def shortfall(planned: list[tuple[Stage, int | None]], root: Path) -> str | None:
    """One line naming the setting, the bytes needed and the bytes free when the stages still to run do
    not fit on the artifact filesystem; None when they do (unknown sizes count as zero)."""
    need = sum(n or 0 for _, n in planned)
    free = free_bytes(root)
    if need <= free:
        return None
    by_kind: dict[str, int] = {}
    for stage, n in planned:
        by_kind[stage.kind] = by_kind.get(stage.kind, 0) + (n or 0)
    worst = max(by_kind, key=by_kind.__getitem__)
    field = FIELD_OF_KIND.get(worst, worst)
    return (
        f"{field}: the stages still to run write {human(need)} ({worst}: {human(by_kind[worst])}) but {root} has "
        f"{human(free)} free; lower {field}, free some space, or pass --skip-disk-check"
    )
