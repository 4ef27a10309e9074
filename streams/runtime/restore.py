"""Changelog restore, a chunk at a time, so a long restore never starves the group heartbeat or poll loop.

Rules that keep restore equal to live (invariant 4):
- a changelog record whose source offset is at or past the partition's durable position came from a batch
  that was never committed: it is skipped (that batch is processed again and produces it again);
- a record older (by source offset on the same topic) than what the store already holds is a zombie's late
  write: it is skipped, so an entity never moves backwards;
- progress is checkpointed with the data in one WriteBatch, so an interrupted restore resumes where it was.
The end of a changelog partition is taken from fetch responses (partition EOF), never from ListOffsets, which
the embedded broker answers wrongly for multi-record batches. On Kafka it is the end only when no transaction
is open on the partition (:func:`at_end`): a restore that stopped at an open transaction's first record would
miss the previous owner's last batch if that transaction then commits, with its input offsets already counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from streams.config import KafkaSettings
from streams.kafka import io
from streams.kafka.client import at_end, make_consumer
from streams.kafka.io import Consumer, TopicPartition
from streams.runtime.commit import H_SOURCE
from streams.state import entity, timers
from streams.state.store import PartitionStore

# A changelog control record written by `streams replay`: a restore that reads it wipes the partition's store,
# so every copy of that store, on any machine, is rebuilt from the replayed input alone.
RESET_KEY = b"\x00streams-reset"


@dataclass
class RestoreJob:
    partition: int
    store: PartitionStore
    durable: dict[int, int]  # source topic tag -> offsets below this are committed or locally durable
    offsets: dict[str, int]  # the same by topic name: written to the store when the restore is done
    committed: dict[str, int]  # the group's committed offsets: all that counts after a reset
    position: int
    fresh: bool
    restored: int = 0
    skipped: int = 0
    waiting: bool = False  # reached an open transaction: logged once
    seen: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    # Timer index entries written by batches that never committed. The redo may set its timers at other due
    # times (the clock rule reads the wall clock, and the due time is part of the key), so the worker
    # tombstones whichever of these the redo does not write again; a later restore would revive them otherwise.
    uncommitted_timers: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Restorer:
    """Owns a group-less consumer on the changelog; the worker calls :meth:`step` between polls."""

    def __init__(
        self, kafka: KafkaSettings, group: str, changelog: str, chunk: int, log: Callable[[str], None]
    ) -> None:
        self.changelog = changelog
        self.chunk = chunk
        self.log = log
        self.jobs: dict[int, RestoreJob] = {}
        self._tansu = kafka.tansu
        self._consumer: Consumer = make_consumer(
            kafka, f"{group}.restore", {"enable.partition.eof": True, "session.timeout.ms": 45000}
        )
        self._last_report = 0.0

    def start(self, store: PartitionStore, durable: Mapping[str, int], committed: Mapping[str, int]) -> None:
        tags = {entity.topic_tag(t): o for t, o in durable.items()}
        job = RestoreJob(store.partition, store, tags, dict(durable), dict(committed), store.changelog_offset(),
                         store.is_empty())
        self.jobs[store.partition] = job
        self._reassign()

    def cancel(self, partitions: set[int]) -> None:
        for p in partitions:
            self.jobs.pop(p, None)
        self._reassign()

    def _reassign(self) -> None:
        tps = [TopicPartition(self.changelog, j.partition, j.position) for j in self.jobs.values()]
        self._consumer.assign(tps)

    def step(self, timeout_s: float = 0.05) -> list[RestoreJob]:
        """Apply one chunk; returns the jobs that reached the end of their changelog partition."""
        if not self.jobs:
            return []
        msgs = self._consumer.consume(self.chunk, timeout_s)
        writes: dict[int, dict[bytes, bytes | None]] = {}
        done: list[RestoreJob] = []
        jobs = self.jobs
        source_of = entity.source_of
        # The per-record path is kept to a few lookups: it runs for every changelog record of a restore.
        for m in msgs:
            job = jobs.get(m.partition())
            if job is None:
                continue
            err = m.error()
            if err is not None:
                if io.is_partition_eof(err):
                    if m.offset() < job.position:
                        continue
                    if at_end(self._consumer, m, self._tansu):
                        done.append(job)
                    elif not job.waiting:
                        job.waiting = True
                        self.log(f"restore {self.changelog}[{job.partition}]: waiting for the transaction open "
                                 f"at offset {m.offset()} to commit or abort")
                else:
                    self.log(f"restore {self.changelog}[{m.partition()}]: {io.error_text(err)}")
                continue
            job.position = m.offset() + 1
            key = m.key()
            value = m.value()
            if key is None:
                continue
            if key == RESET_KEY:
                self._reset(job, writes)
                continue
            if value is None:
                src = _header(m.headers(), H_SOURCE)
                if src is None:
                    continue
                tag, offset = int.from_bytes(src[:4], "big"), int.from_bytes(src[4:], "big", signed=True)
            else:
                tag, offset = source_of(value)
            seen = job.seen
            prev = seen.get(key)
            if offset >= job.durable.get(tag, 0) or (
                    (prev is not None or not job.fresh) and self._older(job, key, tag, offset, prev)):
                job.skipped += 1
                if value is not None and key[:1] == timers.PREFIX and offset >= job.durable.get(tag, 0):
                    job.uncommitted_timers[key] = (tag, offset)
                continue
            seen[key] = (tag, offset)
            part = writes.get(job.partition)
            if part is None:
                part = writes[job.partition] = {}
            part[key] = value
            job.restored += 1
        for job in self.jobs.values():
            ents = writes.get(job.partition)
            if ents is not None or job in done:
                # A finished store covers everything durable: record that with its last chunk, atomically.
                job.store.write(ents or {}, job.offsets if job in done else None, changelog_offset=job.position)
        for job in done:
            self.jobs.pop(job.partition, None)
        if done:
            self._reassign()
        self._report(done)
        return done

    def _reset(self, job: RestoreJob, writes: dict[int, dict[bytes, bytes | None]]) -> None:
        writes.pop(job.partition, None)
        job.store.wipe()
        job.seen.clear()
        job.fresh = True
        job.offsets = dict(job.committed)
        job.durable = {entity.topic_tag(t): o for t, o in job.committed.items()}
        self.log(f"restore {self.changelog}[{job.partition}]: reset marker (replay): store wiped")

    def _older(self, job: RestoreJob, key: bytes, tag: int, offset: int, prev: tuple[int, int] | None) -> bool:
        """Whether the store (``prev``: what this restore already applied for ``key``) holds a newer write."""
        if prev is None and not job.fresh:
            raw = job.store.get_raw(key)
            prev = entity.source_of(raw) if raw is not None else None
        return prev is not None and prev[0] == tag and prev[1] > offset

    def _report(self, done: list[RestoreJob]) -> None:
        now = time.monotonic()
        for job in done:
            secs = now - job.started
            self.log(f"restore {self.changelog}[{job.partition}]: done, {job.restored} applied, "
                     f"{job.skipped} skipped, {secs:.2f}s")
        if self.jobs and now - self._last_report >= 2.0:
            self._last_report = now
            for job in self.jobs.values():
                _, hi = self._consumer.get_watermark_offsets(
                    TopicPartition(self.changelog, job.partition), cached=True
                )
                self.log(f"restore {self.changelog}[{job.partition}]: at {job.position}/{max(hi, 0)}, "
                         f"{job.restored} applied")

    def remaining(self) -> dict[int, int]:
        """Records left per partition being restored, from the high watermark seen in fetches."""
        out: dict[int, int] = {}
        for job in self.jobs.values():
            _, hi = self._consumer.get_watermark_offsets(TopicPartition(self.changelog, job.partition), cached=True)
            out[job.partition] = max(hi - job.position, 0) if hi >= 0 else 0
        return out

    def close(self) -> None:
        self._consumer.close()


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None
