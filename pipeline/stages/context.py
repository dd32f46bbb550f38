"""What a stage function receives: its spec, the config, where to write, and its inputs' folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.config import PipelineConfig
from pipeline.plan import Stage
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

    def input_dir(self, name: str) -> Path:
        inp = self.stage.inputs[name]
        return self.store.path(inp.kind, inp.key)
