"""The values that cross the boundary between the pure step and the runtime.

Every type is a slotted dataclass, immutable by convention: nothing assigns a field or mutates a mapping
inside after construction (the step copies on write), so values are safe to share between the stored state,
the adapter's decoded-state cache and the result. They are not ``frozen=True`` on purpose: a frozen
dataclass sets each field through ``object.__setattr__``, which made construction 3-4x slower (0.7 vs
0.2 us for a Timer), and a step builds a dozen of them. ``unsafe_hash`` keeps them hashable as before.
``WorkflowState``, ``Timer`` and ``Transition`` map field for field onto the Avro stored-state record, so the
adapter is ``WorkflowState.from_record(avro_dict)`` / ``state.to_record()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streams.errors import (
    ConflictingStartError,
    HopLimitError,
    InvalidTransitionError,
    ProcessingError,
    RecordError,
)

TIMER_FIRED = "TimerFired"  # the record the runtime writes to the workflow's input topic when a timer is due

# Reasons a step may be *ignored* (no effect, nothing to dead-letter). Stable strings: metrics label on them.
DUPLICATE_EVENT = "duplicate_event"  # the event's effect is already in the state
STALE_REPLY = "stale_reply"  # a failure reply for an attempt that is no longer current
STALE_TIMER = "stale_timer"  # a TimerFired whose timer is no longer pending (cancelled, fired, older attempt)
UNHANDLED_TIMER = "unhandled_timer"  # a pending timer fired in a state that has no use for it; it is dropped
UNKNOWN_ENTITY = "unknown_entity"  # no state for the key and the event cannot start one

# Reasons a step *fails* (the input goes to the dead-letter topic, the state is unchanged).
INVALID_TRANSITION = "invalid_transition"
HANDLER_EXCEPTION = "handler_exception"
HOP_LIMIT = "hop_limit"
CONFLICTING_START = "conflicting_start"  # a start event for an existing entity, with another payload


_DIGEST = hashlib.blake2b(digest_size=16)


def event_digest(key: str, event_id: str) -> str:
    """Hash of (entity key, input event id); output ids extend it with the output's index."""
    h = _DIGEST.copy()  # as blake2b(..., digest_size=16), cheaper (see streams.runtime.tracing)
    h.update(f"{key}\x00{event_id}".encode())
    return h.hexdigest()


def output_id(key: str, event_id: str, index: int) -> str:
    """Deterministic id of the ``index``-th output caused by ``event_id``: a re-run after a crash re-sends it
    with the same id, so consumers can drop the duplicate (invariant 2). One hash per step, not per output."""
    return f"{event_digest(key, event_id)}-{index}"


def command_id(workflow: str, key: str, command: str) -> str:
    """Idempotency key of a business command: the same for every attempt, so a service that already did the
    work answers with its earlier result instead of doing it twice. Readable on purpose: operators grep it."""
    return f"{workflow}/{key}/{command}"


# __init__ written out, compiled natively: see streams.records.
@dataclass(slots=True, unsafe_hash=True)
class Timer:
    """A pending durable timer. ``attempt`` tells firings apart: for command timers it is the command attempt,
    for plain timers a token derived from the id of the event that set it."""

    name: str
    due_at: int
    fires_event: str
    attempt: int = 0

    def __init__(self, name: str, due_at: int, fires_event: str, attempt: int = 0) -> None:
        self.name = name
        self.due_at = due_at
        self.fires_event = fires_event
        self.attempt = attempt

    def fired_payload(self) -> dict[str, Any]:
        """The body of the TimerFired record the runtime writes when this timer is due."""
        return {"timer": self.name, "fires_event": self.fires_event, "due_at": self.due_at, "attempt": self.attempt}

    def event_id(self, key: str) -> str:
        """Deterministic id of this firing, so a timer fired twice by the runtime dedupes by event id too."""
        return f"timer/{key}/{self.name}/{self.attempt}"


