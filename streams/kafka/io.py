"""The engine's per-record calls into confluent-kafka: producing, seeking, committing offsets, and the client
types the runtime holds as opaque handles.

Only ``streams.kafka`` imports confluent-kafka (an import-linter contract): its exceptions are caught and
mapped here, and the rest of the engine names the client types through this module.

Compiled with mypyc (streams/_native.py): ``produce`` runs for every output, dead letter and changelog record.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.errors import ProducerFencedError, StreamsError
from streams.kafka.client import translate

__all__ = [
    "OFFSET_BEGINNING", "Consumer", "KafkaError", "Message", "Producer", "TopicPartition", "close_consumer",
    "commit_offsets", "error_text", "flush", "flush_waiting", "is_partition_eof", "partitions", "produce", "seek",
    "try_seek",
]


def produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes | None,
    headers: object, partition: int | None = None, on_delivery: object = None,
) -> bool:
    """Produce, waiting for queue space instead of failing: the queue bound is backpressure, not an error.
    ``on_delivery``, when given, replaces the producer's delivery callback for this record. Whether the record
    was queued (an exactly-once transaction in an abortable state refuses it, see below).

    Keyword arguments, even ``headers=None``, cost confluent-kafka ~0.5 us a record in argument parsing, so a
    record without headers (an entity's changelog value) passes none, and a callback goes positionally.
    """
    while True:
        try:
            if on_delivery is not None:  # topic, value, key, partition, callback, on_delivery, timestamp, headers
                producer.produce(topic, value, key, -1 if partition is None else partition, on_delivery, None, 0,
                                 headers)
            elif headers is not None:
                if partition is None:
                    producer.produce(topic, value, key, headers=headers)
                else:
                    producer.produce(topic, value, key, partition=partition, headers=headers)
            elif partition is None:
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, partition)  # positionally: topic, value, key, partition
            return True
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            # exactly_once: a transaction in an abortable error state (e.g. the coordinator aborted it on
            # timeout) refuses records until it is aborted. It can only abort now, at the latest when the
            # commit is refused, and then its batch is redone: this record is not lost.
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._STATE:
                return False
            raise _produce_error(exc, err, topic) from exc


def _produce_error(exc: KafkaException, err: object, topic: str) -> StreamsError:
    """Our error for a refused produce. A fatal one (an idempotent or transactional producer that lost its
    sequence, e.g. OUT_OF_ORDER_SEQUENCE_NUMBER after a broker was killed) leaves the producer unusable: the
    worker ends, writing nothing more, for its supervisor to start a fresh one, as for a fenced producer."""
    if isinstance(err, KafkaError) and err.fatal():
        return ProducerFencedError(f"producing to {topic}: {err.str()} ({err.name()}); the producer is unusable")
    return translate(exc, f"producing to {topic}")


def partitions(topics: list[str] | tuple[str, ...], p: int) -> list[TopicPartition]:
    """Partition ``p`` of each of ``topics``, without a position (for pause, resume and lag queries)."""
    return [TopicPartition(t, p) for t in topics]


def seek(consumer: Consumer, topic: str, p: int, offset: int) -> None:
    """Seek an assigned partition; a failure is raised as confluent-kafka's own (the partition must be ours)."""
    consumer.seek(TopicPartition(topic, p, offset))


def try_seek(consumer: Consumer, topic: str, p: int, offset: int) -> str | None:
    """Seek; the error's text instead of an exception when the partition is no longer assigned (lost or revoked
    within this consume() or assignment, so seek would raise)."""
    try:
        consumer.seek(TopicPartition(topic, p, offset))
    except KafkaException as exc:
        return str(exc)
    return None


def commit_offsets(consumer: Consumer, offsets: list[tuple[str, int, int]]) -> str | None:
    """Commit (topic, partition, next offset) synchronously; the broker's reason when it refused."""
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        return err.str() if isinstance(err, KafkaError) else str(err)
    return None


def close_consumer(consumer: Consumer) -> str | None:
    """Close (which runs the revoke callback); the error's text if librdkafka or the callback failed."""
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        return str(exc)
    return None


def flush(producer: Producer, timeout_s: float) -> str | None:
    """Flush; the error's text when the producer cannot (a fenced transactional one has nothing to deliver)."""
    try:
        flush_waiting(producer, timeout_s)
    except ProducerFencedError as exc:
        return str(exc)
    return None


def flush_waiting(producer: Producer, timeout_s: float) -> int:
    """``producer.flush``: how many records still wait. A fatal producer error (fenced, or a lost sequence after a
    broker was killed) is :class:`ProducerFencedError`. confluent-kafka raises it from inside the flush, and
    when a delivery callback runs while it is pending that surfaces as a SystemError caused by it."""
    try:
        return int(producer.flush(timeout_s))
    except (KafkaException, SystemError) as exc:
        cause = exc if isinstance(exc, KafkaException) else exc.__cause__
        if not isinstance(cause, KafkaException):
            raise
        err = cause.args[0] if cause.args else None
        raise _produce_error(cause, err, "the producer's topics (flush)") from exc


def is_partition_eof(err: KafkaError) -> bool:
    return bool(err.code() == KafkaError._PARTITION_EOF)


# Refusals no retry can lift: the principal lacks an ACL (see `streams acls`) or its credentials are wrong.
_DENIED = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                     KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                     KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION})


def is_denied(err: KafkaError) -> bool:
    return err.code() in _DENIED


def error_text(err: KafkaError) -> str:
    return str(err.str())
