"""Replay: rewind a consumer group and rebuild the state it owns from the input log.

Order of the two writes, and why: the group's offsets are rewound first, then a reset marker is written to each
affected changelog partition. Any restore that meets the marker (on whichever machine still holds a copy of the
store) wipes that store, so the state is rebuilt from the replayed input alone. Stopping between the two writes
leaves old state plus rewound offsets, which redelivery dedupe makes harmless, and running the command again
finishes the job. The other order could leave wiped state with offsets still at the end: a silent loss.

With ``keep_state`` the state stays and only the offsets move: records are offered again and the per-entity
dedupe skips those already applied (useful after fixing a processor bug that dead-lettered records).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from streams.config import KafkaSettings
from streams.errors import ConfigError, DeliveryError, KafkaOperationError
from streams.kafka.client import make_admin, make_consumer, plain_producer, result, translated
from streams.kafka.io import TopicPartition
from streams.kafka.lag import LagReader
from streams.progress import Progress
from streams.runtime.restore import RESET_KEY

# Anything but these counts as live: a group mid-rebalance or in a state the broker reports vaguely must not
# have its offsets moved under it.
_IDLE_STATES = {"EMPTY", "DEAD"}


@dataclass(frozen=True)
class PlanRow:
    topic: str
    partition: int
    committed: int | None
    new_offset: int
    log_end: int

    @property
    def to_reprocess(self) -> int:
        return max(self.log_end - self.new_offset, 0)


def live_members(kafka: KafkaSettings, group: str) -> list[str]:
    """Members of the group, or its state when the broker does not list members (the embedded one does not)."""
    admin = make_admin(kafka)
    desc = result(admin.describe_consumer_groups([group], request_timeout=10)[group], f"describing group {group}",
                  10.0)
    members = [f"{m.client_id}@{m.host}" for m in (desc.members or [])]
    state = getattr(desc.state, "name", str(desc.state))
    if not members and state not in _IDLE_STATES:
        members = [f"(the broker reports the group {state} but does not list its members)"]
    return members


def plan(kafka: KafkaSettings, group: str, topics: Iterable[str], partitions: Iterable[int] | None,
         from_offset: int | None = None, from_timestamp_ms: int | None = None) -> list[PlanRow]:
    """Per input partition: committed offset now, the offset replay starts from, and the log end."""
    reader = LagReader(kafka)
    with translated("listing topics"):
        md = make_admin(kafka).list_topics(timeout=10)
    tps: list[tuple[str, int]] = []
    for t in topics:
        meta = md.topics.get(t)
        if meta is None or meta.error is not None:
            raise ConfigError(f"input topic {t} does not exist")
        wanted = set(partitions) if partitions is not None else set(meta.partitions)
        missing = wanted - set(meta.partitions)
        if missing:
            raise ConfigError(f"topic {t} has no partition(s) {sorted(missing)}")
        tps += [(t, p) for p in sorted(wanted)]
    marks = reader.watermarks(tps)
    consumer = make_consumer(kafka, group)
    try:
        with translated(f"reading offsets of group {group}"):
            committed = {(tp.topic, tp.partition): tp.offset
                         for tp in consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=30)}
            by_time: dict[tuple[str, int], int] = {}
            if from_timestamp_ms is not None:
                asked = [TopicPartition(t, p, from_timestamp_ms) for t, p in tps]
                by_time = {(tp.topic, tp.partition): tp.offset
                           for tp in consumer.offsets_for_times(asked, timeout=30)}
    finally:
        consumer.close()
    rows = []
    for t, p in tps:
        start, end = marks[(t, p)].log_start, marks[(t, p)].log_end
        if from_timestamp_ms is not None:
            new = by_time.get((t, p), -1)
            new = end if new < 0 else new  # no record at or after the time: nothing to replay there
        elif from_offset is not None:
            new = from_offset
        else:
            new = start
        c = committed.get((t, p), -1)
        rows.append(PlanRow(t, p, c if c >= 0 else None, min(max(new, start), end), end))
    return rows


def apply(kafka: KafkaSettings, group: str, rows: list[PlanRow], changelog: str | None) -> None:
    """Rewind the offsets, then (unless ``changelog`` is None) write the reset markers. See the module doc."""
    consumer = make_consumer(kafka, group)
    try:
        with translated(f"rewinding group {group} (is a worker of it running?)"):
            consumer.commit(offsets=[TopicPartition(r.topic, r.partition, r.new_offset) for r in rows],
                            asynchronous=False)
    finally:
        consumer.close()
    if changelog is None:
        return
    producer = plain_producer({**kafka.common(), "enable.idempotence": True})
    marker = orjson.dumps({"replay": uuid.uuid4().hex, "at": int(time.time() * 1000)})
    failed: list[str] = []
    for p in sorted({r.partition for r in rows}):
        producer.produce(changelog, marker, RESET_KEY, partition=p,
                         on_delivery=lambda err, _m: failed.append(err.str()) if err else None)
    if producer.flush(30) or failed:
        raise DeliveryError(f"replay: reset markers not acknowledged ({failed[:1]}); run the replay again")


def follow(kafka: KafkaSettings, group: str, rows: list[PlanRow], progress: Progress,
           timeout_s: float = 3600.0, interval_s: float = 2.0) -> bool:
    """Report progress until the group's committed offsets reach the planned log ends."""
    target = {(r.topic, r.partition): r.log_end for r in rows}
    total = sum(r.to_reprocess for r in rows)
    start = time.monotonic()
    consumer = make_consumer(kafka, group)
    progress.phase(f"replay: group {group} reprocessing", total)
    try:
        while time.monotonic() - start < timeout_s:
            tps = [TopicPartition(t, p) for t, p in target]
            with translated(f"reading offsets of group {group}"):
                committed = consumer.committed(tps, timeout=30)
            got = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
            left = sum(max(end - got.get(tp, 0), 0) for tp, end in target.items())
            progress.advance(total - left)
            if left == 0:
                progress.end()
                return True
            time.sleep(interval_s)
    finally:
        consumer.close()
    raise KafkaOperationError(f"replay of group {group} did not catch up within {timeout_s:.0f}s")
