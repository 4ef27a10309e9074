"""Fault points: crash the process at a named line, on demand, to test recovery (invariant 2).

``STREAMS_FAULT_POINT=name`` arms one point; ``STREAMS_FAULT_AFTER=n`` lets it pass n-1 times first. The crash
is a SIGKILL of the own process: no cleanup, no flush, exactly what a power cut or OOM kill leaves behind.
``STREAMS_FAULT_ACTION=stop`` freezes the process there instead (SIGSTOP, once), for a test to thaw later.
Unarmed, a check is one attribute lookup and compare.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping

# Every point the commit protocol can crash at, in protocol order; tests iterate over these.
COMMIT_POINTS = (
    "after_outputs_produced",
    "after_changelog_produced",
    "after_flush",
    "after_store_write",
    "after_offset_commit",
)
# exactly_once's steps (see streams.runtime.commit): the offsets are in the open transaction; it is committed.
EOS_POINTS = ("after_offsets_sent", "after_txn_commit")
# Timer firing: a due timer's record produced and flushed, before the step that clears it has run.
TIMER_POINTS = ("after_timer_fired",)
POINTS = COMMIT_POINTS + TIMER_POINTS  # the at-least-once run's points, which `streams chaos` must all reach
_KNOWN = POINTS + EOS_POINTS


class Faults:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.point = env.get("STREAMS_FAULT_POINT") or None
        if self.point is not None and self.point not in _KNOWN:
            raise ValueError(f"STREAMS_FAULT_POINT={self.point!r} is not one of {', '.join(_KNOWN)}")
        self._left = int(env.get("STREAMS_FAULT_AFTER", "1"))
        # kill (default): SIGKILL, a crash. stop: SIGSTOP, a freeze that someone else ends with SIGCONT.
        self.action = env.get("STREAMS_FAULT_ACTION", "kill")
        if self.action not in ("kill", "stop"):
            raise ValueError(f"STREAMS_FAULT_ACTION={self.action!r} is not kill or stop")

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self._left -= 1
        if self._left == 0 and self.action == "stop":
            print(f"streams: fault point {point} reached: stopping self", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        elif self._left <= 0 and self.action == "kill":
            print(f"streams: fault point {point} reached: killing self", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
