"""Record types that cross layer boundaries (immutable by convention, see InputRecord).

Headers are kept as the tuple-of-pairs shape confluent-kafka produces, so the hot path never converts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Headers = Sequence[tuple[str, bytes | None]]  # Kafka header values may be null

# Header names are part of the wire contract with services and operators; changing one is a breaking change.
# One id header for both directions: an output's id is the event id its consumer dedupes on.
H_EVENT_ID = "streams-id"
H_HOPS = "streams-hops"
H_TRACEPARENT = "traceparent"
# A parked event's copy (see streams.runtime.parking): its deadline, original timestamp and original position.
H_PARKED_UNTIL = "streams-parked-until"
H_PARKED_TS = "streams-parked-ts"
H_PARKED_OFFSET = "streams-parked-from"
# The key as produced, on a record whose key the worker decoded (a topic's key_format): a dead letter gets it back.
H_RAW_KEY = "streams-raw-key"
H_DLQ_TOPIC = "dlq-origin-topic"
H_DLQ_PARTITION = "dlq-origin-partition"
H_DLQ_OFFSET = "dlq-origin-offset"
H_DLQ_ERROR_CLASS = "dlq-error-class"
H_DLQ_REASON = "dlq-reason"
H_DLQ_MESSAGE = "dlq-error-message"
H_DLQ_ATTEMPTS = "dlq-attempts"
H_DLQ_GROUP = "dlq-group"
H_DLQ_TIMESTAMP = "dlq-origin-timestamp"


def header(headers: Headers | None, name: str) -> bytes | None:
    """First value of header ``name``; headers are few, so a scan beats building a dict."""
    if headers:
        for k, v in headers:
            if k == name:
                return v
    return None


# Not frozen=True: frozen dataclasses set every field through object.__setattr__, 3-4x slower to build, and
# the worker builds these per record. Immutable by convention; unsafe_hash keeps them hashable as before.
# The hot path's dataclasses write their __init__ out: mypyc compiles it natively, while the one dataclass
# generates runs as interpreted bytecode (0.13 -> 0.02 us a construction, measured). eq, hash and repr stay
# generated; tests/test_units.py checks each __init__ against the fields.
@dataclass(slots=True, unsafe_hash=True)
class InputRecord:
    """A consumed record, as the processor sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    timestamp_ms: int
    headers: Headers = ()

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes,
        value: bytes | None,
        timestamp_ms: int,
        headers: Headers = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
        self.headers = headers

    @property
    def event_id(self) -> str:
        """The producer-assigned id, else one derived from the log position (stable across replays)."""
        raw = header(self.headers, H_EVENT_ID)
        if raw is not None:
            return raw.decode("utf-8", "replace")
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(slots=True, unsafe_hash=True)
class OutputRecord:
    """A record a processor wants produced; the runtime adds the deterministic id header."""

    topic: str
    key: bytes
    value: bytes | None
    headers: Headers = field(default_factory=tuple)

    def __init__(self, topic: str, key: bytes, value: bytes | None, headers: Headers = ()) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
