"""The per-record path of a worker: one consumed record in, its effects staged in the batch.

For each record: the gap guard (embedded broker only), the partition/key check (:mod:`streams.runtime.ingest`),
dedupe against the entity's recent ids, decode, the processor's step (dependencies that are down are waited
out, anything else retried ``handler_attempts`` times), then the step's effects staged for the commit
protocol: the entity's new state and timer changes in the batch, outputs produced at once, a parked event kept
(:mod:`streams.runtime.parked`). A record that cannot be processed is dead-lettered, never blocks its partition.

Compiled with mypyc (streams/_native.py), like everything it calls per record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Any

from streams import errors
from streams.config import WorkerSettings
from streams.errors import HopLimitError, MisroutedError, ProcessingError, RecordError, StoppedError, StreamsError
from streams.errors import WorkflowDefinitionError as DefinitionError
from streams.kafka import io
from streams.kafka.io import Message
from streams.records import H_EVENT_ID, H_HOPS, H_TRACEPARENT, InputRecord, OutputRecord, header
from streams.runtime import dlq, ingest, otel, parking, tracing
from streams.runtime.commit import CommitContext, seek_if_ours, source
from streams.runtime.metrics import Metrics
from streams.runtime.parked import ExhaustedError, Parking, hops
from streams.runtime.processor import UNCHANGED, Processor, Step
from streams.runtime.stats import WorkerStats
from streams.state import entity, timers

_log = logging.getLogger("streams.worker")


def output_id(key: bytes, event_id: str, index: int) -> str:
    """Deterministic id of the index-th output caused by event_id on entity key (invariant 2)."""
    h = blake2b(key, digest_size=16)
    h.update(b"\0" + event_id.encode() + b"\0" + str(index).encode())
    return h.hexdigest()


class Handler(Parking):
    def __init__(
        self, ctx: CommitContext, processor: Processor[object, object], settings: WorkerSettings, dlq_topic: str,
        stats: WorkerStats, metrics: Metrics, router: ingest.Router, stop: threading.Event,
        log: Callable[[str], None], gap_guard: bool, on_full: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.processor = processor
        self.settings = settings
        self.dlq_topic = dlq_topic
        self.stats = stats
        self.metrics = metrics
        self.router = router
        self.stop = stop
        self.log = log
        self.producer = ctx.producer
        self.send = ctx.outbox.send
        self.tags = {t: entity.topic_tag(t) for t in ctx.inputs}
        # Optional processor hook: the envelope's id of a record produced without an id header.
        self.envelope_id: Callable[[InputRecord], str | None] | None = getattr(processor, "envelope_id", None)
        self.spans = otel.load(settings.group)
        self.tracing = False  # set by the loop for each fetch: a provider may be set at any time
        # Gap guard: gaps already fetched again once, and the partitions rewound during the current fetch (their
        # remaining records in it are stale). Only Tansu skips batches; on real Kafka a jump is always real
        # (transaction markers, compaction), and fetching it again would only cost a round trip per transaction.
        self.gap_guard = gap_guard
        self.gaps_retried: set[tuple[str, int, int]] = set()
        self.rewound: set[tuple[str, int]] = set()
        # The loop's backpressure: called when the producer holds max_in_flight records.
        self.on_full = on_full

    def process(self, msg: Message) -> None:
        p: int = msg.partition()
        ctx = self.ctx
        if p not in ctx.active:
            # Fetched before the pause took effect: rewind so the record is not skipped.
            seek_if_ours(ctx, msg.topic(), p, msg.offset())
            return
        topic: str = msg.topic()
        offset: int = msg.offset()
        if self.gap_guard and self.gap(topic, p, offset):
            return
        batch = ctx.batch
        ents, offsets = batch.partition(p)
        self.stats.records_in += 1
        self.metrics.in_by_topic[topic] += 1
        # A keyless record gets b"" (typed bytes; it belongs to no entity and goes to the dead-letter topic).
        raw: bytes = msg.key() or b""
        rec = InputRecord(topic, p, offset, raw, msg.value(), msg.timestamp()[1], msg.headers() or ())
        # The offset advances only once the record is handled: applied, a duplicate, dead-lettered or re-routed.
        # A record abandoned on shutdown (its dependency still down) is processed next time.
        try:
            key = self.router.admit(rec) if raw else raw
        except RecordError as exc:
            self.refuse(rec, exc)
        else:
            if key is not raw:  # a decoded key (an avro or json key format) is the entity key from here on
                rec = ingest.decoded(rec, key)
            if not self.tracing or self.spans is None:
                self.handle(rec, p, ents)
            else:
                with self.spans.step(rec):
                    self.handle(rec, p, ents)
        offsets[topic] = offset + 1
        batch.records += 1

    def refuse(self, rec: InputRecord, exc: RecordError) -> None:
        """Re-route a misrouted record (id and headers kept: its owner dedupes a repeat) or dead-letter it."""
        if not isinstance(exc, MisroutedError) or not self.router.reroute:
            self.dead_letter(rec, exc, 1)
            return
        copy = ingest.settled(rec, self.envelope_id)
        self.send(rec.topic, rec.key, rec.value, list(copy.headers), exc.home)
        self.stats.rerouted += 1

    def gap(self, topic: str, p: int, offset: int) -> bool:
        """Tansu only. True when this record must not be processed now: its partition jumped past records it
        never delivered (the embedded broker can skip whole batches for a tailing reader while several producers
        write). The first time a gap shows, fetch again from the expected offset; a gap that is still there
        the second time is real (transaction markers, compaction) and accepted."""
        tp = (topic, p)
        if tp in self.rewound:
            return True
        expected = self.ctx.expected.get(tp)
        if expected is not None and offset > expected:
            if (topic, p, expected) not in self.gaps_retried:
                self.gaps_retried.add((topic, p, expected))
                self.stats.gap_refetches += 1
                self.log(f"worker: {topic}[{p}] jumped from offset {expected} to {offset}; fetching again")
                io.seek(self.ctx.consumer, topic, p, expected)
                self.rewound.add(tp)
                return True
            self.log(f"worker: {topic}[{p}] has no records {expected}..{offset - 1} (gap confirmed)")
        self.ctx.expected[tp] = offset + 1
        return False

    def handle(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None]) -> None:
        key = rec.key
        parked_until = parking.deadline_of(rec) if key else None
        try:
            if not key:
                raise RecordError("record has no key, so it belongs to no entity")
            n_hops = hops(rec)
            if n_hops > self.settings.max_hops:
                raise HopLimitError(f"hop count {n_hops} exceeds the limit {self.settings.max_hops}")
            if self.envelope_id is not None and header(rec.headers, H_EVENT_ID) is None:
                rec = ingest.with_id(rec, self.patiently(self.envelope_id, rec))
            dkey = timers.ENTITY + key
            raw = ents[dkey] if dkey in ents else self.ctx.stored(p, dkey)
            current = entity.decode(raw) if raw is not None else None
            event_id = rec.event_id
            if (current is not None and current.seen(event_id)) or (
                    parked_until is not None and self.ctx.parked.get(p, key, event_id) is None):
                # A repeat, or a parked event's expiry copy whose entry a re-offer already resolved.
                self.unpark(p, key, event_id, rec, ents)
                self.stats.duplicates += 1
                return
            event = self.patiently(self.processor.decode, rec)
            state = self.patiently(self.processor.load_state, current.state) if current and current.state else None
            step = self.run(state, event, rec)
        except RecordError as exc:
            self.dead_letter(rec, exc, 1)
            if parked_until is not None and key is not None:
                self.unpark(p, key, rec.event_id, rec, ents)
            return
        except ExhaustedError as exc:
            self.dead_letter(rec, exc.error, self.settings.handler_attempts)
            if parked_until is not None and key is not None:
                self.unpark(p, key, rec.event_id, rec, ents)
            return
        if parked_until is not None:
            self.unpark(p, key, event_id, rec, ents)
        recent = self.stage(rec, p, ents, current.recent_ids if current else [], event_id, n_hops, step)
        if recent is not None and self.ctx.parked.has(p, key):
            self.reoffer(rec, p, ents, step.state, recent)

    def stage(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None], recent: list[bytes],
              event_id: str, hops: int, step: Step[object]) -> list[bytes] | None:
        """Stage one step's effects in the batch; the entity's new recent ids if it now has a state."""
        key = rec.key
        if step.park_until_ms is not None:
            self.park(rec, p, ents, event_id, step.park_until_ms)
            return None
        ctx = self.ctx
        tag = self.tags[rec.topic]
        offset = rec.offset
        dkey = timers.ENTITY + key
        new_recent: list[bytes] | None = None
        if step.state is not UNCHANGED:
            if step.state is None:
                ents[dkey] = None
                ctx.batch.tombstone_sources[(p, dkey)] = source(tag, offset)
            else:
                new_recent = entity.remember(recent, event_id, self.settings.dedupe_window)
                ents[dkey] = entity.encode(tag, offset, new_recent, self.processor.dump_state(step.state))
        for change in step.timers:
            tkey = timers.index_key(change.due_ms, key, change.name)
            ctx.timers_pending[p] = ctx.timers_pending.get(p, 0) + (1 if change.fire else -1)
            if change.fire is None:
                ents[tkey] = None
                ctx.batch.tombstone_sources[(p, tkey)] = source(tag, offset)
                ctx.due.cleared(p, tkey)
            else:
                fire = change.fire
                ctx.due.staged(p, change.due_ms)
                if header(fire.headers, H_TRACEPARENT) is None:
                    eid = header(fire.headers, H_EVENT_ID)
                    span = tracing.child(header(rec.headers, H_TRACEPARENT), event_id,
                                         (eid or tkey).decode("utf-8", "replace"))
                    fire = OutputRecord(fire.topic, fire.key, fire.value, (*fire.headers, (H_TRACEPARENT, span)))
                ents[tkey] = entity.encode(tag, offset, [], timers.encode_record(fire))
        if step.outputs:
            self.emit(rec, key, event_id, hops, step.outputs)
        return new_recent

    def decode(self, rec: InputRecord) -> object:
        return self.patiently(self.processor.decode, rec)

    def patiently(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """Call ``fn``; wait out retryable errors (a registry or dependency that is down) instead of
        dead-lettering good records; anything else unexpected is the record's problem."""
        try:
            return errors.patiently(lambda: fn(arg), self.stop, self.log, "worker")
        except (RecordError, DefinitionError):
            raise  # a definition's bug stops the worker, naming it: dead-lettering would hide it
        except StoppedError:
            raise  # shutdown while the record waited for a dependency: leave it unprocessed
        except Exception as exc:  # a bug in decode/load_state: dead-letter, never crash the partition
            raise ProcessingError(f"{type(exc).__name__}: {exc}") from exc

    def run(self, state: object, event: object, rec: InputRecord) -> Step[object]:
        """The processor call, retried in place: a transient bug or dependency hiccup must not dead-letter."""
        last: Exception | None = None
        for _ in range(self.settings.handler_attempts):
            try:
                step: Step[object] = self.patiently(
                    lambda r: self.processor.process(state, event, r, int(time.time() * 1000)), rec)
                return step
            except ProcessingError as exc:  # raised by patiently for an unexpected exception
                last = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            except RecordError:
                raise
        raise ExhaustedError(ProcessingError(f"{type(last).__name__}: {last}"))

    def emit(self, rec: InputRecord, key: bytes, event_id: str, hops: int, outputs: Sequence[OutputRecord]) -> None:
        trace = header(rec.headers, H_TRACEPARENT)
        hop_bytes = str(hops + 1).encode()
        for i, out in enumerate(outputs):
            headers = list(out.headers)
            oid = header(headers, H_EVENT_ID)
            if oid is None:
                oid = output_id(key, event_id, i).encode()
                headers.append((H_EVENT_ID, oid))
            headers.append((H_HOPS, hop_bytes))
            if header(headers, H_TRACEPARENT) is None:
                headers.append((H_TRACEPARENT, tracing.child(trace, event_id, oid.decode())))
            self.send(out.topic, out.key, out.value, headers)
            self.metrics.out_by_topic[out.topic] += 1
        self.stats.records_out += len(outputs)
        if self.stats.records_out & 15 == 0:  # sampled: a histogram update per record would cost more
            self.metrics.step_latency.labels(self.settings.group).observe(
                max(time.time() - rec.timestamp_ms / 1000, 0.0))
        if len(self.producer) >= self.settings.max_in_flight:
            self.on_full()

    def dead_letter(self, rec: InputRecord, exc: Exception, attempts: int) -> None:
        self.stats.dead_letters += 1
        reason = exc.reason if isinstance(exc, StreamsError) else "poison"
        self.metrics.dead_by_reason[reason] += 1
        trace = header(rec.headers, H_TRACEPARENT) or tracing.root(rec.event_id)
        _log.warning("dead letter: %s", exc, extra={
            "entity_key": (rec.key or b"").decode("utf-8", "replace"), "trace_id": tracing.trace_id_of(trace),
            "topic": rec.topic, "partition": rec.partition, "offset": rec.offset, "reason": reason,
            "attempts": attempts, "group": self.settings.group})
        if header(rec.headers, H_TRACEPARENT) is None:
            rec = InputRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value, rec.timestamp_ms,
                              (*rec.headers, (H_TRACEPARENT, trace)))
        out = dlq.dead_letter(rec, exc, attempts, self.settings.group)
        self.send(self.dlq_topic, out.key, out.value, list(out.headers))
