"""The stateful processor interface: the one seam between the runtime and what it runs.

A processor is given one entity's current state and one decoded record and returns the new state and the
records to produce. It does no I/O: the runtime owns reading state, producing, persisting and committing, so
a processor cannot break the commit protocol. The workflow engine is one processor; the tests' counter is
another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from streams.records import InputRecord, OutputRecord

S = TypeVar("S")
E = TypeVar("E")


class _Unchanged:
    """Sentinel: the step leaves the entity as it was (not even its dedupe window changes)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see streams.records
class TimerChange:
    """Set a durable timer (``fire`` is the record to produce once ``due_ms`` has passed) or clear it.

    Clearing names the due time it was set with: the index is ordered by due time. A fired record should
    carry a deterministic ``streams-id`` header, so a timer fired twice (crash before the next commit) is
    recognised as one event.

    A processor with a ``fire_record(record) -> OutputRecord`` method may store a compact description of the
    timer in ``fire`` instead of the finished record: the runtime calls ``fire_record`` with the stored record
    only when the timer fires (most timers are cleared first, so encoding each one when it is set is waste).
    It must be deterministic, so a timer fired twice produces the same record.
    """

    name: str
    due_ms: int
    fire: OutputRecord | None


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see streams.records
class Step(Generic[S]):
    """The outcome of one record: new state (``None`` deletes the entity), the records it causes, and the
    changes to the entity's durable timers. ``park_until_ms`` (with ``UNCHANGED`` and nothing else) asks the
    runtime to hold the record and offer it again after the entity's next change, or once more at that time
    (see :mod:`streams.runtime.parking`)."""

    state: S | _Unchanged | None
    outputs: Sequence[OutputRecord] = ()
    timers: Sequence[TimerChange] = ()
    park_until_ms: int | None = None


class Processor(Protocol[S, E]):
    """What the runtime needs from a stateful processor. Raising a RecordError dead-letters the record."""

    def decode(self, record: InputRecord) -> E:
        """The record's value as the processor's event type; a DecodeError sends it to the DLQ."""
        ...

    def load_state(self, raw: bytes) -> S:
        """Decode a stored entity (what ``dump_state`` wrote, possibly by an older version)."""
        ...

    def dump_state(self, state: S) -> bytes:
        """Encode an entity for the store and its changelog; the same state must give the same bytes."""
        ...

    def process(self, state: S | None, event: E, record: InputRecord, now_ms: int) -> Step[S]:
        """Pure with respect to I/O: same state, event and now give the same result."""
        ...


class ProcessorFactory(Protocol):
    def __call__(self, options: dict[str, object], outputs: Sequence[str]) -> Processor[object, object]:
        ...
