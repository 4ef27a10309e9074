"""The order saga, the reference workflow: pay, reserve stock, ship -- or undo what was done, newest first.

Every event of an order arrives on ``orders.events`` keyed by ``order_id`` (services reply there, and timers
fire there as TimerFired records), so one order has one total order of events that a replay reproduces.
Outcomes go to ``orders.results``, a separate topic, so they never loop back into the saga.

Decisions the issue left open:

* A payment timeout cancels the order by default (the issue: "payment timeout -> OrderCancelled"): the
  window is the customer-facing deadline, and the payment was never confirmed, so there is nothing to
  refund. ``retry_payment_on_timeout=True`` instead retries while attempts remain (safe: every attempt
  carries the same command id, so the payment service answers a repeat with its earlier result).
* A PaymentCompleted arriving after the order was cancelled is not swallowed: it is dead-lettered as an
  invalid transition, because money was taken for a cancelled order and someone must refund it.
* Out-of-order replies are not expected (a service answers a command that the saga's own log caused), so
  nothing parks by default. ``park_replies_ms > 0`` holds a reply that arrives before the order can accept it
  (before its OrderPlaced, or ahead of an earlier step's reply, as when several producers feed the topic) for
  up to that long, then dead-letters it if it is still not accepted.
* Inventory and shipping commands, and both compensations, have a reply timeout too and retry on it: a lost
  command must not leave an order waiting forever. A compensation that gives up ends the order in
  ``compensation_failed`` for an operator; nothing is emitted then, since the customer outcome is unsettled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.workflow.context import StepContext
from streams.workflow.definition import Definition
from streams.workflow.dsl import WorkflowBuilder, data_fields, emit, issue, record
from streams.workflow.retry import RetryPolicy

INPUT_TOPIC = "orders.events"
PAYMENTS = "payments.commands"
INVENTORY = "inventory.commands"
SHIPPING = "shipping.commands"
RESULTS = "orders.results"

# The order's data, declared once: the engine derives the stored-state record from it (the same fields, in the
# same order, as the hand-written OrderState record it replaces, whose name it keeps: stored orders restore as
# they are). A field added later needs a default, and the version goes up.
DATA = {
    "order_id": str,
    "customer_id": str,
    "amount_cents": int,
    "currency": str,
    "items": {"type": "array", "items": "streams.orders.LineItem"},  # an Avro type, as JSON
    "payment_id": str | None,
    "reservation_id": str | None,
    "label_id": str | None,
    "tracking_number": str | None,
}
ORDER_FIELDS = ("order_id", "customer_id", "amount_cents", "currency", "items")
DATA_FIELDS = tuple(DATA)
STATE_RECORD = "streams.orders.OrderState"
STATE_VERSION = 1

INPUT_EVENTS = (
    "OrderPlaced",
    "PaymentCompleted",
    "PaymentFailed",
    "InventoryReserved",
    "InventoryUnavailable",
    "ShippingLabelCreated",
    "ShippingFailed",
    "PaymentRefunded",
    "InventoryReleased",
)


PAYMENT_RETRY = RetryPolicy(max_attempts=3, base_ms=1_000, cap_ms=30_000)
STEP_RETRY = RetryPolicy(max_attempts=5, base_ms=500, cap_ms=30_000)
COMPENSATION_RETRY = RetryPolicy(max_attempts=10, base_ms=1_000, cap_ms=300_000)


def _cancelled(ctx: StepContext) -> Mapping[str, Any]:
    return {"order_id": ctx.data["order_id"], "reason": ctx.reason or "cancelled"}


def order_saga(
    *,
    payment_timeout_ms: int = 15 * 60_000,
    retry_payment_on_timeout: bool = False,
    payment_retry: RetryPolicy | Mapping[str, Any] = PAYMENT_RETRY,
    inventory_retry: RetryPolicy | Mapping[str, Any] = STEP_RETRY,
    shipping_retry: RetryPolicy | Mapping[str, Any] = STEP_RETRY,
    compensation_retry: RetryPolicy | Mapping[str, Any] = COMPENSATION_RETRY,
    reply_timeout_ms: int = 5 * 60_000,
    history_limit: int = 50,
    park_replies_ms: int = 0,
) -> Definition:
    """Build the order saga; parameters are the knobs tests shorten (milliseconds throughout)."""
    pay = RetryPolicy.coerce(payment_retry)
    comp = RetryPolicy.coerce(compensation_retry)
    wf = WorkflowBuilder(
        "orders",
        input_topic=INPUT_TOPIC,
        initial="new",
        unknown_entity="dead_letter",
        history_limit=history_limit,
        description="order saga: MakePayment -> ReserveInventory -> CreateShippingLabel, compensated newest first",
        version=STATE_VERSION,
        state_record=STATE_RECORD,
    )
    wf.data(**DATA)
    wf.states("new", "paying", "reserving", "shipping", "compensating")
    wf.terminal("completed", on_enter=[emit("OrderCompleted", RESULTS, data_fields("order_id"))])
    wf.terminal("cancelled", on_enter=[emit("OrderCancelled", RESULTS, _cancelled)])
    wf.terminal("compensation_failed")
    wf.events(*INPUT_EVENTS)

    wf.command(
        "MakePayment", topic=PAYMENTS, payload=data_fields("order_id", "amount_cents", "currency"), retry=pay,
        timeout_ms=payment_timeout_ms, timeout_event="PaymentTimedOut", retry_on_timeout=retry_payment_on_timeout,
    )
    wf.command(
        "ReserveInventory", topic=INVENTORY, payload=data_fields("order_id", "items"),
        retry=RetryPolicy.coerce(inventory_retry), timeout_ms=reply_timeout_ms,
    )
    wf.command(
        "CreateShippingLabel", topic=SHIPPING, payload=data_fields("order_id"),
        retry=RetryPolicy.coerce(shipping_retry), timeout_ms=reply_timeout_ms,
    )
    wf.command(
        "RefundPayment", topic=PAYMENTS, payload=data_fields("order_id", "payment_id", "amount_cents"),
        retry=comp, timeout_ms=reply_timeout_ms,
    )
    wf.command(
        "ReleaseInventory", topic=INVENTORY, payload=data_fields("order_id", "reservation_id"),
        retry=comp, timeout_ms=reply_timeout_ms,
    )

    wf.on("OrderPlaced", "new", "paying", do=[record(*ORDER_FIELDS), issue("MakePayment")])
    wf.step(
        "payment", state="paying", command="MakePayment",
        succeeded="PaymentCompleted", failed="PaymentFailed", record=("payment_id",),
        next_state="reserving", then=[issue("ReserveInventory")],
        compensation="RefundPayment", compensated="PaymentRefunded",
    )
    wf.step(
        "inventory", state="reserving", command="ReserveInventory",
        succeeded="InventoryReserved", failed="InventoryUnavailable", record=("reservation_id",),
        next_state="shipping", then=[issue("CreateShippingLabel")],
        compensation="ReleaseInventory", compensated="InventoryReleased",
    )
    wf.step(
        "shipping", state="shipping", command="CreateShippingLabel",
        succeeded="ShippingLabelCreated", failed="ShippingFailed", record=("label_id", "tracking_number"),
        next_state="completed",
    )
    wf.on_failure(cancelled="cancelled", compensating="compensating", stuck="compensation_failed")
    if int(park_replies_ms) > 0:
        wf.park(*INPUT_EVENTS[1:], max_ms=int(park_replies_ms))
    return wf.build()
