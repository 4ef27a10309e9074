"""The chaos run's I/O helpers: turning planned :class:`~streams.lab.chaos_plan.Item` records into bytes on
``orders.events`` (remembering where each poison record landed), and watching ``orders.results``."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_writer

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.errors import StoppedError, patiently
from streams.kafka.client import follow, plain_producer, read_to_end
from streams.kafka.io import KafkaError, Message
from streams.lab.chaos_plan import GHOST_EVENTS, Item
from streams.lab.loadgen import order_placed
from streams.processors.avro import envelope
from streams.records import H_EVENT_ID, H_TRACEPARENT, header
from streams.runtime import tracing

TOPIC = "orders.events"
RESULTS = "orders.results"
REPLIES = ("PaymentCompleted", "PaymentFailed", "InventoryReserved", "InventoryUnavailable",
           "ShippingLabelCreated", "ShippingFailed", "PaymentRefunded", "InventoryReleased")
# A writer schema no reader of orders.events can resolve: PaymentCompleted without its envelope and with a
# string amount. Registered under a subject of its own, as a misconfigured producer would.
INCOMPATIBLE_SUBJECT = "chaos.incompatible-value"
INCOMPATIBLE_SCHEMA = {"type": "record", "name": "PaymentCompleted", "namespace": "streams.orders",
                       "fields": [{"name": "order_id", "type": "string"}, {"name": "amount_cents", "type": "string"}]}

Raw = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


class Writer:
    """Encodes and produces planned items; poison records' positions come back from delivery reports."""

    def __init__(self, kafka: KafkaSettings, serde: Serde, seed: int, log: Callable[[str], None]) -> None:
        self.serde = serde
        self.log = log
        self.producer = plain_producer({**kafka.common(), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                  "partitioner": "murmur2_random"})
        self.positions: dict[str, tuple[str, int, int]] = {}
        self.failed: list[str] = []
        self.copies: dict[str, Raw] = {}  # order id -> its first service reply, for re-sending
        self._placed: dict[str, bytes] = {}
        self._rng = random.Random(f"{seed}-bytes")
        self._incompatible_id = serde.registry.register(INCOMPATIBLE_SUBJECT, json.dumps(INCOMPATIBLE_SCHEMA))
        self._incompatible = parse_schema(INCOMPATIBLE_SCHEMA)
        self.written = 0

    def placed(self, oid: str) -> bytes:
        """One OrderPlaced per order, encoded once: a duplicate is the same bytes as its original."""
        value = self._placed.get(oid)
        if value is None:
            amount = 100 + (sum(oid.encode()) * 37) % 90_000
            value = self._placed[oid] = self.serde.encode(TOPIC, "OrderPlaced", order_placed(
                oid, f"cust-{oid}", amount, int(time.time() * 1000)))
        return value

    def _event(self, name: str, key: str, event_id: str, body: dict[str, Any]) -> bytes:
        env = envelope(event_id, key, name, int(time.time() * 1000), None)
        return self.serde.encode(TOPIC, name, {**body, "envelope": env, "order_id": key})

    def raw(self, item: Item) -> Raw | None:
        key, eid = item.key, item.event_id
        headers = [(H_EVENT_ID, eid.encode())]
        value: bytes | None
        if item.kind in ("placed", "dup") or (item.kind == "resend" and item.variant == 0):
            value = self.placed(key)
            headers.append((H_TRACEPARENT, tracing.root(eid)))
        elif item.kind == "resend":
            return self.copies.get(key)
        elif item.kind == "ghost":
            name = GHOST_EVENTS[item.variant]
            bodies: dict[str, dict[str, Any]] = {
                "PaymentCompleted": {"payment_id": f"pay-{key}", "amount_cents": 100},
                "PaymentFailed": {"reason": "card declined (transient)", "failure": "TRANSIENT", "attempt": 1},
                "InventoryReserved": {"reservation_id": f"res-{key}"},
                "ShippingLabelCreated": {"label_id": f"lbl-{key}", "tracking_number": "TRK0"},
            }
            value = self._event(name, key, eid, bodies[name])
        elif item.kind == "invalid_transition":
            value = self._event("OrderCompleted", key, eid, {})
        elif item.kind == "unknown_schema_id":
            value = b"\x00" + item.param.to_bytes(4, "big") + b"\x02\x04xx"
        elif item.kind == "incompatible_schema":
            buf = BytesIO()
            buf.write(b"\x00" + self._incompatible_id.to_bytes(4, "big"))
            schemaless_writer(buf, self._incompatible, {"order_id": key, "amount_cents": "12.50"})
            value = buf.getvalue()
        else:  # garbage
            value = self._garbage(item)
        return key.encode(), value, headers

    def _garbage(self, item: Item) -> bytes:
        rng = random.Random(item.param)
        if item.variant == 0:  # not the Confluent wire format at all
            return bytes([0x80 | rng.randrange(128)]) + rng.randbytes(rng.randrange(4, 40))
        if item.variant == 1:  # a real record cut short: any proper prefix of an Avro body fails to decode
            whole = self.placed(item.key.replace("garbage", "truncated"))
            return whole[: 5 + rng.randrange(len(whole) - 5)]
        if item.variant == 2:  # magic byte, then less than a schema id
            return b"\x00" + rng.randbytes(rng.randrange(0, 4))
        return b""

    def write(self, items: Sequence[Item], rate_per_s: float, stop: threading.Event) -> None:
        start = time.monotonic()
        for n, item in enumerate(items):
            if stop.is_set():
                return
            ahead = start + n / rate_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            try:  # a record type's first encode registers its schema: the registry may be riding out a fault
                raw = patiently(partial(self.raw, item), stop, self.log, "chaos writer")
            except StoppedError:
                return
            if raw is None:
                continue
            key, value, headers = raw
            cb = self._on_delivery(item) if item.reason is not None else None
            self.producer.produce(TOPIC, value, key, headers=headers, on_delivery=cb)
            self.written += 1
            self.producer.poll(0)
        while self.producer.flush(5) and not stop.is_set():
            pass

    def _on_delivery(self, item: Item) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.failed.append(f"{item.event_id}: {err.str()}")
            else:
                self.positions[item.event_id] = (str(msg.topic()), int(msg.partition()), int(msg.offset()))

        return done

    def collect_replies(self, kafka: KafkaSettings, keys: set[str]) -> None:
        """The first service reply of each order in ``keys``, as logged (key, value and headers), to re-send."""
        for m in read_to_end(kafka, TOPIC, 60):
            key = (m.key() or b"").decode()
            if key not in keys or key in self.copies:
                continue
            try:
                name, _body = self.serde.decode(m.value())
            except Exception:  # poison on the topic is expected here
                continue
            if name.rsplit(".", 1)[-1] in REPLIES:
                self.copies[key] = (m.key() or b"", m.value(), list(m.headers() or []))


