"""Which eval stages can share one process: the evals of one kind over several SAEs that read the same
prepared data with the same model.

Such a group pays for the process start, the imports and the model load once (``pipeline.models.cache``
keeps the loaded model per process) instead of once per SAE, while every SAE keeps its own stage, key,
lock and artifact: one failing SAE fails alone. The local executor runs a group back to back (so a run
whose evals use two models does not reload them by turns); the SLURM executor puts a group into one job
(``executor.slurm.eval_group_size`` stages at most).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pipeline.dag import Stage


def group_key(stage: Stage) -> tuple[str, ...] | None:
    """(kind, model, every input but the SAE: the preps, a synthetic model) for a per-SAE eval stage;
    None for a stage that runs alone."""
    if not stage.kind.startswith("eval_") or stage.kind == "eval_prep" or "sae" not in stage.inputs:
        return None
    shared = sorted(f"{name}={inp.key}" for name, inp in stage.inputs.items() if name != "sae")
    model = json.dumps(stage.params.get("model"), sort_keys=True)  # an eval's own model; None: the run's
    return (stage.kind, model, *shared)


def grouped(stages: Iterable[Stage], size: int) -> list[list[Stage]]:
    """The stages cut into groups that may share a process, in order of first appearance: like eval
    stages together, at most ``size`` per group; every other stage alone."""
    if size < 1:
        raise ValueError(f"group size must be at least 1, got {size}")
    out: list[list[Stage]] = []
    open_group: dict[tuple[str, ...], list[Stage]] = {}
    for stage in stages:
        key = group_key(stage)
        if key is None:
            out.append([stage])
            continue
        members = open_group.get(key)
        if members is None or len(members) >= size:
            members = open_group[key] = []
            out.append(members)
        members.append(stage)
    return out


def local_order(stages: list[Stage]) -> list[Stage]:
    """A topological order of the plan in which every stage that is not a like eval runs as soon as its
    inputs are done (trains, preps), and each group of like evals then runs back to back, the groups in
    the plan's order. The plan itself interleaves the evals of each SAE (core, probing, unlearning, then
    the next SAE), which reloads the model by turns when two evals use different models."""
    order: list[Stage] = []
    placed: set[str] = set()
    remaining = list(stages)

    def ready(s: Stage) -> bool:
        return all(i.key in placed for i in s.inputs.values())

    while remaining:
        alone = next((s for s in remaining if group_key(s) is None and ready(s)), None)
        if alone is not None:
            batch = [alone]
        else:
            key = group_key(next(s for s in remaining if ready(s)))  # a DAG always has a ready stage
            batch = [s for s in remaining if group_key(s) == key and ready(s)]
        order += batch
        placed |= {s.key for s in batch}
        remaining = [s for s in remaining if s.key not in placed]
    return order
