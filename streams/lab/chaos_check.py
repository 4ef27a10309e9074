"""The chaos run's end-of-run checks, each from the log (topics and changelogs), never from a worker's word:

* service ledgers rebuilt from the services' changelogs: effects applied per order and command;
* restore equals live: every processor's stores rebuilt from its changelog into fresh directories hash equal
  to the stores of the worker directories that hold each partition at its log end (after a clean stop);
* committed offsets equal log end on every input partition of every group (or, where transactions wrote
  to it, only commit markers lie between them: a marker takes an offset and no consumer reads it);
* the DLQ as :class:`~streams.lab.chaos_plan.Letter` records, for the precision/recall score.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.config import KafkaSettings
from streams.kafka import io
from streams.kafka.client import make_consumer
from streams.kafka.io import TopicPartition
from streams.kafka.lag import LagReader
from streams.lab.chaos_plan import Letter
from streams.ops.dlq import read as read_dlq
from streams.records import H_EVENT_ID
from streams.runtime.rebuild import rebuild
from streams.state import entity
from streams.state.store import PartitionStore, store_path
from streams.topology import ProcessorSpec, Topology


@dataclass(frozen=True)
class HashCheck:
    processor: str
    partition: int
    rebuilt: str
    live: dict[str, str]  # worker directory name -> hash of its store at the log end

    @property
    def ok(self) -> bool:
        return bool(self.live) and all(h == self.rebuilt for h in self.live.values())


def log_ends(kafka: KafkaSettings, topics: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    return {tp: w.log_end for tp, w in LagReader(kafka).watermarks(topics).items()}


def rebuild_all(kafka: KafkaSettings, topo: Topology, into: Path) -> dict[str, dict[int, str]]:
    """Each processor's stores rebuilt from its changelog alone, under ``into/<processor>``; hashes."""
    out: dict[str, dict[int, str]] = {}
    for name, proc in topo.processors.items():
        target = into / name
        shutil.rmtree(target, ignore_errors=True)
        parts = range(topo.topics[proc.inputs[0]].partitions)
        out[name] = rebuild(kafka, topo.default_group(proc), list(proc.inputs), proc.changelog, proc.store, parts,
                            target)
    return out


def read_stores(into: Path, proc: ProcessorSpec, partitions: int) -> dict[str, bytes]:
    """Every entity's processor state in a directory of stores (key -> state bytes)."""
    out: dict[str, bytes] = {}
    for p in range(partitions):
        path = store_path(into, proc.store, p)
        if not path.exists():
            continue
        s = PartitionStore(path, p)
        try:
            out.update({k.decode(): entity.decode(v).state or b"" for k, v in s.entities()})
        finally:
            s.close()
    return out


