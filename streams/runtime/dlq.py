"""Dead letters: the original record, untouched, plus headers saying where it came from and why it failed.

Keeping key, value and headers as they were means `streams dlq replay` can re-inject the record exactly.
A dead letter is produced inside the batch that consumed the record, so it is durable before the offset is
committed; a crash may write it twice, and its origin headers identify the copies.
"""

from __future__ import annotations

from streams.errors import RecordError, StreamsError
from streams.records import (
    H_DLQ_ATTEMPTS,
    H_DLQ_ERROR_CLASS,
    H_DLQ_GROUP,
    H_DLQ_MESSAGE,
    H_DLQ_OFFSET,
    H_DLQ_PARTITION,
    H_DLQ_REASON,
    H_DLQ_TIMESTAMP,
    H_DLQ_TOPIC,
    H_PARKED_UNTIL,
    H_RAW_KEY,
    InputRecord,
    OutputRecord,
    header,
)

_MAX_MESSAGE = 1000
_OURS = frozenset({H_DLQ_TOPIC, H_DLQ_PARTITION, H_DLQ_OFFSET, H_DLQ_TIMESTAMP, H_DLQ_ERROR_CLASS, H_DLQ_REASON,
                   H_DLQ_MESSAGE, H_DLQ_ATTEMPTS, H_DLQ_GROUP})


def dead_letter(rec: InputRecord, exc: Exception, attempts: int, group: str) -> OutputRecord:
    reason = exc.reason if isinstance(exc, StreamsError) else RecordError.reason
    message = str(exc)[:_MAX_MESSAGE]
    # A replay marker, if any, stays; a park deadline does not (a replayed dead letter starts a fresh wait).
    headers = [h for h in rec.headers if h[0] not in _OURS and h[0] != H_PARKED_UNTIL and h[0] != H_RAW_KEY]
    headers += [
        (H_DLQ_TOPIC, rec.topic.encode()),
        (H_DLQ_PARTITION, str(rec.partition).encode()),
        (H_DLQ_OFFSET, str(rec.offset).encode()),
        (H_DLQ_TIMESTAMP, str(rec.timestamp_ms).encode()),
        (H_DLQ_ERROR_CLASS, type(exc).__name__.encode()),
        (H_DLQ_REASON, reason.encode()),
        (H_DLQ_MESSAGE, message.encode("utf-8", "replace")),
        (H_DLQ_ATTEMPTS, str(attempts).encode()),
        (H_DLQ_GROUP, group.encode()),
    ]
    # A decoded key (streams.runtime.ingest) goes back to the bytes its producer wrote.
    return OutputRecord(topic="", key=header(rec.headers, H_RAW_KEY) or rec.key or b"", value=rec.value,
                        headers=tuple(headers))
