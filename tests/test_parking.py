"""Parking out-of-order events, in the runtime: a real broker, registry, RocksDB and orchestrator process.

The order saga with ``park_replies_ms`` holds a reply that arrives before the order can accept it. The test
writes the replies itself (no services), so it controls their order exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.embedded import free_port
from streams.lab.loadgen import place_orders
from streams.processors.avro import envelope, make_serde
from streams.records import H_DLQ_REASON, H_EVENT_ID, H_PARKED_OFFSET, H_PARKED_UNTIL, InputRecord, header
from streams.runtime import parking
from streams.state import timers
from streams.workflow import Driver, create
from support import committed, end_offsets, orders_topology, read_all, saga_cluster, wait_until

ROOT = Path(__file__).resolve().parents[1]
PARK_MS = 25_000  # long enough to outlast a crash and restart; the expiry test's reply is sent first
TOPOLOGY = orders_topology(2, {"park_replies_ms": PARK_MS}, services=False)


# --- pure parts ------------------------------------------------------------------------------------------------

def test_a_parked_entry_key_names_its_entity_and_event_and_sorts_by_deadline() -> None:
    a = parking.entry_key(2_000, b"ord-1", "evt/1")
    b = parking.entry_key(1_000, b"ord-2", "evt/2")
    assert parking.parse(a) == (b"ord-1", "evt/1")
    assert parking.parse(timers.index_key(1_000, b"ord-1", "MakePayment.timeout")) is None
    assert sorted([a, b]) == [b, a]
    idx = parking.ParkedIndex()
    assert idx.load(0, [a, b, timers.index_key(5, b"x", "t")]) == 2
    assert [e for e, _ in idx.of(0, b"ord-1")] == ["evt/1"]
    assert idx.remove(0, b"ord-1", "evt/1") == a and idx.of(0, b"ord-1") == []


def test_a_held_record_keeps_its_id_timestamp_and_origin_and_is_reoffered_at_the_trigger_position() -> None:
    rec = InputRecord("orders.events", 1, 42, b"k", b"v", 1234, ())
    held = parking.held(rec, 9_999)
    assert header(held.headers, H_EVENT_ID) == b"orders.events/1/42"  # the position-derived id, made explicit
    assert header(held.headers, H_PARKED_UNTIL) == b"9999"
    assert header(held.headers, H_PARKED_OFFSET) == b"orders.events/1/42"
    trigger = InputRecord("orders.events", 1, 77, b"k", b"w", 5678, ())
    again = parking.reoffered(held, trigger)
    assert (again.offset, again.timestamp_ms, again.value, again.event_id) == (77, 1234, b"v", "orders.events/1/42")
    assert parking.deadline_of(again) == 9_999


def test_the_saga_with_parking_applies_swapped_replies_in_the_driver() -> None:
    d = Driver(create("orders", {"park_replies_ms": 1_000}))
    d.send("PaymentCompleted", "o1", {"order_id": "o1", "payment_id": "pay-o1", "amount_cents": 100})
    assert d.state("o1") is None and d.parked["o1"]
    d.send("OrderPlaced", "o1", {"order_id": "o1", "customer_id": "c", "amount_cents": 100, "currency": "EUR",
                                 "items": []})
    st = d.state("o1")
    assert st is not None and st.state == "reserving" and not d.parked.get("o1")
    d.send("ShippingLabelCreated", "o1", {"order_id": "o1", "label_id": "l", "tracking_number": "t"})
    d.advance(2_000)  # the early label expires: it never became acceptable
    assert [f.reason for _e, f in d.dead_letters] == ["invalid_transition"]


# --- the runtime -----------------------------------------------------------------------------------------------

@dataclass
class Orchestrator:
    kafka: KafkaSettings
    serde: Serde
    env: dict[str, str]
    tmp: Path
    topology: Path
    proc: subprocess.Popen[bytes] | None = None
    producer: Producer = field(init=False)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.producer = Producer({**self.kafka.common(), "partitioner": "murmur2_random"})

    def start(self, state_dir: str) -> None:
        log = open(self.tmp / "orchestrator.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--topology", str(self.topology), "--processor",
             "orchestrator", "--state-dir", str(self.tmp / state_dir), "--commit-interval-ms", "50",
             "--http-port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def reply(self, name: str, order: str, **fields: Any) -> None:
        eid = f"{name}-{order}"
        body = {"order_id": order, **fields, "envelope": envelope(eid, order, name, 0, None)}
        value = self.serde.encoder("orders.events", name)(body)
        self.producer.produce("orders.events", value, order.encode(), headers=[(H_EVENT_ID, eid.encode())])
        self.producer.flush(10)

    def parked(self, order: str) -> tuple[str | None, list[str]] | None:
        """(state, ids of its parked events) from the worker's status view; None while it has neither."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/workflows/{order}", timeout=5) as resp:
                view = json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None
        return view["state"], [p["event_id"] for p in view["parked"]]

    def commands(self, topic: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value, _h in read_all(self.kafka, topic, 2):
            name, _body = self.serde.decode(value)
            out.setdefault((key or b"").decode(), []).append(name.rsplit(".", 1)[-1])
        return out

    def dead_letters(self) -> dict[str, list[tuple[str, list[tuple[str, bytes]]]]]:
        out: dict[str, list[tuple[str, list[tuple[str, bytes]]]]] = {}
        for key, value, headers in read_all(self.kafka, "orders.dlq", 1):
            name, _body = self.serde.decode(value)
            out.setdefault((key or b"").decode(), []).append((name.rsplit(".", 1)[-1], headers))
        return out


@pytest.fixture(scope="module")
def orch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    tmp = tmp_path_factory.mktemp("parking")
    with saga_cluster(tmp, TOPOLOGY) as (kafka, _registry, topo, env):
        o = Orchestrator(kafka, make_serde({}), env, tmp, topo)
        o.start("state-1")
        o.reply("PaymentCompleted", "ghost", payment_id="pay-ghost", amount_cents=100)  # expires last
        try:
            yield o
        finally:
            if o.proc is not None and o.proc.poll() is None:
                o.proc.terminate()
                o.proc.wait(30)


def _placed(o: Orchestrator, order: str) -> None:
    place_orders(o.kafka, o.serde, [order])
    wait_until(lambda: "MakePayment" in o.commands("payments.commands").get(order, []), 60, f"MakePayment {order}")


def test_a_reply_before_its_order_and_swapped_replies_are_applied_once_in_order(orch: Orchestrator) -> None:
    o = orch
    # A reply ahead of its OrderPlaced waits for the order, then applies.
    o.reply("PaymentCompleted", "early", payment_id="pay-early", amount_cents=100)
    wait_until(lambda: o.parked("early") == (None, ["PaymentCompleted-early"]), 30,
               "the status view listing the reply parked for an order that does not exist yet")
    _placed(o, "early")
    wait_until(lambda: o.commands("inventory.commands").get("early") == ["ReserveInventory"], 30,
               "the parked payment reply applied once the order existed")
    # Two replies swapped: the reservation arrives while the order still waits for its payment.
    _placed(o, "swapped")
    o.reply("InventoryReserved", "swapped", reservation_id="res-swapped")
    o.reply("PaymentCompleted", "swapped", payment_id="pay-swapped", amount_cents=100)
    wait_until(lambda: o.commands("shipping.commands").get("swapped") == ["CreateShippingLabel"], 30,
               "both swapped replies applied, in saga order")
    assert o.commands("inventory.commands").get("swapped") == ["ReserveInventory"]
    assert "early" not in o.dead_letters() and "swapped" not in o.dead_letters()


def test_a_parked_reply_survives_a_crash_and_a_restore_from_the_changelog(orch: Orchestrator) -> None:
    o = orch
    _placed(o, "crash")
    o.reply("ShippingLabelCreated", "crash", label_id="lbl-crash", tracking_number="T1")
    o.reply("InventoryReserved", "crash", reservation_id="res-crash")
    # Let both replies be parked and committed, then lose the process and its state directory.
    wait_until(lambda: _committed_past_replies(o), 30, "the parked replies committed")
    o.kill()
    o.start("state-2")
    wait_until(lambda: o.parked("crash") is not None, 60, "the restored orchestrator's status view")
    state, waiting = o.parked("crash") or (None, [])
    assert state == "paying" and sorted(waiting) == ["InventoryReserved-crash", "ShippingLabelCreated-crash"]
    o.reply("PaymentCompleted", "crash", payment_id="pay-crash", amount_cents=100)
    wait_until(lambda: o.commands("orders.results").get("crash") == ["OrderCompleted"], 60,
               "the order completed from two restored parked replies")
    assert o.commands("shipping.commands").get("crash") == ["CreateShippingLabel"]
    assert "crash" not in o.dead_letters()
    assert o.parked("crash") == ("completed", [])


def test_a_parked_reply_that_never_becomes_acceptable_is_dead_lettered_at_its_deadline(orch: Orchestrator) -> None:
    o = orch  # the ghost reply was sent when the module started, so this wait overlaps the other tests
    wait_until(lambda: "ghost" in o.dead_letters(), PARK_MS / 1000 + 30, "the ghost reply dead-lettered")
    [(name, headers)] = o.dead_letters()["ghost"]
    assert name == "PaymentCompleted"
    assert header(headers, H_DLQ_REASON) == b"unknown_entity"
    assert header(headers, H_PARKED_OFFSET) is not None  # where it first arrived
    assert header(headers, H_PARKED_UNTIL) is None  # a replayed dead letter waits afresh


def _committed_past_replies(o: Orchestrator) -> bool:
    return committed(o.kafka, "orders-orchestrator", "orders.events", 2) == end_offsets(o.kafka, "orders.events", 2)
