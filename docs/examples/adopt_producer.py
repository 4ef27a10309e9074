"""Place orders into the order saga from an existing service, with stock confluent-kafka (docs/adopting.md).

    python adopt_producer.py --bootstrap HOST:PORT --registry http://HOST:8081 --order o-1 --order o-2

What matters, and why:

- ``partitioner=murmur2_random``: the engine, its services and Java clients place a key with murmur2; librdkafka's
  default (consistent_random, a CRC32) would put this order's first event on another partition than its
  replies and timers, so two workers would each see half of one order.
- keys are the order id as UTF-8 bytes (not Avro-encoded): the key is the entity key the workflow runs by.
- the value serializer is a stock ``AvroSerializer`` with its defaults (subject ``<topic>-value``, auto-register):
  the registry files a record of a multi-type topic under ``<topic>-<record full name>`` and answers its id.
- the ``streams-id`` header carries the event's id (the envelope's id too): the engine drops an event it has
  already applied by this id, so derive it from your own data to make a resend harmless.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from adopt_schemas import ORDER_PLACED, order_placed
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--registry", default=os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"))
    p.add_argument("--topic", default="orders.events", help="the workflow's input topic")
    p.add_argument("--order", action="append", required=True, help="order id (repeatable)")
    p.add_argument("--amount-cents", type=int, default=4200)
    args = p.parse_args(argv)

    registry = SchemaRegistryClient({"url": args.registry})
    serialize = AvroSerializer(registry, ORDER_PLACED)  # stock defaults: TopicNameStrategy, auto.register.schemas
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "partitioner": "murmur2_random",  # the key's partition as the engine and Java clients compute it
        "enable.idempotence": True,  # retries never duplicate or reorder within a partition
        "acks": "all",
    })
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err)
        else:
            print(f"placed {msg.key().decode()} -> {msg.topic()}[{msg.partition()}]@{msg.offset()}", flush=True)

    ctx = SerializationContext(args.topic, MessageField.VALUE)
    for order_id in args.order:
        event_id, record = order_placed(order_id, f"customer-{order_id}", args.amount_cents, int(time.time() * 1000))
        producer.produce(args.topic, key=order_id.encode("utf-8"), value=serialize(record, ctx),
                         headers=[("streams-id", event_id.encode("utf-8"))], on_delivery=delivered)
    left = producer.flush(30)
    for err in failures:
        print(f"delivery failed: {err.str()}", file=sys.stderr)
    return 1 if left or failures else 0


if __name__ == "__main__":
    sys.exit(main())
