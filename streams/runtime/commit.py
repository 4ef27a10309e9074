"""The commit protocol: the only code that decides when an input offset may be committed.

Invariant 1 of docs/design.md, in four numbered steps. A crash between any two (fault points, see
:mod:`streams.runtime.faults`) recovers to the same final state:

1. **Produce the changelog.** One record per entity the batch changed (the last value wins; its envelope names
   the input record that caused it). Outputs and dead letters were produced while the batch was processed.
   Every record goes out with its batch's delivery slot (``Outbox``), so the batch knows when all it caused is
   acknowledged while later records are still on their way.
2. **Wait for the slot.** Until every record of the batch is acknowledged. A record that failed (its
   ``message.timeout.ms`` ran out) abandons the batch: it is processed again from what is durable, as after a
   crash here, and produces the same ids. Nothing below runs before this.
3. **Write local state.** Per partition, one RocksDB WriteBatch holds the entities, the source offsets they
   cover and the changelog position: local state is never ahead of or behind its own bookkeeping.
4. **Commit offsets.** Only now does Kafka learn that the inputs are done.

At least once, the steps are pipelined (``commit`` with ``wait=False``): step 1 seals batch N and the loop goes
on with batch N+1 while N's records are acknowledged; ``settle`` runs N's steps 2-4 once they are. N+1 reads
entities through N's staged changes (``CommitContext.stored``), since N is not in the store yet. Two rules
keep this the same protocol: at most one batch is in flight (sealing N+1 first settles N, so N's changelog is
acknowledged before N+1's is produced and a later value of an entity never lands before an earlier one), and
abandoning N abandons N+1 with it (N+1 was built on N's changes). A revoke and the shutdown commit wait for
both.

Crash after 1 or 2: nothing local or committed moved; the batch is processed again and produces the same ids;
restore skips changelog records whose source offset was never committed. Crash after 3: local state is ahead
of the committed offsets but everything it covers is durable, so the worker resumes from its local offsets.

With ``processing_guarantee: exactly_once`` (real Kafka only) a transaction is always open; outputs, dead
letters and fired timers go into it as they are produced, and ``commit_exactly_once()`` runs (not pipelined:
the transaction's commit is the batch's one wait):

E1. **Produce the changelog** into the open transaction, as in step 1.
E2. **Add the input offsets** to it (``send_offsets_to_transaction`` with the group generation seen at the last
    assignment). A zombie, whose partitions the group gave away, is refused here and its transaction aborts.
E3. **Commit the transaction**: outputs, changelog and offsets become visible to read_committed readers
    together, or (abort) never.
E4. **Write local state** as in step 3, only now: an aborted batch never reaches RocksDB, so nothing local
    has to be undone; the partitions are rewound and their batch processed again.
E5. **Begin the next transaction.**

Crash before E3: the coordinator aborts the transaction (at once when the same instance restarts and calls
``init_transactions``, else after ``transaction.timeout.ms``); nothing is visible and the batch is redone. Crash
after E3: the committed offsets are ahead of the store; the restore replays the committed changelog up to them.

Where each part of a worker lives. This module: the batch and the partition state every part shares
(``CommitContext``), the steps above, and all crash recovery: the freeze guard's abandon (``_unless_frozen``),
rewinding the partitions of an abandoned batch (``abandoned``, ``rewind``), tombstoning timers a batch
changelogged but never made local (``tombstone_orphans``), finishing an interrupted step 4 and starting where
the store says on activation (``resume_from_store``), dropping a lost partition's batch (``lost``). Restore
(:mod:`streams.runtime.restore`) skips changelog records whose source offset was never committed and hands the
orphaned timers it saw back to ``tombstone_orphans``. The poll/assign/revoke loop is
:mod:`streams.runtime.worker`; each record goes through :mod:`streams.runtime.handler`, parked events through
:mod:`streams.runtime.parked`, due timers are fired by :mod:`streams.runtime.due`. Kafka itself is reached only
through :mod:`streams.kafka`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from streams.errors import DeliveryError, KafkaOperationError, TransactionAbortedError, backoff
from streams.kafka import io
from streams.kafka.io import Consumer, KafkaError, Message, Producer, TopicPartition, produce
from streams.kafka.transactions import Transactions
from streams.runtime.due import DueTimers
from streams.runtime.faults import Faults
from streams.runtime.parking import ParkedIndex
from streams.state import entity, timers
from streams.state.store import PartitionStore

H_SOURCE = "streams-src"  # on changelog tombstones, which have no envelope to carry their source


@dataclass
class Batch:
    """Everything processed since the last commit, per input partition."""

    entities: dict[int, dict[bytes, bytes | None]] = field(default_factory=dict)
    offsets: dict[int, dict[str, int]] = field(default_factory=dict)
    tombstone_sources: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    records: int = 0
    started: float = field(default_factory=time.monotonic)
    slot: Slot | None = None  # its records' deliveries, once sealed

    def partition(self, p: int) -> tuple[dict[bytes, bytes | None], dict[str, int]]:
        ents = self.entities.get(p)
        if ents is None:
            ents = self.entities[p] = {}
            self.offsets[p] = {}
        return ents, self.offsets[p]

    def drop(self, partitions: set[int]) -> None:
        """Forget lost partitions: their records will be processed again by their next owner."""
        for p in partitions:
            self.entities.pop(p, None)
            self.offsets.pop(p, None)
        self.tombstone_sources = {k: v for k, v in self.tombstone_sources.items() if k[0] not in partitions}

    def __bool__(self) -> bool:
        return bool(self.offsets)


class Slot:
    """The deliveries of one batch's records (or one transaction's): how many are still unacknowledged, and
    the first failure. Passed to librdkafka as each record's delivery callback."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.produced = 0
        self.outstanding = 0
        self.failure: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.outstanding -= 1
        if err is not None:
            if self.failure is None:
                self.failure = err
            return
        outbox = self.outbox
        if msg.topic() == outbox.changelog_topic:
            p, nxt = msg.partition(), msg.offset() + 1
            if nxt > outbox.changelog_end.get(p, -1):
                outbox.changelog_end[p] = nxt


