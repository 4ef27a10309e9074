"""Consumer lag: per group and partition, the committed offset, the log end, and how far apart they are.

Why the log end comes from a fetch and not from ListOffsets: the embedded broker (Tansu) answers
ListOffsets(latest) — what ``get_watermark_offsets()`` asks — with "base offset of the last batch + 1", which is
short by the size of the last batch minus one whenever a producer batched several records. The high watermark
it puts in fetch responses is right, and so is every real Kafka's. So :meth:`LagReader.watermarks` does:

1. one ListOffsets(latest) round trip for all partitions: an offset inside (Tansu) or at the end of (Kafka)
   the last batch, so the fetch below returns at most that one batch;
2. one throwaway consumer for all partitions, ``assign()``-ed (never subscribed: no group join, and it never
   commits) at those offsets;
3. short polls until librdkafka has parsed one fetch response per partition, read back through
   ``get_watermark_offsets(cached=True)``: librdkafka stores the response's high watermark and log start
   offset there while parsing it, and leaves them at OFFSET_INVALID until then, so "valid" means "fetched".

Measured on the embedded broker, 8 partitions: ~1 ms ListOffsets, ~6 ms assign-to-watermarks, ~1 ms close.
The alternative, ``hi_offset`` from librdkafka statistics, is only delivered on the
``statistics.interval.ms`` timer (1 s default: measured 1005 ms; 100 ms: 104 ms) and costs a JSON parse of
every client statistic, so it is both slower and no more accurate.

Lag of a partition with a committed offset is ``log_end - committed`` (as Kafka's own tools report it: it can
exceed what is still readable when retention deleted unconsumed records, and is negative when the commit is
past the end, e.g. after a topic was recreated — both worth seeing, so not clamped). With nothing committed,
lag is ``log_end - log_start``: what a consumer starting with ``auto.offset.reset=earliest`` — our workers'
setting — still has to read. Every partition of a topic the group touches is reported, committed or not,
so a partition the group never committed is not hidden.

Tansu's admin API, measured: ListGroups, OffsetFetch (``list_consumer_group_offsets``) and DescribeGroups
answer, but Tansu lists only groups that committed offsets, and describes every group — unknown ones
included — as EMPTY (active ones as STABLE) with no members. Real Kafka lists active groups too and
returns member assignments. Hence the ``topics`` argument: on Tansu it is the only way to see the lag of a
group that has not committed yet.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.config import KafkaSettings
from streams.errors import KafkaOperationError, KafkaUnavailableError
from streams.kafka.client import make_admin, make_consumer, result, translate

TP = tuple[str, int]

_ACTIVE = {
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
}

# The throwaway consumer only needs one fetch response per partition: answer empty fetches quickly.
_PROBE_OVERRIDES: Mapping[str, object] = {
    "fetch.wait.max.ms": 10,
    "fetch.error.backoff.ms": 50,
    "enable.partition.eof": False,
}


class UnknownGroupError(KafkaOperationError):
    """The named consumer group has no committed offsets, no members, and no topics were named for it."""

    reason = "unknown_group"


@dataclass(frozen=True)
class Watermarks:
    """A partition's log start (first readable offset) and log end (high watermark: next offset written)."""

    log_start: int
    log_end: int


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    log_start: int
    log_end: int
    lag: int

    @classmethod
    def of(cls, group: str, tp: TP, committed: int | None, wm: Watermarks) -> PartitionLag:
        base = wm.log_start if committed is None else committed
        return cls(group, tp[0], tp[1], committed, wm.log_start, wm.log_end, wm.log_end - base)


@dataclass(frozen=True)
class GroupLag:
    group: str
    partitions: tuple[PartitionLag, ...]  # sorted by (topic, partition)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True)
class _GroupInfo:
    committed: dict[TP, int | None]
    assigned: frozenset[str]  # topics assigned to live members (real Kafka only; Tansu describes none)
    active: bool


