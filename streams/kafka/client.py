"""Client factories and the translation of confluent-kafka errors into ours.

Every client gets the same pass-through settings (security included), so a cluster that needs SASL or mTLS is
configured once. Foreign exceptions are translated here: ``raise OurError(...) from exc``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.config import KAFKA_REPEATS, KafkaSettings
from streams.errors import ConfigError, KafkaOperationError, KafkaUnavailableError, StreamsError

T = TypeVar("T")

_RETRYABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def translate(err: KafkaError | KafkaException | BaseException, what: str) -> StreamsError:
    """Our error for a confluent-kafka error; ``what`` says which operation failed."""
    kerr = err.args[0] if isinstance(err, KafkaException) and err.args else err
    if isinstance(kerr, KafkaError):
        msg = f"{what}: {kerr.str()} ({kerr.name()})"
        if kerr.retriable() or kerr.code() in _RETRYABLE:
            return KafkaUnavailableError(msg)
        return KafkaOperationError(msg)
    return KafkaOperationError(f"{what}: {err}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the block, raising our error for a confluent-kafka exception it raises (``translate``)."""
    try:
        yield
    except KafkaException as exc:
        raise translate(exc, what) from exc


def _error_cb(kind: str, logger: Callable[[str], None]) -> Callable[[KafkaError], None]:
    """librdkafka's error callback, rate-limited like its log: a down broker reports every reconnect."""
    def report(err: KafkaError) -> None:
        text = f"{kind}: {err.str()}"
        dropped = KAFKA_REPEATS.admit(text)
        if dropped is not None:
            logger(text + (f" ({dropped} like it suppressed)" if dropped else ""))

    return report


def consumer_config(
    settings: KafkaSettings, group: str, overrides: Mapping[str, object] | None = None
) -> dict[str, object]:
    conf: dict[str, object] = {
        **settings.common(),
        **settings.consumer_defaults(),  # session, heartbeat and fetch wait chosen per broker kind
        "group.id": group,
        "enable.auto.commit": False,
        # Offsets are stored and committed by the commit protocol only, never by librdkafka on its own.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Prefetch per partition: four max-size batches (max_batch 5000) already local when the loop asks, so
        # a saturated worker never waits on a fetch round trip between batches.
        "queued.min.messages": 20000,
        # librdkafka >= 2.4 otherwise stops fetching a partition for 1 s once its local queue is full: a fast
        # reader then idles (restore of 500k records measured 35k/s -> 174k/s with this).
        "fetch.queue.backoff.ms": 10,
        # librdkafka's default, stated because exactly-once rests on it: records of open or aborted
        # transactions (a crashed or fenced worker's) are never read, by the loop or by a restore.
        "isolation.level": "read_committed",
        **settings.consumer,
    }
    if overrides:
        conf.update(overrides)
    if int(str(conf.get("max.poll.interval.ms", 300000))) < int(str(conf["session.timeout.ms"])):
        conf["max.poll.interval.ms"] = conf["session.timeout.ms"]  # librdkafka refuses less than the session
    return conf


def make_consumer(
    settings: KafkaSettings, group: str, overrides: Mapping[str, object] | None = None,
    logger: Callable[[str], None] | None = None,
) -> Consumer:
    conf = consumer_config(settings, group, overrides)
    if logger is not None:
        conf["error_cb"] = _error_cb("kafka consumer", logger)
    try:
        return Consumer(conf)
    except KafkaException as exc:
        raise translate(exc, "creating consumer") from exc


def producer_config(settings: KafkaSettings, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
    conf: dict[str, object] = {
        **settings.common(),
        # Idempotence: librdkafka's own retries never duplicate or reorder within a partition.
        "enable.idempotence": True,
        "acks": "all",
        # Java clients' partitioner: a reply keyed by order id lands on the partition (and so the worker and
        # store) that holds that order, whichever client produced the order.
        "partitioner": "murmur2_random",
        # A few ms of linger packs a worker's records into few produce requests: 2 ms on Kafka (the saga's p99
        # 57 ms against 75 ms with 5 ms, docs/benchmarks.md); 5 ms on the embedded broker, bound by requests.
        "linger.ms": 5 if settings.tansu else 2,
        "batch.num.messages": 10000,
        # Room for a whole batch's outputs and changelog (about four records a step) well past the worker's own
        # backpressure bound (max_in_flight, 50,000): the worker pauses itself before produce() would block.
        "queue.buffering.max.messages": 500000,
        **settings.producer,
    }
    if overrides:
        conf.update(overrides)
    return conf


def resume(consumer: Consumer, partitions: list[TopicPartition], timeout_s: float = 0.1) -> None:
    """Resume ``partitions`` and start fetching them now rather than up to a second later.

    librdkafka (2.16 here) does not wake the leader's broker thread when a partition paused in the assignment
    callback is resumed: the fetcher sees it on its next idle tick, up to a second later (0.90-0.95 s measured
    against the embedded broker; confluent-kafka-go#630 shows the same against Kafka). That second was spent
    idle at the start of every assignment: a failover, each bench run. Any request to a partition's leader
    wakes its broker thread, and a watermark query is the cheapest one. It is only a nudge, which works once the
    request is queued, answered or not: the short timeout bounds what a slow broker costs the loop, and if the
    query fails the fetcher still starts on its own tick.
    """
    consumer.resume(partitions)
    for tp in partitions:
        try:
            consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
        except KafkaException:
            return


def committed_offsets(consumer: Consumer, partitions: list[TopicPartition], what: str,
                      timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """The group's committed offset of each of ``partitions`` (negative: none), translating a failure."""
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=timeout_s)}
    except KafkaException as exc:
        raise translate(exc, what) from exc


