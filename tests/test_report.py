"""The report's numbers, recomputed by hand from the eval JSONs of a small fixture: means, 95% intervals,
the '≈' marks, the bold best in each metric's better direction, the scoreboard and the matched-L0 marks;
baselines that never win, the training curves from the train logs, and the autointerp examples, escaped."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from scipy import stats

from pipeline.artifacts import ArtifactStore
from pipeline.executors.stage_runner import execute
from pipeline.plan import stage
from pipeline.progress import Reporter
from tests.conftest import tiny_config

# Two specs x three seeds. f1: a clearly better. mcc: indistinguishable. dead_latents: lower is better, b wins.
# l0: b runs at 10% more active latents than a, so every comparison between them is marked as not matched.
# p is a PCA baseline with the best f1 and the fewest dead latents of all: it must still never be bold or best.
VALUES = {
    "a": {"f1": [0.50, 0.60, 0.70], "mcc": [0.40, 0.41, 0.42], "dead_latents": [10, 12, 11], "l0": [10.0, 10.0, 10.0]},
    "b": {"f1": [0.20, 0.25, 0.30], "mcc": [0.40, 0.42, 0.41], "dead_latents": [1, 2, 3], "l0": [11.0, 11.0, 11.0]},
    "p": {"f1": [0.85, 0.90, 0.95], "mcc": [0.10, 0.12, 0.11], "dead_latents": [0, 0, 0], "l0": [10.0, 10.0, 10.0]},
}
TRAINERS = {"a": "saepipe", "b": "sae_lens", "p": "pca"}
DIFFERS = {"b": {"aux_loss_coefficient": [0.03125, 1.0], "lr_warm_up_steps": [0, 1000], "note": "x"}}
"""b's train result records the settings that differ from sae-lens's defaults, as the train stage does
({setting: [ours, sae-lens default]}; a value of another shape is shown as it is); a and p record none."""
BATCH = 100
LOG_A = [{"loss": 1.0 / (i + 1), "mse": 0.5, "l0": 10.0 + i % 2, "dead_latents": float(i // 50)} for i in range(250)]
LOG_B = [{"loss": 2.0, "mse": 1.0} for _ in range(7)]  # an older log: no L0, no dead-latent count
TOKENS = ["<script>", " a|b", "*x*", "\n", " tail"]
"""The autointerp example's context: tokens that break HTML or Markdown if not escaped; the peak is at *x*."""
AUTOINTERP = {
    "eval_result_metrics": {"autointerp": {"autointerp_score": 0.6}},
    "eval_result_unstructured": {"saepipe": {
        "scores": {n: {"score": {"mean": 0.5}, "null": {"mean": 0.4}} for n in ("score", "detection", "fuzzing", "embedding")},
        "tier_mix": {"input": 0.5, "output": 0.0, "cross": 0.0, "obscure": 0.5}, "n_latents_scored": 2, "unparsable_answers": {},
        "judge": {"total_tokens": 100, "total_cost_usd": 0.0},
        "tier_examples": {"input": [{"latent": 7, "explanation": "the <b> tag & friends", "correlation": {"before": 0.5, "after": 0.1},
                                     "act_threshold": 0.5, "top_contexts": [{"tokens": TOKENS, "acts": [0.0, 1.0, 3.0, 2.0, 0.0]}]}],
                          "output": [], "cross": [], "obscure": [{"latent": 9, "explanation": "nothing", "correlation": {},
                                                                  "top_contexts": ["an <<old>> string context"]}]},
    }},
}  # fmt: skip
EXTRA = {"precision": 0.5, "recall": 0.5, "accuracy": 0.5, "uniqueness": 0.5, "explained_variance": 0.5, "true_l0": 10.0, "shrinkage": 1.0}
FITTED = {"l0": [12.0, 12.5, 13.0], "f1": [0.3, 0.35, 0.4], "mcc": [0.5, 0.5, 0.5]}
SCALE = [1.05, 1.10, 1.15]
"""b was scored at matched L0: its eval JSONs hold the fitted-threshold metrics and the factor beside the matched ones."""


