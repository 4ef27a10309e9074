"""The order saga through ``streams.Driver``: every path ends where it should, with no broker.

``streams init`` copies this file into a new project (its imports then name the project's package); edit it
with the workflow. The Driver feeds events, moves time (timers fire) and shows states and outputs.
"""

from __future__ import annotations

from typing import Any

from streams import Driver
from streams.examples.orders.workflow import RESULTS, order_saga


def placed(key: str) -> dict[str, Any]:
    return {"order_id": key, "customer_id": "c1", "amount_cents": 1250, "currency": "EUR",
            "items": [{"sku": "sku-1", "quantity": 2}]}


def started(key: str = "o1") -> Driver:
    driver = Driver(order_saga(payment_timeout_ms=60_000))
    driver.send("OrderPlaced", key, placed(key))
    return driver


def commands(driver: Driver) -> list[tuple[str, str]]:
    return [(o.record, o.topic) for o in driver.take()]


def state_of(driver: Driver, key: str = "o1") -> str:
    state = driver.state(key)
    assert state is not None, f"no entity {key}"
    return state.state


def test_happy_path_pays_reserves_ships_and_completes() -> None:
    driver = started()
    assert state_of(driver) == "paying"
    assert commands(driver) == [("MakePayment", "payments.commands")]
    driver.send("PaymentCompleted", "o1", {"order_id": "o1", "payment_id": "p1", "amount_cents": 1250})
    assert (state_of(driver), commands(driver)) == ("reserving", [("ReserveInventory", "inventory.commands")])
    driver.send("InventoryReserved", "o1", {"order_id": "o1", "reservation_id": "r1"})
    assert (state_of(driver), commands(driver)) == ("shipping", [("CreateShippingLabel", "shipping.commands")])
    driver.send("ShippingLabelCreated", "o1", {"order_id": "o1", "label_id": "l1", "tracking_number": "T1"})
    assert state_of(driver) == "completed"
    [done] = driver.take()
    assert (done.record, done.topic, done.payload["order_id"]) == ("OrderCompleted", RESULTS, "o1")


def test_a_declined_payment_cancels_the_order() -> None:
    driver = started()
    driver.take()
    driver.send("PaymentFailed", "o1", {"order_id": "o1", "reason": "card declined", "failure": "PERMANENT",
                                        "attempt": 1})
    assert state_of(driver) == "cancelled"
    [cancelled] = driver.take()
    assert (cancelled.record, cancelled.topic) == ("OrderCancelled", RESULTS)


def test_out_of_stock_refunds_the_payment_then_cancels() -> None:
    driver = started()
    driver.send("PaymentCompleted", "o1", {"order_id": "o1", "payment_id": "p1", "amount_cents": 1250})
    driver.take()
    driver.send("InventoryUnavailable", "o1", {"order_id": "o1", "reason": "out of stock", "failure": "PERMANENT",
                                               "attempt": 1})
    assert (state_of(driver), commands(driver)) == ("compensating", [("RefundPayment", "payments.commands")])
    driver.send("PaymentRefunded", "o1", {"order_id": "o1", "payment_id": "p1", "amount_cents": 1250})
    assert state_of(driver) == "cancelled"


def test_an_unanswered_payment_times_out_and_cancels() -> None:
    driver = started()
    driver.take()
    driver.advance(59_999)
    assert state_of(driver) == "paying"
    driver.advance(1)  # the payment timer fires: no answer within payment_timeout_ms
    assert state_of(driver) == "cancelled"
    [cancelled] = driver.take()
    assert cancelled.record == "OrderCancelled"