def make_producer(
    settings: KafkaSettings, overrides: Mapping[str, object] | None = None,
    logger: Callable[[str], None] | None = None,
) -> Producer:
    conf = producer_config(settings, overrides)
    if logger is not None:
        conf["error_cb"] = _error_cb("kafka producer", logger)
    try:
        return Producer(conf)
    except KafkaException as exc:
        raise translate(exc, "creating producer") from exc


def plain_producer(conf: Mapping[str, object], what: str = "creating producer") -> Producer:
    """A producer with exactly ``conf`` (tools that choose every setting themselves), errors translated."""
    try:
        return Producer(dict(conf))
    except KafkaException as exc:
        raise translate(exc, what) from exc


def plain_consumer(conf: Mapping[str, object], what: str = "creating consumer") -> Consumer:
    """A consumer with exactly ``conf`` (tools that choose every setting themselves), errors translated."""
    try:
        return Consumer(dict(conf))
    except KafkaException as exc:
        raise translate(exc, what) from exc


def partition_count(client: Consumer | Producer, topic: str, what: str) -> int | None:
    """How many partitions ``topic`` has (None: it does not exist), from the cluster's metadata.

    Never ask a consumer from inside its own rebalance callback: confluent-kafka's ``list_topics`` ends the
    call state the callback runs in, and the next log line librdkafka hands over in that same poll aborts the
    process (``CallState_get: Assertion 'cs != NULL' failed``)."""
    with translated(what):
        meta = client.list_topics(topic, timeout=30).topics.get(topic)
    if meta is not None and meta.error is None and meta.partitions:
        return len(meta.partitions)
    return None


def make_admin(settings: KafkaSettings) -> AdminClient:
    try:
        return AdminClient(settings.common())
    except KafkaException as exc:
        raise translate(exc, "creating admin client") from exc


def result(future: Any, what: str, timeout_s: float = 30.0) -> Any:
    """Wait for an admin future, translating its failure."""
    try:
        return future.result(timeout=timeout_s)
    except KafkaException as exc:
        raise translate(exc, what) from exc
    except TimeoutError as exc:  # the future's own timeout: no broker answered at all
        raise KafkaUnavailableError(f"{what}: no answer from Kafka within {timeout_s:g}s") from exc


def at_end(consumer: Consumer, eof: Message, tansu: bool) -> bool:
    """Whether a partition-EOF event is the partition's end for a reader that must see everything committed.

    A read_committed consumer reports EOF at the last stable offset: with a transaction still open there (a
    previous owner's commit whose markers are not yet written, or a zombie's) the records behind it may yet
    commit, so the end is reached only when the EOF offset is the high watermark. librdkafka reports EOF again
    once the transaction ends, whichever way. The embedded broker does no transactions and its watermarks are
    not trusted: any EOF is its end."""
    if tansu:
        return True
    _, hi = consumer.get_watermark_offsets(TopicPartition(eof.topic(), eof.partition()), cached=True)
    return bool(eof.offset() >= hi)


def read_to_end(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> Iterator[Message]:
    """Every record of every partition of ``topic``, up to the end seen in fetch responses (partition EOF, see
    :func:`at_end`): the embedded broker's ListOffsets is wrong for batched produces. Group-less: nothing is
    committed."""
    consumer = make_consumer(settings, f"streams-reader-{uuid.uuid4().hex}", {"enable.partition.eof": True})
    try:
        parts = _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is None:
                    yield m
                elif err.code() == KafkaError._PARTITION_EOF and at_end(consumer, m, settings.tansu):
                    done.add(m.partition())
    finally:
        consumer.close()


def _topic_metadata(consumer: Consumer, topic: str) -> Any:
    return consumer.list_topics(topic, timeout=10).topics.get(topic)


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    """The partition ids of ``topic``, waiting while a fresh cluster settles."""
    meta = until_settled(partial(_topic_metadata, consumer, topic), time.monotonic() + 30)
    if meta is None or meta.error is not None:
        raise ConfigError(f"topic {topic} does not exist")
    return list(meta.partitions)


def follow(settings: KafkaSettings, topics: Iterable[str], stop: threading.Event,
           poll_s: float = 0.2) -> Iterator[list[Message]]:
    """Every record of ``topics`` from the beginning, then each new one as it comes, until ``stop`` is set:
    one batch per poll, empty when nothing came within ``poll_s`` (so a caller can do timed work between
    records). Group-less: nothing is committed. A batch takes what is buffered without waiting to fill it,
    so a record is handed over as soon as it arrives (the demo measures latency through this)."""
    consumer = make_consumer(settings, f"streams-follower-{uuid.uuid4().hex}")
    try:
        consumer.assign([TopicPartition(topic, p, 0) for topic in topics for p in _partitions(consumer, topic)])
        while not stop.is_set():
            msgs = consumer.consume(1000, 0) or consumer.consume(1, poll_s)
            yield [m for m in msgs if m.error() is None]
    finally:
        consumer.close()


# What a freshly started (or just re-elected) cluster answers for a while: not a failure, a cluster settling.
_SETTLING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.NOT_COORDINATOR,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE})


def until_settled(call: Callable[[], T], deadline: float) -> T:
    """``call()``, again until ``deadline`` (monotonic) while the broker answers a retriable error: on a fresh
    real Kafka a topic just created has a leader in the metadata before that broker serves it, and the group
    coordinator is still loading. Past the deadline, or on any other error, its failure is translated."""
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            settling = isinstance(err, KafkaError) and (err.retriable() or err.code() in _SETTLING)
            if not settling or time.monotonic() > deadline:
                raise translate(exc, "waiting for the cluster to settle") from exc
            time.sleep(0.2)
