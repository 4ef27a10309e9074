"""How a long operation (a restore, a replay, topic creation...) says how far it is, without knowing who watches.

The engine calls a :class:`Progress`; the CLI passes a progress bar on a terminal and :class:`Lines` (a plain
line per phase) otherwise, so no engine module depends on a terminal library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    def phase(self, name: str, total: float | None = None) -> None:
        """A phase begins (and the previous one, if any, ends); ``total``: its amount of work, if known."""

    def advance(self, done: float, total: float | None = None) -> None:
        """How much of the current phase is done (absolute, not a delta); ``total`` when it became known."""

    def end(self) -> None:
        """The last phase ended."""


class Silent:
    """Nobody watches."""

    def phase(self, name: str, total: float | None = None) -> None:
        pass

    def advance(self, done: float, total: float | None = None) -> None:
        pass

    def end(self) -> None:
        pass


SILENT = Silent()


class Lines:
    """For a log rather than a terminal: a line when a phase begins and when it ends, and between them at most
    one every ``every_s`` seconds (a long phase still shows it is moving)."""

    def __init__(self, log: Callable[[str], None], every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._every, self._clock = log, every_s, clock
        self._name: str | None = None
        self._done = 0.0
        self._total: float | None = None
        self._started = self._said = 0.0

    def phase(self, name: str, total: float | None = None) -> None:
        self._close()
        self._name, self._done, self._total = name, 0.0, total
        self._started = self._said = self._clock()
        self._log(f"{name}: started" + (f" ({_n(total)} to do)" if total is not None else ""))

    def advance(self, done: float, total: float | None = None) -> None:
        self._done, self._total = done, total if total is not None else self._total
        now = self._clock()
        if self._name is not None and now - self._said >= self._every:
            self._said = now
            rate = self._done / max(now - self._started, 1e-9)
            eta = f", ETA {(self._total - self._done) / rate:.0f}s" if self._total and rate > 0 else ""
            self._log(f"{self._name}: {self._amount()}{eta}")

    def end(self) -> None:
        self._close()

    def _amount(self) -> str:
        if not self._total:
            return f"{_n(self._done)} done"
        return f"{_n(self._done)}/{_n(self._total)} ({100 * self._done / self._total:.0f}%)"

    def _close(self) -> None:
        if self._name is not None:
            self._log(f"{self._name}: done, {self._amount()} in {self._clock() - self._started:.1f}s")
            self._name = None


def _n(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