def _synthetic_json(spec: str, seed: int) -> dict:
    values = {m: v[seed] for m, v in VALUES[spec].items()}
    out: dict = {"metrics": {**EXTRA, **values}}
    if spec == "b":
        out["fitted_metrics"] = {**out["metrics"], **{m: v[seed] for m, v in FITTED.items()}}
        out["calibration"] = {"method": "threshold_scale", "factor": SCALE[seed], "target_l0": 11, "l0": 11.0}
    return out


def _commit(store: ArtifactStore, st, files: dict[str, dict], record: dict) -> None:
    staging = store.staging_dir(st.kind, st.key)
    for name, payload in files.items():
        (staging / name).write_text(json.dumps(payload))
    store.commit(st.kind, st.key, staging, {"label": st.label, **record})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    from pipeline.loading import parse_config

    root = tmp_path_factory.mktemp("report")
    store = ArtifactStore(root)
    cfg = parse_config(tiny_config())
    inputs = {}
    logs = {"a-s0": LOG_A, "b-s0": LOG_B, "p-s0": []}  # the baseline's log has no steps: no curve
    for spec in VALUES:
        for seed in range(3):
            sae_id = f"{spec}-s{seed}"
            train = stage("train", f"train:{sae_id}", {"spec": spec, "seed": seed})
            summary = {"tokens": 1000, **({"differs_from_reference": DIFFERS[spec]} if spec in DIFFERS else {})}
            files = {"train_log.json": {"steps": logs[sae_id], "log_every": 1}} if sae_id in logs else {}
            params = {"trainer": TRAINERS[spec], "d_sae": 64, "k": 4, "batch_size": BATCH}
            _commit(store, train, files, {"params": params, "summary": summary})
            ev = stage("eval_synthetic", f"eval_synthetic:{sae_id}", {"loo_tau": None}, {"sae": train})
            _commit(store, ev, {"synthetic.json": _synthetic_json(spec, seed)}, {"params": {}, "summary": {}})
            inputs[train.label], inputs[ev.label] = train, ev
            if sae_id == "a-s0":
                ai = stage("eval_autointerp", "eval_autointerp:a-s0", {}, {"sae": train})
                _commit(store, ai, {"autointerp.json": AUTOINTERP}, {"params": {}, "summary": {}})
                inputs[ai.label] = ai
    rep = stage("report", "report", {"run": "fixture"}, inputs)
    folder = execute(cfg, store, rep, Reporter(enabled=False))
    return json.loads((folder / "summary.json").read_text()), (folder / "report.md").read_text(), (folder / "report.html").read_text()


def _by_spec(summary: dict, spec: str) -> dict:
    return next(a for a in summary["by_spec"] if a["sae"] == spec)


@pytest.mark.parametrize("spec", ["a", "b", "p"])
@pytest.mark.parametrize("metric", ["f1", "mcc", "dead_latents", "l0"])
def test_means_and_intervals_by_hand(report: tuple[dict, str, str], spec: str, metric: str) -> None:
    values = VALUES[spec][metric]
    got = _by_spec(report[0], spec)[metric]
    std = statistics.stdev(values)
    assert got["mean"] == pytest.approx(sum(values) / 3)
    assert got["std"] == pytest.approx(std)
    assert got["ci95"] == pytest.approx(4.302652729911275 * std / math.sqrt(3))  # t(0.975, df=2)
    assert got["values"] == values


