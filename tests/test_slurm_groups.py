"""Like evals of a sweep share a process: the grouping on real plans, and the SLURM dry run (no cluster
needed) putting a group into one job whose script runs all its keys in one ``run-stage``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.dag import Stage
from pipeline.executors.groups import group_key, grouped, local_order
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from tests.conftest import TINY, run_cli, tiny_config, write_config

PROBING = {"enabled": True, "datasets": ["96_spam_is"], "n_train": 40, "n_test": 20, "context_size": 32, "k_values": [1]}


def sweep(n_seeds: int, **overrides: Any) -> dict[str, Any]:
    return tiny_config(name="tiny-groups", saes=[{**TINY["saes"][0], "seeds": list(range(n_seeds))}], **overrides)


def test_like_evals_group_by_kind_and_prep_and_nothing_else_does() -> None:
    raw = sweep(3, evals={"core": TINY["evals"]["core"], "sparse_probing": PROBING})
    raw["saes"].append({**TINY["saes"][0], "name": "other", "d_sae": 128, "seeds": [0]})
    stages = build_plan(parse_config(raw))
    groups = grouped(stages, size=3)
    multi = [[s.label for s in g] for g in groups if len(g) > 1]
    assert multi == [[f"eval_core:btk-s{i}" for i in range(3)], [f"eval_sparse_probing:btk-s{i}" for i in range(3)]]
    # the other spec reads the same prep with the same model, but the group is full: it starts the next one
    assert [[s.label for s in g] for g in groups if g[0].kind == "eval_core"][1] == ["eval_core:other-s0"]
    assert sorted(s.label for g in groups for s in g) == sorted(s.label for s in stages)  # nothing lost or doubled
    assert all(group_key(s) is None for s in stages if s.kind in ("activations", "train", "eval_prep", "report"))
    with pytest.raises(ValueError, match="group size must be at least 1"):
        grouped(stages, size=0)


def test_local_order_runs_like_evals_back_to_back_in_a_topological_order() -> None:
    stages = build_plan(parse_config(sweep(3, evals={"core": TINY["evals"]["core"], "sparse_probing": PROBING})))
    assert len(kind_runs(stages)) == 6  # the plan interleaves them: core, probing, per SAE
    order = local_order(stages)
    assert sorted(s.key for s in order) == sorted(s.key for s in stages)
    seen: set[str] = set()
    for s in order:
        assert all(i.key in seen for i in s.inputs.values()), f"{s.label} before its inputs"
        seen.add(s.key)
    assert kind_runs(order) == ["eval_core", "eval_sparse_probing"]  # each kind once: its SAEs back to back


def kind_runs(stages: list[Stage]) -> list[str]:
    """The per-SAE eval kinds in order, consecutive repeats merged."""
    kinds = [s.kind for s in stages if group_key(s) is not None]
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def test_dry_run_puts_a_group_of_evals_into_one_job(tmp_path: Path) -> None:
    executor = {"kind": "slurm", "slurm": {"defaults": {"cpus": 1, "mem": "3G", "time": "00:20:00"}}}
    cfg_path = write_config(tmp_path, sweep(3, executor=executor))
    plan = {s.label: s for s in build_plan(parse_config(sweep(3, executor=executor)))}
    out = run_cli("run", str(cfg_path), "--dry-run", artifacts=tmp_path / "store")
    text = re.sub(r"\s+", " ", out.stdout + out.stderr)
    labels = " + ".join(f"eval_core:btk-s{i}" for i in range(3))
    assert f"group of 3 in one process: {labels}" in text  # one job, not an array of three
    assert "array of 3: train:btk-s0, train:btk-s1, train:btk-s2" in text
    scripts = tmp_path / "store" / "tiny-groups" / "slurm" / "scripts"
    script = (scripts / "eval_core_btk-s0_2.sbatch").read_text()
    keys = " ".join(plan[f"eval_core:btk-s{i}"].key for i in range(3))
    assert f"KEY='{keys}'" in script and "--array" not in script
    assert re.search(r"exec \S+ -m pipeline\.job run-stage \S+\.yaml \$KEY --artifacts \S+ --quiet", script)
    assert "5 SLURM job(s) for 9 stage(s)" in text  # activations, train array, prep, the eval group, report

    # eval_group_size 2: an array of two tasks, the first running two SAEs in one process
    cfg_path = write_config(tmp_path, sweep(3, executor={**executor, "slurm": {**executor["slurm"], "eval_group_size": 2}}))
    out = run_cli("run", str(cfg_path), "--dry-run", artifacts=tmp_path / "store2")
    text = re.sub(r"\s+", " ", out.stdout + out.stderr)
    assert "array of 2: eval_core:btk-s0 + eval_core:btk-s1, eval_core:btk-s2" in text
    script = (tmp_path / "store2" / "tiny-groups" / "slurm" / "scripts" / "eval_core.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script
    assert f"KEYS=('{plan['eval_core:btk-s0'].key} {plan['eval_core:btk-s1'].key}' {plan['eval_core:btk-s2'].key})" in script
