"""The per-stage lock (pipeline.state) between real processes on one artifact root.

A local `pipeline run` skips a stage another process holds (and its dependents) without failing; a
`run-stage` (the body of a SLURM job) waits for the holder and then finds the artifact complete instead
of recomputing it; two `pipeline run`s started together compute each stage once. The activations are
copied from the session's tiny run, so each test only trains a small SAE.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.artifacts import ArtifactStore
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter
from pipeline.state import begin, stage_lock
from tests.conftest import REPO, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow  # real concurrent `pipeline run`s of the tiny config

QUIET = Reporter(enabled=False)
HOST = socket.gethostname()


def lock_config(name: str, train_tokens: int) -> dict[str, Any]:
    """The tiny config with one SAE of its own (a distinct key per test) and no evals."""
    cfg = tiny_config(evals={"core": {"enabled": False}})
    cfg["saes"] = [{"name": name, "d_sae": 512, "k": 8, "batch_size": 256, "train_tokens": train_tokens, "lr": 1e-3}]
    return cfg


@pytest.fixture
def root(tiny_run: tuple, tmp_path: Path) -> ArtifactStore:
    """A fresh artifact root holding only the tiny run's committed activations."""
    _, shared, _ = tiny_run
    acts = next(s for s in build_plan(parse_config(tiny_config())) if s.kind == "activations")
    store = ArtifactStore(tmp_path / "artifacts")
    shutil.copytree(shared.path(acts.kind, acts.key), store.path(acts.kind, acts.key))
    return store


def popen(args: list[str], store: ArtifactStore, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipeline.cli", *args, "--artifacts", str(store.root)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def wait_for_text(proc: subprocess.Popen[bytes], log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode} before logging {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}:\n{log.read_text()}"
        time.sleep(0.1)


def nothing_set_aside(store: ArtifactStore) -> bool:
    """No quarantined artifact and no staging folder left behind anywhere under the root."""
    return not [p for p in store.root.glob("*/.trash/*")] and not [p for p in store.root.glob("*/.staging/*")]


def test_local_run_skips_a_stage_another_process_holds(root: ArtifactStore, tmp_path: Path) -> None:
    raw = lock_config("held", 20_000)
    cfg_path = write_config(tmp_path, raw)
    plan = {s.label: s for s in build_plan(parse_config(raw))}
    train = plan["train:held-s0"]
    with stage_lock(root, train, wait=False, reporter=QUIET):
        out = run_cli("run", str(cfg_path), "--quiet", artifacts=root.root, timeout=300)
    text = out.stderr
    assert f"train:held-s0: another process is running it (pid {os.getpid()}, host {HOST}); skipping" in text
    assert "failed" not in text
    for label in ("train:held-s0", "report"):  # left to the holder, and a dependent waits for it too
        assert re.search(rf"{label}\s*│\s*[0-9a-f]{{16}}\s*│\s*skipped", text), text
        assert not root.path(plan[label].kind, plan[label].key).exists()
    assert nothing_set_aside(root)


def test_run_stage_waits_for_the_holder_and_does_not_recompute(root: ArtifactStore, tmp_path: Path) -> None:
    raw = lock_config("waited", 20_000)
    cfg_path = write_config(tmp_path, raw)
    cfg = parse_config(raw)
    train = next(s for s in build_plan(cfg) if s.kind == "train")
    log = tmp_path / "run-stage.log"
    with stage_lock(root, train, wait=False, reporter=QUIET):
        waiter = popen(["run-stage", str(cfg_path), train.key, "--quiet"], root, log)
        wait_for_text(waiter, log, f"another process is running it (pid {os.getpid()}, host {HOST}); waiting for it")
        assert begin(root, train, QUIET)
        execute(cfg, root, train, QUIET)  # what the holder was doing; the waiter must not redo it
        timings = root.manifest(train.kind, train.key)["timings"]
    assert waiter.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert f"train:waited-s0 ({train.key}) is already complete" in text
    assert "starting" not in text and "resuming" not in text
    assert root.manifest(train.kind, train.key)["timings"] == timings
    assert nothing_set_aside(root)


def test_two_concurrent_runs_compute_each_stage_once(root: ArtifactStore, tmp_path: Path) -> None:
    """Started together: whichever takes the train stage's lock first trains; the other skips it
    (naming the first) and leaves the report to it. Both succeed; nothing is computed twice."""
    raw = lock_config("raced", 150_000)
    cfg_path = write_config(tmp_path, raw)
    plan = {s.label: s for s in build_plan(parse_config(raw))}
    train, report = plan["train:raced-s0"], plan["report"]
    launched = time.time()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [popen(["run", str(cfg_path)], root, log) for log in logs]
    codes = [p.wait(timeout=600) for p in procs]
    texts = [log.read_text(errors="replace") for log in logs]
    assert codes == [0, 0], texts

    starts = [t.count(f"train:raced-s0 ({train.key}) starting") for t in texts]
    assert sorted(starts) == [0, 1], texts
    trainer, other = (0, 1) if starts[0] else (1, 0)
    assert f"train:raced-s0: another process is running it (pid {procs[trainer].pid}, host {HOST}); skipping" in texts[other]
    assert sum(t.count(f"report ({report.key}) starting") for t in texts) == 1
    for stage in (train, report):
        manifest = root.manifest(stage.kind, stage.key)
        assert launched < manifest["timings"]["started"] < manifest["timings"]["finished"]
    assert nothing_set_aside(root)
    assert run_cli("verify", str(cfg_path), artifacts=root.root).returncode == 0
    assert json.loads((root.root / "tiny" / "summary.json").read_text())


def test_a_waiter_names_a_holder_that_has_only_just_taken_the_lock(root: ArtifactStore) -> None:
    """The holder writes who it is just after taking the flock; a process that finds the lock taken in
    that moment reads again until the name appears (the race that once named "pid ?"), and a released
    lock leaves no stale name behind."""
    import fcntl
    import threading

    from pipeline.state import StageBusy, lock_path

    stage = next(s for s in build_plan(parse_config(lock_config("just-taken", 150_000))) if s.kind == "train")
    path = lock_path(root, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # taken, nothing written yet
    writer = threading.Timer(0.3, lambda: os.pwrite(fd, json.dumps({"pid": 4242, "host": "elsewhere"}).encode(), 0))
    writer.start()
    try:
        with pytest.raises(StageBusy) as busy, stage_lock(root, stage, wait=False, reporter=QUIET):
            pass
        assert busy.value.holder == "pid 4242, host elsewhere"
    finally:
        writer.join()
        os.close(fd)
    with stage_lock(root, stage, wait=False, reporter=QUIET):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert path.read_text() == ""
