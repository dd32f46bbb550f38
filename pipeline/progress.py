"""Progress reporting with rich: one bar per long step, with throughput in the unit that matters."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Wide enough for the plan table when output goes to a file or a CI log.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
LOG_EVERY_S = 20.0


class RateColumn(ProgressColumn):
    """Throughput as '<n> <unit>/s' (tokens/s while caching and training)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"? {unit}/s", style="cyan")


class Reporter:
    """Thin wrapper so stages ask for a bar without knowing about the console or the executor."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def bar(self, description: str, total: int, unit: str, completed: int = 0) -> Iterator["Bar"]:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            disable=not self.enabled,
            transient=False,
        )
        with progress:
            task = progress.add_task(description, total=total, completed=completed, unit=unit, extra="")
            yield Bar(progress, task, log_every=None if console.is_terminal or not self.enabled else LOG_EVERY_S)

    def log(self, message: str) -> None:
        console.log(message)


class Bar:
    """One progress bar. Off a terminal (a log file, a SLURM job) it also prints a line every
    ``log_every`` seconds, since a live bar is invisible there."""

    def __init__(self, progress: Progress, task: int, log_every: float | None):
        self.progress = progress
        self.task = task
        self.log_every = log_every
        self.last_log = time.monotonic()

    def advance(self, n: int, extra: str | None = None) -> None:
        if extra is None:
            self.progress.advance(self.task, n)
        else:
            self.progress.update(self.task, advance=n, extra=extra)
        if self.log_every is not None and time.monotonic() - self.last_log >= self.log_every:
            self.last_log = time.monotonic()
            t = self.progress.tasks[self.task]
            rate = f"{t.speed:,.0f} {t.fields['unit']}/s" if t.speed else "?"
            eta = f"{t.time_remaining:.0f}s" if t.time_remaining is not None else "?"
            console.log(f"{t.description}: {t.completed:,.0f}/{t.total:,.0f} {rate} ETA {eta} {t.fields['extra']}")
