"""The floor: a bare confluent-kafka loop doing the orchestrator's I/O per record, and nothing else.

Per record: decode the Avro input (fastavro schemaless, parsed schemas cached), read the entity from RocksDB,
encode one Avro output, produce it and a changelog record, stage the new state in the batch's WriteBatch.
Per batch: flush the producer, write the WriteBatch, commit the offsets. No state machine, no envelope, no
dedupe, no timers: the gap between this and the orchestrator is what the engine's Python path costs, and the
ratio of the two holds on machines whose absolute speed drifts.
"""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, TopicPartition, libversion
from fastavro import schemaless_reader, schemaless_writer
from rocksdict import Options, Rdict, WriteBatch

from streams.config import KafkaSettings, WorkerSettings
from streams.contracts import Serde
from streams.contracts.avsc import without_time_types
from streams.contracts.catalogue import entry
from streams.contracts.serde import header
from streams.kafka.client import make_consumer, make_producer
from streams.lab.loadgen import ORDERS_TOPIC
from streams.records import H_EVENT_ID

OUTPUT_RECORD = "streams.orders.MakePayment"
# librdkafka >= 2.4 postpones a partition's next fetch by fetch.queue.backoff.ms (default 1 s) once its local
# queue holds queued.min.messages. A loop faster than the worker drains that queue well within the second and
# then idles, so the floor would measure the backoff, not the I/O: it fetches again after 10 ms instead.
_FLOOR_CONSUMER = {"fetch.queue.backoff.ms": 10} if libversion()[1] >= 0x020400FF else {}


def run_floor(kafka: KafkaSettings, serde: Serde, starts: dict[int, int], ends: dict[int, int], out_topic: str,
              changelog: str, state_dir: Path, group: str,
              max_batch: int = WorkerSettings.max_batch) -> tuple[int, float]:
    """Consume ``orders.events`` from ``starts`` to ``ends``; returns (records, seconds from assignment to the
    last commit). Batches are as large as the worker's by default, so the ratio compares like with like."""
    cat = serde.catalogue
    # Writer schemas by id (each record type has its own subject), date/time logical types left as ints exactly
    # as the Serde reads them.
    writers = {serde.registry.register(serde.subject(ORDERS_TOPIC, n), cat.get(n).text):
               entry(n, without_time_types(cat.get(n).schema)).parsed for n in cat.topics[ORDERS_TOPIC]}
    out = cat.get(OUTPUT_RECORD)
    head = header(serde.registry.register(f"{out_topic}-value", out.text))
    out_schema = out.parsed
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(32 * 1024 * 1024)
    state_dir.mkdir(parents=True, exist_ok=True)
    dbs = {p: Rdict(str(state_dir / f"p{p:04d}"), options=opts) for p in ends}
    producer = make_producer(kafka)
    consumer = make_consumer(kafka, group, _FLOOR_CONSUMER)
    pos = {p: starts.get(p, 0) for p in ends}
    records = 0
    try:
        consumer.assign([TopicPartition(ORDERS_TOPIC, p, starts.get(p, 0)) for p in ends])
        t0 = time.monotonic()
        while any(pos[p] < ends[p] for p in ends):
            msgs = consumer.consume(max_batch, 0.05)
            if not msgs:
                continue
            batches: dict[int, Any] = {}
            offsets: dict[int, int] = {}
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"floor: consume error: {m.error().str()}")
                    continue
                p = m.partition()
                value = m.value()
                key = m.key()
                fo = BytesIO(value)
                fo.seek(5)  # magic byte, schema id
                rec: Any = schemaless_reader(fo, writers[int.from_bytes(value[1:5], "big")], None)
                db = dbs[p]
                skey = b"d" + key
                db.get(skey)
                event_id = b""
                for hk, hv in m.headers() or ():
                    if hk == H_EVENT_ID:
                        event_id = hv
                buf = BytesIO()
                buf.write(head)
                schemaless_writer(buf, out_schema, {
                    "envelope": {"id": event_id.decode() + "-0", "entity_key": rec["order_id"], "type": "MakePayment",
                                 "schema_version": 1, "occurred_at": rec["envelope"]["occurred_at"],
                                 "correlation_id": rec["order_id"], "causation_id": event_id.decode()},
                    "order_id": rec["order_id"], "amount_cents": rec.get("amount_cents", 0), "currency": "EUR",
                    "attempt": 1,
                })
                output = buf.getvalue()
                producer.produce(out_topic, output, key, headers=[(H_EVENT_ID, event_id + b"-0")])
                producer.produce(changelog, output, skey, p)  # positionally, as the engine does: cheaper
                wb = batches.get(p)
                if wb is None:
                    wb = batches[p] = WriteBatch(raw_mode=True)
                wb.put(skey, output)
                offsets[p] = m.offset() + 1
                records += 1
            if producer.flush(60) != 0:
                raise RuntimeError("floor: producer did not drain within 60s")
            for p, wb in batches.items():
                dbs[p].write(wb)
            if offsets:
                consumer.commit(offsets=[TopicPartition(ORDERS_TOPIC, p, o) for p, o in offsets.items()],
                                asynchronous=False)
            pos.update(offsets)
        return records, time.monotonic() - t0
    finally:
        consumer.close()
        for db in dbs.values():
            db.close()
