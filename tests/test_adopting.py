"""Adopting streams from an existing service: stock confluent-kafka clients, with their defaults, against the
registry and the workflow's topics; and the examples docs/adopting.md shows, run as they are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError as ConfluentRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.ops.status import partition_for
from streams.processors.avro import default_schemas
from streams.records import H_EVENT_ID
from streams.registry import RegistryServer
from support import adopter_schemas, orders_topology, saga_cluster

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
PARTITIONS = 4


SCHEMAS = adopter_schemas()


@pytest.fixture
def registry(kafka: KafkaSettings, unique: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka, topic=f"_schemas-{unique}") as server:
        yield server


def suffixed(tmp_path: Path, suffix: str) -> Catalogue:
    """The project's contracts with every topic named ``<topic>.<suffix>``: tests on one cluster share no topic."""
    d = tmp_path / "schemas"
    shutil.copytree(default_schemas(), d)
    doc = yaml.safe_load((d / "subjects.yaml").read_text())
    doc["topics"] = {f"{t}.{suffix}": names for t, names in doc["topics"].items()}
    (d / "subjects.yaml").write_text(yaml.safe_dump(doc))
    return Catalogue.load(d)


def register_contracts(url: str, catalogue: Catalogue, level: str = "FULL") -> None:
    """What ``streams schemas register --compatibility FULL`` does."""
    client = RegistryClient(url)
    for subject, entry in catalogue.subjects("topic").items():
        client.set_compatibility(level, subject)
        client.register(subject, entry.text)


def create_topics(kafka: KafkaSettings, *names: str) -> None:
    admin = AdminClient(kafka.common())  # held until the futures resolve: a collected client cancels them
    for fut in admin.create_topics([NewTopic(n, PARTITIONS, -1) for n in names]).values():
        fut.result(15)


