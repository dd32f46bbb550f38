"""The ``model:`` section: which language model to hook, and where (also an eval's own ``evals.<name>.model``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Strict
from pipeline.config.facts import known_n_layers

HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")


class ModelSpec(Strict):
    """Which language model to hook, and where."""

    source: Literal["smollm2_gguf", "hub"]
    name: str = Field(min_length=1)
    hook: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"

    @field_validator("hook")
    @classmethod
    def _hook_shape(cls, hook: str) -> str:
        if not HOOK_RE.match(hook):
            raise ValueError("must look like 'blocks.<layer>.hook_resid_post' (or _pre / _mid)")
        return hook

    @model_validator(mode="after")
    def _layer_in_range(self) -> ModelSpec:
        n_layers = known_n_layers(self.source, self.name)
        layer = self.layer
        if n_layers is not None and layer >= n_layers:
            raise ValueError(f"hook layer {layer} does not exist: {self.name} has layers 0..{n_layers - 1}")
        return self

    @property
    def layer(self) -> int:
        match = HOOK_RE.match(self.hook)
        assert match is not None
        return int(match.group(1))
