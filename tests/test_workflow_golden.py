"""Golden histories: recorded input scripts replayed against the current engine and compared, Temporal-style.

Each ``tests/golden/workflow_*.json`` holds a script (inputs at virtual times), the workflow and its
parameters, and what happened: every step's outcome, outputs and timer changes, and the final states. A change
in behaviour fails here with the first differing step. To accept a deliberate change, regenerate and review
the diff::

    UPDATE_GOLDEN=1 pytest tests/test_workflow_golden.py && git diff tests/golden/
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from streams.workflow import create
from streams.workflow.driver import golden_document, replay_golden
from test_workflow_support import FAST, failed, labelled, paid, placed, refunded, released, reserved

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def send(at: int, name: str, key: str, payload: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "key": key, "payload": payload}
    if event_id is not None:
        body["event_id"] = event_id
    return {"at": at, "send": body}


SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "orders_happy": [
        send(0, "OrderPlaced", "o1", placed("o1")),
        send(40, "PaymentCompleted", "o1", paid("o1")),
        send(90, "InventoryReserved", "o1", reserved("o1")),
        send(150, "ShippingLabelCreated", "o1", labelled("o1")),
        {"at": 5_000},
    ],
    "orders_payment_retry": [
        send(0, "OrderPlaced", "o1", placed("o1")),
        send(30, "PaymentFailed", "o1", failed("o1", "TRANSIENT", 1, "gateway busy")),
        send(400, "PaymentFailed", "o1", failed("o1", "TRANSIENT", 2, "gateway busy")),
        send(900, "PaymentCompleted", "o1", paid("o1")),
        send(950, "InventoryReserved", "o1", reserved("o1")),
        send(990, "ShippingLabelCreated", "o1", labelled("o1")),
        {"at": 5_000},
    ],
    "orders_payment_timeout": [
        send(0, "OrderPlaced", "o1", placed("o1")),
        {"at": 1_500},
        send(1_600, "PaymentCompleted", "o1", paid("o1")),  # too late: dead-lettered
    ],
    "orders_inventory_refund": [
        send(0, "OrderPlaced", "o1", placed("o1")),
        send(20, "PaymentCompleted", "o1", paid("o1")),
        send(60, "InventoryUnavailable", "o1", failed("o1", "PERMANENT", 1, "out of stock")),
        {"at": 1_100},  # the refund is not acknowledged in time: retried
        send(1_300, "PaymentRefunded", "o1", refunded("o1")),
        {"at": 5_000},
    ],
    "orders_shipping_compensation": [
        send(0, "OrderPlaced", "o1", placed("o1")),
        send(20, "PaymentCompleted", "o1", paid("o1")),
        send(40, "InventoryReserved", "o1", reserved("o1")),
        send(60, "ShippingFailed", "o1", failed("o1", "TRANSIENT", 1, "carrier down")),
        {"at": 1_400},  # attempt 2 unanswered: timeout, attempt 3
        send(1_450, "ShippingFailed", "o1", failed("o1", "PERMANENT", 3, "address rejected")),
        send(1_500, "InventoryReleased", "o1", released("o1")),
        send(1_550, "PaymentRefunded", "o1", refunded("o1")),
        {"at": 5_000},
    ],
    "orders_duplicates_and_stale": [
        send(0, "OrderPlaced", "o1", placed("o1"), event_id="placed-1"),
        send(5, "OrderPlaced", "o1", placed("o1"), event_id="placed-1"),  # redelivered
        send(6, "OrderPlaced", "o1", placed("o1"), event_id="placed-2"),  # re-sent by the shop
        send(10, "PaymentFailed", "o1", failed("o1", "TRANSIENT", 1)),
        send(11, "PaymentFailed", "o1", failed("o1", "TRANSIENT", 1)),  # repeated while backing off
        send(300, "PaymentFailed", "o1", failed("o1", "PERMANENT", 1)),  # answers a superseded attempt
        send(310, "PaymentCompleted", "o1", paid("o1")),
        send(320, "PaymentCompleted", "o1", paid("o1")),
        send(330, "ShippingLabelCreated", "o1", labelled("o1")),  # not now: dead-lettered
        send(340, "InventoryReserved", "o2", reserved("o2")),  # unknown order: dead-lettered
        send(400, "InventoryReserved", "o1", reserved("o1")),
        send(410, "InventoryReserved", "o1", reserved("o1")),
        # a TimerFired for the payment timeout of attempt 1, long cancelled: no effect
        send(420, "PaymentTimedOut", "o1", {"timer": "MakePayment.timeout", "fires_event": "PaymentTimedOut",
                                            "due_at": 1_000, "attempt": 1}),
        send(500, "ShippingLabelCreated", "o1", labelled("o1")),
        {"at": 5_000},
    ],
    "orders_interleaved": [
        send(0, "OrderPlaced", "a", placed("a", 100)),
        send(10, "OrderPlaced", "b", placed("b", 200)),
        send(20, "OrderPlaced", "c", placed("c", 300)),
        send(30, "PaymentCompleted", "b", paid("b", 200)),
        send(40, "PaymentFailed", "c", failed("c", "PERMANENT", 1, "card declined")),
        send(60, "InventoryUnavailable", "b", failed("b", "TRANSIENT", 1, "recount")),
        {"at": 1_200},
        send(1_250, "InventoryReserved", "b", reserved("b")),
        send(1_260, "ShippingLabelCreated", "b", labelled("b")),
        {"at": 5_000},
    ],
}


def _path(name: str) -> Path:
    return GOLDEN / f"workflow_{name}.json"


def _record(name: str) -> dict[str, Any]:
    return golden_document(create("orders", FAST), "orders", FAST, SCRIPTS[name])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_recorded_history_replays_identically(name: str) -> None:
    path = _path(name)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(_record(name), indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"{path} is missing: record it deliberately with UPDATE_GOLDEN=1"
    doc = json.loads(path.read_text())
    assert doc["script"] == json.loads(json.dumps(SCRIPTS[name])), (
        f"the scenario {name!r} changed since it was recorded; regenerate with UPDATE_GOLDEN=1 and review the diff"
    )
    problems = replay_golden(create(doc["workflow"], doc["params"]), doc)
    assert not problems, "\n".join(problems)


def test_every_golden_file_has_a_scenario() -> None:
    files = {p.name for p in GOLDEN.glob("workflow_*.json")}
    assert files == {_path(n).name for n in SCRIPTS}


def test_the_replayer_reports_a_behaviour_change() -> None:
    doc = json.loads(_path("orders_payment_retry").read_text())
    assert replay_golden(create("orders", FAST), doc) == []
    tampered = copy.deepcopy(doc)
    tampered["expected"]["transcript"][2]["outputs"][0]["payload"]["attempt"] = 7
    problems = replay_golden(create("orders", FAST), tampered)
    assert problems and problems[0].startswith("transcript[2] differs")
    # a definition that behaves differently (slower backoff) is caught against the recorded history
    slower = {**FAST, "payment_retry": {"max_attempts": 3, "base_ms": 250, "cap_ms": 1_000}}
    assert replay_golden(create("orders", slower), doc)


def test_recordings_cover_the_interesting_outcomes() -> None:
    outcomes = set()
    for name in SCRIPTS:
        doc = json.loads(_path(name).read_text())
        outcomes |= {e["outcome"] for e in doc["expected"]["transcript"]}
        outcomes |= {s["state"] for s in doc["expected"]["states"].values()}
    assert {
        "applied", "ignored:duplicate_event", "ignored:stale_reply", "ignored:stale_timer", "failed:invalid_transition",
        "failed:unknown_entity", "completed", "cancelled",
    } <= outcomes
