"""A worker's counters, bumped by each of its parts (loop, record handler, parking, timers, commit).

Compiled with mypyc (streams/_native.py): plain int fields of a native class keep the per-record increments
cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerStats:
    """Counters for logs, tests and metrics."""

    records_in: int = 0
    records_out: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    commits: int = 0
    failed_commits: int = 0
    rebalances: int = 0
    restored: int = 0
    backpressure_pauses: int = 0
    timers_fired: int = 0
    gap_refetches: int = 0
    parked: int = 0
    unparked: int = 0
    rerouted: int = 0
