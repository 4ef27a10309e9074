"""Latency bookkeeping for the bench: when each order's outcome arrived, percentiles, and what to say when some
orders never complete (is the missing event in the log, and which group is behind?)."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.examples.orders.workflow import INVENTORY, PAYMENTS, RESULTS, SHIPPING
from streams.kafka.client import make_consumer, read_to_end
from streams.kafka.io import TopicPartition
from streams.lab.bench_infra import Offsets, log_ends
from streams.lab.loadgen import ORDERS_TOPIC


class Completions(threading.Thread):
    """Reads ``orders.results`` from given offsets and notes when each order's outcome arrived.

    The time is this consumer's wall clock on receipt, not the record's timestamp: the record's CreateTime is
    stamped when the orchestrator calls ``produce()``, before the record is flushed and visible, so receipt is
    what a client of the saga actually experiences (including up to ``fetch.wait.max.ms`` = 5 ms of our own).
    """

    def __init__(self, kafka: KafkaSettings, serde: Serde, starts: Mapping[int, int]) -> None:
        super().__init__(name="bench-completions", daemon=True)
        self.seen: dict[str, float] = {}
        self.cancelled: set[str] = set()
        self._serde = serde
        self._consumer = make_consumer(kafka, f"bench-results-{uuid.uuid4().hex}", {"fetch.wait.max.ms": 5})
        self._consumer.assign([TopicPartition(RESULTS, p, o) for p, o in starts.items()])
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            # poll() returns as soon as one record is there (consume(n, t) would wait for n or t), then take
            # what else has arrived: every record's receipt is noted within a millisecond.
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            now = time.time()
            for m in [first, *self._consumer.consume(1000, 0)]:
                if m.error() is not None:
                    continue
                oid = (m.key() or b"").decode()
                name, _ = self._serde.decode(m.value())
                if name.endswith("OrderCompleted"):
                    self.seen[oid] = now
                else:
                    self.cancelled.add(oid)

    def has(self, ids: Sequence[str]) -> bool:
        seen = self.seen
        return all(oid in seen for oid in ids)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        self._consumer.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    return sorted_values[min(len(sorted_values) - 1, max(math.ceil(q * len(sorted_values)) - 1, 0))]


def diagnose(kafka: KafkaSettings, serde: Serde, partitions: int, groups: Mapping[str, str],
             starts: Mapping[int, int], missing: Sequence[str]) -> str:
    """Where the missing orders stopped: each group's lag, and the events of a few of them found in the log."""
    lines = []
    for group, topic in groups.items():
        ends = log_ends(kafka, topic, partitions)
        off = Offsets(kafka, group, topic, partitions)
        try:
            committed = off.read()
        finally:
            off.close()
        lag = {p: ends[p] - max(committed.get(p, 0), 0) for p in ends}
        lines.append(f"  {group} on {topic}: committed {committed}, log end {ends}, lag {lag}")
    sample = set(missing[:5])
    found: dict[str, list[str]] = {oid: [] for oid in sample}
    ends = log_ends(kafka, ORDERS_TOPIC, partitions)
    c = make_consumer(kafka, f"bench-diagnose-{uuid.uuid4().hex}")
    try:
        c.assign([TopicPartition(ORDERS_TOPIC, p, o) for p, o in starts.items()])
        pos = dict(starts)
        deadline = time.monotonic() + 30
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in c.consume(10000, 0.2):
                if m.error() is not None:
                    continue
                pos[m.partition()] = m.offset() + 1
                oid = (m.key() or b"").decode()
                if oid in sample:
                    name = serde.decode(m.value())[0].rpartition(".")[2]
                    found[oid].append(f"{name}@{m.partition()}:{m.offset()}")
    finally:
        c.close()
    lines += [f"  {oid}: {', '.join(evs) or 'no events'} in {ORDERS_TOPIC}" for oid, evs in sorted(found.items())]
    return "\n".join(lines)


# A completed order's records, topic by topic, in the order the saga writes them; consecutive pairs are its hops.
SAGA_PATH = (ORDERS_TOPIC, PAYMENTS, ORDERS_TOPIC, INVENTORY, ORDERS_TOPIC, SHIPPING, ORDERS_TOPIC, RESULTS)
_WHO = {ORDERS_TOPIC: "orchestrator", PAYMENTS: "payment", INVENTORY: "inventory", SHIPPING: "shipping"}


def hop_times(records: Iterable[tuple[str, int, str]], ids: set[str]) -> list[tuple[str, float, float]]:
    """Per hop of the saga, p50 and p99 in ms of the time between consecutive CreateTime stamps of an order's
    records (``(order id, timestamp ms, topic)``): which worker's turn a latency figure is made of. A hop is
    named ``worker->topic`` by the worker that read its first record and the topic it wrote the second to; it
    includes the writer's linger and the broker before that worker read the record. Orders whose records are not
    the saga's path (a retry, a cancellation) are left out."""
    by_order: dict[str, list[tuple[int, str]]] = {}
    for oid, ts, topic in records:
        if oid in ids:
            by_order.setdefault(oid, []).append((ts, topic))
    hops: list[list[float]] = [[] for _ in SAGA_PATH[1:]]
    for recs in by_order.values():
        recs.sort()
        if tuple(t for _, t in recs) != SAGA_PATH:
            continue
        for i in range(1, len(recs)):
            hops[i - 1].append(recs[i][0] - recs[i - 1][0])
    out = []
    for i, times in enumerate(hops):
        if times:
            times.sort()
            out.append((f"{_WHO[SAGA_PATH[i]]}->{SAGA_PATH[i + 1]}", percentile(times, 0.5), percentile(times, 0.99)))
    return out


def read_hops(kafka: KafkaSettings, ids: set[str]) -> list[tuple[str, float, float]]:
    """:func:`hop_times` over the saga's topics as they are now."""
    records = ((m.key().decode(), m.timestamp()[1], topic) for topic in dict.fromkeys(SAGA_PATH)
               for m in read_to_end(kafka, topic, timeout_s=60) if m.key())
    return hop_times(records, ids)
