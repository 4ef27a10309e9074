"""The scratch pad one step's guards and actions work on.

One ``StepContext`` is made per step and dropped after it. It starts by *sharing* the old state's mappings
and tuples and copies one only when an action writes to it, so a step that records nothing copies no data
(the hot path must stay cheap: >50k steps/s end to end).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streams.workflow.model import Event, Timer, WorkflowState

if TYPE_CHECKING:
    from streams.workflow.definition import Definition


class StepContext:
    """What guards, payload builders and actions see: the entity as it is so far in this step, and the event.

    ``data``, ``attempts``, ``completed_steps``, ``timers`` and ``reason`` start as the old state's values and
    reflect every action already applied in this transition. ``base_ms`` is the clock timers count from:
    ``max(event.timestamp_ms, now_ms)``.
    """

    __slots__ = (
        "attempts",
        "base_ms",
        "completed_steps",
        "data",
        "definition",
        "event",
        "memo",
        "now_ms",
        "outputs",
        "reason",
        "state",
        "timers",
    )

    def __init__(self, definition: Definition, state: WorkflowState, event: Event, now_ms: int) -> None:
        self.definition = definition
        self.state = state
        self.event = event
        self.now_ms = now_ms
        self.base_ms = event.timestamp_ms if event.timestamp_ms > now_ms else now_ms
        self.data: Mapping[str, Any] = state.data
        self.attempts: Mapping[str, int] = state.attempts
        self.completed_steps = state.completed_steps
        self.timers = state.timers
        self.reason = state.reason
        self.outputs: list[tuple[str, str, Mapping[str, Any], str | None]] = []
        self.memo: dict[str, Any] | None = None

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.event.payload

    @property
    def key(self) -> str:
        return self.event.key

    # --- data -------------------------------------------------------------------------------------------------
    def record(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the entity's data."""
        if values:
            data = dict(self.data)
            data.update(values)
            self.data = data

    # --- outputs ----------------------------------------------------------------------------------------------
    def emit(self, record: str, topic: str, payload: Mapping[str, Any], command_id: str | None = None) -> None:
        """Queue an output record; ``command_id`` marks it as an attempt of a declared command."""
        self.outputs.append((record, topic, payload, command_id))

    # --- attempts and saga steps ------------------------------------------------------------------------------
    def attempt(self, command: str) -> int:
        """How many attempts of ``command`` this entity has made so far (0 before the first)."""
        return self.attempts.get(command, 0)

    def set_attempt(self, command: str, attempt: int) -> None:
        """Record that ``command`` is at attempt ``attempt``."""
        attempts = dict(self.attempts)
        attempts[command] = attempt
        self.attempts = attempts

    def complete(self, step: str) -> None:
        """Mark saga step ``step`` done, so a later failure compensates it."""
        if step not in self.completed_steps:
            self.completed_steps = (*self.completed_steps, step)

    def uncomplete(self, step: str) -> None:
        """Mark saga step ``step`` undone (its compensation was acknowledged)."""
        self.completed_steps = tuple(s for s in self.completed_steps if s != step)

    # --- timers -----------------------------------------------------------------------------------------------
    def pending(self, name: str) -> Timer | None:
        """The pending timer called ``name``, or None."""
        for t in self.timers:
            if t.name == name:
                return t
        return None

    def set_timer(self, name: str, due_at: int, fires_event: str, attempt: int) -> Timer:
        """Arm ``name``, replacing a pending timer of the same name (one timer per name per entity)."""
        timer = Timer(name, due_at, fires_event, attempt)
        timers = self.timers
        if self.pending(name) is not None:
            timers = tuple(t for t in timers if t.name != name)
        self.timers = (*timers, timer)
        return timer

    def cancel_timer(self, name: str) -> None:
        """Cancel the timer called ``name`` if it is pending."""
        if self.pending(name) is not None:
            self.timers = tuple(t for t in self.timers if t.name != name)

    def drop_timer(self, timer: Timer) -> None:
        """Forget ``timer`` (it fired, or a newer one replaced it)."""
        self.timers = tuple(t for t in self.timers if t != timer)

    def remember(self, name: str, value: Any) -> None:
        """Cache a value a guard computed for the action of the same rule (e.g. a retry's due time)."""
        if self.memo is None:
            self.memo = {}
        self.memo[name] = value
