"""Noticing that the whole process was frozen (SIGSTOP, a suspended VM, a stop-the-world pause).

A frozen worker stops heartbeating, so after the session timeout the group hands its partitions to another
member; when it thaws, its loop carries on where it stopped, and librdkafka tells it about the lost
partitions only at its next poll. A batch that spans the freeze must therefore not be made local (see
:class:`streams.runtime.commit.AbandonedError`). A thread that ticks every ``tick_s`` sees the freeze as a gap
between its ticks; the worker's loop, which may thaw first, sees it as a tick that is too old. The ticks run
through :func:`streams.runtime.heartbeat.run_rounds`, so the worker's ``/healthz`` notices if they stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from streams.runtime.heartbeat import Heartbeats, run_rounds


class FreezeWatch:
    def __init__(self, limit_s: float, tick_s: float = 0.1, beats: Heartbeats | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self.limit_s = limit_s
        self._last = time.monotonic()
        self.freezes = 0  # gaps longer than the limit seen so far; compare two readings to ask "since then?"
        self._stop = threading.Event()
        self._thread = run_rounds(beats or Heartbeats(), "streams-freeze-watch", self._tick, tick_s, self._stop, log)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last > self.limit_s:
            self.freezes += 1
        self._last = now

    def frozen_since(self, freezes: int) -> bool:
        """Whether a freeze longer than the limit happened since ``freezes`` was read, or is ending now."""
        return self.freezes != freezes or time.monotonic() - self._last > self.limit_s

    def stop(self) -> None:
        self._stop.set()