def _row(md: str, section: str, spec: str) -> dict[str, str]:
    """The cells of one spec's row in a section's mean ± interval table."""
    block = md.split(f"## {section}")[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == spec:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row for {spec} in {section}")


def test_bold_best_in_the_declared_direction_and_noise_marks(report: tuple[dict, str, str]) -> None:
    md = report[1]
    a, b = _row(md, "Synthetic ground truth", "a"), _row(md, "Synthetic ground truth", "b")
    assert a["f1"].startswith("**0.6 ± 0.25") and not b["f1"].startswith("**")
    assert "≈" not in b["f1"]  # Welch's test separates them ...
    assert stats.ttest_ind(VALUES["a"]["f1"], VALUES["b"]["f1"], equal_var=False).pvalue < 0.05  # ... and by hand too
    assert b["dead_latents"].startswith("**2 ± ")  # lower is better for dead latents
    assert not a["dead_latents"].startswith("**")
    assert "≈" in b["mcc"] or "≈" in a["mcc"]  # one of them is best, the other within noise
    assert stats.ttest_ind(VALUES["a"]["mcc"], VALUES["b"]["mcc"], equal_var=False).pvalue >= 0.05
    assert not a["l0"].startswith("**") and not b["l0"].startswith("**")  # L0 is chosen, not won
    assert "†" in b["f1"]  # b's L0 is 10% above a's: not a matched-L0 comparison


def test_scoreboard(report: tuple[dict, str, str]) -> None:
    board = {row["metric"]: row for row in report[0]["scoreboard"]}
    assert board["f1"]["best"] == "a" and board["f1"]["indistinguishable"] == [] and board["f1"]["l0_not_matched"] == ["b"]
    assert board["dead_latents"]["best"] == "b" and board["dead_latents"]["better"] == "lower"
    assert board["mcc"]["indistinguishable"] in (["a"], ["b"])
    assert "l0" not in board and "true_l0" not in board
    assert "## Scoreboard" in report[1]
    # the PCA baseline has the best f1 and no dead latents, yet a and b stay best; it is listed beside them
    assert board["f1"]["best"] == "a" and board["dead_latents"]["best"] == "b" and "p" not in board["mcc"]["indistinguishable"]
    p_vs_a = stats.ttest_ind(VALUES["p"]["f1"], VALUES["a"]["f1"], equal_var=False).pvalue
    assert board["f1"]["baselines"] == {"p": {"mean": pytest.approx(0.9), "within_noise_of_best": bool(p_vs_a >= 0.05), "beats_best": True}}
    assert p_vs_a < 0.05  # by hand: the baseline's f1 really is separated from the best's (and above it)
    # the best scores below the baseline: said plainly on f1 (0.6 < 0.9) and dead latents (lower is better: 2 > 0), not on mcc
    assert board["dead_latents"]["baselines"]["p"]["beats_best"] and not board["mcc"]["baselines"]["p"]["beats_best"]
    rows = {ln.split("|")[1].strip(): ln for ln in report[1].split("## Scoreboard")[1].split("\n## ")[0].splitlines() if ln.startswith("| ")}
    assert rows["f1"].endswith("| p 0.9 ‡ best scores below it |") and "‡" not in rows["mcc"]
    assert "p 0 ≈ ‡ best scores below it" in rows["dead_latents"]  # 0, 0, 0 vs 1, 2, 3: not separated (p 0.07), still below


def test_matched_l0_fitted_metrics_beside_the_matched_ones(report: tuple[dict, str, str]) -> None:
    """b's eval JSONs carry its fitted-threshold L0/F1/MCC and the calibration factor: shown as columns
    (by hand: their means), never bold; a and p, scored without calibration, have none."""
    summary, md, _ = report
    b = _by_spec(summary, "b")
    for m, values in FITTED.items():
        assert b[f"{m}_fitted"]["mean"] == pytest.approx(sum(values) / 3) and b[f"{m}_fitted"]["values"] == values
    assert b["threshold_scale"]["mean"] == pytest.approx(1.10)
    assert "l0_fitted" not in _by_spec(summary, "a") and "threshold_scale" not in _by_spec(summary, "p")
    row = _row(md, "Synthetic ground truth", "b")
    assert row["f1_fitted"] == "0.35 ± 0.12" and row["threshold_scale"].startswith("1.1 ± ") and "**" not in row["l0_fitted"]
    assert "Synthetic ground truth at matched L0" in md.split("## Notes")[1]


def test_baselines_are_marked_and_never_bold(report: tuple[dict, str, str]) -> None:
    summary, md, page = report
    assert {a["sae"]: a["baseline"] for a in summary["by_spec"]} == {"a": False, "b": False, "p": True}
    p = _row(md, "Synthetic ground truth", "*p* (baseline)")
    assert p["f1"].startswith("0.9 ± ") and not any(cell.startswith("**") for cell in p.values())
    # marked against the best like any row: 0, 0, 0 against b's 1, 2, 3 is not separated by Welch (p 0.07); L0 10 vs 11
    assert stats.ttest_ind(VALUES["p"]["dead_latents"], VALUES["b"]["dead_latents"], equal_var=False).pvalue >= 0.05
    assert p["dead_latents"] == "0 ± 0 ≈ †" and p["f1"] == "0.9 ± 0.12"  # f1: separated from a, at the same L0
    assert '<tr class="baseline"><td>p<span class="tag">baseline</span>' in page
    assert "<b>0.9 ±" not in page and "<b>0.6 ± 0.25" in page  # the HTML bolds the same best as the markdown
    assert "p (baseline)" in page.split("<h2>Plots</h2>")[1].split("<h2>")[0]  # the plots label it too (and keep it off the front)


def test_differs_from_reference_is_shown_per_sae(report: tuple[dict, str, str]) -> None:
    summary, md, page = report
    rows = {(r["sae"], r["seed"]): r for r in summary["saes"]}
    assert rows["b", 1]["differs_from_reference"] == DIFFERS["b"] and "differs_from_reference" not in rows["a", 1]
    saes = md.split("## SAEs")[1].split("## Scoreboard")[0]
    shown = "aux_loss_coefficient 0.03125 (sae-lens 1.0), lr_warm_up_steps 0 (sae-lens 1000), note x"
    assert f"| b | 1 | sae_lens | 64 | 4 | 1000 | {shown} |" in saes and "| a | 1 | saepipe | 64 | 4 | 1000 |  |" in saes
    assert shown in page


def test_training_curves_from_the_train_logs(report: tuple[dict, str, str]) -> None:
    summary, md, page = report
    a = summary["training_curves"]["a-s0"]
    assert len(a["tokens"]) == 84 and a["tokens"][0] == 3 * BATCH and a["tokens"][-1] == 250 * BATCH  # ceil(250/100)=3 per bin
    assert a["loss"][0] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3) and a["loss"][-1] == pytest.approx(1 / 250)  # the last bin: step 250 alone
    assert a["l0"][0] == pytest.approx(31 / 3) and a["dead_latents"][-1] == 4.0
    b = summary["training_curves"]["b-s0"]
    assert set(b) == {"tokens", "loss"} and b["tokens"] == [float(i * BATCH) for i in range(1, 8)]
    assert "a-s1" not in summary["training_curves"] and "p-s0" not in summary["training_curves"]  # no log / no steps
    table = md.split("## Training curves")[1].split("\n## ")[0]
    row_a = next(ln for ln in table.splitlines() if ln.startswith("| a | 0 |"))
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    # tokens; loss at 25/50/100%: the first bin at or past that share of tokens (bins end at steps 63, 126, 250)
    assert cells[2] == "25000" and float(cells[3]) == pytest.approx(sum(1 / i for i in (61, 62, 63)) / 3, rel=1e-3)
    assert cells[-2] == "2" and cells[-1] == "4"  # dead latents at 50% (steps 124-126) and at the end
    row_b = next(ln for ln in table.splitlines() if ln.startswith("| b | 0 |"))
    assert row_b.count("| - ") == 6  # L0 and dead latents not logged
    curves = page.split("<h2>Training curves</h2>")[1].split("<h2>")[0]
    assert "<svg" in curves and curves.count("a s0") >= 1 and "b s0" in curves


