"""The SLURM executor against a real single-node SLURM cluster (slurm/cluster.sh) and the real tiny pipeline.

No mocks: `pipeline run --executor slurm` writes sbatch scripts, submits them, and the jobs run
`pipeline run-stage` on the local node. The tests share one artifact root (content keys keep their stages
apart; the activations stage is computed once and reused by all of them) and use tiny SAEs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import REPO, run_cli, tiny_config, write_config

from pipeline.loading import load_config
from pipeline.executors.slurm import query_jobs
from pipeline.plan import build_plan

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

WEIGHTS = "sae/sae_weights.safetensors"
# The time-limit test's SAE: 1000 steps, about a minute on one CPU (~60 ms a step on a 2-core VM);
# slower machines only make the SIGTERM come earlier in training.
TIMED_D_SAE, TIMED_BATCH, TIMED_TOKENS = 2048, 512, 2_048_000
"""4,000 steps: 45 s of training per 1,000 under load, so even a quiet machine still trains when the warning comes (<= 55 s)."""


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Start (or find running) the local cluster; skip every SLURM test when that is impossible."""
    try:
        proc = subprocess.run(
            ["bash", "slurm/cluster.sh", "start"], cwd=REPO, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot start the local SLURM cluster: {exc}")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        pytest.skip(f"`bash slurm/cluster.sh start` failed (exit {proc.returncode}; needs root and Debian): {tail}")


@pytest.fixture(scope="session")
def slurm_root(tmp_path_factory: pytest.TempPathFactory):
    """The artifact root every SLURM test submits into; on teardown, cancel any job a test left behind."""
    root = tmp_path_factory.mktemp("slurm_artifacts")
    yield root
    ids = set()
    for jobs_file in root.glob("*/slurm/jobs.json"):
        ids |= {rec["job_id"] for rec in json.loads(jobs_file.read_text()).values()}
    infos = query_jobs(ids)
    active = sorted({job_id for (job_id, _), info in infos.items() if info.active})
    if active:
        subprocess.run(["scancel", *active], check=False)


def slurm_config(name: str, **overrides: Any) -> dict[str, Any]:
    executor = {
        "kind": "slurm",
        "slurm": {
            "defaults": {"cpus": 1, "mem": "3G", "time": "00:20:00"},
            "grace_seconds": 30,
            "poll_seconds": 0.5,
        },
    }
    return tiny_config(name=name, executor=executor, **overrides)


def sae(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "d_sae": 256, "k": 8, "batch_size": 256, "checkpoint_every": 5, "lr": 1.0e-3, **kw}


def plan_of(cfg_path: Path) -> dict[str, Any]:
    cfg, _ = load_config(str(cfg_path))
    return {s.label: s for s in build_plan(cfg)}


def jobs_of(root: Path, run: str) -> dict[str, dict[str, Any]]:
    return json.loads((root / run / "slurm" / "jobs.json").read_text())


def submissions_of(root: Path, run: str) -> list[dict[str, Any]]:
    lines = (root / run / "slurm" / "submissions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def manifest(root: Path, stage: Any) -> dict[str, Any]:
    return json.loads((root / stage.kind / stage.key / "manifest.json").read_text())


def scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ensure_activations(cfg_path: Path, root: Path) -> Any:
    """The shared activations artifact (computed in-process by `run-stage` if no earlier test made it)."""
    acts = plan_of(cfg_path)["activations"]
    if not (root / acts.kind / acts.key / "manifest.json").exists():
        run_cli("run-stage", str(cfg_path), acts.key, "--quiet", artifacts=root, timeout=600)
    return acts


def start_reference(cfg_path: Path, stage: Any, slurm_root: Path, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """The same train stage run uninterrupted by `run-stage` in an artifact root of its own (the shared
    activations copied in), on one thread like the jobs (cpus=1), so that its weights are comparable
    bit for bit. Runs in the background while the test drives the cluster."""
    acts = plan_of(cfg_path)["activations"]
    root = folder / "reference"
    shutil.copytree(slurm_root / acts.kind / acts.key, root / acts.kind / acts.key)
    cmd = [sys.executable, "-m", "pipeline.cli", "run-stage", str(cfg_path), stage.key, "--artifacts", str(root), "--quiet"]
    log = (folder / "reference.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc, root


def assert_same_weights(stage: Any, root: Path, reference: tuple[subprocess.Popen[bytes], Path]) -> None:
    """The final SAE weights under ``root`` equal the uninterrupted reference run's, tensor by tensor."""
    proc, ref_root = reference
    assert proc.wait(timeout=600) == 0, (ref_root.parent / "reference.log").read_text()
    got = load_file(root / stage.kind / stage.key / WEIGHTS)
    want = load_file(ref_root / stage.kind / stage.key / WEIGHTS)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs from the uninterrupted run"


def test_dry_run_writes_scripts_and_submits_nothing(tmp_path: Path, slurm_root: Path) -> None:
    cfg_path = write_config(tmp_path, slurm_config("tiny-dry", saes=[sae("dry", seeds=[0, 1])]))
    out = run_cli("run", str(cfg_path), "--dry-run", artifacts=slurm_root)
    text = out.stdout + out.stderr
    scripts = slurm_root / "tiny-dry" / "slurm" / "scripts"
    assert "dry run: nothing submitted" in text
    assert "array of 2: train:dry-s0, train:dry-s1" in text
    assert str(scripts / "train.sbatch") in text
    train = (scripts / "train.sbatch").read_text()
    assert "#SBATCH --array=0-1" in train and "#SBATCH --signal=B:TERM@30" in train
    assert "#SBATCH --cpus-per-task=1" in train and "#SBATCH --time=00:20:00" in train
    assert re.search(r"exec \S+ -m pipeline\.job run-stage \S+\.yaml \"\$KEY\" --artifacts \S+ --quiet", train)
    assert not (slurm_root / "tiny-dry" / "slurm" / "jobs.json").exists()


def test_slurm_run_matches_local_run(tmp_path: Path, slurm_root: Path, shared_artifacts: Path) -> None:
    """The tiny pipeline through SLURM commits the same artifacts as a local run of the same config.

    cpus=2 for every job: the jobs then use as many threads as the local run (torch's default here),
    so the float results are bit-identical, not merely close.
    """
    cfg = slurm_config("tiny")
    cfg["executor"]["slurm"]["defaults"]["cpus"] = 2
    cfg_path = write_config(tmp_path, cfg)
    run_cli("run", str(cfg_path), "--executor", "slurm", "--wait", "--quiet", artifacts=slurm_root, timeout=900)

    plan = plan_of(cfg_path)
    shown = run_cli("plan", str(cfg_path), artifacts=slurm_root).stderr
    assert set(re.findall(r"\b[0-9a-f]{16}\b", shown)) == {s.key for s in plan.values()}
    for s in plan.values():
        assert (slurm_root / s.kind / s.key / "manifest.json").exists(), s.label
    jobs = jobs_of(slurm_root, "tiny")
    assert set(jobs) <= {s.key for s in plan.values()}
    assert (slurm_root / "tiny" / "report.md").exists()  # published after --wait

    run_cli("run", str(cfg_path), "--executor", "local", "--quiet", artifacts=shared_artifacts, timeout=900)
    acts, train, ev = plan["activations"], plan["train:btk-s0"], plan["eval_core:btk-s0"]
    assert manifest(slurm_root, acts)["files"] == manifest(shared_artifacts, acts)["files"]
    assert (
        manifest(slurm_root, train)["files"][WEIGHTS]["sha256"]
        == manifest(shared_artifacts, train)["files"][WEIGHTS]["sha256"]
    )
    core = [json.loads((r / ev.kind / ev.key / "core.json").read_text()) for r in (slurm_root, shared_artifacts)]
    assert core[0]["eval_result_metrics"] == core[1]["eval_result_metrics"]
    summaries = [{k: v for k, v in manifest(r, ev)["summary"].items() if k != "seconds"} for r in (slurm_root, shared_artifacts)]
    assert summaries[0] == summaries[1]


def test_cancelled_training_resumes_from_its_checkpoint(tmp_path: Path, slurm_root: Path) -> None:
    """scancel the training job once it has checkpointed; the re-run resubmits only train and what
    depends on it, and training continues from the checkpoint to the weights an uninterrupted run ends
    with, bit for bit."""
    cfg = slurm_config(
        "tiny-resume",
        saes=[sae("long", train_tokens=100_000, checkpoint_every=10)],  # 390 steps
        evals={"core": {"enabled": False}},
    )
    cfg_path = write_config(tmp_path, cfg)
    plan = plan_of(cfg_path)
    train, report = plan["train:long-s0"], plan["report"]
    ensure_activations(cfg_path, slurm_root)
    reference = start_reference(cfg_path, train, slurm_root, tmp_path)

    run_cli("run", str(cfg_path), "--quiet", artifacts=slurm_root)  # returns once submitted
    first = jobs_of(slurm_root, "tiny-resume")
    assert set(first) == {train.key, report.key}
    train_job = first[train.key]["job_id"]

    ckpts = slurm_root / "train" / ".work" / train.key / "checkpoints"

    def checkpointed() -> bool:
        if "JobState=FAILED" in scontrol(train_job):
            raise AssertionError(Path(first[train.key]["log"]).read_text())
        return any(ckpts.glob("ckpt-*"))

    wait_until(checkpointed, 300, "the first training checkpoint", poll=0.2)
    subprocess.run(["scancel", train_job], check=True)
    wait_until(lambda: "JobState=CANCELLED" in scontrol(train_job), 60, "the training job to end")
    wait_until(lambda: "DependencyNeverSatisfied" in scontrol(first[report.key]["job_id"]), 30, "report cancelled")
    assert not (slurm_root / "train" / train.key).exists()
    assert any(ckpts.glob("ckpt-*"))

    status = run_cli("status", str(cfg_path), artifacts=slurm_root).stderr
    assert re.search(rf"train:long-s0\s.*cancelled\s.*{train_job}", status)

    run_cli("run", str(cfg_path), "--executor", "slurm", "--wait", "--quiet", artifacts=slurm_root, timeout=600)
    second = jobs_of(slurm_root, "tiny-resume")
    last = submissions_of(slurm_root, "tiny-resume")[-1]
    assert sorted(k for job in last["jobs"] for k in job["keys"]) == sorted([train.key, report.key])
    assert second[train.key]["job_id"] != train_job
    assert second[train.key]["previous"][-1]["job_id"] == train_job
    log = Path(second[train.key]["log"]).read_text()
    assert "resuming from ckpt-" in log, log
    assert manifest(slurm_root, train)["summary"]["steps"] == 390
    assert (slurm_root / "tiny-resume" / "report.md").exists()
    assert_same_weights(train, slurm_root, reference)  # the resume is bit for bit


def test_time_limit_checkpoints_and_the_rerun_resumes_bit_for_bit(tmp_path: Path, slurm_root: Path) -> None:
    """A train job that outlives its time limit. SLURM's time granularity is a minute, so the limit is
    one minute; the warning (``--signal=B:TERM@5``) comes at slurmctld's first periodic check (every
    30 s) within 30 s + grace of the end, i.e. 25-55 s after the start: after the job's start-up (up
    to ~20 s on a loaded 2-core machine) and while training (a minute or more on one CPU) is still
    going. Training checkpoints and exits (pipeline.training.preemption); the job ends FAILED on that
    exit, or TIMEOUT if the limit struck first. The re-run, with a longer limit (the same stage keys:
    executor settings are not part of them), resumes from that checkpoint and ends at the weights of
    an uninterrupted run, bit for bit."""
    timed = sae("timed", d_sae=TIMED_D_SAE, batch_size=TIMED_BATCH, train_tokens=TIMED_TOKENS, checkpoint_every=1000)
    cfg = slurm_config("tiny-timeout", saes=[timed], evals={"core": {"enabled": False}})
    cfg["executor"]["slurm"]["grace_seconds"] = 5
    cfg["executor"]["slurm"]["stages"] = {"train": {"time": "00:01:00"}}
    cfg_path = write_config(tmp_path, cfg)
    plan = plan_of(cfg_path)
    train, report = plan["train:timed-s0"], plan["report"]
    n_steps = TIMED_TOKENS // TIMED_BATCH
    ensure_activations(cfg_path, slurm_root)
    reference = start_reference(cfg_path, train, slurm_root, tmp_path)

    run_cli("run", str(cfg_path), "--quiet", artifacts=slurm_root)
    first = jobs_of(slurm_root, "tiny-timeout")
    job, log = first[train.key]["job_id"], Path(first[train.key]["log"])
    state = wait_until(lambda: re.search(r"JobState=(TIMEOUT|FAILED|COMPLETED|CANCELLED)\b", scontrol(job)), 180, "the job's end")
    text = log.read_text()
    stopped = re.search(r"Preempted: train:timed-s0: SIGTERM at step (\d+); checkpoint saved", text)
    assert stopped, text  # the checkpoint-and-exit path, not a kill
    step = int(stopped.group(1))
    assert 0 < step < n_steps
    assert state.group(1) in ("TIMEOUT", "FAILED"), scontrol(job)
    ckpts = slurm_root / "train" / ".work" / train.key / "checkpoints"
    assert (ckpts / f"ckpt-{step:08d}" / "state.safetensors").exists()
    assert not (slurm_root / "train" / train.key).exists()
    wait_until(lambda: "DependencyNeverSatisfied" in scontrol(first[report.key]["job_id"]), 30, "report cancelled")

    cfg["executor"]["slurm"]["stages"] = {"train": {"time": "00:10:00"}}
    longer = write_config(tmp_path, cfg, name="longer.yaml")
    assert plan_of(longer)["train:timed-s0"].key == train.key
    run_cli("run", str(longer), "--wait", "--quiet", artifacts=slurm_root, timeout=600)
    again = jobs_of(slurm_root, "tiny-timeout")[train.key]
    assert again["job_id"] != job and again["previous"][-1]["job_id"] == job
    assert f"resuming from ckpt-{step:08d} (step {step}/{n_steps})" in Path(again["log"]).read_text()
    assert manifest(slurm_root, train)["summary"]["steps"] == n_steps
    assert_same_weights(train, slurm_root, reference)


def test_failed_stage_cancels_dependents_and_rerun_completes(tmp_path: Path, slurm_root: Path) -> None:
    """A training job fails on a corrupt activation shard; its dependents are cancelled; status names it.

    How the failure is made: one byte of a cached shard is flipped in place. The shard keeps its size,
    so the activations artifact still counts as complete (that check is sizes only) and is not
    resubmitted, but the training reader verifies each shard's sha256 and raises CorruptShardError,
    every time, with no timing involved. Fixing the cause = restoring the byte; the re-run then
    submits training and the report again and the DAG completes. (The shard belongs to the artifact
    root the tests share, so it is restored in any case.)
    """
    # lr differs from the other tests' SAEs: a name alone does not change a stage's key
    cfg = slurm_config("tiny-fail", saes=[sae("fragile", lr=2e-3)], evals={"core": {"enabled": False}})
    cfg_path = write_config(tmp_path, cfg)
    plan = plan_of(cfg_path)
    train, report = plan["train:fragile-s0"], plan["report"]
    acts = ensure_activations(cfg_path, slurm_root)
    shard = sorted((slurm_root / acts.kind / acts.key).rglob("shard-*.parquet"))[0]
    original = shard.read_bytes()
    broken = bytearray(original)
    broken[len(broken) // 2] ^= 0xFF
    try:
        shard.write_bytes(bytes(broken))
        out = run_cli("run", str(cfg_path), "--wait", "--quiet", artifacts=slurm_root, check=False, timeout=600)
        assert out.returncode == 1, out.stderr
        jobs = jobs_of(slurm_root, "tiny-fail")
        train_job, train_log = jobs[train.key]["job_id"], jobs[train.key]["log"]
        assert "JobState=FAILED" in scontrol(train_job)
        report_info = scontrol(jobs[report.key]["job_id"])
        assert "JobState=CANCELLED" in report_info and "Reason=DependencyNeverSatisfied" in report_info

        status = run_cli("status", str(cfg_path), artifacts=slurm_root).stderr
        failed_line = next(line for line in status.splitlines() if line.startswith("FAILED train:fragile-s0"))
        assert f"job {train_job} " in failed_line and f"log: {train_log}" in failed_line
        assert "CorruptShardError" in status
        assert "CorruptShardError" in Path(train_log).read_text()
        assert re.search(r"CANCELLED report .*an input failed", status)
    finally:
        shard.write_bytes(original)

    run_cli("run", str(cfg_path), "--wait", "--quiet", artifacts=slurm_root, timeout=600)
    again = jobs_of(slurm_root, "tiny-fail")
    assert again[train.key]["job_id"] != train_job
    assert acts.key not in again  # the activations were never resubmitted
    status = run_cli("status", str(cfg_path), artifacts=slurm_root).stderr
    assert "FAILED" not in status and f"{len(plan)} done" in status


def test_sweep_goes_out_as_job_arrays(tmp_path: Path, slurm_root: Path) -> None:
    """Three seeds of one SAE spec: one array for the trains, one job for the evals (a group: one
    process, one model load), then the report."""
    cfg_path = write_config(tmp_path, slurm_config("tiny-sweep", saes=[sae("sweep", d_sae=128, seeds=[0, 1, 2])]))
    plan = plan_of(cfg_path)
    ensure_activations(cfg_path, slurm_root)
    run_cli("run", str(cfg_path), "--wait", "--quiet", artifacts=slurm_root, timeout=900)

    jobs = jobs_of(slurm_root, "tiny-sweep")
    trains = [jobs[s.key] for s in plan.values() if s.kind == "train"]
    assert len({r["job_id"] for r in trains}) == 1 and sorted(r["array_task"] for r in trains) == [0, 1, 2], trains
    array_id = trains[0]["job_id"]
    tasks = [ln for ln in scontrol(array_id).splitlines() if f"ArrayJobId={array_id} " in ln]
    assert len(tasks) == 3 and all("JobState=COMPLETED" in t for t in tasks), tasks
    evals = [jobs[s.key] for s in plan.values() if s.kind == "eval_core"]
    assert len(evals) == 3 and len({r["job_id"] for r in evals}) == 1 and {r["array_task"] for r in evals} == {None}, evals
    assert "JobState=COMPLETED" in scontrol(evals[0]["job_id"])
    log = Path(evals[0]["log"]).read_text()
    assert all(f"{s.label} ({s.key}) complete" in log for s in plan.values() if s.kind == "eval_core"), log
    preps = {jobs[s.key]["job_id"] for s in plan.values() if s.kind == "eval_prep" and s.key in jobs}  # unless done earlier
    assert set(evals[0]["dependency"].split(":")) == {array_id, *preps}  # afterok on the whole train array
    for s in plan.values():
        assert (slurm_root / s.kind / s.key / "manifest.json").exists(), s.label
    summary = json.loads((slurm_root / "tiny-sweep" / "summary.json").read_text())
    assert sorted(row["seed"] for row in summary["saes"]) == [0, 1, 2]
    assert all("ce_loss_score" in row for row in summary["saes"])