class Outbox:
    """Every record a worker produces goes out here, with the delivery slot of the batch it belongs to."""

    def __init__(self, producer: Producer, changelog_topic: str) -> None:
        self.producer = producer
        self.changelog_topic = changelog_topic
        self.changelog_end: dict[int, int] = {}  # per partition, the changelog position acknowledged
        self.slot = Slot(self)

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: object,
             partition: int | None = None) -> None:
        slot = self.slot
        slot.produced += 1
        if produce(self.producer, topic, key, value, headers, partition, slot):
            slot.outstanding += 1

    def seal(self) -> Slot:
        """The current slot, closed to new records: what follows goes into a new one."""
        slot, self.slot = self.slot, Slot(self)
        return slot


@dataclass
class CommitContext:
    """What the protocol touches; built once per worker."""

    outbox: Outbox
    consumer: Consumer
    stores: Mapping[int, PartitionStore]
    faults: Faults
    log: Callable[[str], None]
    should_give_up: Callable[[], bool] = lambda: False
    # Whether the process was frozen (SIGSTOP, a VM pause) longer than the group session since the batch
    # began: the group has then most likely given its partitions to another member.
    frozen: Callable[[], bool] = lambda: False
    # exactly_once only: the open transaction and the consumer's group metadata at the last assignment.
    txn: Transactions | None = None
    group_metadata: object | None = None
    # Test-only (see streams.runtime.eos): False commits the offsets outside the transaction, unfenced.
    offsets_in_txn: bool = True
    # The pauses before redoing batches whose records failed, while they keep failing.
    redo_pauses: Iterator[float] | None = None
    # The worker's partition state, shared by its seams (loop, record handler, parking, timers) and by the
    # recovery below: the input topics, the partitions restored and processing, the batch being built and the
    # one in flight (at least once: sealed, its records on their way), the in-memory views of each partition's
    # timer index, and per input partition the next offset expected, the position at assignment and the group's
    # committed offset then.
    inputs: tuple[str, ...] = ()
    active: set[int] = field(default_factory=set)
    batch: Batch = field(default_factory=Batch)
    inflight: Batch | None = None
    parked: ParkedIndex = field(default_factory=ParkedIndex)
    due: DueTimers = field(default_factory=DueTimers)
    timers_pending: dict[int, int] = field(default_factory=dict)
    expected: dict[tuple[str, int], int] = field(default_factory=dict)
    assigned_at: dict[tuple[str, int], int] = field(default_factory=dict)
    committed_at: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def producer(self) -> Producer:
        return self.outbox.producer

    def stored(self, p: int, raw_key: bytes) -> bytes | None:
        """An entry of partition ``p`` as its store will hold it once the batch in flight is written."""
        flying = self.inflight
        if flying is not None:
            ents = flying.entities.get(p)
            if ents is not None and raw_key in ents:
                return ents[raw_key]
        return self.stores[p].get_raw(raw_key)


