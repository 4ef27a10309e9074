"""The one boundary to confluent-kafka: its exceptions become ours there, and the per-record helpers keep
confluent-kafka's meaning. (That nothing else imports it is an import-linter contract, see test_quality.)"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.config import KafkaSettings
from streams.errors import ConfigError, KafkaOperationError, KafkaUnavailableError, ProducerFencedError
from streams.kafka import io
from streams.kafka.client import plain_producer, translated


def test_translated_turns_a_kafka_exception_into_ours_naming_the_operation() -> None:
    what = "reading offsets of group g"
    with pytest.raises(KafkaUnavailableError, match=what) as down, translated(what):
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))
    assert isinstance(down.value.__cause__, KafkaException)
    with pytest.raises(KafkaOperationError, match="rewinding group g"), translated("rewinding group g"):
        raise KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))


def test_translated_leaves_other_errors_alone() -> None:
    with pytest.raises(ValueError, match="not kafka"), translated("anything"):
        raise ValueError("not kafka")


def test_a_bad_client_setting_is_our_error_not_librdkafkas() -> None:
    with pytest.raises(KafkaOperationError, match="creating producer"):
        plain_producer({"bootstrap.servers": "127.0.0.1:1", "no.such.setting": 1})


def test_partition_eof_is_told_apart_from_a_real_consume_error() -> None:
    assert io.is_partition_eof(KafkaError(KafkaError._PARTITION_EOF))
    assert not io.is_partition_eof(KafkaError(KafkaError._TRANSPORT))
    assert io.error_text(KafkaError(KafkaError._TRANSPORT)) == KafkaError(KafkaError._TRANSPORT).str()


class _Refusing:
    """A producer whose produce() fails as librdkafka's does: the mapping of that failure is what is tested."""

    def __init__(self, err: KafkaError) -> None:
        self.err = err

    def produce(self, *args: object, **kwargs: object) -> None:
        raise KafkaException(self.err)


def test_a_fatal_produce_error_ends_the_worker_as_a_fenced_producer_and_others_are_ours() -> None:
    fatal = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "out of order", fatal=True)
    with pytest.raises(ProducerFencedError, match=r"producing to t: .*OUT_OF_ORDER_SEQUENCE_NUMBER"):
        io.produce(_Refusing(fatal), "t", b"k", b"v", None)  # type: ignore[arg-type]
    with pytest.raises(KafkaOperationError, match="producing to t") as plain:
        io.produce(_Refusing(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), "t", b"k", b"v", None)  # type: ignore[arg-type]
    assert not isinstance(plain.value, ProducerFencedError)
    io.produce(_Refusing(KafkaError(KafkaError._STATE)), "t", b"k", b"v", None)  # type: ignore[arg-type]


class _FailingFlush:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def flush(self, timeout: float) -> int:
        raise self.exc


def _pending_during_callback(err: KafkaError) -> SystemError:
    """What confluent-kafka raises when a delivery callback ran while a fatal error was pending."""
    try:
        try:
            raise KafkaException(err)
        except KafkaException as cause:
            raise SystemError("<function DeliveryTracker.__call__> returned a result with an exception set") from cause
    except SystemError as exc:
        return exc


def test_a_fatal_error_raised_by_flush_is_a_fenced_producer_however_confluent_kafka_wraps_it() -> None:
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    for exc in (KafkaException(fenced), _pending_during_callback(fenced)):
        with pytest.raises(ProducerFencedError, match="_FENCED"):
            io.flush_waiting(_FailingFlush(exc), 1.0)  # type: ignore[arg-type]
        assert io.flush(_FailingFlush(exc), 1.0) is not None  # type: ignore[arg-type]  # closing: text, no raise
    with pytest.raises(KafkaUnavailableError):  # not fatal: ours, retryable
        io.flush_waiting(_FailingFlush(KafkaException(KafkaError(KafkaError._TRANSPORT))), 1.0)  # type: ignore[arg-type]
    with pytest.raises(SystemError):  # a SystemError of another cause is a bug, left alone
        io.flush_waiting(_FailingFlush(SystemError("other")), 1.0)  # type: ignore[arg-type]


@pytest.mark.kafka
def test_follow_hands_over_old_then_new_records_idles_with_empty_batches_and_stops(kafka: KafkaSettings) -> None:
    import threading
    import uuid

    from streams.kafka.admin import Admin
    from streams.kafka.client import follow
    from streams.topology import TopicSpec

    topic = f"follow-{uuid.uuid4().hex[:8]}"
    Admin(kafka).ensure([TopicSpec(topic, 3)])
    producer = plain_producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(6):
        producer.produce(topic, f"old-{i}".encode(), partition=i % 3)
    assert producer.flush(30) == 0
    stop = threading.Event()
    got: list[bytes] = []
    empty = 0
    for batch in follow(kafka, [topic], stop, poll_s=0.1):
        got += [m.value() for m in batch]
        empty += not batch
        if len(got) == 6 and empty and b"new" not in got:
            producer.produce(topic, b"new", partition=1)
            producer.flush(30)
        if b"new" in got:
            stop.set()
    assert sorted(got) == sorted([f"old-{i}".encode() for i in range(6)] + [b"new"])
    assert got[-1] == b"new" and empty >= 1
    with pytest.raises(ConfigError, match="does not exist"):
        next(follow(kafka, [f"missing-{uuid.uuid4().hex[:8]}"], threading.Event()))