def test_autointerp_examples_highlight_the_peak_token_escaped(report: tuple[dict, str, str]) -> None:
    summary, md, page = report
    assert "tier_examples" not in summary  # they stay in autointerp.json
    section = page.split("<h2>Autointerp: example latents per tier</h2>")[1]
    assert "&lt;script&gt; a|b<mark title=\"3\">*x*</mark>↵ tail" in section and "<script>" not in page
    assert "the &lt;b&gt; tag &amp; friends" in section and "an &lt;&lt;old&gt;&gt; string context" in section
    block = md.split("## Autointerp: example latents per tier")[1].split("\n## ")[0]
    assert "\\<script\\> a\\|b**⟦\\*x\\*⟧**↵ tail" in block
    assert "- **input**, latent 7 (correlation before 0.50, after 0.10): “the \\<b\\> tag \\& friends”" in block
    assert block.index("**input**") < block.index("**obscure**")


def test_suite_counts_leave_baselines_out() -> None:
    from pipeline.stages import report_suite
    from pipeline.stages.report import aggregate

    rows = [{"sae": f"{spec}@{shape}", "spec": spec, "shape": shape, "seed": seed, "baseline": spec == "rand",
             "f1": base + 0.01 * seed + (0.1 if shape == "deep" else 0.0)}
            for spec, base in (("a", 0.5), ("b", 0.3), ("rand", 0.9)) for shape in ("flat", "deep") for seed in range(3)]  # fmt: skip
    suite = report_suite.summarise(aggregate(rows), {"headline": ["f1"], "better": {"f1": "higher"}})
    assert suite["baselines"] == ["rand"] and [(p["a"], p["b"]) for p in suite["pairs"]] == [("a", "b")]
    assert sorted(suite["pairs"][0]["a_better_on"]) == ["deep", "flat"] and suite["pairs"][0]["b_better_on"] == []
    lines = report_suite.markdown(suite)
    assert any(ln.startswith("| *rand* (baseline) | 1.01 ± 0.025 | 0.91 ± 0.025 |") for ln in lines)
    # a, not the higher baseline, is each shape's best; ‡: and it scores below that baseline on both shapes
    assert any(ln.startswith("| a | **0.61 ± 0.025** ‡ | **0.51 ± 0.025** ‡ |") for ln in lines)
    assert suite["below_baseline"]["f1"]["deep"] == {"best": "a", "mean": pytest.approx(0.61),
                                                     "baselines": {"rand": {"mean": pytest.approx(1.01), "separated": True}}}  # fmt: skip
    assert "‡ deep: the best spec, a (0.61), scores below a baseline: rand 1.01 (separated by the seeds)." in lines