class LagReader:
    """Reads consumer lag; keeps one admin client, so ``--watch`` does not reconnect on every refresh."""

    def __init__(self, settings: KafkaSettings, timeout_s: float = 10.0, admin: AdminClient | None = None) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._admin = admin or make_admin(settings)

    def groups(self) -> list[str]:
        """Ids of the consumer groups the cluster lists (on Tansu: those that have committed offsets)."""
        res = result(self._admin.list_consumer_groups(request_timeout=self._timeout_s), "listing consumer groups",
                     self._timeout_s)
        if res.errors:
            raise translate(res.errors[0], "listing consumer groups")
        return sorted(g.group_id for g in res.valid or [])

    def read(self, group: str | None = None, topics: Iterable[str] = ()) -> list[GroupLag]:
        """Lag of every listed group, or of ``group`` alone; ``topics`` are read by the group(s) even if
        nothing was committed on them yet.

        Raises UnknownGroupError for a named group that shows no sign of existing and no ``topics`` were given.
        """
        extra = frozenset(topics)
        names = [group] if group is not None else self.groups()
        infos = self._describe(names)
        if group is not None:
            info = infos[group]
            if not (info.committed or info.assigned or info.active or extra):
                known = self.groups()
                hint = ", ".join(known[:10]) + (f" (+{len(known) - 10} more)" if len(known) > 10 else "")
                raise UnknownGroupError(
                    f"no consumer group {group!r} on {self._settings.bootstrap_servers}: it has no committed "
                    f"offsets and no members (known groups: {hint or 'none'}; name the topics it reads to see "
                    "the lag of a group that has not committed yet)"
                )
        counts = self._partition_counts()
        wanted: dict[str, list[TP]] = {}
        for name, info in infos.items():
            touched = {t for t, _ in info.committed} | info.assigned | extra
            wanted[name] = [(t, p) for t in sorted(touched) if t in counts for p in range(counts[t])]
        marks = self.watermarks({tp for tps in wanted.values() for tp in tps})
        return [
            GroupLag(name, tuple(PartitionLag.of(name, tp, infos[name].committed.get(tp), marks[tp])
                                 for tp in wanted[name]))
            for name in names
        ]

    def watermarks(self, partitions: Iterable[TP]) -> dict[TP, Watermarks]:
        """Log start and end of each partition, correct on Tansu too (see the module docstring): one
        ListOffsets request and one throwaway consumer for all of them."""
        tps = sorted(set(partitions))
        if not tps:
            return {}
        latest = self._list_offsets(tps, OffsetSpec.latest())
        consumer = make_consumer(self._settings, f"streams-lag-probe-{uuid.uuid4().hex}", _PROBE_OVERRIDES)
        try:
            consumer.assign([TopicPartition(t, p, latest[(t, p)]) for t, p in tps])
            found: dict[TP, tuple[int, int]] = {}
            deadline = time.monotonic() + self._timeout_s
            while True:
                for msg in consumer.consume(num_messages=1000, timeout=0.005):
                    err = msg.error()
                    if err is not None and (err.fatal() or not _retryable(err)):
                        raise translate(err, f"fetching {msg.topic()} [{msg.partition()}]")
                for t, p in tps:
                    if (t, p) not in found:
                        lo, hi = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
                        if hi >= 0:
                            found[(t, p)] = (lo, hi)
                if len(found) == len(tps):
                    break
                if time.monotonic() > deadline:
                    missing = ", ".join(f"{t}[{p}]" for t, p in tps if (t, p) not in found)
                    raise KafkaUnavailableError(
                        f"no fetch response within {self._timeout_s:g}s for {missing}: cannot tell the log end"
                    )
        except KafkaException as exc:
            raise translate(exc, "fetching high watermarks") from exc
        finally:
            consumer.close()
        # The log start comes with fetch v5+; an older broker answers -1 and is asked with ListOffsets.
        no_start = [tp for tp, (lo, _) in found.items() if lo < 0]
        earliest = self._list_offsets(no_start, OffsetSpec.earliest()) if no_start else {}
        return {tp: Watermarks(earliest.get(tp, lo), hi) for tp, (lo, hi) in found.items()}

    def _describe(self, names: list[str]) -> dict[str, _GroupInfo]:
        """Committed offsets (one OffsetFetch per group: librdkafka takes one group per request, so they are
        sent together and awaited together) and member assignments (one DescribeGroups for all)."""
        if not names:
            return {}
        offset_futs = {
            g: self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], request_timeout=self._timeout_s)[g]
            for g in names
        }
        desc_futs = self._admin.describe_consumer_groups(names, request_timeout=self._timeout_s)
        out: dict[str, _GroupInfo] = {}
        for g in names:
            res = result(offset_futs[g], f"reading committed offsets of group {g}", self._timeout_s)
            committed: dict[TP, int | None] = {}
            for tp in res.topic_partitions or []:
                if tp.error is not None:
                    raise translate(tp.error, f"reading committed offset of group {g} on {tp.topic}[{tp.partition}]")
                # OFFSET_INVALID (-1001): the partition was asked about but never committed.
                committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
            assigned, active = _assignment(desc_futs[g], g, self._timeout_s)
            out[g] = _GroupInfo(committed, assigned, active)
        return out

    def _partition_counts(self) -> dict[str, int]:
        try:
            md = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise translate(exc, "listing topics") from exc
        return {t: len(m.partitions) for t, m in md.topics.items() if m.error is None}

    def _list_offsets(self, tps: list[TP], spec: OffsetSpec) -> dict[TP, int]:
        futs = self._admin.list_offsets({TopicPartition(t, p): spec for t, p in tps},
                                        request_timeout=self._timeout_s)
        return {(tp.topic, tp.partition): int(result(f, f"listing offsets of {tp.topic}[{tp.partition}]",
                                                      self._timeout_s).offset)
                for tp, f in futs.items()}


def _assignment(future: Any, group: str, timeout_s: float) -> tuple[frozenset[str], bool]:
    """Topics assigned to the group's live members, and whether it is active. A group the broker does not know
    is not an error here: the caller decides whether the group exists."""
    try:
        desc = future.result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return frozenset(), False
        raise translate(exc, f"describing group {group}") from exc
    except TimeoutError as exc:
        raise KafkaUnavailableError(f"describing group {group}: no answer from Kafka within {timeout_s:g}s") from exc
    topics = frozenset(tp.topic for m in desc.members or [] for tp in m.assignment.topic_partitions)
    return topics, getattr(desc, "state", None) in _ACTIVE


def _retryable(err: KafkaError) -> bool:
    return isinstance(translate(err, ""), KafkaUnavailableError)


def consumer_lag(
    settings: KafkaSettings, group: str | None = None, topics: Iterable[str] = (), timeout_s: float = 10.0
) -> list[GroupLag]:
    """Lag of every consumer group, or of ``group``; see :meth:`LagReader.read`."""
    return LagReader(settings, timeout_s).read(group, topics)
