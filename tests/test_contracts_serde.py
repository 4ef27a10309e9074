"""Schemas, wire format and evolution: real registry over HTTP, real produce/consume on the broker."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.contracts.serde import header
from streams.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    RecordError,
    SchemaMismatchError,
    SchemaRegistryUnavailableError,
    UnknownMagicByteError,
    UnknownSchemaError,
)
from streams.processors.avro import default_schemas
from streams.registry import RegistryServer

SCHEMAS = default_schemas()
V2 = SCHEMAS / "evolution" / "OrderPlaced.v2.avsc"


@pytest.fixture
def registry(kafka: KafkaSettings, unique: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        yield server


def envelope(kind: str, key: str = "o-1") -> dict[str, Any]:
    return {"id": f"{kind}-{key}", "entity_key": key, "type": kind, "schema_version": 1,
            "occurred_at": 1_700_000_000_000, "correlation_id": key, "causation_id": None}


def order_placed(**extra: Any) -> dict[str, Any]:
    return {"envelope": envelope("OrderPlaced"), "order_id": "o-1", "customer_id": "c-9", "amount_cents": 4200,
            "currency": "EUR", "items": [{"sku": "sku-1", "quantity": 2}], **extra}


def fields(catalogue: Catalogue, name: str) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in catalogue.get(name).schema["fields"]}


def schema_dir(tmp_path: Path, suffix: str) -> Path:
    """A copy of schemas/ whose topics carry ``suffix``, so tests on one broker never share topics."""
    d = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, d)
    doc = yaml.safe_load((d / "subjects.yaml").read_text())
    doc["topics"] = {f"{t}.{suffix}": names for t, names in doc["topics"].items()}
    (d / "subjects.yaml").write_text(yaml.safe_dump(doc))
    return d


def produce(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    admin = AdminClient(kafka.common())
    for fut in admin.create_topics([NewTopic(topic, 1, -1)]).values():
        fut.result(10)
    producer = Producer(kafka.common())
    for v in values:
        producer.produce(topic, v, key=b"o-1")
    assert producer.flush(10) == 0


def consume(kafka: KafkaSettings, topic: str, n: int) -> list[bytes]:
    consumer = Consumer({**kafka.common(), "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + 15
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append(msg.value())
    consumer.close()
    assert len(out) == n
    return out


# -- the catalogue -----------------------------------------------------------------------------------------------


AGREED = {
    "OrderPlaced": ["order_id", "customer_id", "amount_cents", "currency", "items"],
    "PaymentCompleted": ["order_id", "payment_id", "amount_cents"],
    "PaymentFailed": ["order_id", "reason", "failure", "attempt"],
    "InventoryReserved": ["order_id", "reservation_id"],
    "InventoryUnavailable": ["order_id", "reason", "failure", "attempt"],
    "ShippingLabelCreated": ["order_id", "label_id", "tracking_number"],
    "ShippingFailed": ["order_id", "reason", "failure", "attempt"],
    "PaymentRefunded": ["order_id", "payment_id", "amount_cents"],
    "InventoryReleased": ["order_id", "reservation_id"],
    "OrderCompleted": ["order_id"],
    "OrderCancelled": ["order_id", "reason"],
    "MakePayment": ["order_id", "amount_cents", "currency", "attempt"],
    "RefundPayment": ["order_id", "payment_id", "amount_cents", "attempt"],
    "ReserveInventory": ["order_id", "items", "attempt"],
    "ReleaseInventory": ["order_id", "reservation_id", "attempt"],
    "CreateShippingLabel": ["order_id", "attempt"],
}


def test_catalogue_holds_every_saga_record_with_the_agreed_fields() -> None:
    cat = Catalogue.load(SCHEMAS)
    for name, expected in AGREED.items():
        full = cat.resolve(name)
        assert full == f"streams.orders.{name}"
        got = fields(cat, full)
        assert next(iter(got)) == "envelope" and got["envelope"]["name"] == "streams.common.Envelope"
        assert [f for f in got if f in expected] == expected, name
        for money in ("amount_cents",):
            if money in got:
                assert got[money] == "long"
        if "attempt" in got:
            assert got["attempt"] == "int"
        if "failure" in got:
            failure = got["failure"]
            kind = failure if isinstance(failure, dict) else cat.get(failure).schema
            assert kind["name"] == "streams.orders.FailureKind"
            assert kind["symbols"] == ["TRANSIENT", "PERMANENT"]
    env = {f["name"]: f for f in cat.get("streams.common.Envelope").schema["fields"]}
    assert list(env) == ["id", "entity_key", "type", "schema_version", "occurred_at", "correlation_id",
                         "causation_id"]
    assert env["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert env["causation_id"]["type"] == ["null", "string"] and env["causation_id"]["default"] is None
    timer = fields(cat, "streams.common.TimerFired")
    assert list(timer) == ["envelope", "timer", "fires_event", "due_at", "attempt"]
    items = fields(cat, "OrderPlaced")["items"]
    assert items["type"] == "array" and items["items"]["name"] == "streams.orders.LineItem"


def test_order_state_is_versionable() -> None:
    from streams.examples.orders.workflow import order_saga

    # derived by the engine from the saga's declared data fields (no .avsc file of its own)
    assert "streams.orders.OrderState" not in Catalogue.load(SCHEMAS).names
    cat = Catalogue.load(SCHEMAS).with_record(order_saga().stored_record(), "orders-state")
    state = {f["name"]: f for f in cat.get("OrderState").schema["fields"]}
    for nullable in ("payment_id", "reservation_id", "label_id", "tracking_number", "reason"):
        assert state[nullable]["type"] == ["null", "string"] and state[nullable]["default"] is None
    assert state["attempts"]["type"] == {"type": "map", "values": "int"}
    assert state["timers"]["type"]["items"]["name"] == "streams.orders.Timer"
    assert [f["name"] for f in state["history"]["type"]["items"]["fields"]] == ["at", "from_state", "event",
                                                                                 "to_state"]
    assert "schema_version" in state and state["created_at"]["type"] == "long"
    # the evolution candidate is not live
    assert "channel" not in fields(cat, "OrderPlaced")
    assert fields(Catalogue.load(SCHEMAS, overrides=[V2]), "OrderPlaced")["channel"] == "string"


def test_catalogue_reports_broken_schema_directories(tmp_path: Path) -> None:
    (tmp_path / "A.avsc").write_text(json.dumps(
        {"type": "record", "name": "A", "namespace": "t", "fields": [{"name": "b", "type": "t.Missing"}]}))
    with pytest.raises(ConfigError, match=r"t\.A references unknown type\(s\) \['t\.Missing'\]"):
        Catalogue.load(tmp_path)
    (tmp_path / "A.avsc").write_text("{oops")
    with pytest.raises(ConfigError, match=r"A\.avsc"):
        Catalogue.load(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Catalogue.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no schema named 'Nope'"):
        Catalogue.load(SCHEMAS).resolve("Nope")


# -- evolution -----------------------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("strategy", ["record", "topic"])
def test_v1_and_v2_producers_and_readers_coexist_on_one_topic(
    kafka: KafkaSettings, registry: RegistryServer, unique: str, tmp_path: Path, strategy: str
) -> None:
    d = schema_dir(tmp_path, unique)
    v1 = Catalogue.load(d)
    v2 = Catalogue.load(d, overrides=[V2])
    topic = f"orders.events.{unique}"
    client = RegistryClient(registry.url)
    old, new = Serde(client, v1, strategy), Serde(client, v2, strategy)

    written_v1 = old.encoder(topic, "OrderPlaced")(order_placed())
    written_v2 = new.encoder(topic, "OrderPlaced")(order_placed(channel="mobile"))
    paid = old.encoder(topic, "PaymentCompleted")(
        {"envelope": envelope("PaymentCompleted"), "order_id": "o-1", "payment_id": "p-1", "amount_cents": 4200})
    assert written_v1[1:5] != written_v2[1:5]  # two writer schemas, two ids
    produce(kafka, topic, [written_v1, written_v2, paid])
    values = consume(kafka, topic, 3)
    assert values == [written_v1, written_v2, paid]

    as_v1 = [old.decode(v) for v in values]
    as_v2 = [new.decode(v) for v in values]
    assert [n for n, _ in as_v1] == ["streams.orders.OrderPlaced", "streams.orders.OrderPlaced",
                                     "streams.orders.PaymentCompleted"]
    assert as_v1[0][1] == as_v1[1][1]  # the v1 reader drops the field it does not know
    assert "channel" not in as_v1[1][1]
    assert as_v2[0][1]["channel"] == "web"  # the v2 reader fills the default
    assert as_v2[1][1]["channel"] == "mobile"
    assert as_v2[2] == as_v1[2]
    # a reader schema can also be chosen per record name, e.g. a v1 service reading OrderPlaced as v2
    picky = Serde(client, v1, strategy, readers={"streams.orders.OrderPlaced": v2.get("OrderPlaced")})
    assert [picky.decode(v)[1].get("channel") for v in values[:2]] == ["web", "mobile"]
    assert as_v1[0][1]["items"] == [{"sku": "sku-1", "quantity": 2}]
    subjects = RegistryClient(registry.url).subjects()
    expected = f"{topic}-streams.orders.OrderPlaced" if strategy == "topic" else "streams.orders.OrderPlaced"
    assert old.subject(topic, "OrderPlaced") == expected
    assert expected in subjects
    assert RegistryClient(registry.url).versions(expected) == [1, 2]


@pytest.mark.kafka
def test_registry_enforces_evolution_rules(registry: RegistryServer) -> None:
    client = RegistryClient(registry.url)
    cat = Catalogue.load(SCHEMAS)
    subject = "streams.orders.OrderPlaced"
    client.register(subject, cat.get("OrderPlaced").text)

    def without(field: str) -> str:
        schema = json.loads(cat.get("OrderPlaced").text)
        schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
        return json.dumps(schema)

    def adding_required(field: str) -> str:
        schema = json.loads(cat.get("OrderPlaced").text)
        schema["fields"].append({"name": field, "type": "string"})
        return json.dumps(schema)

    # BACKWARD (the default): a new required field cannot read old data
    with pytest.raises(IncompatibleSchemaError, match=r"field streams\.orders\.OrderPlaced\.channel has no default") \
            as info:
        client.register(subject, adding_required("channel"))
    assert (info.value.code, info.value.http_status) == (409, 409)
    # removing customer_id (no default) breaks every reader still on v1: rejected under FORWARD and FULL ...
    for level in ("FORWARD", "FULL"):
        client.set_compatibility(level, subject)
        with pytest.raises(IncompatibleSchemaError, match=r"OrderPlaced\.customer_id has no default"):
            client.register(subject, without("customer_id"))
    # ... while BACKWARD, by Avro's (and Confluent's) definition, allows it: the new reader just ignores it
    client.set_compatibility("BACKWARD", subject)
    ok, messages = client.test_compatibility(subject, without("customer_id"))
    assert ok and messages == []
    # v2 from schemas/evolution passes FULL_TRANSITIVE
    client.set_compatibility("FULL_TRANSITIVE", subject)
    v2 = Catalogue.load(SCHEMAS, overrides=[V2]).get("OrderPlaced").text
    assert client.register(subject, v2) == client.lookup(subject, v2).id
    assert client.versions(subject) == [1, 2]


# -- typed errors --------------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_undecodable_values_raise_typed_dead_letter_errors(registry: RegistryServer) -> None:
    serde = Serde(RegistryClient(registry.url), Catalogue.load(SCHEMAS), "record")
    good = serde.encode("orders.events", "OrderPlaced", order_placed())
    schema_id = int.from_bytes(good[1:5], "big")

    cases: list[tuple[bytes | None, type[DecodeError], str]] = [
        (b"hello, world", UnknownMagicByteError, "unknown magic byte 0x68"),
        (b"\x01" + good[1:], UnknownMagicByteError, "unknown magic byte 0x01"),
        (b"", DecodeError, "empty value"),
        (None, DecodeError, "empty value"),
        (b"\x00\x00\x01", DecodeError, "3 bytes, shorter than the 5-byte Confluent header"),
        (header(987_654) + good[5:], UnknownSchemaError, "schema id 987654 is not known"),
        (good[:5] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", SchemaMismatchError,
         f"does not match schema id {schema_id}"),
        (good[:-3], SchemaMismatchError, f"does not match schema id {schema_id}"),
        (good + b"\x00junk", SchemaMismatchError, "5 trailing bytes"),
    ]
    for data, error, words in cases:
        with pytest.raises(error, match=words.replace("(", r"\(")) as info:
            serde.decode(data)
        assert isinstance(info.value, RecordError) and info.value.dead_letter and not info.value.retryable
    assert serde.decode(good) == ("streams.orders.OrderPlaced", order_placed())


@pytest.mark.kafka
def test_union_branch_out_of_range_is_a_mismatch(registry: RegistryServer) -> None:
    # records written as a branch of the topic's union (how multi-type topics were written before each record type
    # got its own subject) still decode
    catalogue = Catalogue.load(SCHEMAS)
    serde = Serde(RegistryClient(registry.url), catalogue, "topic")
    union = catalogue.topic_entry("payments.commands")
    assert union is not None and union.branches[1] == "streams.orders.RefundPayment"
    record = serde.encode("payments.commands", "RefundPayment", {
        "envelope": envelope("RefundPayment"), "order_id": "o-1", "payment_id": "p", "amount_cents": 1,
        "attempt": 1})
    good = header(serde.registry.register("payments.commands-value", union.text)) + b"\x02" + record[5:]
    assert serde.decode(good) == serde.decode(record)
    assert serde.decode(good)[0] == "streams.orders.RefundPayment"
    with pytest.raises(SchemaMismatchError, match="union branch 5 of 2"):
        serde.decode(good[:5] + b"\x0a" + good[6:])


@pytest.mark.kafka
def test_encoding_a_record_that_does_not_fit_names_it(registry: RegistryServer) -> None:
    serde = Serde(RegistryClient(registry.url), Catalogue.load(SCHEMAS), "topic")
    encode = serde.encoder("orders.events", "OrderPlaced")
    bad = order_placed()
    del bad["customer_id"]
    with pytest.raises(EncodeError, match=r"cannot encode streams\.orders\.OrderPlaced for topic orders\.events"):
        encode(bad)
    with pytest.raises(ConfigError, match=r"MakePayment is not declared for topic orders\.events"):
        serde.encoder("orders.events", "MakePayment")


@pytest.mark.kafka
def test_ids_are_resolved_once_and_an_unreachable_registry_is_retryable(kafka: KafkaSettings, unique: str) -> None:
    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        url = server.url
        serde = Serde(RegistryClient(url), Catalogue.load(SCHEMAS), "topic")
        value = serde.encode("orders.events", "OrderPlaced", order_placed())
        assert serde.decode(value)[1] == order_placed()
        other = serde.encode("payments.commands", "MakePayment", {
            "envelope": envelope("MakePayment"), "order_id": "o-1", "amount_cents": 1, "currency": "EUR",
            "attempt": 1})
    # the registry is gone: cached encoders and known ids keep working, an unseen id is a retryable error
    assert serde.decode(value)[1] == order_placed()
    assert serde.encode("orders.events", "OrderPlaced", order_placed())[:5] == value[:5]
    fresh = Serde(RegistryClient(url), Catalogue.load(SCHEMAS), "topic")
    with pytest.raises(SchemaRegistryUnavailableError, match="unreachable") as info:
        fresh.decode(other)
    assert info.value.retryable and not info.value.dead_letter
