"""Dead-letter inspection and replay: what failed, where it came from, and putting it back.

A dead letter keeps the original key, value and headers (see :mod:`streams.runtime.dlq`), so replay is a plain
re-produce to the origin topic with the ``dlq-*`` headers removed and a ``dlq-replayed-from`` header added. The
record keeps its ``streams-id``: if it was somehow applied meanwhile, the entity recognises it as a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streams.config import KafkaSettings
from streams.errors import ConfigError, DeliveryError
from streams.kafka.client import plain_producer, read_to_end
from streams.kafka.io import KafkaError
from streams.progress import SILENT, Progress
from streams.records import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR_CLASS,
    H_DLQ_GROUP,
    H_DLQ_MESSAGE,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TOPIC,
    header,
)

H_REPLAYED = "dlq-replayed-from"


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # in the DLQ topic
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def h(self, name: str) -> str:
        raw = header(self.headers, name)
        return "" if raw is None else raw.decode("utf-8", "replace")

    @property
    def origin(self) -> tuple[str, int, int]:
        return self.h(H_DLQ_TOPIC), int(self.h(H_DLQ_PARTITION) or -1), int(self.h(H_DLQ_OFFSET) or -1)

    def summary(self) -> dict[str, object]:
        topic, part, off = self.origin
        return {
            "dlq_partition": self.partition, "dlq_offset": self.offset, "timestamp_ms": self.timestamp_ms,
            "key": (self.key or b"").decode("utf-8", "replace"), "origin_topic": topic, "origin_partition": part,
            "origin_offset": off, "reason": self.h(H_DLQ_REASON), "error_class": self.h(H_DLQ_ERROR_CLASS),
            "message": self.h(H_DLQ_MESSAGE), "attempts": int(self.h(H_DLQ_ATTEMPTS) or 0),
            "group": self.h(H_DLQ_GROUP), "replayed_from": self.h(H_REPLAYED) or None,
        }


def read(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> Iterator[DeadLetter]:
    """Every record of the DLQ topic, up to its end."""
    for m in read_to_end(kafka, topic, timeout_s):
        yield DeadLetter(m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), tuple(m.headers() or ()))


def replay(kafka: KafkaSettings, letters: list[DeadLetter], log: Callable[[str], None] = lambda _m: None,
           progress: Progress = SILENT) -> int:
    """Re-produce each dead letter to its origin topic; returns how many were acknowledged."""
    producer = plain_producer({**kafka.common(), "enable.idempotence": True, "partitioner": "murmur2_random"})
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.str())

    progress.phase(f"replaying {len(letters)} dead letters", len(letters))
    for i, dl in enumerate(letters, 1):
        topic, _part, _off = dl.origin
        if not topic:
            raise ConfigError(f"dead letter {dl.partition}/{dl.offset} has no origin topic header")
        headers = [h for h in dl.headers if not h[0].startswith("dlq-")]
        headers.append((H_REPLAYED, f"{dl.partition}/{dl.offset}".encode()))
        producer.produce(topic, dl.value, dl.key, headers=headers, on_delivery=on_delivery)
        progress.advance(i)
    progress.phase("waiting for the broker's acknowledgements")
    left = producer.flush(30)
    progress.end()
    if left or failed:
        raise DeliveryError(f"replay: {left} unacknowledged, {len(failed)} failed ({failed[:1]})")
    log(f"replayed {len(letters)} dead letter(s)")
    return len(letters)
