"""The stream worker: one consumer-group member running one stateful processor over its partitions.

The loop is: restore what was just assigned (a chunk at a time), consume a batch, run each record through the
processor against its entity's state, and hand the batch to the commit protocol when the commit interval or
the batch bound is reached. Partitions being restored stay paused; so do all partitions while the producer
holds too many unacknowledged records (backpressure). Bad records never block a partition: they are written
to the dead-letter topic, durably, as part of the batch that consumed them.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.config import KafkaSettings, WorkerSettings
from streams.errors import HopLimitError, MisroutedError, ProcessingError, RecordError, StreamsError
from streams.errors import WorkflowDefinitionError as DefinitionError
from streams.kafka.client import consumer_config, make_consumer, make_producer, resume, translate
from streams.records import H_EVENT_ID, H_HOPS, H_TRACEPARENT, InputRecord, OutputRecord, header
from streams.runtime import dlq, eos, ingest, observe, otel, parking, tracing
from streams.runtime.commit import (
    AbandonedError,
    Batch,
    CommitContext,
    DeliveryTracker,
    abort_open,
    commit,
    commit_offsets,
    pending,
    produce,
)
from streams.runtime.due import DueTimers
from streams.runtime.faults import TIMER_POINTS, Faults
from streams.runtime.freeze import FreezeWatch
from streams.runtime.metrics import Metrics
from streams.runtime.observe import Census
from streams.runtime.processor import UNCHANGED, Processor, Step
from streams.runtime.restore import Restorer
from streams.state import entity, timers
from streams.state.store import PartitionStore, store_path

_log = logging.getLogger("streams.worker")


@dataclass
class WorkerStats:
    """Counters for logs, tests and (later) metrics; plain ints keep the hot path cheap."""

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


@dataclass(frozen=True)
class WorkerSpec:
    """What this worker runs: its inputs, its changelog and where bad records go."""

    name: str
    inputs: Sequence[str]
    changelog: str
    store: str
    dlq_topic: str
    key_formats: Mapping[str, str] = field(default_factory=dict)
    partitioner: str = "murmur2"
    misrouted: str = "reroute"


def output_id(key: bytes, event_id: str, index: int) -> str:
    """Deterministic id of the index-th output caused by event_id on entity key (invariant 2)."""
    h = blake2b(key, digest_size=16)
    h.update(b"\0" + event_id.encode() + b"\0" + str(index).encode())
    return h.hexdigest()


class Worker:
    def __init__(
        self,
        spec: WorkerSpec,
        processor: Processor[object, object],
        kafka: KafkaSettings,
        settings: WorkerSettings,
        log: Callable[[str], None],
        faults: Faults | None = None,
        on_assignment: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.spec = spec
        self._on_assignment = on_assignment
        self.processor = processor
        self.settings = settings
        self.log = log
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._tracker = DeliveryTracker(spec.changelog)
        self._producer = make_producer(
            kafka, {"on_delivery": self._tracker, **eos.producer_overrides(kafka, settings)}, logger=log)
        self._consumer: Consumer = make_consumer(kafka, settings.group, logger=log)
        self._restorer = Restorer(kafka, settings.group, spec.changelog, settings.restore_batch, log)
        self._stores: dict[int, PartitionStore] = {}
        self._active: set[int] = set()
        self._bp_paused: list[TopicPartition] = []
        self._batch = Batch()
        session_s = float(str(consumer_config(kafka, settings.group).get("session.timeout.ms", 45_000))) / 1000
        self._freeze = FreezeWatch(0.75 * session_s)
        self._freezes = 0  # FreezeWatch.freezes when the current batch began
        self._ctx = CommitContext(
            self._producer, self._consumer, self._tracker, self._stores, faults or Faults(), log,
            should_give_up=self._stop.is_set, frozen=lambda: self._freeze.frozen_since(self._freezes),
        )
        eos.attach(self._ctx, settings)
        self._tags = {t: entity.topic_tag(t) for t in spec.inputs}
        self.metrics = Metrics(settings.group)
        self._census = Census(observe.bind(processor, self.metrics), self.metrics)
        self._router = ingest.Router(spec.key_formats, spec.partitioner, spec.misrouted, self.metrics, log)
        # Optional processor hook: the envelope's id of a record produced without an id header.
        self._envelope_id: Callable[[InputRecord], str | None] | None = getattr(processor, "envelope_id", None)
        self._synced = WorkerStats()
        self._timers_pending: dict[int, int] = {}
        self._assigned_at: dict[tuple[str, int], int] = {}
        self._committed_at: dict[tuple[str, int], int] = {}
        self._spans = otel.load(settings.group)
        self._tracing = False
        # Optional processor hook: the record to produce for a due timer entry (see TimerChange).
        self._fire_record: Callable[[OutputRecord], OutputRecord] | None = getattr(processor, "fire_record", None)
        # Gap guard: the next offset expected per input partition, gaps already fetched again once, and the
        # partitions rewound during the current fetch (their remaining records in it are stale).
        self._expected: dict[tuple[str, int], int] = {}
        self._gaps_retried: set[tuple[str, int, int]] = set()
        self._rewound: set[tuple[str, int]] = set()
        # Only Tansu skips batches; on real Kafka a jump is always real (transaction markers, compaction), and
        # fetching it again would only cost a round trip per transaction.
        self._gap_guard = kafka.tansu
        # Guards store open/close against readers on other threads (the status endpoint).
        self._store_lock = threading.RLock()
        self._due = DueTimers()
        self._parked = parking.ParkedIndex()
        self._next_timer_check = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and close; safe from signal handlers and other threads."""
        self._stop.set()

    @property
    def assigned(self) -> list[int]:
        return sorted(self._stores)

    @property
    def active(self) -> list[int]:
        return sorted(self._active)

    def lookup(self, key: bytes) -> tuple[int, bytes] | None:
        """(partition, processor state bytes) of an entity held by this worker; safe from any thread."""
        with self._store_lock:
            for p in sorted(self._active):
                raw = self._stores[p].get(key)
                if raw is not None:
                    return p, entity.decode(raw).state or b""
        return None

    def parked(self, key: bytes) -> tuple[int, list[tuple[str, int]]] | None:
        """(partition, [(event id, deadline ms)]) of an entity's parked events held by this worker, earliest
        first; safe from any thread. An entity may have parked events and no state yet (a reply ahead of it)."""
        with self._store_lock:
            for p in sorted(self._active):
                entries = self._parked.of(p, key)
                if entries:
                    return p, [(event_id, timers.due_of(tkey)) for event_id, tkey in entries]
        return None

    def scan(self, after: bytes | None, limit: int, keep: Callable[[bytes], bool]) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (key, state) pairs with key > ``after`` that ``keep`` accepts, across partitions in
        key order; safe from any thread. Paging by key keeps a listing stable while entities change."""
        with self._store_lock:
            iters = [self._stores[p].entities(after=after) for p in sorted(self._active)]
            out: list[tuple[bytes, bytes]] = []
            for key, raw in heapq.merge(*iters, key=lambda kv: kv[0]):
                state = entity.decode(raw).state or b""
                if keep(state):
                    out.append((key, state))
                    if len(out) >= limit:
                        break
            return out

    def state_hashes(self) -> dict[int, str]:
        return {p: s.state_hash() for p, s in self._stores.items()}

    def run(self) -> None:
        self._consumer.subscribe(
            list(self.spec.inputs), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self._stop.is_set():
                self._loop_once()
            self._commit()
        finally:
            self._close()

    def _loop_once(self) -> None:
        if self._restorer.jobs:
            for job in self._restorer.step():
                self.metrics.restored.labels(self.settings.group, self.spec.store).inc(job.restored)
                self._activate(job.partition, job.uncommitted_timers)
            for p, left in self._restorer.remaining().items():
                self.metrics.restore_remaining.labels(self.settings.group, self.spec.store, str(p)).set(left)
        self._census.step(self._stores, self._active)
        self._backpressure()
        now = time.monotonic()
        if now >= self._next_timer_check:
            self._next_timer_check = now + self.settings.timer_check_ms / 1000
            self._fire_due_timers()
        timeout = 0.0 if self._restorer.jobs else self.settings.poll_timeout_s
        msgs = self._poll(timeout)
        started = time.perf_counter()
        self._rewound.clear()
        self._tracing = self._spans is not None and self._spans.enabled()  # a provider may be set at any time
        try:
            for msg in msgs:
                if msg.error() is None:
                    self._process(msg)
                else:
                    self._on_error(msg)
        except _StoppedError:
            return  # the rest of this fetch is not processed; its offsets are not committed
        if msgs:
            self.metrics.batch.labels(self.settings.group).observe(time.perf_counter() - started)
        b = self._batch
        # exactly_once: a transaction holding only fired timers must be committed too, or none is seen.
        if (b or pending(self._ctx)) and (b.records >= self.settings.max_batch
                  or (time.monotonic() - b.started) * 1000 >= self.settings.commit_interval_ms):
            self._commit()

    def _poll(self, timeout: float) -> list[Message]:
        """What is already fetched, without waiting; only when nothing is, wait up to ``timeout`` for a record.
        librdkafka's batch consume otherwise waits out its whole timeout unless the batch fills, which would
        add the poll timeout to every hop of a saga."""
        msgs: list[Message] = self._consumer.consume(self.settings.max_batch, 0)
        if msgs or timeout <= 0:
            return msgs
        first: list[Message] = self._consumer.consume(1, timeout)
        if not first:
            return first
        rest: list[Message] = self._consumer.consume(self.settings.max_batch - 1, 0)
        return first + rest

    def _close(self) -> None:
        try:
            self._consumer.close()  # revokes (and so commits and closes stores) through the callback
        except (KafkaException, RuntimeError) as exc:
            self.log(f"worker: closing consumer: {exc}")
        self._restorer.close()
        self._freeze.stop()
        for p in list(self._stores):
            self._stores.pop(p).close()
        try:
            self._producer.flush(10)
        except KafkaException as exc:  # a fenced transactional producer: it has nothing left to deliver
            self.log(f"worker: flushing producer: {exc}")

    # -- commit ------------------------------------------------------------------------------------------

    def _commit(self, rewind: bool = True) -> None:
        batch, self._batch = self._batch, Batch()
        if not batch and not pending(self._ctx):
            self._freezes = self._freeze.freezes
            return
        started = time.perf_counter()
        try:
            ok = commit(self._ctx, batch)
        except AbandonedError as exc:
            # exactly_once: the abort also took timers fired for partitions without input in the batch.
            parts = set(batch.offsets) | (self._active if self._ctx.txn is not None else set())
            self.log(f"worker: {exc}; partitions {sorted(parts)} are read again from what is durable")
            self.stats.failed_commits += 1
            if rewind:
                self._rewind(parts)
                # Its changelog may already hold its timers; and tombstones it carried for earlier orphans
                # (staged on activation) must not be lost with it.
                for p, ents in batch.entities.items():
                    store = self._stores.get(p)
                    if store is not None and p in self._active:
                        self._tombstone_orphans(p, store, {
                            k: entity.source_of(v) if v is not None else _unsource(batch.tombstone_sources[(p, k)])
                            for k, v in ents.items() if k[:1] == timers.PREFIX})
            return
        finally:
            self._freezes = self._freeze.freezes
            self._due.committed()
        if ok:
            self.stats.commits += 1
        else:
            self.stats.failed_commits += 1
        self.metrics.commit.labels(self.settings.group).observe(time.perf_counter() - started)
        self._sync_metrics()

    def _sync_metrics(self) -> None:
        m, s, last, g = self.metrics, self.stats, self._synced, self.settings.group
        m.sync()
        for counter, now, before in ((m.duplicates, s.duplicates, last.duplicates),
                                     (m.rebalances, s.rebalances, last.rebalances),
                                     (m.pauses, s.backpressure_pauses, last.backpressure_pauses),
                                     (m.timers_fired, s.timers_fired, last.timers_fired)):
            if now > before:
                counter.labels(g).inc(now - before)
        self._synced = replace(s)  # a copy (vars() would not see a compiled class's fields)
        m.timers_pending.labels(g).set(sum(self._timers_pending.values()))
        observe.update_lag(m, self._consumer, list(self.spec.inputs), self._active)

    # -- assignment --------------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        parts = sorted({tp.partition for tp in partitions})
        self._router.learn(consumer, self.spec.inputs)
        try:
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=30)}
        except KafkaException as exc:
            raise translate(exc, "reading committed offsets on assignment") from exc
        positions: list[TopicPartition] = []
        for p in parts:
            with self._store_lock:
                store = self._stores.get(p) or PartitionStore(
                    store_path(self.settings.state_dir, self.spec.store, p), p
                )
                self._stores[p] = store
            durable: dict[str, int] = {}
            group_offsets: dict[str, int] = {}
            for topic in self.spec.inputs:
                local = store.source_offset(topic)
                c = committed.get((topic, p), -1)
                pos = max(c if c >= 0 else 0, local or 0)
                durable[topic] = pos
                group_offsets[topic] = max(c, 0)
                self._committed_at[(topic, p)] = c
                self._assigned_at[(topic, p)] = pos
                positions.append(TopicPartition(topic, p, pos if (c >= 0 or local) else OFFSET_BEGINNING))
            self._restorer.start(store, durable, group_offsets)
        self.log(f"worker: assigned partitions {parts} of {', '.join(self.spec.inputs)}; restoring")
        consumer.assign(positions)
        if positions:
            consumer.pause(positions)
        if self._ctx.txn is not None:  # the generation a zombie's offsets will carry, and be refused for
            self._ctx.group_metadata = consumer.consumer_group_metadata()

    def _activate(self, p: int, orphans: dict[bytes, tuple[int, int]] | None = None) -> None:
        store = self._stores.get(p)
        if store is None:
            return
        if orphans:
            self._tombstone_orphans(p, store, orphans)
        if self._on_assignment is not None:
            self._on_assignment(sorted({*self._active, p}))
        self._active.add(p)
        self._load_timer_index(p, store)
        done: list[TopicPartition] = []
        for t in self.spec.inputs:
            # A restore that met a replay's reset moved the store's offsets back: start where the store says.
            pos = store.source_offset(t)
            if pos is not None and pos != self._assigned_at.get((t, p)):
                self._consumer.seek(TopicPartition(t, p, pos))
            self._expected[(t, p)] = pos if pos is not None else self._assigned_at.get((t, p), 0)
            if pos is not None and pos > self._committed_at.get((t, p), -1):
                # A crash between the local write and the offset commit (step 3 -> 4): the store covers
                # durable effects the group never heard of. Finish step 4 now; with no further input on
                # this partition nothing else would.
                done.append(TopicPartition(t, p, pos))
        if done:
            ok = commit_offsets(self._ctx, Batch(offsets={p: {tp.topic: tp.offset for tp in done}}))
            self.stats.commits += int(ok)
        resume(self._consumer, [TopicPartition(t, p) for t in self.spec.inputs])
        self.log(f"worker: partition {p} restored; processing")

    def _tombstone_orphans(self, p: int, store: PartitionStore, orphans: dict[bytes, tuple[int, int]]) -> None:
        """Timers a batch wrote to the changelog but never made local (a crash, or an abandoned batch): tombstone
        those the store does not hold, at the orphan's own source position, so no later restore brings them
        back. A timer's key holds its wall-clock due time, so the redo may set it under another key; one it sets
        again at the same due time overwrites the tombstone in the same batch."""
        ents, _offsets = self._batch.partition(p)
        for tkey, (tag, offset) in orphans.items():
            if store.get_raw(tkey) is None and tkey not in ents:
                ents[tkey] = None
                self._batch.tombstone_sources[(p, tkey)] = _source(tag, offset)

    def _load_timer_index(self, p: int, store: PartitionStore) -> None:
        """The in-memory views of a partition's timer index (pending count, parked events, fired keys), from
        the store alone: on activation, and after an abandoned batch whose staged changes they had counted."""
        index = [k for k, _v in store.timers()]
        self._timers_pending[p] = len(index)
        self._parked.load(p, index)
        self._due.forget(p)

    def _rewind(self, parts: set[int]) -> None:
        """Forget what an abandoned batch staged for ``parts`` and read them again from the store's offsets,
        as a restart would. If the group did move them, the next poll reports them lost."""
        for p in parts:
            store = self._stores.get(p)
            if store is None or p not in self._active:
                continue
            self._load_timer_index(p, store)
            for t in self.spec.inputs:
                pos = store.source_offset(t)
                if pos is None:
                    pos = self._assigned_at.get((t, p), 0)
                self._expected[(t, p)] = pos
                self._seek_if_ours(t, p, pos)

    def _seek_if_ours(self, topic: str, p: int, offset: int) -> None:
        """Seek, unless the partition is no longer ours: lost or revoked within this consume() or assignment,
        its new owner reads it from the committed offset (seek would raise, and the worker would crash)."""
        try:
            self._consumer.seek(TopicPartition(topic, p, offset))
        except KafkaException as exc:
            self.log(f"worker: not rewinding {topic}[{p}], no longer assigned: {exc}")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in partitions}
        self.stats.rebalances += 1
        try:
            self._commit(rewind=False)  # still a member: finish what was consumed before letting go
        finally:
            self._release(parts)
        self.log(f"worker: revoked partitions {sorted(parts)}")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in partitions}
        if self._ctx.txn is not None and (self._batch or pending(self._ctx)):
            # The open transaction holds the lost partitions' outputs too: abort it, redo the partitions kept.
            abort_open(self._ctx)
            keep, self._batch = (set(self._batch.offsets) | self._active) - parts, Batch()
            self._rewind(keep)
        self._batch.drop(parts)  # not ours any more: committing would race the new owner
        if not self._batch:  # nothing from before a freeze is left: what follows is a new batch
            self._freezes = self._freeze.freezes
        self._release(parts)
        self.log(f"worker: lost partitions {sorted(parts)} (session timed out); their batch is dropped")

    def _release(self, parts: set[int]) -> None:
        self._restorer.cancel(parts)
        self._bp_paused = [tp for tp in self._bp_paused if tp.partition not in parts]
        with self._store_lock:
            for p in parts:
                self._active.discard(p)
                self._due.forget(p)
                self._parked.drop(p)
                for t in self.spec.inputs:
                    self._expected.pop((t, p), None)
                self._timers_pending.pop(p, None)
                store = self._stores.pop(p, None)
                if store is not None:
                    store.close()

    # -- timers ------------------------------------------------------------------------------------------

    def _fire_due_timers(self) -> int:
        """Produce the record of every due timer once. Wall clock: a timer is due when its due time has passed
        on this worker's clock; the step that set it chose the due time (see the processor's clock rule)."""
        now_ms = int(time.time() * 1000)
        n = 0
        for p in self._active:
            for _tkey, value in self._due.due(p, self._stores[p], self._batch.entities.get(p, {}), now_ms):
                rec = timers.decode_record(entity.decode(value).state or b"")
                if self._fire_record is not None:  # the processor stored a description, not the record
                    rec = self._fire_record(rec)
                # Back into this partition of the input topic: the entity's log carries its timeouts too.
                part = p if rec.topic in self._tags else None
                produce(self._producer, rec.topic, rec.key, rec.value, list(rec.headers), part)
                n += 1
        if n and self._ctx.faults.point in TIMER_POINTS:
            self._producer.flush(10)
            self._ctx.faults.hit("after_timer_fired")
        self.stats.timers_fired += n
        return n

    # -- backpressure ------------------------------------------------------------------------------------

    def _backpressure(self) -> None:
        """Pause every active partition until the producer has drained to half the in-flight bound."""
        limit = self.settings.max_in_flight
        if len(self._producer) < limit:
            return
        self.stats.backpressure_pauses += 1
        tps = [TopicPartition(t, p) for p in self._active for t in self.spec.inputs]
        self._consumer.pause(tps)
        self._bp_paused = tps
        while len(self._producer) > limit // 2 and not self._stop.is_set():
            self._producer.poll(0.05)
        if self._bp_paused:
            resume(self._consumer, self._bp_paused)
            self._bp_paused = []

    # -- processing --------------------------------------------------------------------------------------

    def _on_error(self, msg: Message) -> None:
        err = msg.error()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        self.log(f"worker: consume error on {msg.topic()}[{msg.partition()}]: {err.str()}")

    def _process(self, msg: Message) -> None:
        p: int = msg.partition()
        if p not in self._active:
            # Fetched before the pause took effect: rewind so the record is not skipped.
            self._seek_if_ours(msg.topic(), p, msg.offset())
            return
        topic: str = msg.topic()
        offset: int = msg.offset()
        if self._gap_guard and self._gap(topic, p, offset):
            return
        ents, offsets = self._batch.partition(p)
        self.stats.records_in += 1
        self.metrics.in_by_topic[topic] += 1
        # A keyless record gets b"" (typed bytes; it belongs to no entity and goes to the dead-letter topic).
        raw: bytes = msg.key() or b""
        rec = InputRecord(topic, p, offset, raw, msg.value(), msg.timestamp()[1], msg.headers() or ())
        # The offset advances only once the record is handled: applied, a duplicate, dead-lettered or re-routed.
        # A record abandoned on shutdown (its dependency still down) is processed next time.
        try:
            key = self._router.admit(rec) if raw else raw
        except RecordError as exc:
            self._refuse(rec, exc)
        else:
            if key is not raw:  # a decoded key (an avro or json key format) is the entity key from here on
                rec = ingest.decoded(rec, key)
            if not self._tracing or self._spans is None:
                self._handle(rec, p, ents)
            else:
                with self._spans.step(rec):
                    self._handle(rec, p, ents)
        offsets[topic] = offset + 1
        self._batch.records += 1

    def _refuse(self, rec: InputRecord, exc: RecordError) -> None:
        """Re-route a misrouted record (id and headers kept: its owner dedupes a repeat) or dead-letter it."""
        if not isinstance(exc, MisroutedError) or not self._router.reroute:
            self._dead_letter(rec, exc, 1)
            return
        copy = ingest.settled(rec, self._envelope_id)
        produce(self._producer, rec.topic, rec.key, rec.value, list(copy.headers), exc.home)
        self.stats.rerouted += 1

    def _gap(self, topic: str, p: int, offset: int) -> bool:
        """Tansu only. True when this record must not be processed now: its partition jumped past records it
        never delivered (the embedded broker can skip whole batches for a tailing reader while several producers
        write). The first time a gap shows, fetch again from the expected offset; a gap that is still there
        the second time is real (transaction markers, compaction) and accepted."""
        tp = (topic, p)
        if tp in self._rewound:
            return True
        expected = self._expected.get(tp)
        if expected is not None and offset > expected:
            if (topic, p, expected) not in self._gaps_retried:
                self._gaps_retried.add((topic, p, expected))
                self.stats.gap_refetches += 1
                self.log(f"worker: {topic}[{p}] jumped from offset {expected} to {offset}; fetching again")
                self._consumer.seek(TopicPartition(topic, p, expected))
                self._rewound.add(tp)
                return True
            self.log(f"worker: {topic}[{p}] has no records {expected}..{offset - 1} (gap confirmed)")
        self._expected[tp] = offset + 1
        return False

    def _handle(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None]) -> None:
        key = rec.key
        parked_until = parking.deadline_of(rec) if key else None
        try:
            if not key:
                raise RecordError("record has no key, so it belongs to no entity")
            hops = _hops(rec)
            if hops > self.settings.max_hops:
                raise HopLimitError(f"hop count {hops} exceeds the limit {self.settings.max_hops}")
            if self._envelope_id is not None and header(rec.headers, H_EVENT_ID) is None:
                rec = ingest.with_id(rec, self._patiently(self._envelope_id, rec))
            dkey = timers.ENTITY + key
            raw = ents[dkey] if dkey in ents else self._stores[p].get(key)
            current = entity.decode(raw) if raw is not None else None
            event_id = rec.event_id
            if (current is not None and current.seen(event_id)) or (
                    parked_until is not None and self._parked.get(p, key, event_id) is None):
                # A repeat, or a parked event's expiry copy whose entry a re-offer already resolved.
                self._unpark(p, key, event_id, rec, ents)
                self.stats.duplicates += 1
                return
            event = self._patiently(self.processor.decode, rec)
            state = self._patiently(self.processor.load_state, current.state) if current and current.state else None
            step = self._run(state, event, rec)
        except RecordError as exc:
            self._dead_letter(rec, exc, 1)
            if parked_until is not None and key is not None:
                self._unpark(p, key, rec.event_id, rec, ents)
            return
        except _ExhaustedError as exc:
            self._dead_letter(rec, exc.error, self.settings.handler_attempts)
            if parked_until is not None and key is not None:
                self._unpark(p, key, rec.event_id, rec, ents)
            return
        if parked_until is not None:
            self._unpark(p, key, event_id, rec, ents)
        recent = self._stage(rec, p, ents, current.recent_ids if current else [], event_id, hops, step)
        if recent is not None and self._parked.has(p, key):
            self._reoffer(rec, p, ents, step.state, recent)

    def _stage(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None], recent: list[bytes],
               event_id: str, hops: int, step: Step[object]) -> list[bytes] | None:
        """Stage one step's effects in the batch; the entity's new recent ids if it now has a state."""
        key = rec.key
        if step.park_until_ms is not None:
            self._park(rec, p, ents, event_id, step.park_until_ms)
            return None
        tag = self._tags[rec.topic]
        offset = rec.offset
        dkey = timers.ENTITY + key
        new_recent: list[bytes] | None = None
        if step.state is not UNCHANGED:
            if step.state is None:
                ents[dkey] = None
                self._batch.tombstone_sources[(p, dkey)] = _source(tag, offset)
            else:
                new_recent = entity.remember(recent, event_id, self.settings.dedupe_window)
                ents[dkey] = entity.encode(tag, offset, new_recent, self.processor.dump_state(step.state))
        for change in step.timers:
            tkey = timers.index_key(change.due_ms, key, change.name)
            self._timers_pending[p] = self._timers_pending.get(p, 0) + (1 if change.fire else -1)
            if change.fire is None:
                ents[tkey] = None
                self._batch.tombstone_sources[(p, tkey)] = _source(tag, offset)
                self._due.cleared(p, tkey)
            else:
                fire = change.fire
                self._due.staged(p, change.due_ms)
                if header(fire.headers, H_TRACEPARENT) is None:
                    eid = header(fire.headers, H_EVENT_ID)
                    span = tracing.child(header(rec.headers, H_TRACEPARENT), event_id,
                                         (eid or tkey).decode("utf-8", "replace"))
                    fire = OutputRecord(fire.topic, fire.key, fire.value, (*fire.headers, (H_TRACEPARENT, span)))
                ents[tkey] = entity.encode(tag, offset, [], timers.encode_record(fire))
        if step.outputs:
            self._emit(rec, key, event_id, hops, step.outputs)
        return new_recent

    # -- parked events (streams.runtime.parking) ---------------------------------------------------------

    def _park(self, rec: InputRecord, p: int, ents: dict[bytes, bytes | None], event_id: str,
              deadline_ms: int) -> None:
        key = rec.key
        if self._parked.get(p, key, event_id) is not None:
            self.stats.duplicates += 1  # the same event parked twice: the first copy is already waiting
            return
        tkey = parking.entry_key(deadline_ms, key, event_id)
        ents[tkey] = entity.encode(self._tags[rec.topic], rec.offset, [],
                                   timers.encode_record(parking.held(rec, deadline_ms)))
        self._parked.add(p, key, event_id, tkey)
        self._due.staged(p, deadline_ms)
        self._timers_pending[p] = self._timers_pending.get(p, 0) + 1
        self.stats.parked += 1

    def _unpark(self, p: int, key: bytes, event_id: str, rec: InputRecord, ents: dict[bytes, bytes | None]) -> None:
        tkey = self._parked.remove(p, key, event_id)
        if tkey is None:
            return
        ents[tkey] = None
        self._batch.tombstone_sources[(p, tkey)] = _source(self._tags[rec.topic], rec.offset)
        self._due.cleared(p, tkey)
        self._timers_pending[p] = self._timers_pending.get(p, 0) - 1

    def _reoffer(self, trigger: InputRecord, p: int, ents: dict[bytes, bytes | None], state: object,
                 recent: list[bytes]) -> None:
        """Offer the entity's parked events again after ``trigger`` changed it, until none is accepted."""
        key = trigger.key
        progress = True
        while progress:
            progress = False
            for event_id, tkey in self._parked.of(p, key):
                if entity.Entity(0, 0, recent, None).seen(event_id):
                    self._unpark(p, key, event_id, trigger, ents)
                    continue
                raw = ents[tkey] if tkey in ents else self._stores[p].get_raw(tkey)
                if raw is None:  # cannot happen while the index mirrors the store; never fail the partition on it
                    self._parked.remove(p, key, event_id)
                    continue
                rec = parking.reoffered(timers.decode_record(entity.decode(raw).state or b""), trigger)
                try:
                    step = self._run(state, self._patiently(self.processor.decode, rec), rec)
                except RecordError as exc:
                    self._dead_letter(rec, exc, 1)
                    self._unpark(p, key, event_id, trigger, ents)
                    continue
                except _ExhaustedError as exc:
                    self._dead_letter(rec, exc.error, self.settings.handler_attempts)
                    self._unpark(p, key, event_id, trigger, ents)
                    continue
                if step.park_until_ms is not None:
                    continue  # still not acceptable: it keeps its entry and first deadline
                self._unpark(p, key, event_id, trigger, ents)
                self.stats.unparked += 1
                new_recent = self._stage(rec, p, ents, recent, event_id, _hops(rec), step)
                if new_recent is not None:
                    state, recent = step.state, new_recent
                    progress = True
                    break
                if step.state is None:
                    return

    def _patiently(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """Call ``fn``; wait out retryable errors (a registry or dependency that is down) instead of
        dead-lettering good records; anything else unexpected is the record's problem."""
        delay = 0.1
        while True:
            try:
                return fn(arg)
            except (RecordError, DefinitionError):
                raise  # a definition's bug stops the worker, naming it: dead-lettering would hide it
            except StreamsError as exc:
                if not exc.retryable:
                    raise ProcessingError(f"{type(exc).__name__}: {exc}") from exc
                self.log(f"worker: {exc}; retrying in {delay:.1f}s")
                if self._stop.wait(delay):
                    raise _StoppedError from exc
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # a bug in decode/load_state: dead-letter, never crash the partition
                raise ProcessingError(f"{type(exc).__name__}: {exc}") from exc

    def _run(self, state: object, event: object, rec: InputRecord) -> Step[object]:
        """The processor call, retried in place: a transient bug or dependency hiccup must not dead-letter."""
        last: Exception | None = None
        for _ in range(self.settings.handler_attempts):
            try:
                step: Step[object] = self._patiently(
                    lambda r: self.processor.process(state, event, r, int(time.time() * 1000)), rec)
                return step
            except ProcessingError as exc:  # raised by _patiently for an unexpected exception
                last = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            except RecordError:
                raise
        raise _ExhaustedError(ProcessingError(f"{type(last).__name__}: {last}"))

    def _emit(self, rec: InputRecord, key: bytes, event_id: str, hops: int, outputs: Sequence[OutputRecord]) -> None:
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
            produce(self._producer, out.topic, out.key, out.value, headers)
            self.metrics.out_by_topic[out.topic] += 1
        self.stats.records_out += len(outputs)
        if self.stats.records_out & 15 == 0:  # sampled: a histogram update per record would cost more
            self.metrics.step_latency.labels(self.settings.group).observe(
                max(time.time() - rec.timestamp_ms / 1000, 0.0))
        if len(self._producer) >= self.settings.max_in_flight:
            self._backpressure()

    def _dead_letter(self, rec: InputRecord, exc: Exception, attempts: int) -> None:
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
        produce(self._producer, self.spec.dlq_topic, out.key, out.value, list(out.headers))


class _StoppedError(Exception):
    """Shutdown was requested while a record waited for a dependency: leave it unprocessed."""


class _ExhaustedError(Exception):
    def __init__(self, error: ProcessingError) -> None:
        super().__init__(str(error))
        self.error = error


def _source(tag: int, offset: int) -> bytes:
    """The source position of a tombstone, which has no envelope to carry it."""
    return tag.to_bytes(4, "big") + offset.to_bytes(8, "big", signed=True)


def _unsource(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big", signed=True)


def _hops(rec: InputRecord) -> int:
    raw = header(rec.headers, H_HOPS)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        return 0
