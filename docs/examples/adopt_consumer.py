"""Consume a workflow's commands and results from an existing service, with stock confluent-kafka
(docs/adopting.md); with ``--reply``, act as the payment service and answer each MakePayment.

    python adopt_consumer.py --bootstrap HOST:PORT --registry http://HOST:8081 --group payments \\
        --topic payments.commands --topic orders.results [--reply] [--max N] [-X KEY=VALUE ...]

Prints one JSON line per record. A stock ``AvroDeserializer`` with its defaults decodes what the engine writes:
it fetches the writer's schema by the id in each record, whichever subject it was registered under. The offset
is committed only after the reply is acknowledged, so a crash re-delivers the command and the reply is sent
again with the same id, which the engine drops as a duplicate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from adopt_schemas import PAYMENT_COMPLETED, envelope
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def header(msg: Any, name: str) -> str | None:
    for key, value in msg.headers() or ():
        if key == name and value is not None:
            return bytes(value).decode("utf-8")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--registry", default=os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"))
    p.add_argument("--group", required=True, help="consumer group id")
    p.add_argument("--topic", action="append", required=True, help="topic to read (repeatable)")
    p.add_argument("--reply", action="store_true", help="answer MakePayment with PaymentCompleted")
    p.add_argument("--reply-topic", default="orders.events", help="the workflow's input topic")
    p.add_argument("--max", type=int, default=0, help="stop after this many records (0: never)")
    p.add_argument("--timeout", type=float, default=0, help="stop after this many idle seconds (0: never)")
    p.add_argument("-X", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="another consumer setting, e.g. -X session.timeout.ms=6000")
    args = p.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.extra)

    registry = SchemaRegistryClient({"url": args.registry})
    deserialize = AvroDeserializer(registry)  # stock defaults: the writer's schema, by the id in the record
    serialize = AvroSerializer(registry, PAYMENT_COMPLETED)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra})
    producer = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True, "acks": "all"})
    consumer.subscribe(args.topic)
    seen, idle_since = 0, time.monotonic()
    try:
        while not args.max or seen < args.max:
            msg = consumer.poll(0.5)
            if msg is None:
                if args.timeout and time.monotonic() - idle_since > args.timeout:
                    return 1
                continue
            if msg.error() is not None:
                print(f"consume error: {msg.error().str()}", file=sys.stderr)
                continue
            idle_since = time.monotonic()
            record = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            key = msg.key().decode("utf-8")
            streams_id = header(msg, "streams-id") or record["envelope"]["id"]
            kind = record["envelope"]["type"]
            print(json.dumps({"topic": msg.topic(), "key": key, "streams_id": streams_id, "type": kind,
                              "record": record}, default=str), flush=True)
            if args.reply and kind == "MakePayment":
                reply_id = f"{streams_id}/reply"  # deterministic: a redelivered command gets the same reply id
                reply = {"envelope": envelope(reply_id, key, "PaymentCompleted", msg.timestamp()[1], streams_id),
                         "order_id": record["order_id"], "payment_id": f"pay-{key}",
                         "amount_cents": record["amount_cents"]}
                ctx = SerializationContext(args.reply_topic, MessageField.VALUE)
                producer.produce(args.reply_topic, key=key.encode("utf-8"), value=serialize(reply, ctx),
                                 headers=[("streams-id", reply_id.encode("utf-8"))])
                if producer.flush(30):
                    print("reply not acknowledged within 30 s", file=sys.stderr)
                    return 1
            consumer.commit(msg, asynchronous=False)  # after the reply is durable
            seen += 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
