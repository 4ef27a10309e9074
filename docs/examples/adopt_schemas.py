"""The contracts an existing service holds for the order saga: its own copies, as plain Avro schemas.

Each schema is self-contained (the envelope and line item are defined inline), which is what a stock
``AvroSerializer`` takes. Copy them from ``streams schemas show <subject>`` or from the workflow's ``schemas/``
directory; fields you do not know yet are fine as long as the registry finds your copy compatible.
"""

from __future__ import annotations

import json
from typing import Any

ENVELOPE: dict[str, Any] = {
    "type": "record", "name": "Envelope", "namespace": "streams.common",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "entity_key", "type": "string"},
        {"name": "type", "type": "string"},
        {"name": "schema_version", "type": "int"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "correlation_id", "type": "string"},
        {"name": "causation_id", "type": ["null", "string"], "default": None},
    ],
}

LINE_ITEM: dict[str, Any] = {
    "type": "record", "name": "LineItem", "namespace": "streams.orders",
    "fields": [{"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"}],
}

ORDER_PLACED = json.dumps({
    "type": "record", "name": "OrderPlaced", "namespace": "streams.orders",
    "fields": [
        {"name": "envelope", "type": ENVELOPE},
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
        {"name": "items", "type": {"type": "array", "items": LINE_ITEM}},
    ],
})

PAYMENT_COMPLETED = json.dumps({
    "type": "record", "name": "PaymentCompleted", "namespace": "streams.orders",
    "fields": [
        {"name": "envelope", "type": ENVELOPE},
        {"name": "order_id", "type": "string"},
        {"name": "payment_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
    ],
})


def envelope(event_id: str, order_id: str, kind: str, occurred_at_ms: int, causation_id: str | None) -> dict[str, Any]:
    """The common envelope every event carries; the order id is the entity key and the correlation id."""
    return {"id": event_id, "entity_key": order_id, "type": kind, "schema_version": 1,
            "occurred_at": occurred_at_ms, "correlation_id": order_id, "causation_id": causation_id}


def order_placed(order_id: str, customer_id: str, amount_cents: int, now_ms: int) -> tuple[str, dict[str, Any]]:
    """(event id, OrderPlaced record). The id is derived from the order, so placing it twice is one event."""
    event_id = f"order-placed/{order_id}"
    return event_id, {
        "envelope": envelope(event_id, order_id, "OrderPlaced", now_ms, None),
        "order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents, "currency": "EUR",
        "items": [{"sku": "sku-1", "quantity": 1}],
    }
