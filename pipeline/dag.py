"""A planned stage and the graph operations on a plan (downstream closure, --force selection).

A stage's key hashes its kind, its code version, its own params and its inputs' keys. So changing one
SAE's learning rate changes that train stage's key and its evals' keys, and nothing upstream. Params
hold everything a stage needs, so any process (a SLURM job included) can run a stage from the config
and the key alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    kind: str
    label: str
    params: dict[str, Any]
    inputs: dict[str, Stage] = field(default_factory=dict)
    version: int = 0
    """The kind's code version (``StageKind.version``), filled in by the plan."""

    @property
    def key(self) -> str:
        payload = {
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "inputs": {name: s.key for name, s in sorted(self.inputs.items())},
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.key)


def downstream(stages: list[Stage], roots: set[str]) -> set[str]:
    """Labels of the stages in ``roots`` and of everything that depends on them."""
    out = set(roots)
    for stage in stages:  # topological order: one pass suffices
        if any(inp.label in out for inp in stage.inputs.values()):
            out.add(stage.label)
    return out


def select(stages: list[Stage], pattern: str) -> set[str]:
    """Labels matched by a --force pattern: a kind ('train'), a label ('train:btk-s0'), or a key."""
    hits = {s.label for s in stages if pattern in (s.kind, s.label, s.key)}
    if not hits:
        choices = sorted({s.kind for s in stages} | {s.label for s in stages})
        raise ValueError(f"--force {pattern!r} matches no stage; choose one of {choices}")
    return hits
