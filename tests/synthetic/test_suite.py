"""A suite of synthetic shapes: the config lays shapes over a base, the plan builds one chain per shape,
and the report gives each spec per shape and "better on N of M shapes"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.config.errors import ConfigError
from pipeline.config.synthetic import SyntheticSuite
from pipeline.loading import load_config, parse_config
from pipeline.plan import build_plan
from pipeline.stages import report_suite
from pipeline.stages.report import aggregate

TINY_BASE = {"num_features": 32, "hidden_dim": 16, "hierarchy": None, "correlation": {"rank": 2, "scale": 0.1},
             "orthogonalization": None, "eval_samples": 2000, "probe_samples": 2000}  # fmt: skip


def suite_raw(saes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "suite_tiny",
        "synthetic_suite": {"base": TINY_BASE, "shapes": {"flat": {}, "wide": {"hidden_dim": 24, "correlation": None}}},
        "activations": {"n_tokens": 8192, "contexts_per_shard": 4},
        "saes": saes,
        "evals": {"synthetic": {"match_l0_samples": 2000}},  # matched L0 on few calibration samples: fast
    }


SAE = {"name": "btk", "d_sae": 32, "k": 3, "lr": 3e-3, "batch_size": 512, "seeds": [0, 1]}


def test_shapes_are_the_base_with_their_own_keys_laid_over() -> None:
    suite = SyntheticSuite.model_validate({"base": TINY_BASE, "shapes": {"a": {}, "b": {"correlation": {"rank": 4}}, "c": {"correlation": None}}})
    assert suite.shapes["a"].hidden_dim == 16 and suite.shapes["a"].correlation.rank == 2
    assert suite.shapes["b"].correlation.rank == 4 and suite.shapes["b"].correlation.scale == 0.1  # merged key by key
    assert suite.shapes["c"].correlation is None
    assert SyntheticSuite.model_validate(suite.model_dump()) == suite  # a dump re-validates to the same suite
    with pytest.raises(ValidationError, match="shapes"):
        SyntheticSuite.model_validate({"shapes": {"bad@name": {}}})
    with pytest.raises(ConfigError, match="not both"):
        parse_config({**suite_raw([SAE]), "synthetic": TINY_BASE})


def test_shipped_suite_has_four_shapes_three_seeds_and_matched_k() -> None:
    cfg, _ = load_config("synth_suite")
    assert len(cfg.shapes()) >= 4
    assert {tuple(s.seeds) for s in cfg.saes} == {(0, 1, 2)} and len({s.k for s in cfg.saes}) == 1
    assert 2 <= len([s for s in cfg.saes if s.trainer not in ("pca", "random")]) <= 3  # recipes; baselines beside them


def test_plan_builds_one_chain_per_shape() -> None:
    plan = build_plan(parse_config(suite_raw([SAE])))
    by_label = {s.label: s for s in plan}
    for shape in ("flat", "wide"):
        train = by_label[f"train:btk-s0@{shape}"]
        assert train.inputs["activations"] is by_label[f"activations@{shape}"]
        assert by_label[f"activations@{shape}"].inputs["synthetic_model"] is by_label[f"synthetic_model@{shape}"]
        ev = by_label[f"eval_synthetic:btk-s0@{shape}"]
        assert ev.inputs["synthetic_model"] is by_label[f"synthetic_model@{shape}"]
        assert ev.inputs["prep:all"] is by_label[f"eval_prep:synthetic@{shape}"]
        assert f"probe_baseline@{shape}" in by_label["report"].inputs
    assert by_label["train:btk-s0@flat"].key != by_label["train:btk-s0@wide"].key
    lone = build_plan(parse_config({**suite_raw([SAE]), "synthetic_suite": None, "synthetic": TINY_BASE}))
    assert not any("@" in s.label for s in lone)  # a single model's labels are unchanged


def _rows(values: dict[tuple[str, str], list[float]]) -> list[dict[str, Any]]:
    return [{"sae": f"{spec}@{shape}", "spec": spec, "shape": shape, "seed": i, "f1": v, "l0": 8.0}
            for (spec, shape), vs in values.items() for i, v in enumerate(vs)]  # fmt: skip


def test_better_on_n_of_m_shapes_counts_only_separated_differences() -> None:
    rows = _rows({
        ("a", "s1"): [0.50, 0.51, 0.52], ("b", "s1"): [0.30, 0.31, 0.32],  # a clearly better
        ("a", "s2"): [0.40, 0.45, 0.50], ("b", "s2"): [0.41, 0.44, 0.49],  # within noise
        ("a", "s3"): [0.10, 0.11, 0.12], ("b", "s3"): [0.20, 0.21, 0.22],  # b clearly better
    })  # fmt: skip
    run_level = {"headline": ["f1"], "better": {"f1": "higher", "l0": None}, "probe_baseline@s1": {"metrics": {"f1": 0.9}}}
    suite = report_suite.summarise(aggregate(rows), run_level)
    (pair,) = suite["pairs"]
    assert (pair["a"], pair["b"], pair["shapes"]) == ("a", "b", 3)
    assert pair["a_better_on"] == ["s1"] and pair["b_better_on"] == ["s3"]
    d = pair["difference"]["s1"]
    assert d["a_minus_b"] == pytest.approx(0.2) and 0 < d["ci95"] < 0.2
    lines = "\n".join(report_suite.markdown(suite))
    assert "| f1 | a | b | 1 of 3 | 1 of 3 |" in lines and "| *probe ceiling* | 0.9 |  |  |" in lines
    assert "**0.51 ± 0.025**" in lines  # the shape's best in bold


def test_suite_marks_an_unconverged_ceiling_and_a_best_below_a_baseline() -> None:
    """The probe ceiling's doubling check per shape (✗ when twice the samples moved F1 by >= 0.01), and a
    shape's best that scores below a baseline (‡, and a sentence saying by how much and whether the seeds
    separate them), in each metric's own direction."""
    rows = [{"sae": f"{spec}@{shape}", "spec": spec, "shape": shape, "seed": i, "baseline": spec == "random", "f1": f1, "dead": dead, "l0": 8.0}
            for (spec, shape), (f1s, dead) in {
                ("a", "s1"): ([0.50, 0.51, 0.52], 10.0), ("random", "s1"): ([0.20, 0.21, 0.22], 0.0),  # f1 above random; dead: below it
                ("a", "s2"): ([0.10, 0.20, 0.30], 10.0), ("random", "s2"): ([0.22, 0.23, 0.24], 20.0),  # f1 below random, not separated
            }.items() for i, f1 in enumerate(f1s)]  # fmt: skip
    for i, r in enumerate(rows):
        r["dead"] += i % 3  # some spread over seeds
    doubling = lambda f1, change: {"probe_samples": 4000, "f1": f1 + change, "change": change, "tolerance": 0.01,
                                   "stable": abs(change) < 0.01, "converged": True}  # fmt: skip
    run_level = {"headline": ["f1", "dead"], "better": {"f1": "higher", "dead": "lower", "l0": None},
                 "probe_baseline@s1": {"metrics": {"f1": 0.9}, "probe_samples": 2000, "doubling": doubling(0.9, 0.004)},
                 "probe_baseline@s2": {"metrics": {"f1": 0.8}, "probe_samples": 2000, "doubling": doubling(0.8, -0.015)}}  # fmt: skip
    suite = report_suite.summarise(aggregate(rows), run_level)
    assert list(suite["below_baseline"]["f1"]) == ["s2"] and list(suite["below_baseline"]["dead"]) == ["s1"]
    assert suite["below_baseline"]["f1"]["s2"]["baselines"]["random"]["separated"] is False
    assert suite["below_baseline"]["dead"]["s1"]["baselines"]["random"]["separated"] is True
    lines = report_suite.markdown(suite)
    assert "| a | **0.51 ± 0.025** | **0.2 ± 0.25** ‡ |" in lines
    assert "‡ s2: the best spec, a (0.2), scores below a baseline: random 0.23 (the seeds cannot separate them)." in lines
    assert "‡ s1: the best spec, a (11), scores below a baseline: random 1 (separated by the seeds)." in lines
    assert "| *probe ceiling* | 0.9 | 0.8 ✗ |" in lines
    ceiling = {ln.split("|")[1].strip(): ln for ln in lines if ln.startswith("| s")}
    assert ceiling["s1"].endswith("| 0.904 (4000; +0.0040) |")
    assert ceiling["s2"].endswith("| 0.785 (4000; -0.0150) ✗ not converged (|change| ≥ 0.01) |")


