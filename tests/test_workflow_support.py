"""Helpers shared by the workflow tests: order-saga payloads, short saga parameters, and fake services.

No tests live here; pytest imports it like any test module, so the others can ``from test_workflow_support
import ...``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.workflow import Definition, Driver, Output, create

# Short, round numbers so tests reason in milliseconds: every reply timeout is 1 s, backoff base 100 ms.
FAST: dict[str, Any] = {
    "payment_timeout_ms": 1_000,
    "reply_timeout_ms": 1_000,
    "payment_retry": {"max_attempts": 3, "base_ms": 100, "cap_ms": 1_000},
    "inventory_retry": {"max_attempts": 3, "base_ms": 100, "cap_ms": 1_000},
    "shipping_retry": {"max_attempts": 3, "base_ms": 100, "cap_ms": 1_000},
    "compensation_retry": {"max_attempts": 3, "base_ms": 100, "cap_ms": 1_000},
}


def saga(**overrides: Any) -> Definition:
    return create("orders", {**FAST, **overrides})


def placed(key: str, amount: int = 1250) -> dict[str, Any]:
    return {
        "order_id": key,
        "customer_id": f"cust-{key}",
        "amount_cents": amount,
        "currency": "EUR",
        "items": [{"sku": "sku-1", "quantity": 2}, {"sku": "sku-2", "quantity": 1}],
    }


def paid(key: str, amount: int = 1250) -> dict[str, Any]:
    return {"order_id": key, "payment_id": f"pay-{key}", "amount_cents": amount}


def failed(key: str, failure: str, attempt: int, reason: str = "busy") -> dict[str, Any]:
    return {"order_id": key, "reason": reason, "failure": failure, "attempt": attempt}


def reserved(key: str) -> dict[str, Any]:
    return {"order_id": key, "reservation_id": f"res-{key}"}


def labelled(key: str) -> dict[str, Any]:
    return {"order_id": key, "label_id": f"lbl-{key}", "tracking_number": f"TRK-{key}"}


def refunded(key: str, amount: int = 1250) -> dict[str, Any]:
    return {"order_id": key, "payment_id": f"pay-{key}", "amount_cents": amount}


def released(key: str) -> dict[str, Any]:
    return {"order_id": key, "reservation_id": f"res-{key}"}


@dataclass(frozen=True)
class Fate:
    """How the services will treat one order (generated per order, judged by an independent oracle)."""

    payment_transient: int = 0  # transient payment failures before the outcome below
    payment_permanent: bool = False
    payment_silent: bool = False  # the payment service never answers
    inventory_short: bool = False  # InventoryUnavailable(PERMANENT)
    shipping_fails: bool = False  # ShippingFailed(PERMANENT)


Reply = tuple[str, dict[str, Any]]


def fake_services(fates: Mapping[str, Fate]) -> Callable[[Output], Reply | None]:
    """Service behaviour: each command gets the reply its order's fate dictates (None: no reply)."""

    def answer(cmd: Output) -> Reply | None:
        key, fate, attempt = cmd.key, fates[cmd.key], cmd.payload.get("attempt", 1)
        if cmd.record == "MakePayment":
            if fate.payment_silent:
                return None
            if attempt <= fate.payment_transient:
                return "PaymentFailed", failed(key, "TRANSIENT", attempt, "gateway busy")
            if fate.payment_permanent:
                return "PaymentFailed", failed(key, "PERMANENT", attempt, "card declined")
            return "PaymentCompleted", paid(key)
        if cmd.record == "ReserveInventory":
            if fate.inventory_short:
                return "InventoryUnavailable", failed(key, "PERMANENT", attempt, "out of stock")
            return "InventoryReserved", reserved(key)
        if cmd.record == "CreateShippingLabel":
            if fate.shipping_fails:
                return "ShippingFailed", failed(key, "PERMANENT", attempt, "address rejected")
            return "ShippingLabelCreated", labelled(key)
        if cmd.record == "RefundPayment":
            return "PaymentRefunded", refunded(key)
        if cmd.record == "ReleaseInventory":
            return "InventoryReleased", released(key)
        return None  # OrderCompleted / OrderCancelled: results, nobody answers

    return answer


def simulate(
    driver: Driver,
    answer: Callable[[Output], Reply | None],
    arrivals: Iterable[tuple[int, str, str, dict[str, Any]]] = (),
    latency_ms: int = 5,
) -> None:
    """Run inputs arriving at given times plus service replies ``latency_ms`` after each command, firing timers
    in between, until nothing is pending: a whole little world in virtual time."""
    pending = [(at, i, name, key, payload) for i, (at, name, key, payload) in enumerate(arrivals)]
    heapq.heapify(pending)
    seq = len(pending)
    for _ in range(1_000_000):
        for out in driver.take():
            reply = answer(out)
            if reply is not None:
                seq += 1
                heapq.heappush(pending, (driver.now_ms + latency_ms, seq, reply[0], out.key, reply[1]))
        timer = driver.next_due()
        if pending and (timer is None or pending[0][0] <= timer):
            at, _, name, key, payload = heapq.heappop(pending)
            driver.advance_to(at)
            driver.send(name, key, payload)
        elif timer is not None:
            driver.advance_to(timer)
        else:
            return
    raise AssertionError("the world did not settle")