@dataclass(slots=True, unsafe_hash=True)
class Transition:
    """One entry of the bounded audit trail kept in the state."""

    at: int
    from_state: str
    event: str
    to_state: str

    def __init__(self, at: int, from_state: str, event: str, to_state: str) -> None:
        self.at = at
        self.from_state = from_state
        self.event = event
        self.to_state = to_state


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """An input to ``step``: a decoded record of the workflow's input topic.

    ``name`` is the Avro record name, except for TimerFired records, which arrive as the event they fire
    (see :func:`event_from_record`). ``park_deadline_ms`` is set by the runtime only when it re-offers a
    parked event, so the bound of the first park holds across re-offers.
    """

    name: str
    event_id: str
    key: str
    payload: Mapping[str, Any]
    timestamp_ms: int
    hops: int = 0
    park_deadline_ms: int | None = None

    def __init__(
        self,
        name: str,
        event_id: str,
        key: str,
        payload: Mapping[str, Any],
        timestamp_ms: int,
        hops: int = 0,
        park_deadline_ms: int | None = None,
    ) -> None:
        self.name = name
        self.event_id = event_id
        self.key = key
        self.payload = payload
        self.timestamp_ms = timestamp_ms
        self.hops = hops
        self.park_deadline_ms = park_deadline_ms

    @classmethod
    def timer_fired(cls, key: str, timer: Timer, timestamp_ms: int) -> Event:
        """The event a due timer becomes once its TimerFired record is read back from the input topic."""
        return cls(timer.fires_event, timer.event_id(key), key, timer.fired_payload(), timestamp_ms)

    def reoffer(self, park_deadline_ms: int) -> Event:
        """This event offered again after being parked, with the deadline it was parked until."""
        return replace(self, park_deadline_ms=park_deadline_ms)


def event_from_record(
    record_name: str, key: str, event_id: str, payload: Mapping[str, Any], timestamp_ms: int, hops: int = 0
) -> Event:
    """The adapter's one call per decoded record: a TimerFired record becomes the event it fires.

    ``record_name`` may be the Avro full name (``streams.orders.PaymentCompleted``, as fastavro reports a
    union branch); workflows speak short names."""
    short = record_name.rpartition(".")[2]
    if short == TIMER_FIRED:
        return Event(str(payload["fires_event"]), event_id, key, payload, timestamp_ms, hops)
    return Event(short, event_id, key, payload, timestamp_ms, hops)


