"""The pure step's contract: failures are values, duplicates and stale replies are no-ops, parking is bounded,
unknown entities follow the declared policy, and the same inputs always give the same result."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import HopLimitError, InvalidTransitionError, ProcessingError, RecordError
from streams.workflow import (
    Definition,
    Driver,
    Event,
    StepResult,
    WorkflowBuilder,
    WorkflowState,
    data_fields,
    emit,
    event_from_record,
    fail,
    output_id,
    record,
    record_with,
    set_timer,
    step,
)
from test_workflow_support import failed, paid, placed, refunded, released, reserved, saga


def shipment(**kw: Any) -> Definition:
    """A small non-saga workflow: carrier scans may arrive out of order, so some events are parkable."""
    park_ms = kw.pop("park_ms", 500)
    wf = WorkflowBuilder("shipment", input_topic="shipments.events", initial="new", **kw)
    wf.states("new", "created", "dispatched")
    wf.terminal("delivered", on_enter=[emit("ShipmentDelivered", "shipments.results", data_fields("id"))])
    wf.terminal("lost")
    wf.events("Created", "Dispatched", "Delivered", "Scanned")
    wf.on("Created", "new", "created", when=lambda c: c.payload["weight"] > 0, do=[record("id", "weight")])
    wf.on("Scanned", "created", "created", do=[record_with(lambda c: {"scans": c.data.get("scans", 0) + 1})])
    wf.on("Dispatched", "created", "dispatched", do=[set_timer("overdue", 1_000, fires="Overdue")])
    wf.on("Delivered", "dispatched", "delivered")
    wf.on("Overdue", "dispatched", "lost", do=[fail("overdue")])
    if park_ms:
        wf.park("Dispatched", "Delivered", max_ms=park_ms)
    return wf.build()


def ev(name: str, key: str = "s1", payload: dict[str, Any] | None = None, ts: int = 0, **kw: Any) -> Event:
    return Event(name, kw.pop("event_id", f"{key}/{name}/{ts}"), key, payload or {}, ts, **kw)


def created(key: str = "s1", weight: int = 3) -> dict[str, Any]:
    return {"id": key, "weight": weight}


# --- failures are values --------------------------------------------------------------------------------------


def test_invalid_transition_is_a_failure_and_leaves_the_state_alone() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    before = d.state("o1")
    assert before is not None
    snapshot = before.to_record()
    r = d.send("InventoryReserved", "o1", reserved("o1"))
    assert r.failure is not None
    assert (r.failure.reason, r.failure.state, r.failure.event) == ("invalid_transition", "paying", "InventoryReserved")
    assert "paying" in r.failure.message
    assert r.state is before and not r.changed and r.outputs == () and r.timers_set == ()
    assert d.state("o1") is before and before.to_record() == snapshot
    assert [(e.name, f.reason) for e, f in d.dead_letters] == [("InventoryReserved", "invalid_transition")]


def test_a_guard_that_raises_is_a_handler_exception_not_a_crash() -> None:
    r = step(shipment(), None, ev("Created", payload={"id": "s1"}), 0)  # no weight: the guard raises KeyError
    assert r.failure is not None and r.failure.reason == "handler_exception"
    assert "KeyError" in r.failure.message and "weight" in r.failure.message
    assert r.state is None and not r.changed


def test_a_payload_missing_a_recorded_field_is_a_handler_exception() -> None:
    bad = placed("o1")
    del bad["customer_id"]
    r = step(saga(), None, ev("OrderPlaced", "o1", bad), 0)
    assert r.failure is not None and r.failure.reason == "handler_exception" and "customer_id" in r.failure.message


def test_state_of_another_workflow_is_refused() -> None:
    alien = WorkflowState("shipment", "created", {}, {}, (), (), (), None, 0, 0)
    r = step(saga(), alien, ev("PaymentCompleted", "o1", paid("o1")), 0)
    assert r.failure is not None and r.failure.reason == "invalid_transition" and "shipment" in r.failure.message


def test_failures_map_onto_the_error_tree_for_the_dead_letter_path() -> None:
    defn = saga()
    invalid = step(defn, step(defn, None, ev("OrderPlaced", "o1", placed("o1")), 0).state, ev("OrderPlaced2"), 0)
    assert invalid.failure is not None
    assert isinstance(invalid.failure.to_error(), InvalidTransitionError)
    unknown = step(defn, None, ev("PaymentCompleted", "o9", paid("o9")), 0).failure
    assert unknown is not None and unknown.reason == "unknown_entity"
    err = unknown.to_error()
    assert type(err) is RecordError and err.reason == "unknown_entity" and err.dead_letter
    crash = step(shipment(), None, ev("Created", payload={}), 0).failure
    assert crash is not None and isinstance(crash.to_error(), ProcessingError)


def test_hop_limit() -> None:
    defn = shipment(max_hops=3)
    r = step(defn, None, ev("Created", payload=created(), hops=4), 0)
    assert r.failure is not None and r.failure.reason == "hop_limit"
    assert isinstance(r.failure.to_error(), HopLimitError)
    ok = step(saga(), None, ev("OrderPlaced", "o1", placed("o1"), hops=2), 0)
    assert [o.hops for o in ok.outputs] == [3]


# --- duplicates and stale replies -----------------------------------------------------------------------------


def test_same_event_id_is_dropped_by_the_runtime_before_the_step() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"), event_id="e1")
    state = d.state("o1")
    r = d.send("OrderPlaced", "o1", placed("o1"), event_id="e1")
    assert r.ignored == "duplicate_event" and r.state is state and len(d.outputs) == 1


@pytest.mark.parametrize(
    ("setup", "again", "why"),
    [
        # a repeated start event (new id: e.g. the shop re-sent it)
        (["OrderPlaced"], ("OrderPlaced", placed), "duplicate_event"),
        # the payment reply re-sent after the saga moved on
        (["OrderPlaced", "PaymentCompleted"], ("PaymentCompleted", paid), "duplicate_event"),
        (["OrderPlaced", "PaymentCompleted", "InventoryReserved"], ("InventoryReserved", reserved), "duplicate_event"),
    ],
)
def test_repeated_events_with_new_ids_are_recognised(setup: list[str], again: tuple[str, Any], why: str) -> None:
    payloads = {"OrderPlaced": placed, "PaymentCompleted": paid, "InventoryReserved": reserved}
    d = Driver(saga())
    for name in setup:
        d.send(name, "o1", payloads[name]("o1"))
    before, n = d.state("o1"), len(d.outputs)
    r = d.send(again[0], "o1", again[1]("o1"))
    assert r.ignored == why and r.failure is None and not r.changed
    assert d.state("o1") is before and len(d.outputs) == n


def test_a_different_result_for_a_completed_step_is_not_a_duplicate() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    d.send("PaymentCompleted", "o1", paid("o1"))
    other = {**paid("o1"), "payment_id": "pay-SECOND"}  # a second charge: someone must look at it
    r = d.send("PaymentCompleted", "o1", other)
    assert r.failure is not None and r.failure.reason == "invalid_transition"


def test_duplicates_during_and_after_compensation() -> None:
    d = Driver(saga())
    for name, payload in [
        ("OrderPlaced", placed("o1")), ("PaymentCompleted", paid("o1")), ("InventoryReserved", reserved("o1")),
        ("ShippingFailed", failed("o1", "PERMANENT", 1)), ("InventoryReleased", released("o1")),
    ]:
        d.send(name, "o1", payload)
    assert d.state("o1").state == "compensating"  # type: ignore[union-attr]
    assert d.send("InventoryReleased", "o1", released("o1")).ignored == "duplicate_event"
    assert d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1)).ignored == "stale_reply"
    d.send("PaymentRefunded", "o1", refunded("o1"))
    assert d.state("o1").state == "cancelled"  # type: ignore[union-attr]
    n = len(d.outputs)
    assert d.send("PaymentRefunded", "o1", refunded("o1")).ignored == "duplicate_event"
    # the payment was completed then undone: its re-sent success reply is recognised by the recorded payment id
    assert d.send("PaymentCompleted", "o1", paid("o1")).ignored == "duplicate_event"
    assert len(d.outputs) == n and d.dead_letters == []


def test_failure_replies_for_superseded_attempts_are_stale() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    # the same failure again while the retry waits: already acted upon
    r = d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    assert r.ignored == "stale_reply" and not r.changed
    due = d.next_due()
    assert due is not None
    d.advance_to(due)  # attempt 2 goes out
    state = d.state("o1")
    r = d.send("PaymentFailed", "o1", failed("o1", "PERMANENT", 1))  # a late answer to attempt 1
    assert r.ignored == "stale_reply" and d.state("o1") is state
    r = d.send("PaymentFailed", "o1", failed("o1", "PERMANENT", 2))  # the current attempt counts
    assert r.state is not None and r.state.state == "cancelled"
    assert d.send("PaymentFailed", "o1", failed("o1", "PERMANENT", 2)).ignored == "stale_reply"


def test_a_failure_reply_for_an_attempt_never_sent_is_invalid() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    r = d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1))
    assert r.failure is not None and r.failure.reason == "invalid_transition"
    r = d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 2))
    assert r.failure is not None and "attempt 2 of MakePayment" in r.failure.message
    assert d.state("o1").timers[0].name == "MakePayment.timeout"  # type: ignore[union-attr]


# --- unknown entities -----------------------------------------------------------------------------------------


def test_unknown_entity_dead_letter_policy() -> None:
    r = step(saga(), None, ev("PaymentCompleted", "o404", paid("o404")), 0)
    assert r.failure is not None and r.failure.reason == "unknown_entity" and "o404" in r.failure.message
    assert r.state is None and not r.changed


def test_unknown_entity_ignore_policy() -> None:
    r = step(shipment(unknown_entity="ignore", park_ms=0), None, ev("Delivered"), 0)
    assert r.ignored == "unknown_entity" and r.failure is None and r.state is None and not r.changed


def test_unknown_entity_create_policy_makes_a_placeholder_the_start_event_then_fills() -> None:
    defn = shipment(unknown_entity="create", park_ms=0)
    d = Driver(defn, now_ms=100)
    r = d.send("Scanned", "s1")
    assert r.changed and r.state is not None and r.state.state == "new" and r.outputs == ()
    assert [(h.from_state, h.event, h.to_state) for h in r.state.history] == [("new", "Scanned", "new")]
    d.advance(5)
    r = d.send("Created", "s1", created())
    assert r.state is not None and r.state.state == "created" and r.state.created_at == 100
    assert len(r.state.history) == 2


def test_a_timer_for_an_unknown_entity_is_stale() -> None:
    r = step(shipment(), None, ev("Overdue", payload={"timer": "overdue", "attempt": 1}), 0)
    assert r.ignored == "stale_timer" and r.failure is None


# --- parking --------------------------------------------------------------------------------------------------


def test_an_early_event_is_parked_and_applied_once_the_entity_catches_up() -> None:
    d = Driver(shipment(park_ms=500))
    d.send("Created", "s1", created())
    r = d.send("Delivered", "s1")  # overtook Dispatched
    assert r.park and r.park_until_ms == 500 and r.failure is None and not r.changed
    assert [e.name for e in d.parked["s1"]] == ["Delivered"]
    d.advance(100)
    d.send("Dispatched", "s1")
    s = d.state("s1")
    assert s is not None and s.state == "delivered"
    assert [h.event for h in s.history] == ["Created", "Dispatched", "Delivered"]
    assert d.parked["s1"] == [] and [o.record for o in d.outputs] == ["ShipmentDelivered"]


def test_parked_events_for_an_entity_not_yet_created_wait_for_its_start() -> None:
    d = Driver(shipment(park_ms=500))
    assert d.send("Delivered", "s1").park
    assert d.send("Dispatched", "s1").park
    d.advance(10)
    d.send("Created", "s1", created())
    s = d.state("s1")
    assert s is not None and s.state == "delivered"  # Dispatched first, then Delivered: each re-offer retries all


def test_a_parked_event_is_dead_lettered_when_its_bound_passes() -> None:
    d = Driver(shipment(park_ms=500))
    d.send("Created", "s1", created())
    d.send("Delivered", "s1")
    d.advance(499)
    assert d.dead_letters == [] and len(d.parked["s1"]) == 1
    d.advance(1)
    [(event, failure)] = d.dead_letters
    assert (event.name, failure.reason) == ("Delivered", "invalid_transition")
    assert "parked until 500" in failure.message
    assert d.parked["s1"] == [] and d.state("s1").state == "created"  # type: ignore[union-attr]


def test_the_park_bound_is_fixed_at_the_first_park() -> None:
    defn = shipment(park_ms=500)
    state = step(defn, None, ev("Created", payload=created()), 0).state
    first = step(defn, state, ev("Delivered", ts=0), 100)
    assert first.park_until_ms == 600  # max(event time, now) + 500
    again = step(defn, state, ev("Delivered", ts=0).reoffer(600), 400)
    assert again.park_until_ms == 600
    late = step(defn, state, ev("Delivered", ts=0).reoffer(600), 600)
    assert late.failure is not None and late.failure.reason == "invalid_transition" and late.park_until_ms is None


def test_events_not_declared_parkable_fail_at_once_and_nothing_parks_after_the_end() -> None:
    defn = shipment(park_ms=500)
    state = step(defn, None, ev("Created", payload=created()), 0).state
    state = step(defn, state, ev("Dispatched"), 0).state
    r = step(defn, state, ev("Scanned"), 0)
    assert r.failure is not None and r.failure.reason == "invalid_transition" and not r.park
    lost = WorkflowState("shipment", "lost", {}, {}, (), (), (), "overdue", 0, 0)
    r = step(defn, lost, ev("Delivered"), 0)
    assert r.failure is not None and not r.park


# --- purity and determinism -----------------------------------------------------------------------------------


def _walk(defn: Definition) -> list[tuple[WorkflowState | None, Event, StepResult]]:
    events = [
        ev("OrderPlaced", "o1", placed("o1"), ts=10),
        ev("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1), ts=20),
        ev("MakePaymentRetryDue", "o1", {"timer": "MakePayment.retry", "attempt": 2}, ts=200),
        ev("PaymentCompleted", "o1", paid("o1"), ts=210),
        ev("InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1), ts=220),
    ]
    out: list[tuple[WorkflowState | None, Event, StepResult]] = []
    state = None
    for e in events:
        r = step(defn, state, e, e.timestamp_ms)
        out.append((state, e, r))
        state = r.state if r.changed else state
    return out


def test_same_inputs_same_results_and_inputs_are_never_mutated() -> None:
    defn = saga()
    walk = _walk(defn)
    assert [r for _, _, r in walk] == [r for _, _, r in _walk(saga())]  # a fresh definition agrees too
    assert [r.state.state for _, _, r in walk if r.state] == ["paying", "paying", "paying", "reserving", "compensating"]
    for before, e, r in walk:
        snap = None if before is None else before.to_record()
        assert step(defn, before, e, e.timestamp_ms) == r
        assert (None if before is None else before.to_record()) == snap


def test_output_ids_derive_from_key_event_and_index() -> None:
    defn = saga()
    r1 = step(defn, None, ev("OrderPlaced", "o1", placed("o1"), event_id="e1"), 0)
    r2 = step(defn, None, ev("OrderPlaced", "o1", placed("o1"), event_id="e1"), 999)
    r3 = step(defn, None, ev("OrderPlaced", "o1", placed("o1"), event_id="e2"), 0)
    assert r1.outputs[0].output_id == r2.outputs[0].output_id == output_id("o1", "e1", 0)
    assert r3.outputs[0].output_id != r1.outputs[0].output_id
    d = Driver(defn)
    d.send("OrderPlaced", "o1", placed("o1"))
    d.send("PaymentCompleted", "o1", paid("o1"))
    d.send("InventoryReserved", "o1", reserved("o1"))
    r = d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1), event_id="sf")
    assert [o.output_id for o in r.outputs] == [output_id("o1", "sf", 0)]


def test_history_is_bounded_to_the_latest_entries() -> None:
    defn = shipment(history_limit=5)
    state = step(defn, None, ev("Created", payload=created()), 0).state
    for i in range(1, 12):
        state = step(defn, state, ev("Scanned", ts=i, event_id=f"scan{i}"), i).state
    assert state is not None and len(state.history) == 5 and state.data["scans"] == 11
    assert [h.at for h in state.history] == [7, 8, 9, 10, 11]


def test_state_round_trips_through_its_record_form() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    s = d.state("o1")
    assert s is not None and s.timers
    assert WorkflowState.from_record(s.to_record()) == s


def test_a_timer_fired_record_becomes_the_event_it_fires() -> None:
    payload = {"timer": "MakePayment.timeout", "fires_event": "PaymentTimedOut", "due_at": 5, "attempt": 1}
    e = event_from_record("TimerFired", "o1", "t1", payload, 7)
    assert (e.name, e.key, e.event_id, e.timestamp_ms) == ("PaymentTimedOut", "o1", "t1", 7)
    other = event_from_record("PaymentCompleted", "o1", "x", paid("o1"), 7, hops=2)
    assert (other.name, other.hops) == ("PaymentCompleted", 2)
    full = event_from_record("streams.orders.PaymentCompleted", "o1", "x", paid("o1"), 7)
    assert full.name == "PaymentCompleted"
    assert event_from_record("streams.common.TimerFired", "o1", "t1", payload, 7).name == "PaymentTimedOut"
