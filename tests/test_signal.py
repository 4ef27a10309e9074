"""Signals from outside: the payload checks that run before anything is produced (pure: the catalogue only).

The end-to-end path (CLI and HTTP into a running workflow on a real broker) is in test_signal_e2e.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, RegistrySettings, Serde
from streams.ops.signal import SignalError, Signaller, parse_data
from streams.processors.avro import default_schemas

SCHEMAS = default_schemas()


@dataclass
class _Target:
    input_topic: str
    serde: Serde
    handled_events: frozenset[str]


@pytest.fixture(scope="module")
def signaller() -> Signaller:
    # The registry is never contacted by check(): an unreachable URL proves it.
    serde = Serde(RegistryClient(RegistrySettings(url="http://127.0.0.1:1")), Catalogue.load(SCHEMAS))
    target = _Target("orders.events", serde, frozenset({"OrderPlaced", "PaymentCompleted"}))
    return Signaller(KafkaSettings("127.0.0.1:1"), target)


PAID = {"order_id": "o-1", "payment_id": "pay-1", "amount_cents": 100}


def test_a_valid_payload_becomes_the_event_with_its_envelope(signaller: Signaller) -> None:
    record = signaller.check("o-1", "PaymentCompleted", PAID, "evt-1")
    assert record["envelope"]["id"] == "evt-1" and record["envelope"]["entity_key"] == "o-1"
    assert record["envelope"]["type"] == "PaymentCompleted"
    assert {k: record[k] for k in PAID} == PAID
    fresh = signaller.check("o-1", "PaymentCompleted", PAID)
    assert fresh["envelope"]["id"].startswith("signal-") and fresh["envelope"]["id"] != record["envelope"]["id"]


@pytest.mark.parametrize(("key", "event", "data", "field", "words"), [
    ("o-1", "PaymentCompleted", {"order_id": "o-1", "payment_id": "p"}, "amount_cents", "requires"),
    ("o-1", "PaymentCompleted", {**PAID, "amount": 5}, "amount", "no field"),
    ("o-1", "PaymentCompleted", {**PAID, "amount_cents": "a lot"}, "amount_cents", "amount_cents"),
    ("o-1", "ShippingFailed", {}, "type", "does not handle"),
    ("", "PaymentCompleted", PAID, "key", "empty"),
])
def test_a_bad_payload_is_refused_naming_the_field(signaller: Signaller, key: str, event: str,
                                                   data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SignalError) as err:
        signaller.check(key, event, data)
    assert err.value.field == field
    assert words in str(err.value)


@pytest.mark.parametrize(("text", "words"), [("{", "not JSON"), ("[1]", "JSON object"), ('"x"', "JSON object")])
def test_data_must_be_a_json_object(text: str, words: str) -> None:
    with pytest.raises(SignalError, match=words):
        parse_data(text)
