"""The order saga fed by an existing service's producer: librdkafka's default partitioner (consistent_random) and
no ``streams-id`` header, only the contract's envelope id, and values from confluent-kafka's stock
``AvroSerializer`` with its default settings. Before re-routing, an order placed on another
partition than murmur2's never saw its payment reply (dead-lettered as unknown_entity) and timed out with the
charge never refunded. Now every order ends as the oracle predicts, a re-sent order (same envelope id) is
applied once, and a second, different order under the same key is dead-lettered as ``conflicting_start``.

A broker and registry of its own, like tests/test_saga_integration.py: the saga's topic names are fixed by the
workflow definition, so it cannot share a broker with other tests.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.contracts import RegistryClient
from streams.kafka.partition import crc32_partition_of, partition_of
from streams.lab.loadgen import order_placed
from streams.processors.avro import make_serde
from streams.records import H_DLQ_MESSAGE, H_DLQ_REASON, header
from support import adopter_schemas, read_all, saga_cluster, wait_until
from test_saga_integration import SEED, TOPOLOGY, Saga, _matches, oracle

pytestmark = pytest.mark.kafka
Serialize = Callable[[dict[str, object]], bytes]


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Saga, int, Serialize]]:
    """The saga (orchestrator with /metrics, three services) on a broker and registry of its own."""
    tmp = tmp_path_factory.mktemp("adopt")
    with saga_cluster(tmp, TOPOLOGY) as (kafka, registry_url, topo, env):
        saga = Saga(kafka, make_serde({}), env, topo, tmp)
        seed = ["--seed", str(SEED)]
        saga.start("payment", ["service", "payment", *seed, "--transient-rate", "0.10",
                               "--permanent-rate", "0.03"])
        saga.start("inventory", ["service", "inventory", *seed, "--shortage-rate", "0.05"])
        saga.start("shipping", ["service", "shipping", *seed])
        port = saga.start_orchestrator()
        # the orchestrator files its input topic's contract at startup; a stock serializer is filed under it
        wait_until(lambda: "orders.events-value" in RegistryClient(registry_url).subjects(), 60,
                   "the orchestrator to register orders.events' contract")
        # an existing service's serializer: confluent-kafka's AvroSerializer with its default settings
        # (TopicNameStrategy, auto.register.schemas) over the adopter's own copy of the contract
        stock = AvroSerializer(SchemaRegistryClient({"url": registry_url}), adopter_schemas().ORDER_PLACED)
        ctx = SerializationContext("orders.events", MessageField.VALUE)

        def serialize(record: dict[str, object]) -> bytes:
            return bytes(stock(record, ctx))

        try:
            yield saga, port, serialize
        finally:
            for p in saga.procs.values():
                p.terminate()
            for p in saga.procs.values():
                p.wait(30)


def legacy_producer(saga: Saga) -> Producer:
    """An existing service's producer: confluent-kafka's stock settings (partitioner consistent_random)."""
    return Producer({"bootstrap.servers": saga.kafka.bootstrap_servers})


def send_order(p: Producer, serialize: Serialize, oid: str, amount: int, envelope_id: str | None = None) -> None:
    body = order_placed(oid, f"cust-{oid}", amount, int(time.time() * 1000))
    if envelope_id is not None:
        body["envelope"] = {**body["envelope"], "id": envelope_id}  # type: ignore[dict-item]
    p.produce("orders.events", serialize(body), oid.encode())


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def dead_letters(saga: Saga) -> dict[str, list[tuple[bytes, str]]]:
    out: dict[str, list[tuple[bytes, str]]] = {}
    for key, _v, h in read_all(saga.kafka, "orders.dlq", 1):
        out.setdefault((key or b"").decode(), []).append(
            (header(h, H_DLQ_REASON) or b"", (header(h, H_DLQ_MESSAGE) or b"").decode()))
    return out


def test_two_hundred_orders_from_a_stock_producer_and_serializer_end_as_predicted_each_applied_once(
        adopted: tuple[Saga, int, Serialize]) -> None:
    saga, port, serialize = adopted
    ids = [f"adopt-{i:03d}" for i in range(200)]
    misplaced = [o for o in ids if crc32_partition_of(o.encode(), 4) != partition_of(o.encode(), 4)]
    assert len(misplaced) > 100  # most of them land where the orchestrator does not look for them
    p = legacy_producer(saga)
    for oid in ids:
        amount = 100 + (sum(oid.encode()) * 37) % 90_000
        send_order(p, serialize, oid, amount)
        send_order(p, serialize, oid, amount)  # re-sent, as a producer retrying without idempotence would
    assert p.flush(30) == 0
    wait_until(lambda: len(saga.results().keys() & set(ids)) == len(ids), 240, "every order to end", 1.0)
    results = saga.results()
    wrong = {o: (oracle(o), results[o]) for o in ids if not _matches(oracle(o), results[o])}
    assert not wrong, f"{len(wrong)} orders ended differently than predicted: {list(wrong.items())[:5]}"
    # one outcome per order, one charge per order that got past payment, one refund per compensation
    outcomes = Counter((k or b"").decode() for k, _v, _h in read_all(saga.kafka, "orders.results", 4))
    assert all(outcomes[o] == 1 for o in ids), {o: outcomes[o] for o in ids if outcomes[o] != 1}
    payments = {k: orjson.loads(v) for k, v in saga.store("orders-payment", "payments.commands", "payments").items()}
    for oid in ids:
        effects = Counter(e[0] for e in payments.get(oid, {}).get("effects", []))
        charged = oracle(oid) == ("completed", None) or oracle(oid)[1] == "out of stock"
        assert effects["MakePayment"] == (1 if charged else 0), oid
        assert effects["RefundPayment"] == (1 if oracle(oid)[1] == "out of stock" else 0), oid
    assert not dead_letters(saga).keys() & set(ids), "nothing of these orders may be dead-lettered"
    assert metric(port, "streams_misrouted_total") == 2 * len(misplaced)
    assert metric(port, "streams_duplicates_total") >= len(ids)  # each second copy, known by its envelope id


def test_a_second_different_order_under_an_existing_key_is_dead_lettered_as_conflicting_start(
        adopted: tuple[Saga, int, Serialize]) -> None:
    saga, _port, serialize = adopted
    oid = "adopt-conflict"
    p = legacy_producer(saga)
    send_order(p, serialize, oid, 5000)
    assert p.flush(30) == 0
    wait_until(lambda: oid in saga.results(), 60, "the order to end", 1.0)
    send_order(p, serialize, oid, 5000, envelope_id="placed-again-same")  # another id, the same order: a duplicate
    send_order(p, serialize, oid, 7777, envelope_id="placed-other")  # another id, another order: a conflict
    assert p.flush(30) == 0
    wait_until(lambda: oid in dead_letters(saga), 60, "the conflicting order to be dead-lettered", 1.0)
    time.sleep(1)  # the duplicate, if it were wrongly dead-lettered too, would be there by now
    [(reason, message)] = dead_letters(saga)[oid]
    assert reason == b"conflicting_start"
    assert "'placed-other'" in message and "amount_cents" in message
    outcomes = Counter((k or b"").decode() for k, _v, _h in read_all(saga.kafka, "orders.results", 4))
    assert outcomes[oid] == 1
