"""SIGTERM as a pre-emption warning: the training loop checkpoints at the next step and exits.

SLURM sends SIGTERM (``--signal=TERM@grace``, or on scancel/pre-emption) and SIGKILL after a grace
period. Raising from the handler could interrupt a checkpoint write; instead the handler sets a flag
that the loop polls once per step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Preempted(RuntimeError):
    """The stage stopped early on SIGTERM after saving a checkpoint; re-running resumes it."""


EARLY = threading.Event()
"""A SIGTERM that came before the training loop was listening (a job warned while still importing)."""


def catch_sigterm_early() -> None:
    """Note SIGTERM from process start instead of dying of it (``pipeline.job``, a SLURM job's entry
    point, calls this before its heavy imports): training then checkpoints at its first step and exits.
    Other stages run on until the scheduler's SIGKILL, and are redone on the next run."""
    signal.signal(signal.SIGTERM, lambda signum, frame: EARLY.set())


@contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    stop = threading.Event()
    if EARLY.is_set():
        stop.set()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
