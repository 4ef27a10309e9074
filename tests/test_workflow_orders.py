"""The order saga, transition by transition, through the in-memory driver (times in milliseconds)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.examples.orders.workflow import DATA_FIELDS
from streams.workflow import Definition, Driver, Timer, command_id
from test_workflow_support import (
    failed,
    labelled,
    paid,
    placed,
    refunded,
    released,
    reserved,
    saga,
)


def start(defn: Definition | None = None, key: str = "o1") -> Driver:
    d = Driver(defn or saga())
    d.send("OrderPlaced", key, placed(key))
    return d


def records(d: Driver) -> list[str]:
    return [o.record for o in d.take()]


def path(d: Driver, key: str = "o1") -> list[tuple[str, str, str]]:
    state = d.state(key)
    assert state is not None
    return [(h.from_state, h.event, h.to_state) for h in state.history]


# --- happy path -----------------------------------------------------------------------------------------------


def happy(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(10)
    d.send("PaymentCompleted", "o1", paid("o1"))
    d.advance(10)
    d.send("InventoryReserved", "o1", reserved("o1"))
    d.advance(10)
    d.send("ShippingLabelCreated", "o1", labelled("o1"))
    return d


def test_happy_path_issues_each_command_once_and_completes() -> None:
    d = Driver(saga())
    r = d.send("OrderPlaced", "o1", placed("o1"))
    assert r.changed and r.state is not None and r.state.state == "paying"
    [pay] = d.take()
    assert (pay.record, pay.topic, pay.key) == ("MakePayment", "payments.commands", "o1")
    assert pay.payload == {"order_id": "o1", "amount_cents": 1250, "currency": "EUR", "attempt": 1}
    assert pay.command_id == command_id("orders", "o1", "MakePayment")
    assert d.timers("o1") == (Timer("MakePayment.timeout", 1_000, "PaymentTimedOut", 1),)

    d.advance(10)
    r = d.send("PaymentCompleted", "o1", paid("o1"))
    [reserve] = d.take()
    assert (reserve.record, reserve.topic) == ("ReserveInventory", "inventory.commands")
    assert reserve.payload == {"order_id": "o1", "items": placed("o1")["items"], "attempt": 1}
    assert [t.name for t in r.timers_cancelled] == ["MakePayment.timeout"]
    assert d.timers("o1") == (Timer("ReserveInventory.timeout", 1_010, "ReserveInventoryTimedOut", 1),)

    d.advance(10)
    d.send("InventoryReserved", "o1", reserved("o1"))
    [label] = d.take()
    assert (label.record, label.topic, label.payload) == (
        "CreateShippingLabel", "shipping.commands", {"order_id": "o1", "attempt": 1},
    )
    d.advance(10)
    d.send("ShippingLabelCreated", "o1", labelled("o1"))
    [done] = d.take()
    assert (done.record, done.topic, done.payload, done.command_id) == (
        "OrderCompleted", "orders.results", {"order_id": "o1"}, None,
    )

    s = d.state("o1")
    assert s is not None
    assert s.state == "completed" and s.reason is None and s.timers == ()
    assert set(s.data) == set(DATA_FIELDS)
    assert (s.data["payment_id"], s.data["reservation_id"], s.data["tracking_number"]) == ("pay-o1", "res-o1", "TRK-o1")
    assert s.completed_steps == ("payment", "inventory", "shipping")
    assert s.attempts == {"MakePayment": 1, "ReserveInventory": 1, "CreateShippingLabel": 1}
    assert (s.created_at, s.updated_at) == (0, 30)
    assert path(d) == [
        ("new", "OrderPlaced", "paying"),
        ("paying", "PaymentCompleted", "reserving"),
        ("reserving", "InventoryReserved", "shipping"),
        ("shipping", "ShippingLabelCreated", "completed"),
    ]
    assert d.dead_letters == [] and d.ignored == []


# --- payment --------------------------------------------------------------------------------------------------


def payment_transient_then_paid(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(50)
    d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    next_timer(d)  # the first backoff is at most base_ms = 100
    d.send("PaymentCompleted", "o1", paid("o1"))
    return d


def test_transient_payment_failure_retries_after_backoff_with_the_same_command_id() -> None:
    d = start()
    first = d.take()[0]
    d.advance(50)
    r = d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    assert r.state is not None and r.state.state == "paying" and r.outputs == ()
    assert [t.name for t in r.timers_cancelled] == ["MakePayment.timeout"]
    [retry] = r.timers_set
    assert (retry.name, retry.fires_event, retry.attempt) == ("MakePayment.retry", "MakePaymentRetryDue", 2)
    assert 50 <= retry.due_at <= 150

    d.advance_to(retry.due_at - 1)
    assert d.take() == []
    d.advance_to(retry.due_at)
    [second] = d.take()
    assert second.payload["attempt"] == 2
    assert second.command_id == first.command_id  # the service dedupes by it
    assert second.output_id != first.output_id  # a different record, not a re-send
    assert d.timers("o1") == (Timer("MakePayment.timeout", retry.due_at + 1_000, "PaymentTimedOut", 2),)

    d.send("PaymentCompleted", "o1", paid("o1"))
    assert records(d) == ["ReserveInventory"]
    assert path(d) == [
        ("new", "OrderPlaced", "paying"),
        ("paying", "PaymentFailed", "paying"),
        ("paying", "MakePaymentRetryDue", "paying"),
        ("paying", "PaymentCompleted", "reserving"),
    ]


def payment_exhausted(defn: Definition) -> Driver:
    d = start(defn)
    for attempt in (1, 2, 3):
        d.advance(10)
        d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", attempt, "gateway busy"))
        if attempt < 3:
            next_timer(d)
    return d


def test_transient_payment_failures_exhaust_attempts_and_cancel() -> None:
    d = payment_exhausted(saga())
    outs = d.take()
    assert [o.record for o in outs] == ["MakePayment", "MakePayment", "MakePayment", "OrderCancelled"]
    assert [o.payload.get("attempt") for o in outs[:3]] == [1, 2, 3]
    s = d.state("o1")
    assert s is not None and s.state == "cancelled"
    assert s.reason == "payment failed after 3 attempts: gateway busy"
    assert outs[-1].payload == {"order_id": "o1", "reason": s.reason}
    assert s.timers == () and s.completed_steps == () and s.attempts == {"MakePayment": 3}


def payment_permanent(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(10)
    d.send("PaymentFailed", "o1", failed("o1", "PERMANENT", 1, "card declined"))
    return d


def test_permanent_payment_failure_cancels_without_compensation() -> None:
    d = payment_permanent(saga())
    assert records(d) == ["MakePayment", "OrderCancelled"]
    s = d.state("o1")
    assert s is not None and (s.state, s.reason, s.timers) == ("cancelled", "payment failed: card declined", ())


def payment_timeout(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(1_000)
    return d


def test_payment_timeout_cancels_the_order() -> None:
    d = start()
    d.advance(999)
    assert d.state("o1").state == "paying"  # type: ignore[union-attr]
    d.advance(1)
    assert records(d) == ["MakePayment", "OrderCancelled"]
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "payment timed out after 1 attempt")
    assert path(d)[-1] == ("paying", "PaymentTimedOut", "cancelled")


def test_payment_timeout_retries_when_configured_then_gives_up() -> None:
    d = start(saga(retry_payment_on_timeout=True))
    d.advance(10_000)
    outs = d.take()
    assert [o.record for o in outs] == ["MakePayment"] * 3 + ["OrderCancelled"]
    assert len({o.command_id for o in outs[:3]}) == 1
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "payment timed out after 3 attempts")
    assert ("paying", "PaymentTimedOut", "paying") in path(d)


def test_late_payment_success_after_cancellation_is_dead_lettered_not_swallowed() -> None:
    d = payment_timeout(saga())
    before = d.state("o1")
    r = d.send("PaymentCompleted", "o1", paid("o1"))
    assert r.failure is not None and r.failure.reason == "invalid_transition"
    assert "cancelled" in r.failure.message and r.failure.event == "PaymentCompleted"
    assert r.state is before and d.state("o1") is before


# --- inventory ------------------------------------------------------------------------------------------------


def paid_order(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(10)
    d.send("PaymentCompleted", "o1", paid("o1"))
    d.take()
    return d


def inventory_short(defn: Definition) -> Driver:
    d = paid_order(defn)
    d.advance(10)
    d.send("InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1, "out of stock"))
    d.advance(10)
    d.send("PaymentRefunded", "o1", refunded("o1"))
    return d


def test_inventory_unavailable_refunds_the_payment_then_cancels() -> None:
    d = paid_order(saga())
    d.advance(10)
    r = d.send("InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1, "out of stock"))
    assert r.state is not None and r.state.state == "compensating"
    [refund] = r.outputs
    assert (refund.record, refund.topic) == ("RefundPayment", "payments.commands")
    assert refund.payload == {"order_id": "o1", "payment_id": "pay-o1", "amount_cents": 1250, "attempt": 1}
    assert r.state.completed_steps == ("payment",)
    assert r.state.reason == "inventory failed: out of stock"
    assert [t.name for t in r.state.timers] == ["RefundPayment.timeout"]

    d.advance(10)
    r = d.send("PaymentRefunded", "o1", refunded("o1"))
    assert r.state is not None and r.state.state == "cancelled" and r.state.completed_steps == ()
    [cancelled] = r.outputs
    assert cancelled.payload == {"order_id": "o1", "reason": "inventory failed: out of stock"}
    assert r.state.timers == ()


def next_timer(d: Driver) -> None:
    due = d.next_due()
    assert due is not None
    d.advance_to(due)


def inventory_retries(defn: Definition) -> Driver:
    d = paid_order(defn)
    d.advance(10)
    d.send("InventoryUnavailable", "o1", failed("o1", "TRANSIENT", 1))
    next_timer(d)  # the retry: attempt 2 goes out
    next_timer(d)  # attempt 2 is not answered: timeout, a retry is scheduled
    next_timer(d)  # attempt 3 goes out
    d.send("InventoryReserved", "o1", reserved("o1"))
    return d


def test_inventory_transient_failure_and_timeout_both_retry() -> None:
    d = inventory_retries(saga())
    reserves = [o for o in d.take() if o.record == "ReserveInventory"]
    assert [o.payload["attempt"] for o in reserves] == [2, 3]
    s = d.state("o1")
    assert s is not None and s.state == "shipping" and s.attempts["ReserveInventory"] == 3
    events = [e for _, e, _ in path(d)]
    assert events[2:] == [
        "InventoryUnavailable", "ReserveInventoryRetryDue", "ReserveInventoryTimedOut",
        "ReserveInventoryRetryDue", "InventoryReserved",
    ]


def inventory_silent(defn: Definition) -> Driver:
    d = paid_order(defn)
    for _ in range(5):  # timeout, retry, timeout, retry, timeout: give up and refund (answered below)
        next_timer(d)
    d.send("PaymentRefunded", "o1", refunded("o1"))
    return d


def test_inventory_never_answering_gives_up_into_refund() -> None:
    d = inventory_silent(saga())
    recs = records(d)
    assert recs == ["ReserveInventory"] * 2 + ["RefundPayment", "OrderCancelled"]  # attempt 1 taken before
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "inventory timed out after 3 attempts")


# --- shipping -------------------------------------------------------------------------------------------------


def reserved_order(defn: Definition) -> Driver:
    d = paid_order(defn)
    d.advance(10)
    d.send("InventoryReserved", "o1", reserved("o1"))
    d.take()
    return d


def shipping_fails(defn: Definition) -> Driver:
    d = reserved_order(defn)
    d.advance(10)
    d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1, "address rejected"))
    d.advance(10)
    d.send("InventoryReleased", "o1", released("o1"))
    d.advance(10)
    d.send("PaymentRefunded", "o1", refunded("o1"))
    return d


def test_shipping_failure_compensates_newest_first_one_at_a_time() -> None:
    d = reserved_order(saga())
    d.advance(10)
    r = d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1, "address rejected"))
    assert [o.record for o in r.outputs] == ["ReleaseInventory"]  # not RefundPayment yet
    assert r.outputs[0].payload == {"order_id": "o1", "reservation_id": "res-o1", "attempt": 1}
    assert r.state is not None and r.state.completed_steps == ("payment", "inventory")

    # the refund's acknowledgement cannot overtake: payment is not being undone yet
    early = d.send("PaymentRefunded", "o1", refunded("o1"))
    assert early.failure is not None and early.failure.reason == "invalid_transition"

    d.advance(10)
    r = d.send("InventoryReleased", "o1", released("o1"))
    assert [o.record for o in r.outputs] == ["RefundPayment"]
    assert r.state is not None and r.state.state == "compensating" and r.state.completed_steps == ("payment",)
    assert [t.name for t in r.timers_cancelled] == ["ReleaseInventory.timeout"]

    d.advance(10)
    r = d.send("PaymentRefunded", "o1", refunded("o1"))
    assert [o.record for o in r.outputs] == ["OrderCancelled"]
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "shipping failed: address rejected")
    assert s.completed_steps == () and s.timers == ()
    undo = [o.record for o in d.outputs if o.record in ("ReleaseInventory", "RefundPayment")]
    assert undo == ["ReleaseInventory", "RefundPayment"]  # reverse order of completion


def shipping_retries(defn: Definition) -> Driver:
    d = reserved_order(defn)
    d.advance(10)
    d.send("ShippingFailed", "o1", failed("o1", "TRANSIENT", 1))
    next_timer(d)  # attempt 2
    next_timer(d)  # attempt 2 times out
    next_timer(d)  # attempt 3
    d.send("ShippingLabelCreated", "o1", labelled("o1"))
    return d


def test_shipping_transient_failure_and_timeout_retry_then_complete() -> None:
    d = shipping_retries(saga())
    assert [o.payload.get("attempt") for o in d.take() if o.record == "CreateShippingLabel"] == [2, 3]
    assert d.state("o1").state == "completed"  # type: ignore[union-attr]


def shipping_exhausted(defn: Definition) -> Driver:
    d = reserved_order(defn)
    for attempt in (1, 2):
        d.advance(10)
        d.send("ShippingFailed", "o1", failed("o1", "TRANSIENT", attempt, "carrier down"))
        next_timer(d)  # the next attempt goes out
    next_timer(d)  # attempt 3 times out: give up
    d.send("InventoryReleased", "o1", released("o1"))
    d.send("PaymentRefunded", "o1", refunded("o1"))
    return d


def test_shipping_retries_exhausted_compensate_everything() -> None:
    d = shipping_exhausted(saga())
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "shipping timed out after 3 attempts")
    assert ("shipping", "CreateShippingLabelTimedOut", "compensating") in path(d)


# --- compensations that struggle ------------------------------------------------------------------------------


def refund_retried(defn: Definition) -> Driver:
    d = paid_order(defn)
    d.send("InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1, "out of stock"))
    next_timer(d)  # refund attempt 1 unanswered: timeout
    next_timer(d)  # attempt 2 goes out
    d.send("PaymentRefunded", "o1", refunded("o1"))
    return d


def test_unanswered_refund_is_retried_with_the_same_command_id() -> None:
    d = refund_retried(saga())
    refunds = [o for o in d.take() if o.record == "RefundPayment"]
    assert [o.payload["attempt"] for o in refunds] == [1, 2]
    assert refunds[0].command_id == refunds[1].command_id
    assert d.state("o1").state == "cancelled"  # type: ignore[union-attr]


def refund_stuck(defn: Definition) -> Driver:
    d = paid_order(defn)
    d.send("InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1, "out of stock"))
    d.advance(10_000)
    return d


def test_compensation_that_gives_up_ends_stuck_for_an_operator() -> None:
    d = refund_stuck(saga())
    recs = records(d)
    assert recs.count("RefundPayment") == 3 and "OrderCancelled" not in recs
    s = d.state("o1")
    assert s is not None and s.state == "compensation_failed" and s.timers == ()
    assert s.reason == "inventory failed: out of stock; compensation of payment timed out after 3 attempts"
    assert s.completed_steps == ("payment",)  # still in effect: the operator must refund by hand


def release_stuck(defn: Definition) -> Driver:
    d = reserved_order(defn)
    d.send("ShippingFailed", "o1", failed("o1", "PERMANENT", 1, "address rejected"))
    d.advance(10_000)
    return d


def test_release_that_never_answers_ends_stuck_before_refunding() -> None:
    d = release_stuck(saga())
    recs = records(d)
    assert recs.count("ReleaseInventory") == 3 and "RefundPayment" not in recs
    s = d.state("o1")
    assert s is not None and s.state == "compensation_failed"
    assert s.completed_steps == ("payment", "inventory")


# --- retry budget ---------------------------------------------------------------------------------------------


def test_budget_deadline_gives_up_while_an_attempt_is_outstanding() -> None:
    defn = saga(payment_timeout_ms=60_000, payment_retry={"max_attempts": 5, "base_ms": 100, "budget_ms": 2_000})
    d = start(defn)
    assert {t.name for t in d.timers("o1")} == {"MakePayment.timeout", "MakePayment.deadline"}
    d.advance(2_000)
    s = d.state("o1")
    assert s is not None and (s.state, s.reason) == ("cancelled", "payment retry budget exhausted after 1 attempt")
    assert path(d)[-1] == ("paying", "MakePaymentDeadlineExceeded", "cancelled")


def test_budget_stops_a_retry_that_would_start_after_the_deadline() -> None:
    defn = saga(payment_retry={"max_attempts": 10, "base_ms": 10_000, "cap_ms": 10_000, "budget_ms": 500})
    d = start(defn)
    # the backoff after attempt 1 lies in [0, 10 s]; with a 500 ms budget almost every key gives up at once
    for i in range(20):
        key = f"k{i}"
        d.send("OrderPlaced", key, placed(key))
        d.send("PaymentFailed", key, failed(key, "TRANSIENT", 1, "busy"))
        s = d.state(key)
        assert s is not None
        retry = s.timer("MakePayment.retry")
        deadline = defn.commands["MakePayment"].retry.budget_ms
        if s.state == "paying":
            assert retry is not None and retry.due_at < d.now_ms + (deadline or 0)
        else:
            assert (s.state, s.reason) == ("cancelled", "payment failed after 1 attempt: busy")
    assert sum(d.state(f"k{i}").state == "cancelled" for i in range(20)) >= 15  # type: ignore[union-attr]


# --- every transition -----------------------------------------------------------------------------------------

SCENARIOS: list[Callable[[Definition], Driver]] = [
    happy, payment_transient_then_paid, payment_exhausted, payment_permanent, payment_timeout,
    inventory_short, inventory_retries, inventory_silent, shipping_fails, shipping_retries, shipping_exhausted,
    refund_retried, refund_stuck, release_stuck,
]


def payment_timeouts_retried(defn: Definition) -> Driver:
    d = start(defn)
    d.advance(10_000)
    return d


@pytest.mark.parametrize("retry_on_timeout", [False, True])
def test_scenarios_take_every_transition_of_the_saga(retry_on_timeout: bool) -> None:
    defn = saga(retry_payment_on_timeout=retry_on_timeout)
    scenarios = [*SCENARIOS, payment_timeouts_retried] if retry_on_timeout else SCENARIOS
    taken: set[tuple[str, str, str]] = set()
    for scenario in scenarios:
        for state in scenario(defn).states.values():
            taken |= {(h.from_state, h.event, h.to_state) for h in state.history}
    declared = {(r.source, r.event, r.target) for r in defn.rules}
    assert len(declared) == len(defn.rules)  # (state, event, target) names each rule uniquely here
    assert declared - taken == set()
    assert taken - declared == set()
