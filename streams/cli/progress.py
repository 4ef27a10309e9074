"""The CLI's side of :mod:`streams.progress`: a rich progress bar on a terminal, plain lines anywhere else.

Bars go to stderr, as logs do, so stdout keeps only a command's result (``--json``, a bootstrap address).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars
from rich.text import Text

from streams.cli.common import log
from streams.progress import Lines, Progress


class _Count(MofNCompleteColumn):
    """done/total, for a phase that counts something (a phase of unknown size is a spinner and a time)."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("counted") else Text("")


class RichProgress:
    """One bar per phase; a phase without a total is a spinner. Log lines printed meanwhile go above the bars."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bars = Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _Count(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                          # A result printed meanwhile goes above the bars when stdout is this same terminal;
                          # redirected elsewhere (a pipe, a file), it must stay on stdout.
                          redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
        self._bars.stop()

    def phase(self, name: str, total: float | None = None) -> None:
        self._finish()
        self._task = self._bars.add_task(name, total=total, counted=total is not None)

    def advance(self, done: float, total: float | None = None) -> None:
        if self._task is not None:
            if total is not None:
                self._bars.tasks[-1].fields["counted"] = True
            self._bars.update(self._task, completed=done, total=total)  # rich keeps the total when None

    def end(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._task is not None:
            task = self._bars.tasks[-1]
            end = task.total if task.total is not None and task.fields.get("counted") else max(task.completed, 1)
            self._bars.update(self._task, total=end, completed=end)
            self._bars.stop_task(self._task)
            self._task = None


class _ToConsole(logging.Handler):
    """While bars are shown, log records print above them instead of tearing them."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.console = console
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False)


@contextlib.contextmanager
def progress(stream: TextIO | None = None) -> Iterator[Progress]:
    """A :class:`Progress` for the block: bars when ``stream`` (stderr) is a terminal, else a line per phase."""
    stream = stream or sys.stderr
    if not stream.isatty():
        lines = Lines(log)
        try:
            yield lines
        finally:
            lines.end()
        return
    console = Console(file=stream)
    root = logging.getLogger("streams")
    saved = root.handlers[:]
    root.handlers[:] = [_ToConsole(console, saved[0].formatter if saved else None)]
    try:
        with RichProgress(console) as bars:
            yield bars
    finally:
        root.handlers[:] = saved


def phases(bar: Progress, starts: Callable[[str], str | None]) -> Callable[[str], None]:
    """A log function for a run that reports in messages (the bench, chaos): each message is logged, and one that
    ``starts`` names a phase for begins that phase on ``bar``."""
    def say(msg: str) -> None:
        name = starts(msg)
        if name is not None:
            bar.phase(name)
        log(msg)
    return say
