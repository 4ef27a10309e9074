"""The exception tree.

Every error says whether retrying can help (``retryable``) and whether the record that caused it belongs in
the dead-letter topic (``dead_letter``), so the runtime decides by class, never by parsing messages.
DLQ ``reason`` strings are stable identifiers that operators filter on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class StreamsError(Exception):
    """Base of every error raised by streams."""

    retryable: bool = False
    dead_letter: bool = False
    reason: str = "error"


class ConfigError(StreamsError):
    """A setting, flag or file is wrong; the message names which and where."""

    reason = "config"


class TopologyError(ConfigError):
    """A topology file is invalid or does not match the cluster (e.g. not co-partitioned)."""

    reason = "topology"


class KafkaUnavailableError(StreamsError):
    """The broker cannot be reached or refused a request that may succeed later."""

    retryable = True
    reason = "kafka_unavailable"


class KafkaOperationError(StreamsError):
    """The broker refused a request for a reason retrying will not fix."""

    reason = "kafka_error"


class DeliveryError(KafkaUnavailableError):
    """Produced records were not acknowledged; nothing may be committed past them."""

    reason = "delivery_failed"


class TransactionAbortedError(KafkaOperationError):
    """The broker made a transaction abort (e.g. it refused the batch's offsets: the group moved on). None of
    its records becomes visible; the batch is processed again by whoever owns its partitions now."""

    reason = "transaction_aborted"


class ProducerFencedError(KafkaOperationError):
    """A transactional producer is fenced for good (a newer incarnation took its transactional.id, or its
    transaction timed out): the process must not write again and ends."""

    reason = "producer_fenced"


class StateStoreError(StreamsError):
    """The local RocksDB store cannot be opened, read or written."""

    reason = "state_store"


class RecordError(StreamsError):
    """A record cannot be processed; it goes to the dead-letter topic and its partition moves on."""

    dead_letter = True
    reason = "poison"


class DecodeError(RecordError):
    """The record's bytes cannot be decoded."""

    reason = "decode_error"


class UnknownMagicByteError(DecodeError):
    """The value does not start with the Confluent wire-format magic byte 0."""

    reason = "unknown_magic_byte"


class UnknownSchemaError(DecodeError):
    """The value names a schema id the registry does not know."""

    reason = "unknown_schema_id"


class SchemaMismatchError(DecodeError):
    """The body does not match the writer schema, or cannot be resolved to the reader schema."""

    reason = "schema_mismatch"


class ProcessingError(RecordError):
    """The processor raised while handling a record (after its in-place retries)."""

    reason = "handler_exception"


class InvalidTransitionError(RecordError):
    """The entity's current state does not accept this event."""

    reason = "invalid_transition"


class HopLimitError(RecordError):
    """A record's hop counter exceeded the limit: a runaway loop between workflows and services."""

    reason = "hop_limit"


class MisroutedError(RecordError):
    """A record is on another partition than its key belongs to: its producer used another partitioner.
    ``home`` is the partition its entity lives on."""

    reason = "misrouted"

    def __init__(self, message: str, home: int) -> None:
        super().__init__(message)
        self.home = home


class BadKeyError(RecordError):
    """A record's key does not match the key format its topic declares; the message says what it looks like."""

    reason = "bad_key"


class ConflictingStartError(RecordError):
    """A second start event for an entity that exists, with another id and another payload: two different
    things claim the same entity key, and neither may be dropped silently."""

    reason = "conflicting_start"


class SchemaRegistryError(StreamsError):
    """The schema registry answered with an error; ``code`` is Confluent's error code."""

    reason = "schema_registry"

    def __init__(self, message: str, code: int = 50001, http_status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class IncompatibleSchemaError(SchemaRegistryError):
    """A schema breaks the subject's compatibility rule; the message names the breaking fields."""

    reason = "incompatible_schema"


class WorkflowDefinitionError(ConfigError):
    """A workflow definition is inconsistent; ``problems`` lists each one, naming the state, event or timer."""

    reason = "workflow_definition"

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class EncodeError(RecordError):
    """A record a processor emitted does not match its writer schema: the input that caused it is dead-lettered."""

    reason = "encode_error"


class SchemaRegistryUnavailableError(SchemaRegistryError):
    """The schema registry cannot be reached or failed on its side (5xx); retrying may help."""

    retryable = True
    reason = "schema_registry_unavailable"


class WorkerUnreachableError(StreamsError):
    """A worker's HTTP endpoint did not answer (down, wrong address, or a firewall); retrying may help."""

    retryable = True
    reason = "worker_unreachable"


class StoppedError(Exception):
    """Shutdown was requested while waiting for a dependency (:func:`patiently`): leave the work undone.
    Not a :class:`StreamsError`: nothing failed."""


def patiently(call: Callable[[], T], stop: threading.Event, log: Callable[[str], None], who: str) -> T:
    """``call()`` until it returns, waiting out retryable errors (a broker, registry or dependency briefly down)
    with the pauses of :func:`backoff`, each logged as ``who: error; retrying``. Any other exception is raised as
    it is; :class:`StoppedError` when ``stop`` is set during a pause."""
    pauses: Iterator[float] | None = None  # made on the first error: this runs for every record
    while True:
        try:
            return call()
        except StreamsError as exc:
            if not exc.retryable:
                raise
            if pauses is None:
                pauses = backoff()
            delay = next(pauses)
            log(f"{who}: {exc}; retrying in {delay:.1f}s")
            if stop.wait(delay):
                raise StoppedError from exc


def backoff(first_s: float = 0.1, cap_s: float = 5.0) -> Iterator[float]:
    """The pauses between attempts at something that may succeed later: ``first_s``, doubling up to ``cap_s``.
    Every retry loop takes its pauses from here."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, cap_s)
