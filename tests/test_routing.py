"""Adopting streams beside existing producers (pure parts): Kafka's murmur2, key formats, the misrouting
diagnosis, the topology's declarations, and a conflicting second start event.

What runs against a broker (librdkafka's own choices, re-routing, the DLQ option, metrics) is in
tests/test_routing_kafka.py; the saga end to end is in tests/test_routing_saga.py.
"""

from __future__ import annotations

import zlib

import pytest

from streams.errors import BadKeyError, ConflictingStartError, MisroutedError, TopologyError
from streams.kafka.partition import crc32_partition_of, murmur2, partition_of
from streams.records import H_EVENT_ID, InputRecord, header
from streams.runtime import ingest
from streams.runtime.metrics import Metrics
from streams.topology import parse
from streams.workflow import Driver
from test_workflow_support import placed, saga

# Kafka's own test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def avro_key(text: str, schema_id: int = 8) -> bytes:
    """A Confluent-framed Avro string key, as KafkaAvroSerializer writes one."""
    data = text.encode()
    n = len(data) << 1  # zigzag of a non-negative length
    size = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            size.append(b | 0x80)
        else:
            size.append(b)
            break
    return b"\x00" + schema_id.to_bytes(4, "big") + bytes(size) + data


@pytest.mark.parametrize(("data", "expected"), list(KAFKA_VECTORS.items()))
def test_murmur2_matches_the_java_clients_values(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_covers_every_tail_length_and_the_empty_key() -> None:
    # Lengths 0..3 past a multiple of four take the three tail branches; values from the Java client as
    # published with other ports (akka's Murmur2Spec checks the same Java results).
    assert [murmur2(s) for s in (b"1", b"12", b"123", b"1234", b"12345")] == [
        -1993445489, 126087238, -267702483, -1614185708, -1188365604]
    assert murmur2(b"") == 275646681  # seed ^ 0, mixed: what Utils.murmur2(new byte[0]) returns
    assert partition_of(b"foobar", 4) == (-790332482 & 0x7FFFFFFF) % 4
    assert crc32_partition_of(b"foobar", 7) == zlib.crc32(b"foobar") % 7


def router(formats: dict[str, str] | None = None, misrouted: str = "reroute", partitions: int = 4
           ) -> tuple[ingest.Router, Metrics, list[str]]:
    logs: list[str] = []
    metrics = Metrics("g")
    r = ingest.Router(formats or {}, "murmur2", misrouted, metrics, logs.append)
    r.partitions["t"] = partitions
    return r, metrics, logs


def rec(key: bytes, partition: int, headers: tuple[tuple[str, bytes | None], ...] = ()) -> InputRecord:
    return InputRecord("t", partition, 5, key, b"v", 0, headers)


def test_a_record_on_its_keys_partition_passes_with_its_own_key_bytes() -> None:
    r, metrics, logs = router()
    key = b"order-1"
    assert r.admit(rec(key, partition_of(key, 4))) is key
    assert not metrics.misrouted_by_topic and not logs


def test_a_record_off_its_keys_partition_is_refused_with_its_home_and_the_producers_fix() -> None:
    r, metrics, logs = router()
    # a key librdkafka's default partitioner (CRC32) puts elsewhere than murmur2 does
    key = next(k for k in (f"order-{i}".encode() for i in range(100)) if crc32_partition_of(k, 4) != partition_of(k, 4))
    with pytest.raises(MisroutedError) as info:
        r.admit(rec(key, crc32_partition_of(key, 4)))
    assert info.value.home == partition_of(key, 4) and info.value.reason == "misrouted"
    assert "consistent_random, CRC32" in str(info.value) and "partitioner=murmur2_random" in str(info.value)
    assert metrics.misrouted_by_topic["t"] == 1
    # logged once per topic and producer, not once per record
    for _ in range(3):
        with pytest.raises(MisroutedError):
            r.admit(rec(key, crc32_partition_of(key, 4)))
    with pytest.raises(MisroutedError):
        r.admit(rec(key, crc32_partition_of(key, 4), (("client.id", b"legacy-shop"),)))
    assert len(logs) == 2 and "legacy-shop" in logs[1] and "do not name their client id" in logs[0]
    assert metrics.misrouted_by_topic["t"] == 5
    metrics.sync()
    assert b'streams_misrouted_total{group="g",topic="t"} 5.0' in metrics.exposition()


def test_no_check_with_one_partition_an_unknown_count_or_partitioner_none() -> None:
    r, _m, _l = router(partitions=1)
    assert r.admit(rec(b"k", 0)) == b"k"
    r.partitions.clear()
    assert r.admit(rec(b"k", 3)) == b"k"
    off = ingest.Router({}, "none", "reroute", Metrics("g"), print)
    off.partitions["t"] = 4
    assert off.admit(rec(b"k", (partition_of(b"k", 4) + 1) % 4)) == b"k"


def test_a_string_topic_refuses_an_avro_or_json_key_and_says_what_it_looks_like() -> None:
    r, _m, _l = router(partitions=1)
    with pytest.raises(BadKeyError) as info:
        r.admit(rec(avro_key("order-1"), 0))
    assert "looks like Confluent-framed Avro (schema id 8); the topology declares string for t" in str(info.value)
    assert info.value.reason == "bad_key"
    with pytest.raises(BadKeyError, match="looks like JSON"):
        r.admit(rec(b'{"order_id": "order-1"}', 0))
    with pytest.raises(BadKeyError, match="NUL byte"):
        r.admit(rec(b"\x00ab", 0))
    # text that only starts like JSON is a string key like any other
    assert r.admit(rec(b"{not json", 0)) == b"{not json"


def test_avro_and_json_keys_decode_to_the_entity_key_and_are_placed_by_it() -> None:
    r, _m, _l = router({"t": "avro"})
    raw = avro_key("order-7")
    assert r.admit(rec(raw, partition_of(b"order-7", 4))) == b"order-7"
    long = "x" * 300  # a two-byte length
    assert r.admit(rec(avro_key(long), partition_of(long.encode(), 4))) == long.encode()
    with pytest.raises(MisroutedError) as info:  # placed by the encoded bytes: not where the entity lives
        r.admit(rec(raw, (partition_of(b"order-7", 4) + 1) % 4))
    assert info.value.home == partition_of(b"order-7", 4)
    with pytest.raises(BadKeyError, match="looks like a plain string; the topology declares avro"):
        r.admit(rec(b"order-7", partition_of(b"order-7", 4)))
    # the engine's own records (a reply, a timer: they carry its id header) key the entity by the plain string
    assert r.admit(rec(b"order-7", partition_of(b"order-7", 4), ((H_EVENT_ID, b"reply-1"),))) == b"order-7"
    with pytest.raises(BadKeyError, match="looks like JSON"):
        r.admit(rec(b'"order-7"', 0, ((H_EVENT_ID, b"reply-1"),)))
    with pytest.raises(BadKeyError, match=r"Confluent-framed \(schema id 8\), but not an Avro string"):
        r.admit(rec(avro_key("order-7") + b"trailing", 0))
    j, _m, _l = router({"t": "json"}, partitions=1)
    assert j.admit(rec(b'"order-9"', 0)) == b"order-9"
    assert j.admit(rec(b'{"order_id": "order-9"}', 0)) == b"order-9"
    with pytest.raises(BadKeyError, match="declares json"):
        j.admit(rec(b'{"a": "x", "b": "y"}', 0))


def test_diagnosis_names_a_producer_that_hashed_the_encoded_key() -> None:
    n = 8
    key = next(k for k in (f"order-{i}".encode() for i in range(100))
               if len({partition_of(avro_key(k.decode()), n), partition_of(k, n),
                       crc32_partition_of(avro_key(k.decode()), n)}) == 3)
    raw = avro_key(key.decode())
    assert "hashed the encoded key bytes" in ingest.diagnose(raw, key, partition_of(raw, n), n)
    assert "consistent_random" in ingest.diagnose(raw, key, crc32_partition_of(raw, n), n)


def test_settled_keeps_an_id_header_else_takes_the_envelope_id_else_the_origin_position() -> None:
    with_header = rec(b"k", 0, ((H_EVENT_ID, b"given"),))
    assert ingest.settled(with_header, lambda r: "env") is with_header
    assert header(ingest.settled(rec(b"k", 0), lambda r: "env-1").headers, H_EVENT_ID) == b"env-1"
    assert header(ingest.settled(rec(b"k", 2), None).headers, H_EVENT_ID) == b"t/2/5"

    def broken(r: InputRecord) -> str | None:
        raise ValueError("not Avro")

    assert header(ingest.settled(rec(b"k", 2), broken).headers, H_EVENT_ID) == b"t/2/5"


def test_the_topology_declares_partitioner_misrouted_policy_and_key_formats() -> None:
    base = {"name": "t", "topics": {"a": {"partitions": 2, "key_format": "avro"}, "b": {"partitions": 2}},
            "processors": {"p": {"processor": "counter", "inputs": ["a", "b"]}}}
    topo = parse(base)
    assert topo.partitioner == "murmur2" and topo.misrouted == "reroute"
    assert topo.key_formats(topo.processor("p")) == {"a": "avro", "b": "string"}
    topo = parse({**base, "partitioner": "murmur2_random", "misrouted": "dlq"})
    assert topo.partitioner == "murmur2" and topo.misrouted == "dlq"
    with pytest.raises(TopologyError, match="partitioner: expected one of"):
        parse({**base, "partitioner": "consistent_random"})
    with pytest.raises(TopologyError, match="misrouted: expected one of"):
        parse({**base, "misrouted": "drop"})
    with pytest.raises(TopologyError, match=r"topics\.a\.key_format: expected one of"):
        parse({**base, "topics": {"a": {"key_format": "protobuf"}}})


def test_a_second_start_with_another_payload_is_a_conflict_not_a_silent_drop() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"), event_id="e1")
    before, n = d.state("o1"), len(d.outputs)
    same = d.send("OrderPlaced", "o1", placed("o1"), event_id="e2")  # re-sent under a new id: a duplicate
    assert same.ignored == "duplicate_event" and same.failure is None
    other = d.send("OrderPlaced", "o1", placed("o1", amount=999), event_id="e3")
    assert other.failure is not None and other.failure.reason == "conflicting_start"
    assert "amount_cents" in other.failure.message and "'e3'" in other.failure.message
    err = other.failure.to_error()
    assert isinstance(err, ConflictingStartError) and err.reason == "conflicting_start"
    assert d.state("o1") is before and len(d.outputs) == n