def read(kafka: KafkaSettings, topic: str, n: int) -> list[Message]:
    consumer = Consumer({**kafka.common(), "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[Message] = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            out.append(msg)
    consumer.close()
    assert len(out) == n, f"{topic}: {len(out)} of {n} records"
    return out


def headers(msg: Message) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in msg.headers() or () if v is not None}


def order(order_id: str = "o-1") -> dict[str, Any]:
    return SCHEMAS.order_placed(order_id, "c-9", 4200, 1_700_000_000_000)[1]  # type: ignore[no-any-return]


def test_a_stock_serializer_with_defaults_produces_into_a_multi_type_topic(
        registry: RegistryServer, unique: str, tmp_path: Path) -> None:
    catalogue = suffixed(tmp_path, unique)
    events = f"orders.events.{unique}"
    register_contracts(registry.url, catalogue)
    client = RegistryClient(registry.url)
    union_before = client.version(f"{events}-value")

    sr = SchemaRegistryClient({"url": registry.url})
    ctx = SerializationContext(events, MessageField.VALUE)
    placed = AvroSerializer(sr, SCHEMAS.ORDER_PLACED)(order(), ctx)  # defaults: <topic>-value, auto-register
    payment = {"envelope": SCHEMAS.envelope("e-2", "o-1", "PaymentCompleted", 1_700_000_000_001, "cmd-1"),
               "order_id": "o-1", "payment_id": "p-1", "amount_cents": 4200}
    paid = AvroSerializer(sr, SCHEMAS.PAYMENT_COMPLETED)(payment, ctx)
    assert placed is not None and paid is not None

    # each record went to its own subject, checked there; the union under <topic>-value, which use.latest.version
    # readers rely on, and its level are untouched
    assert client.version(f"{events}-value") == union_before
    assert client.versions(f"{events}-value") == [1]
    assert client.compatibility(f"{events}-value") == "FULL"
    own = client.version(f"{events}-streams.orders.OrderPlaced")
    assert own.id == int.from_bytes(placed[1:5], "big")
    assert json.loads(own.schema) == json.loads(SCHEMAS.ORDER_PLACED)  # as the producer sent it

    # the saga's decoder reads them by the writer's id, into its own reader schemas
    serde = Serde(RegistryClient(registry.url), catalogue)
    assert serde.decode(placed) == ("streams.orders.OrderPlaced", order())
    assert serde.decode(paid) == ("streams.orders.PaymentCompleted", payment)
    # a use.latest.version reader reads them through the topic's union; a lookup-only producer finds the id
    latest = AvroDeserializer(SchemaRegistryClient({"url": registry.url}), conf={"use.latest.version": True})
    assert latest(placed, ctx)["customer_id"] == "c-9" and latest(paid, ctx)["payment_id"] == "p-1"
    lookup_only = AvroSerializer(SchemaRegistryClient({"url": registry.url}), SCHEMAS.ORDER_PLACED,
                                 conf={"auto.register.schemas": False})
    assert lookup_only(order(), ctx) == placed

    # compatibility is still enforced: a breaking OrderPlaced and a record the topic does not carry are refused
    broken = json.loads(SCHEMAS.ORDER_PLACED)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "customer_id"]
    with pytest.raises(ConfluentRegistryError) as info:
        AvroSerializer(SchemaRegistryClient({"url": registry.url}), json.dumps(broken))(order(), ctx)
    assert info.value.http_status_code == 409 and "customer_id" in info.value.error_message
    # and a compatibility test of <topic>-value judges as registering would
    for check in (sr.test_compatibility, sr.test_compatibility_all_versions):
        assert check(f"{events}-value", Schema(SCHEMAS.ORDER_PLACED, "AVRO")) is True
        assert check(f"{events}-value", Schema(json.dumps(broken), "AVRO")) is False
    make_payment = catalogue.get("MakePayment").text
    with pytest.raises(ConfluentRegistryError) as info:
        AvroSerializer(SchemaRegistryClient({"url": registry.url}), make_payment)(
            {"envelope": payment["envelope"], "order_id": "o-1", "amount_cents": 1, "currency": "EUR",
             "attempt": 1}, ctx)
    assert info.value.http_status_code == 409
    assert client.subjects() == sorted(catalogue.subjects("topic"))  # nothing registered by the refusals


def test_a_stock_producer_is_checked_against_the_union_alone_when_streams_registered_only_that(
        registry: RegistryServer, unique: str, tmp_path: Path) -> None:
    """A deployment whose registry holds only the union (as earlier versions registered multi-type topics)."""
    catalogue = suffixed(tmp_path, unique)
    topic = f"inventory.commands.{unique}"
    union = catalogue.topic_entry(topic)
    assert union is not None and len(union.branches) == 2
    client = RegistryClient(registry.url)
    client.register(f"{topic}-value", union.text)
    ctx = SerializationContext(topic, MessageField.VALUE)
    reserve = {"envelope": SCHEMAS.envelope("c-1", "o-1", "ReserveInventory", 1, None), "order_id": "o-1",
               "items": [{"sku": "a", "quantity": 1}], "attempt": 1}
    data = AvroSerializer(SchemaRegistryClient({"url": registry.url}), catalogue.get("ReserveInventory").text)(
        reserve, ctx)
    assert data is not None
    assert client.versions(f"{topic}-value") == [1]
    assert client.version(f"{topic}-streams.orders.ReserveInventory").id == int.from_bytes(data[1:5], "big")
    assert Serde(client, catalogue).decode(data) == ("streams.orders.ReserveInventory", reserve)
    # the branch's readers are protected: a change they cannot read is refused under the union's level
    client.set_compatibility("FORWARD", f"{topic}-value")
    changed = json.loads(catalogue.get("ReserveInventory").text)
    changed["fields"] = [f for f in changed["fields"] if f["name"] != "attempt"]
    with pytest.raises(ConfluentRegistryError) as info:
        AvroSerializer(SchemaRegistryClient({"url": registry.url}), json.dumps(changed))(reserve, ctx)
    assert info.value.http_status_code == 409 and "attempt" in info.value.error_message
    assert client.versions(f"{topic}-streams.orders.ReserveInventory") == [1]