def test_suite_runs_end_to_end_and_reports_per_shape(tmp_path: Path) -> None:
    from pipeline.artifacts import ArtifactStore
    from pipeline.executors.local import run_local
    from pipeline.progress import Reporter

    cfg = parse_config(suite_raw([SAE]))
    outcomes = run_local(cfg, build_plan(cfg), ArtifactStore(tmp_path), set(), Reporter(enabled=False))
    assert {o.status for o in outcomes} == {"ran"}, [(o.stage.label, o.status, o.error[-300:]) for o in outcomes]
    summary = json.loads((tmp_path / "suite_tiny" / "summary.json").read_text())
    assert {r["sae"] for r in summary["saes"]} == {"btk@flat", "btk@wide"}
    assert summary["suite"]["shapes"] == ["flat", "wide"] and set(summary["suite"]["probe_ceiling"]) == {"flat", "wide"}
    assert all(p["doubling"]["probe_samples"] == 4000 for p in summary["suite"]["probe_ceiling"].values())  # the prep's doubling check
    assert summary["suite"]["matched_l0"] and all(a["l0"]["mean"] == pytest.approx(3, rel=0.05) for a in summary["by_spec"])  # k 3
    assert {b.get("shape") for b in summary["scoreboard"]} == {"flat", "wide"}
    report = (tmp_path / "suite_tiny" / "report.md").read_text()
    assert "## Suite: each spec on each shape" in report and "| *probe ceiling* |" in report
    assert "<h2>Suite</h2>" in (tmp_path / "suite_tiny" / "report.html").read_text()