class AbandonedError(Exception):
    """The batch was not made local: the process was frozen past its session, so another member may own its
    partitions and have written their changelog since (writing the store now would record a changelog position
    past those writes, and a later restore would skip them), or one of its records was never acknowledged.
    Its effects are as after a crash in step 2."""


def produce_changelog(ctx: CommitContext, batch: Batch) -> int:
    """Step 1."""
    topic = ctx.outbox.changelog_topic
    send = ctx.outbox.send
    n = 0
    for p, ents in batch.entities.items():
        for key, value in ents.items():
            headers = None
            if value is None:
                headers = [(H_SOURCE, batch.tombstone_sources[(p, key)])]
            send(topic, key, value, headers, p)
            n += 1
    return n


def acknowledged(ctx: CommitContext, slot: Slot, wait: bool) -> bool:
    """Step 2: whether every record of ``slot`` is acknowledged; with ``wait``, block until it is. Raises
    AbandonedError when one failed, DeliveryError when the worker stops while records are still unacknowledged."""
    producer = ctx.outbox.producer
    producer.poll(0)  # delivery callbacks run only in the producer's poll or flush
    began = logged = time.monotonic()
    while slot.outstanding > 0 and wait:
        producer.poll(0.1)  # returns at the first delivery report
        if slot.outstanding == 0:
            break
        now = time.monotonic()
        if now - logged >= 5.0:
            ctx.log(f"commit: waiting for {slot.outstanding} record(s) to be acknowledged (is the broker up?)")
            logged = now
        # Stopping: a reachable broker acknowledges within the second; past it, the broker is likely down.
        if now - began >= 1.0 and ctx.should_give_up():
            raise DeliveryError(f"gave up waiting for {slot.outstanding} unacknowledged record(s); "
                                "nothing was committed past them")
    if slot.outstanding > 0:
        return False
    err = slot.failure
    if err is None:
        ctx.redo_pauses = None
        return True
    if io.is_denied(err):  # no redo can lift it
        raise KafkaOperationError(f"producing the batch's records: {io.error_text(err)} ({err.name()}); "
                                  "see `streams acls`")
    # librdkafka retries on its own until message.timeout.ms, so this failure may last (a topic that does
    # not take the record): pause before each redo, longer each time.
    if ctx.redo_pauses is None:
        ctx.redo_pauses = backoff()
    time.sleep(next(ctx.redo_pauses))
    raise AbandonedError(f"a record was not acknowledged ({io.error_text(err)} ({err.name()}))")


def write_local(ctx: CommitContext, batch: Batch) -> None:
    """Step 3."""
    for p, offsets in batch.offsets.items():
        store = ctx.stores.get(p)
        if store is None:
            continue  # revoked and closed since; its next owner redoes these records
        store.write(batch.entities.get(p, {}), offsets, ctx.outbox.changelog_end.pop(p, None))


def commit_offsets(ctx: CommitContext, batch: Batch) -> bool:
    """Step 4. A failed commit is not fatal: the effects are durable and a later commit covers them."""
    tps = [(t, p, o) for p, offs in batch.offsets.items() for t, o in offs.items()]
    if not tps:
        return True
    text = io.commit_offsets(ctx.consumer, tps)
    if text is not None:
        ctx.log(f"commit: offset commit failed ({text}); effects are durable, a later commit covers them")
        return False
    return True


def commit(ctx: CommitContext, wait: bool = True, rewind: bool = True) -> list[bool]:
    """Commit ``ctx.batch``: settle the batch in flight, then seal this one (step 1); with ``wait``, settle it
    too, else leave it in flight for ``settle``. Returns, per batch finished, whether Kafka accepted its
    offsets. On AbandonedError every unfinished batch is abandoned (see ``abandoned``), then it is raised."""
    batch, ctx.batch = ctx.batch, Batch()
    try:
        if ctx.txn is not None:
            return [commit_exactly_once(ctx, batch)]
        accepted = _settle(ctx, True)
        if batch:
            ctx.faults.hit("after_outputs_produced")
            _unless_frozen(ctx)  # before step 1 too: a thawed worker's changelog records would land after the
            produce_changelog(ctx, batch)  # new owner's
            ctx.faults.hit("after_changelog_produced")
            batch.slot = ctx.outbox.seal()
            ctx.inflight = batch
            ctx.due.sealed()
        if wait:
            accepted += _settle(ctx, True)
        return accepted
    except AbandonedError as exc:
        abandoned(ctx, [b for b in (ctx.inflight, batch) if b is not None], exc, rewind)
        raise