def streams_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "streams", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_schemas_check_still_gates_every_subject_after_stock_producers_registered(
        registry: RegistryServer, unique: str, tmp_path: Path) -> None:
    catalogue = suffixed(tmp_path, unique)
    register_contracts(registry.url, catalogue)
    events = f"orders.events.{unique}"
    AvroSerializer(SchemaRegistryClient({"url": registry.url}), SCHEMAS.ORDER_PLACED)(
        order(), SerializationContext(events, MessageField.VALUE))
    d = Path(catalogue.source)
    ok = streams_cli("schemas", "check", "--dir", str(d), "--registry", registry.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok         {events}-streams.orders.OrderPlaced (FULL)" in ok.stdout

    placed = d / "orders" / "events" / "OrderPlaced.avsc"
    schema = json.loads(placed.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "customer_id"]
    placed.write_text(json.dumps(schema))
    broken = streams_cli("schemas", "check", "--dir", str(d), "--registry", registry.url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"BREAKING   {events}-streams.orders.OrderPlaced (FULL)" in broken.stdout
    assert f"BREAKING   {events}-value (FULL)" in broken.stdout
    assert "streams.orders.OrderPlaced.customer_id has no default" in broken.stdout


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": ""})


def group_settings() -> list[str]:
    """A quicker group join than librdkafka's defaults give (the embedded broker waits out the session timeout);
    6 s is the least a stock Kafka broker accepts (group.min.session.timeout.ms)."""
    return ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]


def test_the_adoption_examples_produce_and_consume_beside_the_engine(
        kafka: KafkaSettings, registry: RegistryServer, unique: str, tmp_path: Path) -> None:
    catalogue = suffixed(tmp_path, unique)
    events, commands, results = (f"{t}.{unique}" for t in ("orders.events", "payments.commands", "orders.results"))
    register_contracts(registry.url, catalogue)
    create_topics(kafka, events, commands, results)
    where = ["--bootstrap", kafka.bootstrap_servers, "--registry", registry.url]

    # keys whose murmur2 partition differs from librdkafka's default (CRC32), so a wrong partitioner shows
    assert all(partition_for(k, PARTITIONS) != zlib.crc32(k) % PARTITIONS for k in (b"o-2", b"o-3"))
    placed = run_example("adopt_producer", *where, "--topic", events, "--order", "o-2", "--order", "o-3")
    assert placed.returncode == 0, placed.stdout + placed.stderr
    serde = Serde(RegistryClient(registry.url), catalogue)
    for msg in read(kafka, events, 2):
        key = msg.key()
        assert msg.partition() == partition_for(key, PARTITIONS)  # where the engine's own records for it go
        name, record = serde.decode(msg.value())
        assert name == "streams.orders.OrderPlaced" and record["order_id"] == key.decode()
        assert headers(msg)[H_EVENT_ID] == record["envelope"]["id"].encode() == b"order-placed/" + key

    # what the engine writes (its encoders, its id header), read by a stock AvroDeserializer with its defaults
    cmd = {"envelope": {"id": "cmd-1", "entity_key": "o-2", "type": "MakePayment", "schema_version": 1,
                        "occurred_at": 1_700_000_000_000, "correlation_id": "o-2", "causation_id": "order-placed/o-2"},
           "order_id": "o-2", "amount_cents": 4200, "currency": "EUR", "attempt": 1}
    done = {"envelope": {**cmd["envelope"], "id": "res-1", "type": "OrderCompleted"}, "order_id": "o-2"}
    producer = Producer({**kafka.common(), "partitioner": "murmur2_random"})
    producer.produce(commands, serde.encode(commands, "MakePayment", cmd), b"o-2", headers=[(H_EVENT_ID, b"cmd-1")])
    producer.produce(results, serde.encode(results, "OrderCompleted", done), b"o-2", headers=[(H_EVENT_ID, b"res-1")])
    assert producer.flush(15) == 0

    consumed = run_example("adopt_consumer", *where, "--group", f"adopt-{unique}", "--topic", commands,
                           "--topic", results, "--reply", "--reply-topic", events, "--max", "2", "--timeout", "60",
                           *group_settings())
    assert consumed.returncode == 0, consumed.stdout + consumed.stderr
    lines = {d["type"]: d for d in map(json.loads, consumed.stdout.splitlines())}
    assert set(lines) == {"MakePayment", "OrderCompleted"}
    assert lines["MakePayment"]["record"]["amount_cents"] == 4200 and lines["MakePayment"]["streams_id"] == "cmd-1"
    assert lines["MakePayment"]["record"]["envelope"]["occurred_at"].startswith("2023-11-14 22:13:20")
    assert lines["OrderCompleted"]["record"]["order_id"] == "o-2"

    # the reply: in the order's partition, decodable by the saga, its id derived from the command's
    reply = [m for m in read(kafka, events, 3) if headers(m)[H_EVENT_ID] == b"cmd-1/reply"]
    assert len(reply) == 1 and reply[0].partition() == partition_for(b"o-2", PARTITIONS)
    name, record = serde.decode(reply[0].value())
    assert name == "streams.orders.PaymentCompleted"
    assert record["envelope"]["causation_id"] == "cmd-1" and record["amount_cents"] == 4200


def test_an_adopted_payment_service_takes_part_in_the_saga(tmp_path: Path) -> None:
    """The examples beside the real engine: the orchestrator and the reference inventory and shipping services run,
    the adopter's service places an order and answers payments. The saga's topic names are fixed by its workflow
    definition, so it gets a broker of its own (support.saga_cluster, as tests/test_saga_integration.py)."""
    with saga_cluster(tmp_path, orders_topology(PARTITIONS, {"payment_timeout_ms": 120_000})) as (
            kafka, registry_url, topology, env):
        procs: list[subprocess.Popen[bytes]] = []
        for name, args in (("orchestrator", ["worker", "--processor", "orchestrator"]),
                           ("inventory", ["service", "inventory"]), ("shipping", ["service", "shipping"])):
            with open(tmp_path / f"{name}.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "streams", *args, "--topology", str(topology),
                     "--state-dir", str(tmp_path / name), "--commit-interval-ms", "50"],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
        try:
            # the orchestrator declares its input topic's records at startup (what `streams schemas register`
            # does in a deployment); a producer that starts earlier finds no topic contract to be filed by
            client = RegistryClient(registry_url)
            deadline = time.monotonic() + 60
            while "orders.events-value" not in client.subjects() and time.monotonic() < deadline:
                time.sleep(0.2)
            where = ["--bootstrap", kafka.bootstrap_servers, "--registry", registry_url]
            placed = run_example("adopt_producer", *where, "--order", "o-2")
            assert placed.returncode == 0, placed.stdout + placed.stderr
            consumed = run_example("adopt_consumer", *where, "--group", "adopted-payments",
                                   "--topic", "payments.commands", "--topic", "orders.results", "--reply",
                                   "--max", "2", "--timeout", "120", *group_settings(), timeout=240)
            logs = "".join((tmp_path / f"{n}.log").read_text(errors="replace")[-2000:]
                           for n in ("orchestrator", "inventory", "shipping"))
            assert consumed.returncode == 0, consumed.stdout + consumed.stderr + logs
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    lines = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [(d["topic"], d["type"], d["key"]) for d in lines] == [
        ("payments.commands", "MakePayment", "o-2"), ("orders.results", "OrderCompleted", "o-2")]
    command = lines[0]
    assert command["record"]["amount_cents"] == 4200
    assert command["record"]["envelope"]["causation_id"] == "order-placed/o-2"  # the adopter's event id
    assert command["streams_id"] == command["record"]["envelope"]["id"]
