"""End to end on the real model: SmolLM2 forward passes, real Parquet shards, real SAE training,
sae-bench's core eval. Tiny sizes (layer 3, a few thousand tokens) so the suite stays in minutes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sae_lens import SAE

from pipeline.artifacts import ArtifactStore, sha256_file
from pipeline.config import PipelineConfig
from pipeline.executors.local import Outcome, run_local
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.plan import build_plan, select
from pipeline.progress import Reporter
from tests.conftest import REPO, TINY, tiny_config, write_config

pytestmark = pytest.mark.slow  # end-to-end runs of the real tiny pipeline, kills and resumes

QUIET = Reporter(enabled=False)


def two_sae_config(lr_a: float = 1e-3) -> PipelineConfig:
    probing = {"enabled": True, "datasets": ["96_spam_is"], "n_train": 40, "n_test": 20, "context_size": 32, "k_values": [1, 5]}
    cfg = tiny_config(evals={"core": TINY["evals"]["core"], "sparse_probing": probing})
    cfg["saes"] = [
        {"name": "a", "trainer": "sae_lens", "d_sae": 256, "k": 8, "batch_size": 256, "lr": lr_a, "train_tokens": 40_000},
        {"name": "b", "d_sae": 128, "k": 8, "batch_size": 256, "lr": 1e-3, "train_tokens": 40_000,
         "recipe": {"matryoshka": {"levels": [32, 128]}}},
    ]
    return parse_config(cfg)


def statuses(outcomes: list[Outcome]) -> dict[str, str]:
    return {o.stage.label: o.status for o in outcomes}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactStore, PipelineConfig, list[Outcome]]:
    store = ArtifactStore(tmp_path_factory.mktemp("e2e"))
    cfg = two_sae_config()
    outcomes = run_local(cfg, build_plan(cfg), store, set(), QUIET)
    return store, cfg, outcomes


def test_first_run_computes_everything_and_writes_report(first_run) -> None:
    store, cfg, outcomes = first_run
    assert set(statuses(outcomes).values()) == {"ran"}, statuses(outcomes)
    report = (store.root / "tiny" / "report.md").read_text()
    assert "| a | 0 | sae_lens | 256 | 8 |" in report and "| b | 0 | saepipe | 128 | 8 |" in report
    page = (store.root / "tiny" / "report.html").read_text()
    assert page.count("<svg") >= 3 and "explained_variance vs L0" in page and "<script" not in page
    summary = json.loads((store.root / "tiny" / "summary.json").read_text())
    rows = {r["sae"]: r for r in summary["saes"]}
    for row in rows.values():
        assert 0.8 < row["probe_llm_acc"] <= 1.0  # spam vs not-spam is easy even at layer 3
        assert 0.5 <= row["probe_sae_top5_acc"] <= 1.0
        assert 0.0 < row["explained_variance"] < 1.0
        assert 0.5 < row["cossim"] <= 1.0
        assert row["ce_clean"] < row["ce_with_sae"]  # splicing an SAE in costs something
        assert 0.0 < row["frac_alive"] <= 1.0


def test_sae_is_in_sae_lens_format_and_core_json_in_saebench_schema(first_run) -> None:
    store, cfg, _ = first_run
    train = next(s for s in build_plan(cfg) if s.label == "train:a-s0")
    sae = SAE.load_from_disk(str(store.path("train", train.key) / "sae"))
    assert sae.cfg.d_in == 576 and sae.cfg.d_sae == 256
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.architecture() == "jumprelu"  # BatchTopK is saved as JumpReLU with its threshold
    assert float(sae.threshold.min()) > 0
    ev = next(s for s in build_plan(cfg) if s.label == "eval_core:a-s0")
    core = json.loads((store.path("eval_core", ev.key) / "core.json").read_text())
    assert core["eval_type_id"] == "core"
    assert set(core["eval_result_metrics"]) >= {"model_performance_preservation", "reconstruction_quality", "sparsity"}
    assert len(core["eval_result_details"]) == 256  # per-latent details
    manifest = store.manifest("eval_core", ev.key)
    assert manifest["inputs"]["sae"]["key"] == train.key
    assert manifest["files"]["core.json"]["sha256"] == sha256_file(store.path("eval_core", ev.key) / "core.json")


def test_rerun_recomputes_nothing(first_run) -> None:
    store, cfg, _ = first_run
    stages = build_plan(cfg)
    before = {s.key: store.manifest(s.kind, s.key)["timings"]["finished"] for s in stages}
    outcomes = run_local(cfg, stages, store, set(), QUIET)
    assert set(statuses(outcomes).values()) == {"cached"}
    assert before == {s.key: store.manifest(s.kind, s.key)["timings"]["finished"] for s in stages}


def test_editing_one_hyperparameter_recomputes_only_that_sae(first_run) -> None:
    store, _, _ = first_run
    cfg = two_sae_config(lr_a=2e-3)
    got = statuses(run_local(cfg, build_plan(cfg), store, set(), QUIET))
    assert got == {
        "activations": "cached",
        "eval_prep:core": "cached",  # model work on eval data is not redone
        "eval_prep:sparse_probing:96_spam_is": "cached",
        "train:a-s0": "ran",
        "train:b-s0": "cached",
        "eval_core:a-s0": "ran",
        "eval_sparse_probing:a-s0": "ran",
        "eval_core:b-s0": "cached",
        "eval_sparse_probing:b-s0": "cached",
        "report": "ran",
    }


def test_force_recomputes_stage_and_dependents(first_run) -> None:
    store, cfg, _ = first_run
    stages = build_plan(cfg)
    got = statuses(run_local(cfg, stages, store, select(stages, "train:b-s0"), QUIET))
    assert [k for k, v in got.items() if v == "ran"] == ["train:b-s0", "eval_core:b-s0", "eval_sparse_probing:b-s0", "report"]
    assert list((store.root / "train" / ".trash").iterdir())  # the old artifact was set aside, not deleted


def test_truncated_shard_is_detected_and_recomputed(first_run, tmp_path: Path) -> None:
    store, cfg, _ = first_run
    copy = ArtifactStore(tmp_path / "copy")
    shutil.copytree(store.root, copy.root)
    acts = build_plan(cfg)[0]
    shard = copy.path("activations", acts.key) / "shards" / "shard-00001.parquet"
    original = sha256_file(shard)
    shard.write_bytes(shard.read_bytes()[:1000])
    assert any("1000 bytes" in p for p in copy.problems("activations", acts.key))
    got = statuses(run_local(cfg, build_plan(cfg), copy, set(), QUIET))
    assert got["activations"] == "ran" and got["train:a-s0"] == "cached"  # same key, same content
    assert sha256_file(shard) == original  # recomputed bit-for-bit
    assert list((copy.root / "activations" / ".trash").iterdir())


# --- crash and resume -------------------------------------------------------------------------


def start_run(config: Path, artifacts: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(config), "--artifacts", str(artifacts)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen[bytes], ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def rerun(config: Path, artifacts: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(config), "--artifacts", str(artifacts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_kill_during_activations_resumes_from_last_shard(tmp_path: Path) -> None:
    raw = tiny_config(activations={"n_tokens": 25_000, "contexts_per_shard": 16}, evals={"core": {"enabled": False}})
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw)
    acts = build_plan(cfg)[0]
    killed = ArtifactStore(tmp_path / "killed")
    work = killed.root / "activations" / ".work" / acts.key

    def three_shards_done() -> bool:
        done = work / "done.json"
        return done.exists() and len(json.loads(done.read_text())) >= 3

    kill_when(start_run(config, killed.root, tmp_path / "log1"), three_shards_done)
    done_before = json.loads((work / "done.json").read_text())
    first_shard = work / done_before[0]["file"]
    stat_before = first_shard.stat()
    log = rerun(config, killed.root)
    assert f"resuming after {len(done_before)} complete shards" in log
    # the shard written before the kill was kept, not rewritten
    kept = killed.path("activations", acts.key) / "shards" / done_before[0]["file"]
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)

    clean = ArtifactStore(tmp_path / "clean")
    execute(cfg, clean, acts, QUIET)
    shards = lambda store: [(s["file"], s["sha256"]) for s in json.loads((store.path("activations", acts.key) / "shards.json").read_text())["shards"]]  # noqa: E731
    assert shards(killed) == shards(clean)


def test_kill_during_train_resumes_from_checkpoint_bit_for_bit(tmp_path: Path) -> None:
    raw = tiny_config(evals={"core": {"enabled": False}})
    raw["saes"] = [{"name": "long", "d_sae": 256, "k": 8, "batch_size": 128, "train_tokens": 120_000, "checkpoint_every": 10}]
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw)
    acts, train = build_plan(cfg)[:2]
    killed = ArtifactStore(tmp_path / "killed")
    ckpts = killed.root / "train" / ".work" / train.key / "checkpoints"

    def checkpoint_at_step_30() -> bool:
        return any(p.name >= "ckpt-00000030" for p in ckpts.glob("ckpt-*")) if ckpts.exists() else False

    kill_when(start_run(config, killed.root, tmp_path / "log1"), checkpoint_at_step_30)
    acts_finished = killed.manifest("activations", acts.key)["timings"]["finished"]
    log = rerun(config, killed.root)
    assert "resuming from ckpt-" in log
    assert killed.manifest("activations", acts.key)["timings"]["finished"] == acts_finished  # not recomputed

    clean = ArtifactStore(tmp_path / "clean")
    shutil.copytree(killed.path("activations", acts.key), clean.path("activations", acts.key))
    execute(cfg, clean, train, QUIET)
    weights = "sae/sae_weights.safetensors"
    assert sha256_file(killed.path("train", train.key) / weights) == sha256_file(clean.path("train", train.key) / weights)
    log_killed = json.loads((killed.path("train", train.key) / "train_log.json").read_text())
    log_clean = json.loads((clean.path("train", train.key) / "train_log.json").read_text())
    assert log_killed == log_clean and len(log_clean["steps"]) == 120_000 // 128


def test_eval_data_is_prepared_once_for_every_sae() -> None:
    cfg = two_sae_config()
    raw = cfg.model_dump()
    raw["saes"] = [{**raw["saes"][1], "name": f"m{i}", "seeds": [0, 1]} for i in range(2)]
    raw["saes"][1]["lr"] = 5e-4
    raw["evals"]["sparse_probing"]["datasets"] = ["96_spam_is", "139_news_class_Politics"]
    stages = build_plan(parse_config(raw))
    preps = [s for s in stages if s.kind == "eval_prep" and s.params["eval"] == "sparse_probing"]
    evals = [s for s in stages if s.kind == "eval_sparse_probing"]
    assert [p.label for p in preps] == ["eval_prep:sparse_probing:96_spam_is", "eval_prep:sparse_probing:139_news_class_Politics"]
    assert len(evals) == 4  # 2 specs x 2 seeds, all reading the same two prep artifacts
    assert all({i.key for n, i in e.inputs.items() if n.startswith("prep:")} == {p.key for p in preps} for e in evals)
    # the data draw (seed) keys the prep: changing it redoes the model work
    raw["evals"]["sparse_probing"]["seed"] = 7
    changed = build_plan(parse_config(raw))
    assert {s.key for s in changed if s.kind == "eval_prep" and s.params["eval"] == "sparse_probing"}.isdisjoint({p.key for p in preps})


def test_a_failing_eval_keeps_the_others_and_is_retried_alone(first_run, tmp_path: Path) -> None:
    store, cfg, _ = first_run
    copy = ArtifactStore(tmp_path / "copy")
    shutil.copytree(store.root, copy.root)
    stages = build_plan(cfg)
    prep = next(s for s in stages if s.kind == "eval_prep" and s.params["eval"] == "sparse_probing")
    part = next((copy.path(prep.kind, prep.key) / "tensors").rglob("part-00000.safetensors"))
    original = part.read_bytes()
    part.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size: only the checksum can tell

    got = statuses(run_local(cfg, stages, copy, select(stages, "eval_sparse_probing"), QUIET))
    assert got["eval_sparse_probing:a-s0"] == got["eval_sparse_probing:b-s0"] == "failed"
    assert got["eval_core:a-s0"] == got["eval_core:b-s0"] == "cached" and got["report"] == "ran"
    report = (copy.root / "tiny" / "report.md").read_text()
    assert "**Incomplete:**" in report and "`eval_sparse_probing:a-s0`" in report
    assert "ce_loss_score" in report and "probe_llm_acc" not in report  # what exists is still there

    part.write_bytes(original)  # the user fixes the cause; the same command retries only what failed
    got = statuses(run_local(cfg, stages, copy, set(), QUIET))
    assert [k for k, v in got.items() if v == "ran"] == ["eval_sparse_probing:a-s0", "eval_sparse_probing:b-s0", "report"]
    report = (copy.root / "tiny" / "report.md").read_text()
    assert "Incomplete" not in report and "probe_llm_acc" in report


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt install chromium)")
def test_report_renders_in_headless_chromium(first_run, tmp_path: Path) -> None:
    """The page opens offline in a real browser: its DOM after rendering keeps every table and plot."""
    store, _, _ = first_run
    page = store.root / "tiny" / "report.html"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dom.count("<svg") == page.read_text().count("<svg") >= 3
    assert "Sparse probing (SAE latents vs the model's own activations)" in dom and dom.count("<table") >= 4


def test_a_group_of_evals_in_one_process_keeps_the_good_saes_when_one_sae_is_broken(tmp_path: Path) -> None:
    """A SLURM job's body for a group of like evals (``run-stage K1 K2 K3``, one process, one model
    load): one SAE's weights corrupted (same size, so only the checksum can tell) fails that SAE alone
    with the file named; the others' artifacts are complete and valid; the same command after the fix
    computes only the broken one."""
    raw = tiny_config(name="tiny-group", saes=[{**TINY["saes"][0], "seeds": [0, 1, 2]}])
    cfg_path = write_config(tmp_path, raw)
    cfg = parse_config(raw)
    stages = build_plan(cfg)
    store = ArtifactStore(tmp_path / "store")
    upstream = [s for s in stages if s.kind in ("activations", "train", "eval_prep")]
    assert set(statuses(run_local(cfg, upstream, store, set(), QUIET)).values()) == {"ran"}
    evals = [s for s in stages if s.kind == "eval_core"]
    broken = next(s for s in stages if s.label == "train:btk-s1")
    weights = store.path(broken.kind, broken.key) / "sae" / "sae_weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))

    cmd = [sys.executable, "-m", "pipeline.cli", "run-stage", str(cfg_path), *(s.key for s in evals), "--artifacts", str(store.root), "--quiet"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, check=False)
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    assert f"eval_core:btk-s1 ({evals[1].key}) FAILED" in out
    assert f"{weights}: checksum mismatch" in out  # the cause, with the file to look at
    done = {}
    for s in (evals[0], evals[2]):
        assert f"{s.label} ({s.key}) complete" in out
        assert store.problems(s.kind, s.key, full=True) == []
        result = json.loads((store.path(s.kind, s.key) / "core.json").read_text())["eval_result_metrics"]
        assert 0 < result["model_performance_preservation"]["ce_loss_score"] <= 1
        done[s.label] = store.manifest(s.kind, s.key)["timings"]["finished"]
    assert store.problems(evals[1].kind, evals[1].key) == ["missing"]
    assert not list((store.root / "eval_core" / ".staging").glob("*"))  # the failed one left no half artifact

    weights.write_bytes(original)  # the cause fixed: the same job again computes only what failed
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, check=False)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert f"eval_core:btk-s1 ({evals[1].key}) complete" in out
    assert all(f"{s.label} ({s.key}) is already complete" in out for s in (evals[0], evals[2]))
    assert {s.label: store.manifest(s.kind, s.key)["timings"]["finished"] for s in (evals[0], evals[2])} == done
    assert store.problems(evals[1].kind, evals[1].key, full=True) == []
