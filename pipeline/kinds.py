"""What a stage kind is: its name, code version, run function, resume rules, and what the report shows.

Each kind is declared once, as a ``StageKind`` in ``pipeline.stages.registry``'s one visible block,
naming the function that runs it. The plan (keys), the executors (run, resume, partial inputs) and the report
(titles, metrics and which way is better) ask that registry and nothing else.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"] | None
"""Which way a metric improves; None for a quantity that is chosen or described, not won (L0, CE clean)."""


@dataclass(frozen=True)
class Metric:
    better: Better
    headline: bool = False
    """Plotted against L0 at the top of the report."""


@dataclass(frozen=True)
class Reported:
    """What the report takes from a kind's artifact: a result file, its headline metrics, a title."""

    title: str
    result_file: str
    extract: Callable[[dict[str, Any]], dict[str, float]]
    """Result JSON -> flat headline metrics."""
    metrics: Mapping[str, Metric]
    """Every metric ``extract`` can return, by name or fnmatch pattern (``probe_sae_top*_acc``)."""

    def metric(self, name: str) -> Metric:
        """The declaration of a metric; an undeclared one is a bug (its direction would be guessed)."""
        if name in self.metrics:
            return self.metrics[name]
        for pattern, metric in self.metrics.items():
            if fnmatch.fnmatchcase(name, pattern):
                return metric
        raise KeyError(f"{self.title}: metric {name!r} is not declared in its kind's `metrics`; add it with its direction")


@dataclass(frozen=True)
class StageKind:
    name: str
    version: int
    """Bump when the code changes what the kind produces: its artifacts (and everything downstream) are redone."""
    runner: str
    """``module:function`` taking a StageContext and returning the summary (JSON-able, stored in the
    manifest). Imported only when a stage runs, so planning and submitting load no torch."""
    resumes: bool = False
    """Partial work in ``.work/<key>`` (shards so far, checkpoints) is continued after a crash."""
    partial_inputs: bool = False
    """Runs with whatever inputs completed (the report lists what is missing, and is redone once they exist)."""
    reported: Reported | None = None
    planned_bytes: Callable[[Any], int | None] | None = None
    """Stage -> the bytes its artifact and scratch hold at their peak (``pipeline.disk``); None: unknown."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific facts for the code that plans it (an eval's definition, for instance)."""

    def run(self, ctx: Any) -> dict[str, Any]:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)(ctx)
