"""The reference services: payment, inventory and shipping, each a stream worker over its command topic.

They exist for the demo, the benchmark and the fault tests, and as the example of a well-behaved service:

- **idempotent by command id** (header ``streams-command-id``, the same for every attempt): the first attempt
  that succeeds applies the effect and stores its reply; any later attempt gets the stored reply again, so a
  charge, reservation or label happens once however often the command is re-sent;
- **replies into the workflow's input topic**, keyed by the order id, so one order's events stay in one log;
- **classified failures**: a reply says ``TRANSIENT`` (retry may help) or ``PERMANENT`` (it will not).

Outcomes are chosen by :func:`fate`, a hash of (seed, order id, what, attempt): deterministic, so a replay
behaves the same and a test oracle can predict every order's end from the same rates. ``latency_ms`` sleeps
inside the handler, which holds up the partition: it simulates a slow dependency, not a parallel one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any

import orjson

from streams.errors import DecodeError
from streams.processors.avro import envelope, envelope_id, key_of, make_serde
from streams.records import InputRecord, OutputRecord, header
from streams.runtime.processor import UNCHANGED, Step

H_COMMAND_ID = "streams-command-id"
REPLY_TOPIC = "orders.events"

Command = tuple[str, dict[str, Any], str]  # record name, payload, command id


def fate(seed: int, order_id: str, what: str, attempt: int = 0) -> float:
    """A stable number in [0, 1) for one decision about one order."""
    h = blake2b(f"{seed}\x00{order_id}\x00{what}\x00{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class Service:
    """Shared machinery; subclasses decide the reply to each command."""

    kind = "service"

    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.serde = make_serde(options)
        self.reply_topic = str(options.get("reply_topic", outputs[0] if outputs else REPLY_TOPIC))
        self.seed = int(options.get("seed", 0))
        self.latency_s = float(options.get("latency_ms", 0)) / 1000
        self.transient_rate = float(options.get("transient_rate", 0.0))
        self.permanent_rate = float(options.get("permanent_rate", 0.0))
        self.no_answer_rate = float(options.get("no_answer_rate", 0.0))
        self.no_answer_prefix = str(options.get("no_answer_customer_prefix", "")) or None
        self._encoders: dict[str, Any] = {}
        self._attempt_fields: dict[str, bool] = {}

    def decode(self, record: InputRecord) -> Command:
        name, body = self.serde.decode(record.value)
        raw = header(record.headers, H_COMMAND_ID)
        if raw is None:
            raise DecodeError(f"{name} has no {H_COMMAND_ID} header: a service cannot apply it idempotently")
        body.pop("envelope", None)
        return name.rsplit(".", 1)[-1], body, raw.decode()

    def envelope_id(self, record: InputRecord) -> str | None:
        return envelope_id(self.serde, record)

    def load_state(self, raw: bytes) -> dict[str, Any]:
        state: dict[str, Any] = orjson.loads(raw)
        return state

    def dump_state(self, state: dict[str, Any]) -> bytes:
        return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)

    def describe(self, raw: bytes, now_ms: int) -> dict[str, Any]:
        state: dict[str, Any] = orjson.loads(raw)
        return {"service": self.kind, **state}

    def process(self, state: dict[str, Any] | None, command: Command, record: InputRecord,
                now_ms: int) -> Step[dict[str, Any]]:
        name, payload, cid = command
        state = dict(state) if state else {"done": {}, "effects": []}
        done = state["done"].get(cid)
        if done is None:
            if self.latency_s:
                time.sleep(self.latency_s)
            decision = self.handle(name, payload, key_of(record), state)
            if decision is None:
                return Step(UNCHANGED)  # never answers: the workflow's timeout must act
            reply_name, reply, applied = decision
            if applied:  # effect applied: remember the reply for every later attempt
                state["done"] = {**state["done"], cid: [reply_name, reply]}
                state["effects"] = [*state["effects"], [name, cid, reply_name]]
            else:
                state["attempts_failed"] = state.get("attempts_failed", 0) + 1
        else:
            reply_name, reply = done
        body = {**reply, "attempt": payload.get("attempt", 1)} if self._has_attempt(reply_name) else reply
        out = self._reply(record, reply_name, body)
        return Step(state, (out,))

    def handle(self, name: str, payload: dict[str, Any], key: str, state: dict[str, Any]
               ) -> tuple[str, dict[str, Any], bool] | None:
        """(reply record, reply payload, effect applied) or None for no answer at all."""
        raise NotImplementedError

    def failing(self, order_id: str, attempt: int, what: str) -> str | None:
        if fate(self.seed, order_id, f"{what}-permanent") < self.permanent_rate:
            return "PERMANENT"
        if fate(self.seed, order_id, f"{what}-transient", attempt) < self.transient_rate:
            return "TRANSIENT"
        return None

    def _has_attempt(self, record: str) -> bool:
        """Whether the reply schema carries ``attempt``; looked up once per record type, not per command."""
        known = self._attempt_fields.get(record)
        if known is None:
            entry = self.serde.catalogue.get(self.serde.catalogue.resolve(record))
            known = self._attempt_fields[record] = any(f["name"] == "attempt" for f in entry.schema["fields"])
        return known

    def _reply(self, record: InputRecord, name: str, body: dict[str, Any]) -> OutputRecord:
        enc = self._encoders.get(name)
        if enc is None:
            enc = self._encoders[name] = self.serde.encoder(self.reply_topic, name)
        key = key_of(record)
        value = enc({**body, "envelope": envelope(record.event_id + "/reply", key, name, record.timestamp_ms,
                                                  record.event_id)})
        return OutputRecord(self.reply_topic, record.key, value)


class PaymentService(Service):
    kind = "payment"

    def handle(self, name: str, payload: dict[str, Any], key: str, state: dict[str, Any]
               ) -> tuple[str, dict[str, Any], bool] | None:
        order = payload["order_id"]
        if name == "RefundPayment":
            return "PaymentRefunded", {"order_id": order, "payment_id": payload["payment_id"],
                                       "amount_cents": payload["amount_cents"]}, True
        if self.no_answer(order, state):
            return None
        kind = self.failing(order, int(payload.get("attempt", 1)), "payment")
        if kind is not None:
            return "PaymentFailed", {"order_id": order, "reason": f"card declined ({kind.lower()})",
                                     "failure": kind, "attempt": payload.get("attempt", 1)}, False
        return "PaymentCompleted", {"order_id": order, "payment_id": f"pay-{order}",
                                    "amount_cents": payload["amount_cents"]}, True

    def no_answer(self, order: str, state: dict[str, Any]) -> bool:
        if self.no_answer_prefix is not None and order.startswith(self.no_answer_prefix):
            return True
        return fate(self.seed, order, "payment-no-answer") < self.no_answer_rate


class InventoryService(Service):
    kind = "inventory"

    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        super().__init__(options, outputs)
        self.shortage_rate = float(options.get("shortage_rate", 0.0))

    def handle(self, name: str, payload: dict[str, Any], key: str, state: dict[str, Any]
               ) -> tuple[str, dict[str, Any], bool] | None:
        order = payload["order_id"]
        if name == "ReleaseInventory":
            return "InventoryReleased", {"order_id": order, "reservation_id": payload["reservation_id"]}, True
        attempt = int(payload.get("attempt", 1))
        if fate(self.seed, order, "inventory-shortage") < self.shortage_rate:
            return "InventoryUnavailable", {"order_id": order, "reason": "out of stock", "failure": "PERMANENT",
                                            "attempt": attempt}, False
        kind = self.failing(order, attempt, "inventory")
        if kind is not None:
            return "InventoryUnavailable", {"order_id": order, "reason": f"warehouse unavailable ({kind.lower()})",
                                            "failure": kind, "attempt": attempt}, False
        return "InventoryReserved", {"order_id": order, "reservation_id": f"res-{order}"}, True


class ShippingService(Service):
    kind = "shipping"

    def handle(self, name: str, payload: dict[str, Any], key: str, state: dict[str, Any]
               ) -> tuple[str, dict[str, Any], bool] | None:
        order = payload["order_id"]
        attempt = int(payload.get("attempt", 1))
        kind = self.failing(order, attempt, "shipping")
        if kind is not None:
            return "ShippingFailed", {"order_id": order, "reason": f"carrier rejected ({kind.lower()})",
                                      "failure": kind, "attempt": attempt}, False
        return "ShippingLabelCreated", {"order_id": order, "label_id": f"lbl-{order}",
                                        "tracking_number": f"TRK{fate(self.seed, order, 'trk'):.10f}"[5:]}, True


def payment(options: dict[str, object], outputs: Sequence[str]) -> PaymentService:
    return PaymentService(options, outputs)


def inventory(options: dict[str, object], outputs: Sequence[str]) -> InventoryService:
    return InventoryService(options, outputs)


def shipping(options: dict[str, object], outputs: Sequence[str]) -> ShippingService:
    return ShippingService(options, outputs)
