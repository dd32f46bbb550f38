"""The artifact-state policy, in one place for every executor.

What a stage's artifact is (done / stale / corrupt / partial / missing), what that means (skip it,
redo it, quarantine and recompute it, resume it, run it), what ``--force`` does (quarantine the
artifact and drop its partial work), and the per-stage lock that keeps two processes (two
``pipeline run``s, or a local run beside a SLURM job) out of one ``<kind>/.work/<key>`` folder. The
local loop, the SLURM submitter and ``run-stage`` (the body of a SLURM job) all ask this module, so
they cannot disagree about a stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.artifacts import ArtifactStore
from pipeline.dag import Stage
from pipeline.progress import Reporter
from pipeline.stages.registry import kind_of


def stage_state(store: ArtifactStore, stage: Stage) -> str:
    """done | stale (made with inputs missing that are complete now) | corrupt | partial (resumable
    work exists) | missing."""
    problems = store.problems(stage.kind, stage.key)
    if not problems:
        return "stale" if _filled_since(store, stage) else "done"
    if problems != ["missing"]:
        return "corrupt"
    work = store.root / stage.kind / ".work" / stage.key
    return "partial" if work.exists() and any(work.iterdir()) else "missing"


def _filled_since(store: ArtifactStore, stage: Stage) -> bool:
    """A kind that runs on partial inputs (the report) lists what was missing; once one of those is
    complete its key has not changed, so only this tells that it must be redone."""
    if not kind_of(stage.kind).partial_inputs:
        return False
    missing = store.manifest(stage.kind, stage.key)["summary"].get("missing_inputs", [])
    by_label = {s.label: s for s in stage.inputs.values()}
    return any(label in by_label and store.is_complete(by_label[label].kind, by_label[label].key) for label in missing)


def force(store: ArtifactStore, stage: Stage) -> None:
    """``--force``: set the artifact aside (never deleted) and drop partial work, so it is computed
    from scratch. Call it holding the stage's lock: another process may be working in ``.work``."""
    store.quarantine(stage.kind, stage.key)
    store.clear_work(stage.kind, stage.key)


def settle(store: ArtifactStore, stage: Stage, reporter: Reporter) -> str:
    """Act on the stage's state before it is (re)computed or submitted, and say why: a corrupt artifact
    is quarantined (recomputed), a stale one is redone. Returns the state as it was found."""
    state = stage_state(store, stage)
    if state == "corrupt":
        reporter.log(f"[yellow]{stage.label}: corrupt artifact {store.problems(stage.kind, stage.key)}; recomputing")
        store.quarantine(stage.kind, stage.key)
    elif state == "stale":
        reporter.log(f"{stage.label}: inputs missing when it was made are complete now; redoing it")
    return state


def begin(store: ArtifactStore, stage: Stage, reporter: Reporter) -> bool:
    """Just before computing a stage, holding its lock: ``settle`` it and announce a start or a resume.
    False when it is complete (another process finished it meanwhile): skip it."""
    state = settle(store, stage, reporter)
    if state == "done":
        return False
    reporter.log(f"[bold]{stage.label}[/] ({stage.key}) {'resuming' if state == 'partial' else 'starting'}")
    return True


# --------------------------------------------------------------------------------------- lock


class StageBusy(RuntimeError):
    """Another process holds the stage's lock (it is computing or forcing that stage right now)."""

    def __init__(self, stage: Stage, holder: str):
        super().__init__(f"another process is running it ({holder})")
        self.stage = stage
        self.holder = holder


def lock_path(store: ArtifactStore, stage: Stage) -> Path:
    return store.root / stage.kind / ".locks" / f"{stage.key}.lock"


def _holder(path: Path, patience_s: float = 2.0) -> str:
    """'pid N, host H' as the holder wrote it. The holder writes it just after taking the lock (and
    empties the file when it lets go), so an empty file means "taken a moment ago": read again for a
    little while rather than name nobody. '?' if it never appears."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            info = json.loads(path.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                info = {}
                break
            time.sleep(0.01)
    return f"pid {info.get('pid', '?')}, host {info.get('host', '?')}"


@contextmanager
def stage_lock(store: ArtifactStore, stage: Stage, *, wait: bool, reporter: Reporter) -> Iterator[None]:
    """Hold the stage's exclusive lock (``<root>/<kind>/.locks/<key>.lock``, flock, so it is released
    when the process dies, however it dies). Busy: wait for it (and log who holds it), or raise
    ``StageBusy`` when ``wait`` is false. Whoever gets it must re-check the state (``begin``): the
    holder it waited for may have committed the artifact."""
    path = lock_path(store, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise StageBusy(stage, holder) from None
            reporter.log(f"{stage.label}: another process is running it ({holder}); waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no stale holder for the next one's waiters to name
    finally:
        os.close(fd)  # releases the lock
