"""The report's numbers, recomputed by hand from the eval JSONs of a small fixture: means, 95% intervals,
the '≈' marks, the bold best in each metric's better direction, the scoreboard and the matched-L0 marks."""

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
VALUES = {
    "a": {"f1": [0.50, 0.60, 0.70], "mcc": [0.40, 0.41, 0.42], "dead_latents": [10, 12, 11], "l0": [10.0, 10.0, 10.0]},
    "b": {"f1": [0.20, 0.25, 0.30], "mcc": [0.40, 0.42, 0.41], "dead_latents": [1, 2, 3], "l0": [11.0, 11.0, 11.0]},
}
EXTRA = {"precision": 0.5, "recall": 0.5, "accuracy": 0.5, "uniqueness": 0.5, "explained_variance": 0.5, "true_l0": 10.0, "shrinkage": 1.0}


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
    for spec, metrics in VALUES.items():
        for seed in range(3):
            sae_id = f"{spec}-s{seed}"
            train = stage("train", f"train:{sae_id}", {"spec": spec, "seed": seed})
            _commit(store, train, {}, {"params": {"trainer": "saepipe", "d_sae": 64, "k": 4}, "summary": {"tokens": 1000}})
            ev = stage("eval_synthetic", f"eval_synthetic:{sae_id}", {"loo_tau": None}, {"sae": train})
            values = {m: v[seed] for m, v in metrics.items()}
            _commit(store, ev, {"synthetic.json": {"metrics": {**EXTRA, **values}}}, {"params": {}, "summary": {}})
            inputs[train.label], inputs[ev.label] = train, ev
    rep = stage("report", "report", {"run": "fixture"}, inputs)
    folder = execute(cfg, store, rep, Reporter(enabled=False))
    return json.loads((folder / "summary.json").read_text()), (folder / "report.md").read_text()


def _by_spec(summary: dict, spec: str) -> dict:
    return next(a for a in summary["by_spec"] if a["sae"] == spec)


@pytest.mark.parametrize("spec", ["a", "b"])
@pytest.mark.parametrize("metric", ["f1", "mcc", "dead_latents", "l0"])
def test_means_and_intervals_by_hand(report: tuple[dict, str], spec: str, metric: str) -> None:
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


def test_bold_best_in_the_declared_direction_and_noise_marks(report: tuple[dict, str]) -> None:
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


def test_scoreboard(report: tuple[dict, str]) -> None:
    board = {row["metric"]: row for row in report[0]["scoreboard"]}
    assert board["f1"]["best"] == "a" and board["f1"]["indistinguishable"] == [] and board["f1"]["l0_not_matched"] == ["b"]
    assert board["dead_latents"]["best"] == "b" and board["dead_latents"]["better"] == "lower"
    assert board["mcc"]["indistinguishable"] in (["a"], ["b"])
    assert "l0" not in board and "true_l0" not in board
    assert "## Scoreboard" in report[1]


def test_every_metric_direction_is_declared(report: tuple[dict, str]) -> None:
    better = report[0]["better"]
    assert better["f1"] == "higher" and better["dead_latents"] == "lower" and better["l0"] is None
    assert set(better) >= set(EXTRA) | set(VALUES["a"])