class Results(threading.Thread):
    """Tails ``orders.results``: each order's outcome, and orders that got two different outcomes."""

    def __init__(self, kafka: KafkaSettings, serde: Serde, partitions: int, log: Callable[[str], None]) -> None:
        super().__init__(daemon=True, name="chaos-results")
        self.kafka, self.serde, self.partitions, self.log = kafka, serde, partitions, log
        self.outcomes: dict[str, tuple[str, str | None]] = {}
        self.ids: dict[str, set[str]] = {}
        self.copies: dict[str, int] = {}  # order id -> result records read (copies of one id included)
        self.conflicts: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for batch in follow(self.kafka, [RESULTS], self.stop):
                for m in batch:
                    # A result type's first decode looks its schema up: the registry may be riding out a fault.
                    name, body = patiently(partial(self.serde.decode, m.value()), self.stop, self.log,
                                           "chaos results")
                    oid = (m.key() or b"").decode()
                    outcome = ("completed" if name.endswith("OrderCompleted") else "cancelled", body.get("reason"))
                    if self.outcomes.setdefault(oid, outcome) != outcome:
                        self.conflicts.add(oid)
                    eid = header(m.headers() or (), H_EVENT_ID)
                    self.ids.setdefault(oid, set()).add((eid or b"").decode())
                    self.copies[oid] = self.copies.get(oid, 0) + 1
        except StoppedError:
            pass
