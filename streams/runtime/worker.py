"""The stream worker: one consumer-group member running one stateful processor over its partitions.

The loop is: restore what was just assigned (a chunk at a time), consume a batch, run each record through the
processor against its entity's state, and hand the batch to the commit protocol when the commit interval or
the batch bound is reached. Partitions being restored stay paused; so do all partitions while the producer
holds too many unacknowledged records (backpressure). Bad records never block a partition: they are written
to the dead-letter topic, durably, as part of the batch that consumed them.

This module is the loop (poll, assign, revoke, lose, backpressure, close). Each record goes to the record
handler (:mod:`streams.runtime.handler`, parking in :mod:`streams.runtime.parked`), due timers are fired by
:mod:`streams.runtime.due`, and everything the commit protocol and its crash recovery need (the batch, the
partitions' state and the recovery steps) is in :mod:`streams.runtime.commit`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from streams.config import KafkaSettings, WorkerSettings
from streams.errors import KafkaOperationError, StoppedError
from streams.kafka import io
from streams.kafka.client import committed_offsets, consumer_config, make_consumer, make_producer, resume
from streams.kafka.io import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from streams.records import OutputRecord
from streams.runtime import due, eos, ingest, observe
from streams.runtime.commit import (
    AbandonedError,
    CommitContext,
    Outbox,
    commit,
    load_timer_index,
    lost,
    pending,
    resume_from_store,
    settle,
    tombstone_orphans,
)
from streams.runtime.faults import Faults
from streams.runtime.freeze import FreezeWatch
from streams.runtime.handler import Handler, output_id
from streams.runtime.heartbeat import Heartbeats
from streams.runtime.metrics import Metrics
from streams.runtime.observe import Census
from streams.runtime.processor import Processor
from streams.runtime.restore import Restorer
from streams.runtime.stats import WorkerStats
from streams.state import entity, timers
from streams.state.store import PartitionStore, store_path

__all__ = ["Worker", "WorkerSpec", "WorkerStats", "output_id"]


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
        # Every record goes out with its batch's delivery callback (streams.runtime.commit.Outbox).
        self._producer = make_producer(kafka, eos.producer_overrides(kafka, settings), logger=log)
        self._consumer: Consumer = make_consumer(kafka, settings.group, logger=log)
        self._restorer = Restorer(kafka, settings.group, spec.changelog, settings.restore_batch, log)
        self._stores: dict[int, PartitionStore] = {}
        self._bp_paused: list[TopicPartition] = []
        session_s = float(str(consumer_config(kafka, settings.group).get("session.timeout.ms", 45_000))) / 1000
        # The background threads this worker owns report here; its status server's /healthz reads it.
        self.heartbeats = Heartbeats()
        self._freeze = FreezeWatch(0.75 * session_s, beats=self.heartbeats, log=log)
        # FreezeWatch.freezes when the batch being built began, and when the batch in flight did (at least once).
        self._freezes = 0
        self._inflight_freezes = 0
        self._ctx = CommitContext(
            Outbox(self._producer, spec.changelog), self._consumer, self._stores, faults or Faults(), log,
            should_give_up=self._stop.is_set, frozen=self._frozen,
            inputs=tuple(spec.inputs),
        )
        self._active = self._ctx.active
        eos.attach(self._ctx, settings, timeout_s=eos.transaction_timeout_s(kafka))
        self.metrics = Metrics(settings.group)
        self._census = Census(observe.bind(processor, self.metrics), self.metrics)
        self._router = ingest.Router(spec.key_formats, spec.partitioner, spec.misrouted, self.metrics, log)
        self._handler = Handler(self._ctx, processor, settings, spec.dlq_topic, self.stats, self.metrics,
                                self._router, self._stop, log, kafka.tansu, self._backpressure)
        self._synced = WorkerStats()
        # Optional processor hook: the record to produce for a due timer entry (see TimerChange).
        self._fire_record: Callable[[OutputRecord], OutputRecord] | None = getattr(processor, "fire_record", None)
        # Guards store open/close against readers on other threads (the status endpoint).
        self._store_lock = threading.RLock()
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
                entries = self._ctx.parked.of(p, key)
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
        # The loop is the timer tick's thread: registered as a heartbeat, a loop stuck (in a commit waiting for
        # the broker, say) makes /healthz unhealthy; one that raised stays registered, and its thread may die.
        self.heartbeats.register("worker-loop", self.settings.loop_overdue_s, threading.current_thread())
        try:
            while not self._stop.is_set():
                self._loop_once()
            self._commit()
            self.heartbeats.unregister("worker-loop")
        finally:
            self._close()

    def _loop_once(self) -> None:
        if self._ctx.inflight is not None:
            self._settle()
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
            ctx = self._ctx
            flying = ctx.inflight.entities if ctx.inflight is not None else {}
            self.stats.timers_fired += due.fire(ctx.due, ctx.outbox.send, ctx.producer, self._stores, self._active,
                                                ctx.batch.entities, flying, ctx.inputs, self._fire_record,
                                                ctx.faults)
            self.heartbeats.ok("worker-loop")
        timeout = 0.0 if self._restorer.jobs else self.settings.poll_timeout_s
        msgs = self._poll(timeout)
        started = time.perf_counter()
        handler = self._handler
        handler.rewound.clear()
        handler.tracing = handler.spans is not None and handler.spans.enabled()  # a provider may be set any time
        try:
            for msg in msgs:
                if msg.error() is None:
                    handler.process(msg)
                else:
                    self._on_error(msg)
        except StoppedError:
            return  # the rest of this fetch is not processed; its offsets are not committed
        if msgs:
            self.metrics.batch.labels(self.settings.group).observe(time.perf_counter() - started)
        b = self._ctx.batch
        # exactly_once: a transaction holding only fired timers must be committed too, or none is seen.
        if (b or pending(self._ctx)) and (b.records >= self.settings.max_batch
                  or (time.monotonic() - b.started) * 1000 >= self.settings.commit_interval_ms):
            self._commit(wait=False)

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

    def _process(self, msg: Message) -> None:
        """One consumed record (the loop calls the handler directly; tests call this)."""
        self._handler.process(msg)

    def _on_error(self, msg: Message) -> None:
        err = msg.error()
        if io.is_partition_eof(err):
            return
        if io.is_denied(err):  # logged forever otherwise, while the worker does nothing
            raise KafkaOperationError(f"consuming {', '.join(self.spec.inputs)} in group {self.settings.group}: "
                                      f"{io.error_text(err)} ({err.name()}); see `streams acls`")
        self.log(f"worker: consume error on {msg.topic()}[{msg.partition()}]: {io.error_text(err)}")

    def _close(self) -> None:
        text = io.close_consumer(self._consumer)  # revokes (and so commits and closes stores) through the callback
        if text is not None:
            self.log(f"worker: closing consumer: {text}")
        self._restorer.close()
        self._freeze.stop()
        for p in list(self._stores):
            self._stores.pop(p).close()
        text = io.flush(self._producer, 10)
        if text is not None:  # a fenced transactional producer: it has nothing left to deliver
            self.log(f"worker: flushing producer: {text}")

    # -- commit (the protocol and its recovery: streams.runtime.commit) -----------------------------------

    def _commit(self, rewind: bool = True, wait: bool = True) -> None:
        """Commit the batch being built; with ``wait`` (a revoke, the shutdown) leave nothing in flight."""
        ctx = self._ctx
        if not ctx.batch and not pending(ctx) and ctx.inflight is None:
            self._freezes = self._freeze.freezes
            return
        started = time.perf_counter()
        begins = self._freeze.freezes  # the next batch begins now
        try:
            self._count(commit(ctx, wait, rewind))
        except AbandonedError:
            self.stats.failed_commits += 1
            return
        finally:
            self._inflight_freezes = self._freezes  # the sealed batch, if it is in flight now
            self._freezes = begins
        self.metrics.commit.labels(self.settings.group).observe(time.perf_counter() - started)
        self._sync_metrics()

    def _settle(self) -> None:
        """Finish the batch in flight if its records are acknowledged (at least once)."""
        try:
            self._count(settle(self._ctx))
        except AbandonedError:
            self.stats.failed_commits += 1
            self._freezes = self._freeze.freezes

    def _frozen(self) -> bool:
        """The freeze guard, for the oldest batch not yet written (see streams.runtime.commit)."""
        since = self._inflight_freezes if self._ctx.inflight is not None else self._freezes
        return self._freeze.frozen_since(since)

    def _count(self, accepted: list[bool]) -> None:
        for ok in accepted:
            if ok:
                self.stats.commits += 1
            else:
                self.stats.failed_commits += 1

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
        m.timers_pending.labels(g).set(sum(self._ctx.timers_pending.values()))
        observe.update_lag(m, self._consumer, list(self.spec.inputs), self._active)

    # -- assignment --------------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        parts = sorted({tp.partition for tp in partitions})
        self._router.learn(self._producer, self.spec.inputs)  # not the consumer whose callback this is
        committed = committed_offsets(consumer, partitions, "reading committed offsets on assignment")
        positions: list[TopicPartition] = []
        ctx = self._ctx
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
                ctx.committed_at[(topic, p)] = c
                ctx.assigned_at[(topic, p)] = pos
                positions.append(TopicPartition(topic, p, pos if (c >= 0 or local) else OFFSET_BEGINNING))
            self._restorer.start(store, durable, group_offsets)
        self.log(f"worker: assigned partitions {parts} of {', '.join(self.spec.inputs)}; restoring")
        consumer.assign(positions)
        if positions:
            consumer.pause(positions)
        if ctx.txn is not None:  # the generation a zombie's offsets will carry, and be refused for
            ctx.group_metadata = consumer.consumer_group_metadata()

    def _activate(self, p: int, orphans: dict[bytes, tuple[int, int]] | None = None) -> None:
        store = self._stores.get(p)
        if store is None:
            return
        if orphans:
            tombstone_orphans(self._ctx, p, store, orphans)
        if self._on_assignment is not None:
            self._on_assignment(sorted({*self._active, p}))
        self._active.add(p)
        load_timer_index(self._ctx, p, store)
        self.stats.commits += resume_from_store(self._ctx, p, store)
        resume(self._consumer, io.partitions(self._ctx.inputs, p))
        self.log(f"worker: partition {p} restored; processing")

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
        lost(self._ctx, parts)
        if not self._ctx.batch and self._ctx.inflight is None:  # nothing from before a freeze is left
            self._freezes = self._freeze.freezes
        self._release(parts)
        self.log(f"worker: lost partitions {sorted(parts)} (session timed out); their batch is dropped")

    def _release(self, parts: set[int]) -> None:
        self._restorer.cancel(parts)
        self._bp_paused = [tp for tp in self._bp_paused if tp.partition not in parts]
        ctx = self._ctx
        with self._store_lock:
            for p in parts:
                self._active.discard(p)
                ctx.due.forget(p)
                ctx.parked.drop(p)
                for t in self.spec.inputs:
                    ctx.expected.pop((t, p), None)
                ctx.timers_pending.pop(p, None)
                store = self._stores.pop(p, None)
                if store is not None:
                    store.close()

    # -- backpressure ------------------------------------------------------------------------------------

    def _backpressure(self) -> None:
        """Pause every active partition until the producer has drained to half the in-flight bound."""
        limit = self.settings.max_in_flight
        if len(self._producer) < limit:
            return
        self.stats.backpressure_pauses += 1
        tps = [tp for p in self._active for tp in io.partitions(self._ctx.inputs, p)]
        self._consumer.pause(tps)
        self._bp_paused = tps
        while len(self._producer) > limit // 2 and not self._stop.is_set():
            self._producer.poll(0.05)
        if self._bp_paused:
            resume(self._consumer, self._bp_paused)
            self._bp_paused = []
