"""``streams doctor``: are the topology's input topics fed the way its workers expect?

It samples the most recent records of every partition of every input topic and checks each one as a worker
would (streams.runtime.ingest): the key in its topic's declared format, the record on its key's partition.
A worker re-routes or dead-letters what it finds; the doctor finds it before, or without, running one, and says
which partitioner the producer most likely used.

Which producer wrote a record is not in the record: Kafka keeps no client id with it. The doctor can only name
producers that put one in a header (``client.id``, ``client-id`` or ``producer``), and says so otherwise.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from streams.config import KafkaSettings
from streams.errors import BadKeyError, ConfigError
from streams.kafka import io
from streams.kafka.client import make_consumer, translate, translated
from streams.kafka.io import TopicPartition
from streams.kafka.lag import LagReader
from streams.kafka.partition import partition_of
from streams.runtime.ingest import PRODUCER_HEADERS, decode_key, diagnose
from streams.topology import Topology


@dataclass
class PartitionReport:
    topic: str
    partition: int
    sampled: int = 0
    misrouted: int = 0
    bad_keys: int = 0
    producers: Counter[str] = field(default_factory=Counter)  # of misrouted records, where a header names one
    example: str = ""  # the first problem found, with its diagnosis


@dataclass
class Report:
    partitions: list[PartitionReport]
    checked: bool  # False when the topology declares ``partitioner: none`` (keys are still checked)

    @property
    def problems(self) -> int:
        return sum(p.misrouted + p.bad_keys for p in self.partitions)


def inputs(topo: Topology) -> list[str]:
    return sorted({t for proc in topo.processors.values() for t in proc.inputs})


def examine(settings: KafkaSettings, topo: Topology, sample: int, timeout_s: float = 30.0) -> Report:
    """Check the last ``sample`` records of each partition of each input topic."""
    if sample < 1:
        raise ConfigError(f"--sample must be >= 1, got {sample}")
    consumer = make_consumer(settings, f"streams-doctor-{uuid.uuid4().hex}", {"enable.partition.eof": True})
    try:
        with translated("sampling input topics"):
            counts: dict[str, int] = {}
            for t in inputs(topo):
                meta = consumer.list_topics(t, timeout=10).topics.get(t)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise ConfigError(f"input topic {t} of {topo.source} does not exist")
                counts[t] = len(meta.partitions)
            marks = LagReader(settings, timeout_s).watermarks((t, p) for t, n in counts.items() for p in range(n))
            reports = {tp: PartitionReport(*tp) for tp in sorted(marks)}
            start = {tp: max(w.log_start, w.log_end - sample) for tp, w in marks.items()}
            todo = {tp for tp, w in marks.items() if w.log_end > start[tp]}
            consumer.assign([TopicPartition(t, p, start[(t, p)]) for t, p in sorted(todo)])
            check = topo.partitioner != "none"
            deadline = time.monotonic() + timeout_s
            while todo and time.monotonic() < deadline:
                for msg in consumer.consume(1000, 0.2):
                    tp = (msg.topic(), msg.partition())
                    err = msg.error()
                    if err is not None:
                        if io.is_partition_eof(err):
                            todo.discard(tp)
                            continue
                        raise translate(err, f"reading {tp[0]}[{tp[1]}]")
                    if tp not in todo:
                        continue
                    _inspect(reports[tp], msg.key(), msg.headers() or [], topo.topics[tp[0]].key_format,
                             counts[tp[0]], check)
                    if msg.offset() + 1 >= marks[tp].log_end:
                        todo.discard(tp)
    finally:
        consumer.close()
    return Report(list(reports.values()), check)


def _inspect(rep: PartitionReport, raw: bytes | None, headers: list[tuple[str, bytes | None]], fmt: str, n: int,
             check: bool) -> None:
    rep.sampled += 1
    if not raw:
        return  # a null key is placed by no key: nothing to check
    try:
        key = decode_key(raw, fmt, rep.topic, headers)
    except BadKeyError as exc:
        rep.bad_keys += 1
        rep.example = rep.example or str(exc)
        return
    if not check or n < 2 or partition_of(key, n) == rep.partition:
        return
    rep.misrouted += 1
    rep.producers[next((v.decode("utf-8", "replace") for k, v in headers if k in PRODUCER_HEADERS and v), "")] += 1
    if not rep.example:
        rep.example = (f"key {key!r} belongs to partition {partition_of(key, n)}: "
                       f"{diagnose(raw, key, rep.partition, n)}")


def render(report: Report) -> str:
    rows = [("TOPIC", "PARTITION", "SAMPLED", "MISROUTED", "BAD-KEY", "PRODUCERS")]
    for p in report.partitions:
        named = ", ".join(f"{k} ({v})" for k, v in sorted(p.producers.items()) if k)
        unnamed = p.producers.get("", 0)
        who = named + (", " if named and unnamed else "") + (f"unnamed ({unnamed})" if unnamed else "")
        rows.append((p.topic, str(p.partition), str(p.sampled), str(p.misrouted), str(p.bad_keys), who or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for p in report.partitions:
        if p.example:
            lines.append(f"{p.topic}[{p.partition}]: {p.example}")
    if not report.checked:
        lines.append("partitioner: none — placement not checked, keys only")
    if any(p.producers.get("") for p in report.partitions):
        lines.append("note: records do not carry their producer's client id; only producers that name themselves "
                     f"in a header ({', '.join(PRODUCER_HEADERS)}) can be named")
    total = report.problems
    lines.append(f"{total} problem record(s) found" if total else "no misrouted records or bad keys found")
    return "\n".join(lines) + "\n"
