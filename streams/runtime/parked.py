"""Parked events, as the record handler parks, re-offers and releases them (the index itself, and what a parked
record looks like, are :mod:`streams.runtime.parking`).

``Parking`` is the base of :class:`streams.runtime.handler.Handler`: a re-offer runs parked records through the
same decode, processor call and staging as a consumed one, which the handler provides.

Compiled with mypyc (streams/_native.py): ``unpark`` and the parked check run on the per-record path.
"""

from __future__ import annotations

from streams.config import WorkerSettings
from streams.errors import ProcessingError, RecordError
from streams.records import H_HOPS, InputRecord, header
from streams.runtime import parking
from streams.runtime.commit import CommitContext, source
from streams.runtime.processor import Step
from streams.runtime.stats import WorkerStats
from streams.state import entity, timers


class Parking:
    ctx: CommitContext
    settings: WorkerSettings
    stats: WorkerStats
    tags: dict[str, int]

    def park(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None], event_id: str,
             deadline_ms: int) -> None:
        key = rec.key
        ctx = self.ctx
        if ctx.parked.get(p, key, event_id) is not None:
            self.stats.duplicates += 1  # the same event parked twice: the first copy is already waiting
            return
        tkey = parking.entry_key(deadline_ms, key, event_id)
        ents[tkey] = entity.encode(self.tags[rec.topic], rec.offset, [],
                                   timers.encode_record(parking.held(rec, deadline_ms)))
        ctx.parked.add(p, key, event_id, tkey)
        ctx.due.staged(p, deadline_ms)
        ctx.timers_pending[p] = ctx.timers_pending.get(p, 0) + 1
        self.stats.parked += 1

    def unpark(self, p: int, key: bytes, event_id: str, rec: InputRecord, ents: dict[bytes, bytes | None]) -> None:
        ctx = self.ctx
        tkey = ctx.parked.remove(p, key, event_id)
        if tkey is None:
            return
        ents[tkey] = None
        ctx.batch.tombstone_sources[(p, tkey)] = source(self.tags[rec.topic], rec.offset)
        ctx.due.cleared(p, tkey)
        ctx.timers_pending[p] = ctx.timers_pending.get(p, 0) - 1

    def reoffer(self, trigger: InputRecord, p: int, ents: dict[bytes, bytes | None], state: object,
                recent: list[bytes]) -> None:
        """Offer the entity's parked events again after ``trigger`` changed it, until none is accepted."""
        key = trigger.key
        ctx = self.ctx
        progress = True
        while progress:
            progress = False
            for event_id, tkey in ctx.parked.of(p, key):
                if entity.Entity(0, 0, recent, None).seen(event_id):
                    self.unpark(p, key, event_id, trigger, ents)
                    continue
                raw = ents[tkey] if tkey in ents else ctx.stored(p, tkey)
                if raw is None:  # cannot happen while the index mirrors the store; never fail the partition on it
                    ctx.parked.remove(p, key, event_id)
                    continue
                rec = parking.reoffered(timers.decode_record(entity.decode(raw).state or b""), trigger)
                try:
                    step = self.run(state, self.decode(rec), rec)
                except RecordError as exc:
                    self.dead_letter(rec, exc, 1)
                    self.unpark(p, key, event_id, trigger, ents)
                    continue
                except ExhaustedError as exc:
                    self.dead_letter(rec, exc.error, self.settings.handler_attempts)
                    self.unpark(p, key, event_id, trigger, ents)
                    continue
                if step.park_until_ms is not None:
                    continue  # still not acceptable: it keeps its entry and first deadline
                self.unpark(p, key, event_id, trigger, ents)
                self.stats.unparked += 1
                new_recent = self.stage(rec, p, ents, recent, event_id, hops(rec), step)
                if new_recent is not None:
                    state, recent = step.state, new_recent
                    progress = True
                    break
                if step.state is None:
                    return

    # The record handler's steps, which a re-offer repeats (streams.runtime.handler.Handler).

    def decode(self, rec: InputRecord) -> object:
        raise NotImplementedError

    def run(self, state: object, event: object, rec: InputRecord) -> Step[object]:
        raise NotImplementedError

    def stage(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None], recent: list[bytes],
              event_id: str, hops: int, step: Step[object]) -> list[bytes] | None:
        raise NotImplementedError

    def dead_letter(self, rec: InputRecord, exc: Exception, attempts: int) -> None:
        raise NotImplementedError


class ExhaustedError(Exception):
    """The processor failed on a record as many times as ``handler_attempts`` allows."""

    def __init__(self, error: ProcessingError) -> None:
        super().__init__(str(error))
        self.error = error


def hops(rec: InputRecord) -> int:
    """How many steps the record's causal chain has taken (its hops header; 0 when absent or unreadable)."""
    raw = header(rec.headers, H_HOPS)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        return 0