def test_suite_marks_comparisons_whose_l0_is_not_matched() -> None:
    """On `deep` b runs at L0 11 against a's 10 (10% apart): b's cell there and the a-b pair's `deep` are
    marked †; on `flat` they are 4% apart (within 5%): no mark. The count still counts deep."""
    from pipeline.stages import report_suite
    from pipeline.stages.report import aggregate

    l0 = {("a", "flat"): 10.0, ("b", "flat"): 10.4, ("a", "deep"): 10.0, ("b", "deep"): 11.0}
    rows = [{"sae": f"{spec}@{shape}", "spec": spec, "shape": shape, "seed": seed, "baseline": False,
             "f1": base + 0.01 * seed, "l0": l0[spec, shape]}
            for spec, base in (("a", 0.5), ("b", 0.3)) for shape in ("flat", "deep") for seed in range(3)]  # fmt: skip
    suite = report_suite.summarise(aggregate(rows), {"headline": ["f1"], "better": {"f1": "higher"}})
    pair = suite["pairs"][0]
    assert pair["l0_not_matched"] == ["deep"] and sorted(pair["a_better_on"]) == ["deep", "flat"]
    lines = report_suite.markdown(suite)
    assert "| b | 0.31 ± 0.025 † | 0.31 ± 0.025 |" in lines  # shapes in row order: deep, flat
    row = next(ln for ln in lines if ln.startswith("| f1 | a | b |"))
    assert row.endswith("| 2 of 2 | 0 of 2 | deep +0.2 ± 0.023 †, flat +0.2 ± 0.023 | deep |")


def test_every_metric_direction_is_declared(report: tuple[dict, str, str]) -> None:
    better = report[0]["better"]
    assert better["f1"] == "higher" and better["dead_latents"] == "lower" and better["l0"] is None
    assert set(better) >= set(EXTRA) | set(VALUES["a"])
