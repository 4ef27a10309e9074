"""The one boundary to confluent-kafka: its exceptions become ours there, and the per-record helpers keep
confluent-kafka's meaning. (That nothing else imports it is an import-linter contract, see test_quality.)"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.errors import KafkaOperationError, KafkaUnavailableError
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
