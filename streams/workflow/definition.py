"""A validated, compiled workflow definition: immutable specs plus the lookup tables the step needs.

Everything the step asks per event (which rules apply in this state, is this a timer event, whose reply is
this) is answered by one dict lookup into tables built once here, at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.workflow.actions import Action, Guard, PayloadFn
from streams.workflow.model import Timer, Transition, WorkflowState
from streams.workflow.retry import NO_RETRY, RetryPolicy

UNKNOWN_ENTITY_POLICIES = ("dead_letter", "ignore", "create")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command the workflow sends: its record name, topic, payload, retry policy and reply timeout.

    The timers and timer events it uses are named after it, so several commands never collide.
    """

    name: str
    topic: str
    payload: PayloadFn
    retry: RetryPolicy = NO_RETRY
    timeout_ms: int | None = None
    timeout_event: str = ""
    retry_on_timeout: bool = True
    timeout_timer: str = field(init=False)
    retry_timer: str = field(init=False)
    retry_event: str = field(init=False)
    deadline_timer: str = field(init=False)
    deadline_event: str = field(init=False)
    timer_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "timeout_event", self.timeout_event or f"{self.name}TimedOut")
        s(self, "timeout_timer", f"{self.name}.timeout")
        s(self, "retry_timer", f"{self.name}.retry")
        s(self, "retry_event", f"{self.name}RetryDue")
        s(self, "deadline_timer", f"{self.name}.deadline")
        s(self, "deadline_event", f"{self.name}DeadlineExceeded")
        s(self, "timer_names", frozenset((self.timeout_timer, self.retry_timer, self.deadline_timer)))


@dataclass(frozen=True, slots=True)
class Compensation:
    """How a completed step is undone: a command, the event that acknowledges it, optionally its failure."""

    step: str
    command: str
    acknowledged_by: str
    failed_by: str | None = None


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A saga step as declared with ``WorkflowBuilder.step``; expanded into rules at build."""

    name: str
    state: str
    command: str
    succeeded: str
    next_state: str
    failed: str | None = None
    record: tuple[str, ...] = ()
    then: tuple[Action, ...] = ()
    compensation: str | None = None
    compensated: str | None = None
    compensation_failed: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One transition: in ``source`` on ``event`` (if ``guard`` holds) do ``actions`` and go to ``target``."""

    source: str
    event: str
    target: str
    guard: Guard | None
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class StateSpec:
    name: str
    terminal: bool = False
    on_enter: tuple[Action, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """What an event means to the saga machinery: the reply of which command, success or failure."""

    kind: str  # "success" | "failure" | "compensated" | "compensation_failed"
    command: str
    step: str
    record: tuple[str, ...] = ()
    failure: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "failure", self.kind in ("failure", "compensation_failed"))


class Definition:
    """A workflow ready to run. Build one with :class:`streams.workflow.dsl.WorkflowBuilder`.

    Its mappings are plain dicts typed read-only (a mappingproxy costs a lookup on the hot path); treat a
    definition as immutable."""

    __slots__ = (
        "commands",
        "compensations",
        "data",
        "description",
        "dropped",
        "events",
        "history_limit",
        "initial",
        "input_topic",
        "max_hops",
        "name",
        "on_enter",
        "park_events",
        "replies",
        "rules",
        "scoped_timers",
        "start_events",
        "state_record",
        "states",
        "steps",
        "table",
        "terminal",
        "timer_events",
        "unknown_entity",
        "version",
    )

    def __init__(
        self,
        *,
        name: str,
        input_topic: str,
        initial: str,
        states: Mapping[str, StateSpec],
        events: frozenset[str],
        rules: tuple[Rule, ...],
        commands: Mapping[str, CommandSpec],
        steps: Mapping[str, StepSpec],
        compensations: Mapping[str, Compensation],
        timer_events: frozenset[str],
        scoped_timers: Mapping[str, frozenset[str]],
        replies: Mapping[str, Reply],
        park_events: Mapping[str, int],
        unknown_entity: str,
        history_limit: int,
        max_hops: int | None,
        description: str,
        version: int = 1,
        data: Mapping[str, Any] | None = None,
        dropped: frozenset[str] = frozenset(),
        state_record: str = "",
    ) -> None:
        self.name = name
        self.input_topic = input_topic
        self.initial = initial
        self.states = (dict(states))
        self.events = events
        self.rules = rules
        self.commands = (dict(commands))
        self.steps = (dict(steps))
        self.compensations = (dict(compensations))
        self.timer_events = timer_events
        self.scoped_timers = (dict(scoped_timers))
        self.replies = (dict(replies))
        self.park_events = (dict(park_events))
        self.unknown_entity = unknown_entity
        self.history_limit = history_limit
        self.max_hops = max_hops
        self.description = description
        # Declared data fields (name -> Avro field) or None; the stored-state record is derived from them.
        self.version = version
        self.data: Mapping[str, Any] | None = None if data is None else dict(data)
        self.dropped = dropped
        self.state_record = state_record
        self.terminal = frozenset(s.name for s in states.values() if s.terminal)
        self.on_enter: Mapping[str, tuple[Action, ...]] = {s.name: s.on_enter for s in states.values()}
        table: dict[str, dict[str, list[Rule]]] = {s: {} for s in states}
        for rule in rules:
            table[rule.source].setdefault(rule.event, []).append(rule)
        self.table: Mapping[str, Mapping[str, tuple[Rule, ...]]] = {
            s: {e: tuple(rs) for e, rs in by_event.items()} for s, by_event in table.items()
        }
        self.start_events = frozenset(self.table[initial])

    def fresh(self, now_ms: int) -> WorkflowState:
        """The state of an entity that does not exist yet, about to take its first transition."""
        return WorkflowState(self.name, self.initial, {}, {}, (), (), (), None, now_ms, now_ms)

    def append_history(self, history: tuple[Transition, ...], entry: Transition) -> tuple[Transition, ...]:
        """``history`` with ``entry`` appended, keeping at most ``history_limit`` entries."""
        if len(history) >= self.history_limit:
            return (*history[len(history) - self.history_limit + 1 :], entry)
        return (*history, entry)

    def stored_record(self) -> Any:
        """The Avro record (JSON) this workflow's states are stored in, derived from its declared data fields;
        None when it declares none (its contracts name a state record, or the generic one holds the data)."""
        if self.data is None:
            return None
        from streams.workflow.fields import state_record

        return state_record(self.state_record, self.name, self.version, self.data)

    def diagram(self) -> str:
        """The workflow as a Mermaid state diagram."""
        from streams.workflow.diagram import mermaid

        return mermaid(self)

    def summary(self) -> dict[str, Any]:
        """Name, input topic, states and events: what ``streams workflow list`` prints."""
        return {
            "name": self.name,
            "input_topic": self.input_topic,
            "initial": self.initial,
            "states": len(self.states),
            "terminal": sorted(self.terminal),
            "events": sorted(self.events),
            "commands": sorted(self.commands),
            "description": self.description,
        }

    def pending_timers_in(self, timers: tuple[Timer, ...], state: str) -> tuple[Timer, ...]:
        """Pending timers scoped to ``state`` (cancelled when the entity leaves it)."""
        scoped = self.scoped_timers.get(state)
        if not scoped:
            return ()
        return tuple(t for t in timers if t.name in scoped)

    def __repr__(self) -> str:
        return f"Definition({self.name!r}, states={len(self.states)}, rules={len(self.rules)})"
