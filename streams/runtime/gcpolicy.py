"""The cyclic garbage collector's settings for a process that runs the hot path (a worker, a restore).

A workflow step allocates a few dozen short-lived containers that reference counting frees; the collector
still ran every 700 net allocations and, with thousands of decoded states cached, took ~9% of a saturated
orchestrator (profiled: 1,040 collections in 80,000 steps). Freezing what startup built (modules, schemas, the
workflow definition) and collecting young objects every 10,000 allocations measured 1.0 -> 0.3 s of collection
per 80,000 steps, +15-20% steps/s. Once the C codec made a step cheaper, those collections were ~11% of the
orchestrator again (a batch keeps up to 5,000 consumed messages alive, and each young collection walked them):
every 100,000 allocations measured 1.3-1.7 s -> 0.04 s per 240,000 steps in-process, and a 500,000-entity
restore 201-207k -> 248-263k records/s. Cycles are still collected, just in larger, rarer rounds.

Process-wide, so only at a process's entry points (``streams worker``, ``streams state rebuild``, the bench's
restore timing), never inside the Worker: tests run several workers in one process.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (100_000, 20, 20)


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def tuned() -> Iterator[None]:
    """:func:`tune` for a block, then the previous thresholds (what was frozen stays frozen: it was live)."""
    before = gc.get_threshold()
    tune()
    try:
        yield
    finally:
        gc.set_threshold(*before)
