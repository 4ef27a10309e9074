"""``streams bench``'s codec phase: our wire-format codec against confluent-kafka's ``AvroSerializer`` and
``AvroDeserializer``, on the same records and the same registry; it decides which one the hot path keeps.

Both sides encode then decode every record (an ``OrderPlaced`` of the order saga). They register the same schema
under the same subject, so they write the same schema id, and before anything is timed each side must decode both
sides' bytes to the same record. Ours decodes date and time logical types into datetimes here, as confluent's
does (the engine's default, epoch-millis ints, costs less), so both build the same objects. Each side's figure is
its best of ``rounds`` interleaved runs, so drift on a shared machine hits both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.contracts import Catalogue, RegistryClient, Serde
from streams.lab.bench_data import order_ids
from streams.lab.bench_infra import BenchError
from streams.lab.loadgen import order_placed
from streams.processors.avro import default_schemas
from streams.registry import RegistryServer

TOPIC = "bench.codec"  # not declared in subjects.yaml: both sides file it under TopicNameStrategy's bench.codec-value
RECORD = "OrderPlaced"


@dataclass(frozen=True)
class CodecResult:
    """Records encoded and decoded per second by ours and by confluent's serializer/deserializer."""

    ours_per_s: float
    confluent_per_s: float

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.confluent_per_s

    def to_json(self) -> dict[str, float]:
        return {"codec_records_per_s": round(self.ours_per_s, 3),
                "codec_confluent_records_per_s": round(self.confluent_per_s, 3),
                "codec_ratio": round(self.ratio, 3)}


def codec_bench(registry_url: str, records: int, rounds: int = 3,
                log: Callable[[str], None] = lambda _m: None) -> CodecResult:
    catalogue = Catalogue.load(default_schemas())
    now_ms = int(time.time() * 1000)
    data = [order_placed(oid, f"cust-{i}", 100 + i % 90_000, now_ms) for i, oid in enumerate(order_ids("c-", records))]
    serde = Serde(RegistryClient(registry_url), catalogue, "topic", logical_types=True)
    encode = serde.encoder(TOPIC, RECORD)
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    registry = SchemaRegistryClient({"url": registry_url})
    serialize = AvroSerializer(registry, catalogue.get(catalogue.resolve(RECORD)).text)
    deserialize = AvroDeserializer(registry)
    _check_interchangeable(data[0], encode, serde.decode, lambda r: serialize(r, ctx), lambda b: deserialize(b, ctx))

    def ours() -> None:
        for record in data:
            serde.decode(encode(record))

    def confluent() -> None:
        for record in data:
            deserialize(serialize(record, ctx), ctx)

    best = {"ours": float("inf"), "confluent": float("inf")}
    for _ in range(rounds):
        for name, run in (("ours", ours), ("confluent", confluent)):
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    result = CodecResult(records / best["ours"], records / best["confluent"])
    log(f"bench: codec: ours {result.ours_per_s:,.0f} records/s, confluent's {result.confluent_per_s:,.0f} "
        f"records/s (encode + decode, best of {rounds}): ratio {result.ratio:.2f}")
    return result


def _check_interchangeable(record: dict[str, Any], encode: Callable[[Any], bytes],
                           decode: Callable[[bytes], tuple[str, Any]], serialize: Callable[[Any], bytes | None],
                           deserialize: Callable[[bytes], Any]) -> None:
    """Both sides write the same bytes' schema id and read each other's bytes to the same record, or the
    comparison would time different work."""
    ours, theirs = encode(record), serialize(record)
    if theirs is None or ours[:5] != theirs[:5]:
        raise BenchError(f"codec: the two sides wrote different headers: {ours[:5]!r} and {theirs and theirs[:5]!r}")
    want = decode(ours)[1]
    got = [decode(theirs)[1], deserialize(ours), deserialize(theirs)]
    if any(g != want for g in got):
        raise BenchError(f"codec: the two sides decode differently: {want!r} against {got!r}")


def codec_alone(records: int, rounds: int = 3, log: Callable[[str], None] = lambda _m: None) -> CodecResult:
    """The codec phase on its own, against a registry in memory started for it (no Kafka)."""
    with RegistryServer(port=0) as registry:
        return codec_bench(registry.url, records, rounds, log)
