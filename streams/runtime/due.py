"""Which timer index entries are due, without reading the index when none can be.

A partition's timer index (timers and parked events, keyed by due time) lives in its store. Reading it on every
check cost ~5 ms a partition with 100,000 orders, mostly skipping the tombstones of cancelled timers, so each
partition keeps a lower bound on its due times: the first not-yet-due entry seen by the last read, lowered by
entries staged since. Staged entries reach the store when their batch is written, which at least once can be
after the next batch began (see streams.runtime.commit), so a sealed batch's bound is kept until then. Entries
already fired are remembered until the step that clears them, in memory only: a restart fires them again, with
the same deterministic id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping

from streams.kafka.io import Producer
from streams.records import OutputRecord
from streams.runtime.faults import TIMER_POINTS, Faults
from streams.state import entity, timers
from streams.state.store import PartitionStore

NEVER = 1 << 62  # a due time after every real one


class DueTimers:
    def __init__(self) -> None:
        self._fired: dict[int, set[bytes]] = {}
        # No stored entry of partition p is due before _floor[p] (absent: unknown, read the index), no entry
        # staged in the current batch before _staged[p], and none of the sealed batch's before _sealed[p].
        self._floor: dict[int, int] = {}
        self._staged: dict[int, int] = {}
        self._sealed: dict[int, int] = {}

    def staged(self, p: int, due_ms: int) -> None:
        """An entry due at ``due_ms`` was staged in the current batch."""
        if due_ms < self._staged.get(p, NEVER):
            self._staged[p] = due_ms

    def sealed(self) -> None:
        """The current batch was sealed: its entries reach the store when it is written."""
        for p, due in self._staged.items():
            if due < self._sealed.get(p, NEVER):
                self._sealed[p] = due
        self._staged = {}

    def committed(self) -> None:
        """The sealed batch is in the stores (or was abandoned, and its partitions are read again)."""
        sealed, self._sealed = self._sealed, {}
        for p, due in sealed.items():
            if p in self._floor and due < self._floor[p]:
                self._floor[p] = due

    def forget(self, p: int) -> None:
        """Partition ``p``'s index was reloaded or released: nothing known about it any more."""
        self._fired.pop(p, None)
        self._floor.pop(p, None)
        self._staged.pop(p, None)
        self._sealed.pop(p, None)

    def cleared(self, p: int, tkey: bytes) -> None:
        """Entry ``tkey`` was deleted (its timer cancelled or fired and handled): it may be set again."""
        fired = self._fired.get(p)
        if fired is not None:
            fired.discard(tkey)

    def due(self, p: int, store: PartitionStore, staged: Mapping[bytes, bytes | None],
            flying: Mapping[bytes, bytes | None], now_ms: int) -> Iterator[tuple[bytes, bytes]]:
        """Entries of ``p`` due at ``now_ms``, not fired yet and not deleted by ``staged`` (the current batch's
        changes) or, failing that, by ``flying`` (the sealed batch's, not written yet); each one yielded counts
        as fired. Reads the store only when an entry may be due."""
        if min(self._floor.get(p, 0), self._staged.get(p, NEVER), self._sealed.get(p, NEVER)) > now_ms:
            return
        fired = self._fired.setdefault(p, set())
        floor = NEVER
        for tkey, value in store.timers():
            due = timers.due_of(tkey)
            if due > now_ms:
                floor = due
                break
            if tkey in fired or (staged[tkey] is None if tkey in staged else
                                 tkey in flying and flying[tkey] is None):
                continue
            fired.add(tkey)
            yield tkey, value
        self._floor[p] = floor


def fire(due: DueTimers, send: Callable[[str, bytes | None, bytes | None, object, int | None], None],
         producer: Producer, stores: Mapping[int, PartitionStore], active: Collection[int],
         staged: Mapping[int, Mapping[bytes, bytes | None]], flying: Mapping[int, Mapping[bytes, bytes | None]],
         inputs: Collection[str], fire_record: Callable[[OutputRecord], OutputRecord] | None, faults: Faults) -> int:
    """Send the record of every due timer of the ``active`` partitions once; how many. Wall clock: a timer is
    due when its due time has passed on this worker's clock; the step that set it chose the due time (see the
    processor's clock rule). ``staged`` and ``flying`` are the current and the sealed batch's changes per
    partition; ``fire_record`` the processor's optional hook that turns a stored description into the record."""
    now_ms = int(time.time() * 1000)
    n = 0
    for p in active:
        for _tkey, value in due.due(p, stores[p], staged.get(p, {}), flying.get(p, {}), now_ms):
            rec = timers.decode_record(entity.decode(value).state or b"")
            if fire_record is not None:  # the processor stored a description, not the record
                rec = fire_record(rec)
            # Back into this partition of the input topic: the entity's log carries its timeouts too.
            part = p if rec.topic in inputs else None
            send(rec.topic, rec.key, rec.value, list(rec.headers), part)
            n += 1
    if n and faults.point in TIMER_POINTS:
        producer.flush(10)
        faults.hit("after_timer_fired")
    return n