@dataclass(slots=True, unsafe_hash=True)
class WorkflowState:
    """One entity's stored state; 1:1 with the Avro stored-state record."""

    workflow: str
    state: str
    data: Mapping[str, Any]
    attempts: Mapping[str, int]
    completed_steps: tuple[str, ...]
    timers: tuple[Timer, ...]
    history: tuple[Transition, ...]
    reason: str | None
    created_at: int
    updated_at: int

    def __init__(
        self,
        workflow: str,
        state: str,
        data: Mapping[str, Any],
        attempts: Mapping[str, int],
        completed_steps: tuple[str, ...],
        timers: tuple[Timer, ...],
        history: tuple[Transition, ...],
        reason: str | None,
        created_at: int,
        updated_at: int,
    ) -> None:
        self.workflow = workflow
        self.state = state
        self.data = data
        self.attempts = attempts
        self.completed_steps = completed_steps
        self.timers = timers
        self.history = history
        self.reason = reason
        self.created_at = created_at
        self.updated_at = updated_at

    def timer(self, name: str) -> Timer | None:
        """The pending timer called ``name``, or None."""
        for t in self.timers:
            if t.name == name:
                return t
        return None

    def to_record(self) -> dict[str, Any]:
        """Plain dicts and lists, as fastavro writes them and JSON stores them."""
        return {
            "workflow": self.workflow,
            "state": self.state,
            "data": dict(self.data),
            "attempts": dict(self.attempts),
            "completed_steps": list(self.completed_steps),
            "timers": timer_records(self.timers),
            "history": history_records(self.history),
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> WorkflowState:
        return cls(
            workflow=rec["workflow"],
            state=rec["state"],
            data=dict(rec["data"]),
            attempts=dict(rec["attempts"]),
            completed_steps=tuple(rec["completed_steps"]),
            timers=tuple(Timer(t["name"], t["due_at"], t["fires_event"], t["attempt"]) for t in rec["timers"]),
            history=tuple(Transition(h["at"], h["from_state"], h["event"], h["to_state"]) for h in rec["history"]),
            reason=rec.get("reason"),
            created_at=rec["created_at"],
            updated_at=rec["updated_at"],
        )


def timer_records(timers: Sequence[Timer]) -> list[dict[str, Any]]:
    return [{"name": t.name, "due_at": t.due_at, "fires_event": t.fires_event, "attempt": t.attempt} for t in timers]


def history_records(history: Sequence[Transition]) -> list[dict[str, Any]]:
    return [{"at": h.at, "from_state": h.from_state, "event": h.event, "to_state": h.to_state} for h in history]


@dataclass(slots=True, unsafe_hash=True)
class Output:
    """A command or event to produce, keyed by the entity key.

    ``output_id`` goes in the ``streams-id`` header (dedupe of re-sends after a crash); ``command_id`` is set
    for commands only and is the same for every attempt (the service's idempotency key); ``hops`` is the
    input's hop count plus one.
    """

    record: str
    topic: str
    key: str
    payload: Mapping[str, Any]
    output_id: str
    command_id: str | None = None
    hops: int = 1

    def __init__(
        self,
        record: str,
        topic: str,
        key: str,
        payload: Mapping[str, Any],
        output_id: str,
        command_id: str | None = None,
        hops: int = 1,
    ) -> None:
        self.record = record
        self.topic = topic
        self.key = key
        self.payload = payload
        self.output_id = output_id
        self.command_id = command_id
        self.hops = hops

    def to_record(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "topic": self.topic,
            "key": self.key,
            "payload": dict(self.payload),
            "output_id": self.output_id,
            "command_id": self.command_id,
            "hops": self.hops,
        }


_ERRORS: dict[str, type[RecordError]] = {
    INVALID_TRANSITION: InvalidTransitionError,
    HANDLER_EXCEPTION: ProcessingError,
    HOP_LIMIT: HopLimitError,
    CONFLICTING_START: ConflictingStartError,
}


@dataclass(slots=True, unsafe_hash=True)
class Failure:
    """Why an input could not be applied. It goes to the dead-letter topic; the state is unchanged."""

    reason: str
    message: str
    state: str | None
    event: str

    def to_error(self) -> RecordError:
        """The exception the runtime's DLQ path expects (class name and ``reason`` go in the headers)."""
        cls = _ERRORS.get(self.reason)
        if cls is not None:
            return cls(self.message)
        err = RecordError(self.message)
        err.reason = self.reason
        return err


@dataclass(slots=True, unsafe_hash=True)
class StepResult:
    """Everything one step decided. Exactly one of four outcomes holds:

    * applied: ``changed`` is true; persist ``state``, produce ``outputs``, apply the timer deltas;
    * ignored: ``ignored`` names why; nothing to produce (``changed`` may still be true when a fired timer
      was dropped from the state, see ``UNHANDLED_TIMER``);
    * failed: ``failure`` is set; dead-letter the input, the state is unchanged;
    * parked: ``park_until_ms`` is set; store the input and re-offer it after the entity's next change, or
      once more at ``park_until_ms`` (it then fails unless it became acceptable).

    ``timers_set`` / ``timers_cancelled`` are the difference between the old and new pending timers, for the
    runtime's due-time index; ``state.timers`` stays the authoritative list.
    """

    state: WorkflowState | None
    outputs: tuple[Output, ...] = ()
    timers_set: tuple[Timer, ...] = ()
    timers_cancelled: tuple[Timer, ...] = ()
    failure: Failure | None = None
    ignored: str | None = None
    park_until_ms: int | None = None
    changed: bool = False

    def __init__(
        self,
        state: WorkflowState | None,
        outputs: tuple[Output, ...] = (),
        timers_set: tuple[Timer, ...] = (),
        timers_cancelled: tuple[Timer, ...] = (),
        failure: Failure | None = None,
        ignored: str | None = None,
        park_until_ms: int | None = None,
        changed: bool = False,
    ) -> None:
        self.state = state
        self.outputs = outputs
        self.timers_set = timers_set
        self.timers_cancelled = timers_cancelled
        self.failure = failure
        self.ignored = ignored
        self.park_until_ms = park_until_ms
        self.changed = changed

    @property
    def park(self) -> bool:
        return self.park_until_ms is not None
