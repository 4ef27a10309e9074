"""Background threads that heal themselves, and a health check that notices when one has not.

Every periodic background thread (the dashboard's sampler, the endpoint announcer, the freeze watcher) runs its
rounds through :func:`run_rounds`: a failed round is logged (one line at the start of a streak of failures, then
at most one a minute, never a traceback), retried after a backoff, and never ends the thread. Each thread is
registered in a :class:`Heartbeats` registry, which the ``/healthz`` route of the server that owns the thread
reads: a thread that died, or has not completed a round within its ``overdue_s``, makes the server unhealthy
(503, naming the thread and how overdue it is) until rounds succeed again. Loops that are not periodic rounds
(the worker's own loop, which fires timers; the registry's log reader) report to a registry directly.

The backoff is :class:`streams.workflow.retry.RetryPolicy`'s full jitter, added to the normal interval, so a
failing thread slows down instead of hammering whatever is failing, and threads that failed together spread out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.config import RepeatFilter
from streams.workflow.retry import RetryPolicy

MIN_OVERDUE_S = 5.0  # below this a busy process (the GIL, a slow disk) would flap between healthy and not
LOG_EVERY_S = 60.0  # during a streak of failures, at most one line per thread this often


@dataclass
class _Beat:
    overdue_s: float
    last_ok: float
    thread: threading.Thread | None = None
    failures: int = 0  # consecutive failed rounds
    error: str | None = None  # the last failure, while the streak lasts


class Heartbeats:
    """When each registered thread last completed a round; ``health()`` applies the rule."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._beats: dict[str, _Beat] = {}

    def register(self, name: str, overdue_s: float, thread: threading.Thread | None = None) -> None:
        """Watch ``name`` from now on: healthy while a round completed within ``overdue_s`` (and ``thread``, when
        given, is alive). Registering counts as a round, so a thread starts healthy."""
        with self._lock:
            self._beats[name] = _Beat(overdue_s, self._clock(), thread)

    def unregister(self, name: str) -> None:
        """A thread that was asked to stop and did is no longer watched."""
        with self._lock:
            self._beats.pop(name, None)

    def ok(self, name: str) -> int:
        """A round of ``name`` completed; returns how many rounds had failed in a row before it."""
        with self._lock:
            beat = self._beats.get(name)
            if beat is None:
                return 0
            failed, beat.last_ok, beat.failures, beat.error = beat.failures, self._clock(), 0, None
            return failed

    def failed(self, name: str, error: str) -> int:
        """A round of ``name`` failed with ``error``; returns the number of failures in a row, this one included."""
        with self._lock:
            beat = self._beats.get(name)
            if beat is None:
                return 0
            beat.failures += 1
            beat.error = error
            return beat.failures

    def problems(self) -> dict[str, dict[str, Any]]:
        """The unhealthy threads by name: why (``dead`` or ``overdue``), since when, and the last error."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, beat in self._beats.items():
                since = now - beat.last_ok
                dead = beat.thread is not None and not beat.thread.is_alive()
                if dead or since > beat.overdue_s:
                    out[name] = {"state": "dead" if dead else "overdue",
                                 "last_round_s_ago": round(since, 1),
                                 "overdue_by_s": round(max(0.0, since - beat.overdue_s), 1),
                                 "failed_rounds": beat.failures, "error": beat.error}
        return out

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._beats)


def health(*registries: Heartbeats | None, **extra: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for ``/healthz``: 200 ``{"ok": true, ...}``, or 503 naming each unhealthy thread."""
    problems: dict[str, dict[str, Any]] = {}
    watched: list[str] = []
    for reg in registries:
        if reg is not None:
            problems.update(reg.problems())
            watched.extend(reg.names())
    body: dict[str, Any] = {"ok": not problems, **extra, "threads": sorted(watched)}
    if problems:
        body["unhealthy"] = problems
    return (503 if problems else 200), body


def run_rounds(beats: Heartbeats, name: str, round_: Callable[[], None], interval_s: float,
               stop: threading.Event, log: Callable[[str], None], *, overdue_s: float | None = None,
               backoff_cap_s: float | None = None) -> threading.Thread:
    """Start a daemon thread named ``name`` that calls ``round_()`` every ``interval_s`` until ``stop`` is set.

    A round that raises is logged (rate-limited, no traceback) and the next one waits ``interval_s`` plus a
    jittered backoff that grows with the streak (capped at ``backoff_cap_s``, default ten intervals, at most
    30 s). The thread counts as overdue when no round completed within ``overdue_s`` (default three intervals,
    at least :data:`MIN_OVERDUE_S`).
    """
    cap_s = backoff_cap_s if backoff_cap_s is not None else min(30.0, 10 * interval_s)
    policy = RetryPolicy(max_attempts=1, base_ms=max(1, int(interval_s * 1000)), cap_ms=int(cap_s * 1000))
    overdue = overdue_s if overdue_s is not None else max(3 * interval_s, MIN_OVERDUE_S)
    repeats = RepeatFilter(LOG_EVERY_S)

    def loop() -> None:
        delay = interval_s
        while not stop.wait(delay):
            try:
                round_()
            except Exception as exc:  # the point of the loop: any failure is a failed round, never a dead thread
                n = beats.failed(name, f"{type(exc).__name__}: {exc}")
                delay = interval_s + policy.backoff_ms(name, "round", n) / 1000
                if repeats.admit(name) is not None or n == 1:
                    log(f"{name}: round failed ({type(exc).__name__}: {exc}); {n} in a row, "
                        f"next in {delay:.1f}s")
                continue
            delay = interval_s
            failed = beats.ok(name)
            if failed:
                log(f"{name}: rounds succeed again after {failed} failed")
        beats.unregister(name)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    beats.register(name, overdue, thread)
    thread.start()
    return thread
