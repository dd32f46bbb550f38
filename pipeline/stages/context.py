"""What a stage function receives: its spec, the config, where to write, and its inputs' folders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.dag import Stage
from pipeline.kinds import StageKind
from pipeline.progress import Reporter


@dataclass
class StageContext:
    stage: Stage
    cfg: PipelineConfig
    store: ArtifactStore
    out: Path
    """Staging folder: everything written here becomes the artifact on commit."""
    work: Path
    """Scratch that survives a crash (shards done so far, checkpoints): the means to resume."""
    reporter: Reporter
    kinds: Mapping[str, StageKind] = field(default_factory=dict)
    """The stage registry, for stages that read other kinds' results (the report)."""

    def input_dir(self, name: str) -> Path:
        inp = self.stage.inputs[name]
        return self.store.path(inp.kind, inp.key)
