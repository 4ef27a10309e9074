"""The benchmark's inputs: order-saga event logs and a changelog of realistic order states.

Everything is written as production writes it: Avro in the Confluent wire format through the real
:class:`~streams.contracts.Serde`, keyed by order id, with ``streams-id`` headers; changelog values are real
entity envelopes (:mod:`streams.state.entity`) around real ``OrderState`` records made by the workflow adapter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.client import make_producer
from streams.kafka.io import Producer, produce
from streams.kafka.partition import partition_of as key_partition
from streams.lab.loadgen import ORDERS_TOPIC, order_placed
from streams.processors.avro import envelope
from streams.processors.workflow import WorkflowProcessor
from streams.records import H_EVENT_ID, InputRecord
from streams.state import entity

# The order saga's happy path as seen on its input topic: the order, then the three services' replies.
SAGA = ("OrderPlaced", "PaymentCompleted", "InventoryReserved", "ShippingLabelCreated")
REPLIES = SAGA[1:]
# Orders whose events interleave in a preloaded log: an order's next event comes about WAVE records later, as
# it would with services answering within milliseconds, so most state reads go to RocksDB, not to the batch.
WAVE = 5000

# partition (None: by key), key, value, headers
Record = tuple[int | None, bytes, bytes, list[tuple[str, bytes]] | None]


def order_ids(prefix: str, n: int, start: int = 0) -> list[str]:
    """Fixed-width ids: every order's records have the same size, and templates can be filled in bytewise."""
    return [f"{prefix}{i:010d}" for i in range(start, start + n)]


def _body(kind: str, oid: str, now_ms: int) -> dict[str, Any]:
    if kind == "OrderPlaced":
        return order_placed(oid, f"cust-{oid}", 100 + (sum(oid.encode()) * 37) % 90_000, now_ms)
    env = envelope(f"{kind}-{oid}", oid, kind, now_ms, f"cmd-{oid}")
    if kind == "PaymentCompleted":
        return {"envelope": env, "order_id": oid, "payment_id": f"pay-{oid}", "amount_cents": 1}
    if kind == "InventoryReserved":
        return {"envelope": env, "order_id": oid, "reservation_id": f"res-{oid}"}
    return {"envelope": env, "order_id": oid, "label_id": f"lbl-{oid}", "tracking_number": f"TRK-{oid}"}


def saga_records(serde: Serde, ids: Sequence[str], kinds: Sequence[str] = SAGA, wave: int = WAVE,
                 partition_of: Callable[[int], int] | None = None) -> Iterator[Record]:
    """Every event of every order in saga order, ``wave`` orders at a time; keyed by order id, so the producer's
    partitioner keeps each order's events in one partition (or ``partition_of(index)`` pins them)."""
    encoders = {k: serde.encoder(ORDERS_TOPIC, k) for k in kinds}
    now_ms = int(time.time() * 1000)
    for start in range(0, len(ids), wave):
        chunk = ids[start:start + wave]
        for kind in kinds:
            enc = encoders[kind]
            for j, oid in enumerate(chunk):
                part = None if partition_of is None else partition_of(start + j)
                yield part, oid.encode(), enc(_body(kind, oid, now_ms)), [(H_EVENT_ID, f"{kind}-{oid}".encode())]


def bulk_producer(kafka: KafkaSettings) -> Producer:
    """The workers' producer settings (idempotent, so a retry never reorders an order's events), larger batches."""
    return make_producer(kafka, {"linger.ms": 20, "on_delivery": _raise_on_error})


def _raise_on_error(err: Any, _msg: Any) -> None:
    if err is not None:
        raise RuntimeError(f"bench producer: delivery failed: {err.str()}")


def produce_all(kafka: KafkaSettings, topic: str, records: Iterable[Record],
                progress: Callable[[int], None] | None = None) -> int:
    """Produce every record and wait until all are acknowledged; returns the count."""
    producer = bulk_producer(kafka)
    n = 0
    for part, key, value, headers in records:
        _produce(producer, topic, part, key, value, headers)
        n += 1
        if n % 50_000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(n)
    if producer.flush(120) != 0:
        raise RuntimeError(f"bench producer: records to {topic} not acknowledged within 120s")
    return n


def _produce(producer: Producer, topic: str, part: int | None, key: bytes, value: bytes,
             headers: list[tuple[str, bytes]] | None) -> None:
    produce(producer, topic, key, value, headers, part)


class Traffic(threading.Thread):
    """Saga events for fresh orders at a steady rate until stopped: load that keeps flowing during a failover."""

    def __init__(self, kafka: KafkaSettings, serde: Serde, prefix: str, events_per_s: float) -> None:
        super().__init__(name="bench-traffic", daemon=True)
        self.kafka = kafka
        self.serde = serde
        self.prefix = prefix
        self.rate = events_per_s
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            producer = make_producer(self.kafka, {"linger.ms": 5, "on_delivery": _raise_on_error})
            start = time.monotonic()
            batch = 0
            while not self._stop_event.is_set():
                ids = order_ids(self.prefix, 250, batch * 250)
                batch += 1
                for part, key, value, headers in saga_records(self.serde, ids, wave=250):
                    ahead = start + self.sent / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                    _produce(producer, ORDERS_TOPIC, part, key, value, headers)
                    self.sent += 1
                    producer.poll(0)
                    if self._stop_event.is_set():
                        break
            producer.flush(30)
        except BaseException as exc:  # reported by stop(), in the main thread
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        if self.error is not None:
            raise RuntimeError(f"bench traffic failed: {self.error}") from self.error


# -- a changelog of order states ------------------------------------------------------------------------------

ITEMS = range(4, 17)  # line items per order: OrderState values of ~300-600 bytes


def state_templates(processor: WorkflowProcessor, placeholder: str, source_offset: int) -> list[bytes]:
    """Entity envelopes of orders waiting for payment (OrderPlaced applied), one per item count, for an order
    id ``placeholder``: :func:`changelog_records` fills in real ids of the same width bytewise."""
    out = []
    tag = entity.topic_tag(ORDERS_TOPIC)
    enc = processor.serde.encoder(ORDERS_TOPIC, "OrderPlaced")
    now_ms = int(time.time() * 1000)
    for n in ITEMS:
        body = order_placed(placeholder, f"cust-{placeholder}", 1000 + n * 995, now_ms)
        body["items"] = [{"sku": f"sku-{j * 7919 % 100_000:06d}-{('red', 'blue', 'green')[j % 3]}-xl",
                          "quantity": 1 + j % 4} for j in range(n)]
        event_id = f"OrderPlaced-{placeholder}"
        rec = InputRecord(ORDERS_TOPIC, 0, source_offset, placeholder.encode(), enc(body), now_ms,
                          ((H_EVENT_ID, event_id.encode()),))
        step = processor.process(None, processor.decode(rec), rec, now_ms)
        state = processor.dump_state(step.state)  # type: ignore[arg-type]
        out.append(entity.encode(tag, source_offset, entity.remember([], event_id, 32), state))
    return out


def changelog_records(templates: Sequence[Sequence[bytes]], placeholder: str, ids: Sequence[str]) -> Iterator[Record]:
    """One changelog record per order, in the partition its key belongs to (Java's partitioner, as the workers
    check: a record elsewhere is re-routed, and its state would be in the wrong store)."""
    ph = placeholder.encode()
    parts = len(templates)
    for i, oid in enumerate(ids):
        p = key_partition(oid.encode(), parts)
        tmpl = templates[p]
        yield p, b"d" + oid.encode(), tmpl[i % len(tmpl)].replace(ph, oid.encode()), None