def settle(ctx: CommitContext) -> list[bool]:
    """Steps 2-4 of the batch in flight if all its records are acknowledged, without waiting: as ``commit``.
    On AbandonedError the batch in flight and the one being built on it are abandoned, then it is raised."""
    flying = ctx.inflight
    try:
        return _settle(ctx, False)
    except AbandonedError as exc:
        building, ctx.batch = ctx.batch, Batch()
        abandoned(ctx, [flying, building] if flying is not None else [building], exc, True)
        raise


def _settle(ctx: CommitContext, wait: bool) -> list[bool]:
    batch = ctx.inflight
    if batch is None or batch.slot is None or not acknowledged(ctx, batch.slot, wait):
        return []
    ctx.faults.hit("after_flush")
    _unless_frozen(ctx)
    ctx.inflight = None
    write_local(ctx, batch)
    ctx.due.committed()
    ctx.faults.hit("after_store_write")
    ok = commit_offsets(ctx, batch)
    ctx.faults.hit("after_offset_commit")
    return [ok]


def commit_exactly_once(ctx: CommitContext, batch: Batch) -> bool:
    """Steps E1–E5. Raises AbandonedError, after aborting, when the batch must be processed again."""
    txn = ctx.txn
    assert txn is not None
    ctx.faults.hit("after_outputs_produced")
    try:
        _unless_frozen(ctx)
        produce_changelog(ctx, batch)
        ctx.faults.hit("after_changelog_produced")
        tps = [TopicPartition(t, p, o) for p, offs in batch.offsets.items() for t, o in offs.items()]
        if tps and ctx.offsets_in_txn:
            txn.send_offsets(tps, ctx.group_metadata, ctx.should_give_up)
        ctx.faults.hit("after_offsets_sent")
        _unless_frozen(ctx)
        txn.commit(ctx.should_give_up)
    except (AbandonedError, TransactionAbortedError) as exc:
        abort_open(ctx)
        raise AbandonedError(f"transaction aborted: {exc}") from exc
    ctx.faults.hit("after_txn_commit")
    write_local(ctx, batch)
    ctx.due.sealed()
    ctx.due.committed()
    ctx.faults.hit("after_store_write")
    ok = True
    if tps and not ctx.offsets_in_txn:
        ok = commit_offsets(ctx, batch)
    begin(ctx)
    return ok


def begin(ctx: CommitContext) -> None:
    """Step E5 (and the first transaction): its records go into a slot of their own."""
    assert ctx.txn is not None
    ctx.txn.begin()
    ctx.outbox.seal()


def abort_open(ctx: CommitContext) -> None:
    """Abort the open transaction and begin the next: the batch's records never become visible, and the
    changelog positions they were acknowledged at must not reach a store."""
    assert ctx.txn is not None
    ctx.txn.abort()
    ctx.outbox.changelog_end.clear()
    begin(ctx)


def pending(ctx: CommitContext) -> bool:
    """Whether the open transaction holds records though the batch may be empty (fired timers): it must
    still be committed, or readers never see them."""
    return ctx.txn is not None and not ctx.txn.fenced and ctx.outbox.slot.produced > 0


def _unless_frozen(ctx: CommitContext) -> None:
    if ctx.frozen():
        raise AbandonedError("the process was frozen longer than its group session during this batch")


# -- recovery: what the steps above leave behind when a batch is abandoned, a crash interrupted them, or the
# -- group took partitions away; the worker calls these from its loop and its assignment callbacks.


def source(tag: int, offset: int) -> bytes:
    """The source position of a tombstone (its ``H_SOURCE`` header), which has no envelope to carry it."""
    return tag.to_bytes(4, "big") + offset.to_bytes(8, "big", signed=True)