def ledgers(into: Path, topo: Topology, services: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """service -> order id -> its ledger (``{"done": {...}, "effects": [[command, command id, reply]]}``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in services:
        proc = topo.processors[name]
        raw = read_stores(into / name, proc, topo.topics[proc.inputs[0]].partitions)
        out[name] = {k: orjson.loads(v) for k, v in raw.items() if v}
    return out


def compare_hashes(kafka: KafkaSettings, topo: Topology, rebuilt: dict[str, dict[int, str]],
                   worker_dirs: dict[str, list[Path]]) -> list[HashCheck]:
    """Per processor and partition: the rebuilt hash against every worker directory whose store for that
    partition has consumed its input to the log end (the last owner; an earlier owner that also got that far
    must hold the same bytes). A partition whose input is empty is skipped. Where only commit markers follow
    the group's committed offset, that offset is the end of the input's records."""
    checks: list[HashCheck] = []
    for name, proc in topo.processors.items():
        parts = topo.topics[proc.inputs[0]].partitions
        ends = log_ends(kafka, [(t, p) for t in proc.inputs for p in range(parts)])
        group = topo.default_group(proc)
        behind = _behind(kafka, group, proc.inputs)
        readable = _readable(kafka, behind)
        for g in behind:
            if g not in readable and isinstance(g["committed"], int):
                ends[(str(g["topic"]), int(str(g["partition"])))] = g["committed"]
        for p in range(parts):
            if all(ends[(t, p)] == 0 for t in proc.inputs):
                continue
            live: dict[str, str] = {}
            for d in worker_dirs.get(name, []):
                path = store_path(d, proc.store, p)
                if not path.exists():
                    continue
                s = PartitionStore(path, p)
                try:
                    if all(s.source_offset(t) == ends[(t, p)] for t in proc.inputs):
                        live[d.name] = s.state_hash()
                finally:
                    s.close()
            checks.append(HashCheck(name, p, rebuilt[name][p], live))
    return checks


def offset_gaps(kafka: KafkaSettings, topo: Topology) -> list[dict[str, object]]:
    """Input partitions where a group's committed offset is not the log end and a record lies between."""
    behind = [g for proc in topo.processors.values() for g in _behind(kafka, topo.default_group(proc), proc.inputs)]
    return _readable(kafka, behind)


def _behind(kafka: KafkaSettings, group: str, topics: Iterable[str]) -> list[dict[str, object]]:
    """The group's partitions of ``topics`` whose committed offset is not the log end."""
    return [{"group": group, "topic": lag.topic, "partition": lag.partition, "committed": lag.committed,
             "log_end": lag.log_end}
            for lag in LagReader(kafka).read(group, topics)[0].partitions if lag.committed != lag.log_end]


def total_lag(kafka: KafkaSettings, topo: Topology) -> int:
    """Records still to be read by the groups: zero once only commit markers follow each committed offset."""
    return len(offset_gaps(kafka, topo))


def _readable(kafka: KafkaSettings, behind: list[dict[str, object]], timeout_s: float = 15.0
              ) -> list[dict[str, object]]:
    """Those of ``behind`` where a read_committed reader from the committed offset finds a record before the
    end. Committed past the end, or never committed, always counts; a reader that finds neither a record nor
    the end in time counts too, so a slow broker never passes the check."""
    probe = [g for g in behind if isinstance(g["committed"], int) and 0 <= g["committed"] < int(str(g["log_end"]))]
    out = [g for g in behind if g not in probe]
    if not probe:
        return out
    consumer = make_consumer(kafka, "chaos-offset-probe", {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(str(g["topic"]), int(str(g["partition"])), int(str(g["committed"])))
                         for g in probe])
        pending = {(str(g["topic"]), int(str(g["partition"]))): g for g in probe}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                tp = (str(m.topic()), int(m.partition() or 0))
                err = m.error()
                if tp not in pending or (err is not None and not io.is_partition_eof(err)):
                    continue
                g = pending.pop(tp)
                if err is None:
                    out.append(g)  # a record after the committed offset: a real gap
        out += pending.values()
    finally:
        consumer.close()
    return out


def dlq_letters(kafka: KafkaSettings, topic: str) -> list[Letter]:
    out: list[Letter] = []
    for d in read_dlq(kafka, topic):
        summary = d.summary()
        eid = next((v.decode("utf-8", "replace") for k, v in d.headers if k == H_EVENT_ID), "")
        out.append(Letter(eid, str(summary["reason"]), d.origin))
    return out


def explain(kafka: KafkaSettings, topo: Topology, rebuilt_dir: Path, check: HashCheck,
            worker_dirs: dict[str, list[Path]], limit: int = 5) -> list[str]:
    """For a partition whose rebuilt and live stores differ: the differing keys, and every changelog record of
    the entities they belong to (offset, key, value size or tombstone, source topic tag and offset)."""

    from streams.kafka.client import make_consumer
    from streams.records import header
    from streams.runtime.commit import H_SOURCE

    proc = topo.processors[check.processor]
    p = check.partition
    live_dir = next(d for d in worker_dirs[check.processor] if d.name in check.live)

    def items(d: Path) -> dict[bytes, bytes]:
        s = PartitionStore(store_path(d, proc.store, p), p)
        try:
            return dict(s.items())
        finally:
            s.close()

    rebuilt, live = items(rebuilt_dir / check.processor), items(live_dir)
    keys = sorted(k for k in set(rebuilt) | set(live) if rebuilt.get(k) != live.get(k))
    lines = [f"{check.processor}[{p}] {live_dir.name}: {len(keys)} keys differ"]
    for k in keys[:limit]:
        lines.append(f"  key {k!r}: live {'absent' if k not in live else len(live[k])}, rebuilt "
                     f"{'absent' if k not in rebuilt else len(rebuilt[k])}")
    needles = {k[9:].split(b"\x00")[0] if k.startswith(b"t") else k[1:] for k in keys[:limit]}
    consumer = make_consumer(kafka, "chaos-explain", {"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(proc.changelog, p, 0)])
        while True:
            msgs = consumer.consume(1000, 2.0)
            if not msgs or any(m.error() is not None for m in msgs):
                msgs = [m for m in msgs if m.error() is None]
                end = True
            else:
                end = False
            for m in msgs:
                key = m.key() or b""
                if not any(n and n in key for n in needles):
                    continue
                value = m.value()
                if value is None:
                    src = header(m.headers() or (), H_SOURCE) or b""
                    where = (int.from_bytes(src[:4], "big"), int.from_bytes(src[4:], "big", signed=True))
                else:
                    where = entity.source_of(value)
                lines.append(f"  changelog@{m.offset()} {key!r} {'TOMBSTONE' if value is None else len(value)} "
                             f"source {where} ts {m.timestamp()[1]}")
            if end:
                break
    finally:
        consumer.close()
    return lines
