"""Order generation for the demo, the integration tests and the benchmark: OrderPlaced records in Avro."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.client import plain_producer
from streams.records import H_EVENT_ID, H_TRACEPARENT
from streams.runtime import tracing

ORDERS_TOPIC = "orders.events"


def order_placed(order_id: str, customer_id: str, amount_cents: int, now_ms: int) -> dict[str, object]:
    return {
        "envelope": {"id": f"placed-{order_id}", "entity_key": order_id, "type": "OrderPlaced", "schema_version": 1,
                     "occurred_at": now_ms, "correlation_id": order_id, "causation_id": None},
        "order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents, "currency": "EUR",
        "items": [{"sku": f"sku-{amount_cents % 17}", "quantity": 1 + amount_cents % 3}],
    }


def place_orders(
    kafka: KafkaSettings, serde: Serde, order_ids: Iterable[str], rate_per_s: float | None = None,
    customer: Callable[[str], str] = lambda oid: f"cust-{oid}", topic: str = ORDERS_TOPIC,
    on_sent: Callable[[str, int], None] | None = None,
) -> int:
    """Produce one OrderPlaced per id, at ``rate_per_s`` if given (else as fast as possible); returns the count."""
    producer = plain_producer({**kafka.common(), "linger.ms": 5, "partitioner": "murmur2_random"})
    encode = serde.encoder(topic, "OrderPlaced")
    start = time.monotonic()
    n = 0
    for oid in order_ids:
        if rate_per_s:
            ahead = start + n / rate_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        now_ms = int(time.time() * 1000)
        amount = 100 + (sum(oid.encode()) * 37) % 90_000
        producer.produce(topic, encode(order_placed(oid, customer(oid), amount, now_ms)), oid.encode(),
                         headers=[(H_EVENT_ID, f"placed-{oid}".encode()),
                                  (H_TRACEPARENT, tracing.root(f"placed-{oid}"))])
        if on_sent is not None:
            on_sent(oid, now_ms)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    return n