def unsource(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big", signed=True)


def abandoned(ctx: CommitContext, batches: list[Batch], exc: AbandonedError, rewind_parts: bool) -> None:
    """After AbandonedError for ``batches`` (the batch in flight, and the one built on its changes): their
    partitions are read again from what is durable (unless the caller is letting them go anyway), as after a
    crash in step 2 (or before E3)."""
    ctx.inflight = None
    ctx.due.sealed()
    ctx.due.committed()
    unique = list({id(b): b for b in batches}.values())
    parts: set[int] = set()
    for b in unique:
        parts |= set(b.offsets)
    if ctx.txn is not None:  # the abort also took timers fired for partitions without input in the batch
        parts |= ctx.active
    ctx.log(f"worker: {exc}; partitions {sorted(parts)} are read again from what is durable")
    if not rewind_parts:
        return
    rewind(ctx, parts)
    # A sealed batch's changelog may already hold its timers; and tombstones a batch carried for earlier
    # orphans (staged on activation) must not be lost with it. The earlier batch's orphans come first.
    for b in unique:
        for p, ents in b.entities.items():
            store = ctx.stores.get(p)
            if store is not None and p in ctx.active:
                tombstone_orphans(ctx, p, store, {
                    k: entity.source_of(v) if v is not None else unsource(b.tombstone_sources[(p, k)])
                    for k, v in ents.items() if k[:1] == timers.PREFIX and (v is None or b.slot is not None)})


def lost(ctx: CommitContext, parts: set[int]) -> None:
    """The group took ``parts`` away without a revoke (session timeout): their batch is dropped, since
    committing it would race the new owner. exactly_once: the open transaction holds the lost partitions'
    outputs too, so it is aborted and the partitions kept are redone."""
    if ctx.txn is not None and (ctx.batch or pending(ctx)):
        abort_open(ctx)
        keep, ctx.batch = (set(ctx.batch.offsets) | ctx.active) - parts, Batch()
        rewind(ctx, keep)
    ctx.batch.drop(parts)
    if ctx.inflight is not None:  # its records stay on their way; only the partitions kept are written
        ctx.inflight.drop(parts)


def tombstone_orphans(ctx: CommitContext, p: int, store: PartitionStore,
                      orphans: dict[bytes, tuple[int, int]]) -> None:
    """Timers a batch wrote to the changelog but never made local (a crash, or an abandoned batch): tombstone
    those the store does not hold, at the orphan's own source position, so no later restore brings them
    back. A timer's key holds its wall-clock due time, so the redo may set it under another key; one it sets
    again at the same due time overwrites the tombstone in the same batch."""
    ents, _offsets = ctx.batch.partition(p)
    for tkey, (tag, offset) in orphans.items():
        if store.get_raw(tkey) is None and tkey not in ents:
            ents[tkey] = None
            ctx.batch.tombstone_sources[(p, tkey)] = source(tag, offset)


def load_timer_index(ctx: CommitContext, p: int, store: PartitionStore) -> None:
    """The in-memory views of a partition's timer index (pending count, parked events, fired keys), from
    the store alone: on activation, and after an abandoned batch whose staged changes they had counted."""
    index = [k for k, _v in store.timers()]
    ctx.timers_pending[p] = len(index)
    ctx.parked.load(p, index)
    ctx.due.forget(p)


def rewind(ctx: CommitContext, parts: set[int]) -> None:
    """Forget what an abandoned batch staged for ``parts`` and read them again from the store's offsets,
    as a restart would. If the group did move them, the next poll reports them lost."""
    for p in parts:
        store = ctx.stores.get(p)
        if store is None or p not in ctx.active:
            continue
        load_timer_index(ctx, p, store)
        for t in ctx.inputs:
            pos = store.source_offset(t)
            if pos is None:
                pos = ctx.assigned_at.get((t, p), 0)
            ctx.expected[(t, p)] = pos
            seek_if_ours(ctx, t, p, pos)


def seek_if_ours(ctx: CommitContext, topic: str, p: int, offset: int) -> None:
    """Seek, unless the partition is no longer ours: lost or revoked within this consume() or assignment,
    its new owner reads it from the committed offset (seek would raise, and the worker would crash)."""
    text = io.try_seek(ctx.consumer, topic, p, offset)
    if text is not None:
        ctx.log(f"worker: not rewinding {topic}[{p}], no longer assigned: {text}")


def resume_from_store(ctx: CommitContext, p: int, store: PartitionStore) -> int:
    """On activation, after the restore: start each input where the store says, and finish an interrupted
    step 4. Returns the number of offset commits Kafka accepted (0 or 1)."""
    done: dict[str, int] = {}
    for t in ctx.inputs:
        # A restore that met a replay's reset moved the store's offsets back: start where the store says.
        pos = store.source_offset(t)
        if pos is not None and pos != ctx.assigned_at.get((t, p)):
            io.seek(ctx.consumer, t, p, pos)
        ctx.expected[(t, p)] = pos if pos is not None else ctx.assigned_at.get((t, p), 0)
        if pos is not None and pos > ctx.committed_at.get((t, p), -1):
            # A crash between the local write and the offset commit (step 3 -> 4): the store covers
            # durable effects the group never heard of. Finish step 4 now; with no further input on
            # this partition nothing else would.
            done[t] = pos
    if not done:
        return 0
    return int(commit_offsets(ctx, Batch(offsets={p: done})))
