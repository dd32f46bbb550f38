"""Spec -> sae-lens `SyntheticModelConfig` / `SyntheticModel`, and deterministic sampling from it.

sae-lens's `SyntheticModel.sample*` draw from torch's *global* RNG. Every draw here runs inside
`seeded(seed)`, which forks that RNG (leaving the caller's state untouched) and seeds it, so a draw
depends only on its derived seed: shard i of the training data, the eval samples and the probe
samples each get their own stream (`derive_seed(spec.seed, purpose, index)`), disjoint from one another.
Draws are made in fixed-size chunks so peak memory (a dense (chunk, num_features) matrix) stays bounded.
Samples are reproducible per device type (CPU and CUDA RNGs differ), hence `synthetic.sampling_device`
(default: the CPU, so a key names the same vectors on every machine).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.config.synthetic import SyntheticSpec

if TYPE_CHECKING:  # sae-lens loads with the first model built, not with the plan (it takes seconds)
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig

MODEL_DIR = "model"
"""Subfolder of a `synthetic_model` artifact holding `SyntheticModel.save` output."""
MAX_CHUNK_ELEMENTS = 1 << 24
"""Largest dense (rows x num_features) feature matrix drawn at once (64 MiB of float32)."""


def _keys_form(spec: SyntheticSpec) -> dict[str, Any]:
    """The keys form as the `SyntheticModelConfig.to_dict()` it describes (sae-lens's own field names)."""
    h, c, o, m = spec.hierarchy, spec.correlation, spec.orthogonalization, spec.magnitudes
    return {
        "num_features": spec.num_features,
        "hidden_dim": spec.hidden_dim,
        "firing_probability": {"generator_name": "zipfian", **spec.firing.model_dump()},
        "hierarchy": None if h is None else {
            "total_root_nodes": h.n_roots,
            "branching_factor": list(h.branching) if isinstance(h.branching, tuple) else h.branching,
            "max_depth": h.depth,
            "mutually_exclusive_portion": h.mutually_exclusive,
            "mutually_exclusive_min_depth": h.mutually_exclusive_min_depth,
            "mutually_exclusive_max_depth": h.mutually_exclusive_max_depth,
            "compensate_probabilities": h.compensate_probabilities,
            "scale_children_by_parent": h.scale_children_by_parent,
        },
        "orthogonalization": None if o is None else {"num_steps": o.steps, "lr": o.lr},
        "correlation": None if c is None else {"rank": c.rank, "correlation_scale": c.scale, "seed": None},
        "mean_firing_magnitudes": {"generator_name": "linear", "start": m.mean_start, "end": m.mean_end},
        "std_firing_magnitudes": {"generator_name": "folded_normal", "mean": m.std_mean, "std": m.std_std},
        "bias": spec.bias if spec.bias > 0 else False,
        "dtype": "float32",
        "seed": spec.seed,
    }  # fmt: skip


def model_config(spec: SyntheticSpec) -> SyntheticModelConfig:
    """The sae-lens config a spec describes, validated by sae-lens's own classes: a value they refuse is
    a one-line `ValueError` naming the field (`synthetic.sae_lens.hierarchy: ...`)."""
    from sae_lens.synthetic import SyntheticModelConfig, ZipfianFiringProbabilityConfig

    if spec.saved is not None:
        return saved_config(Path(spec.saved))
    prefix, d = ("synthetic.sae_lens", dict(spec.sae_lens)) if spec.sae_lens is not None else ("synthetic", _keys_form(spec))
    if d.get("seed") is None:
        d["seed"] = spec.seed  # an unseeded model would differ on every build
    unknown = sorted(set(d) - set(SyntheticModelConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]}: not a SyntheticModelConfig field (sae-lens's fields: {', '.join(SyntheticModelConfig.__dataclass_fields__)})")
    d.setdefault("firing_probability", ZipfianFiringProbabilityConfig().to_dict())
    plain = {"num_features": 1, "hidden_dim": 1, "firing_probability": ZipfianFiringProbabilityConfig().to_dict()}
    for name in d:  # each field alone beside valid others, so the error names the field it is about
        try:
            SyntheticModelConfig.from_dict(copy.deepcopy({**plain, name: d[name]}))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"{prefix}.{name}: {_one_line(e)}") from None
    try:
        return SyntheticModelConfig.from_dict(copy.deepcopy(d))
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # fields fine alone, not together
        raise ValueError(f"{prefix}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def saved_config(folder: Path) -> SyntheticModelConfig:
    """The config of a model `SyntheticModel.save` wrote into `folder`."""
    from sae_lens.synthetic import SyntheticModelConfig
    from sae_lens.synthetic.synthetic_model import SYNTHETIC_MODEL_CONFIG_FILENAME

    path = folder / SYNTHETIC_MODEL_CONFIG_FILENAME
    if not path.is_file():
        raise ValueError(f"synthetic.saved: {folder} holds no {SYNTHETIC_MODEL_CONFIG_FILENAME} (not a saved SyntheticModel)")
    return SyntheticModelConfig.from_dict(json.loads(path.read_text()))


def sampling_device(spec: SyntheticSpec, run_device: str) -> str:
    """Where a spec's model is built and sampled: the CPU, or (`sampling_device: device`) the run's
    `device` resolved as training resolves it. Not part of any stage key, like `device` itself."""
    if spec.sampling_device == "cpu":
        return "cpu"
    from pipeline.training.device import resolve_device

    return str(resolve_device(run_device))


def build_model(spec: SyntheticSpec, on: str) -> SyntheticModel:
    """The model a spec names: built by sae-lens, or (`saved`) loaded as it was saved."""
    from sae_lens.synthetic import SyntheticModel

    if spec.saved is not None:
        saved_config(Path(spec.saved))
        return SyntheticModel.load_from_disk(spec.saved, device=on)
    return SyntheticModel(model_config(spec), device=on)


def load_model(artifact: Path, on: str) -> SyntheticModel:
    """The model saved in a `synthetic_model` artifact folder."""
    from sae_lens.synthetic import SyntheticModel

    return SyntheticModel.load_from_disk(artifact / MODEL_DIR, device=on)


def derive_seed(base: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed for one independent stream (e.g. ('train', shard 3), ('eval', 0))."""
    digest = hashlib.sha256(f"{base}:{purpose}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (CPU and CUDA) for the block; the caller's RNG state is restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def chunk_rows(model: SyntheticModel) -> int:
    return max(1, min(8192, MAX_CHUNK_ELEMENTS // model.cfg.num_features))


@torch.no_grad()
def sample_chunks(model: SyntheticModel, n: int, seed: int, with_features: bool = False,
                  step: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """`n` samples in chunks of `step` rows (default `chunk_rows(model)`; the chunking is part of the
    stream, so the stages keep the default), drawn from one stream seeded with `seed`:
    (hidden (rows, hidden_dim), feature activations (rows, num_features) or None)."""
    step = step or chunk_rows(model)
    with seeded(seed):
        for first in range(0, n, step):
            rows = min(step, n - first)
            if with_features:
                hidden, feats = model.sample_with_features(rows)
                yield hidden, feats
            else:
                yield model.sample(rows), None


def sample(model: SyntheticModel, n: int, seed: int, with_features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    parts = list(sample_chunks(model, n, seed, with_features))
    hidden = torch.cat([h for h, _ in parts])
    feats = torch.cat([f for _, f in parts]) if with_features else None  # type: ignore[misc]
    return hidden, feats
