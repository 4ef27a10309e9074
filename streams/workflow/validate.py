"""Checking a workflow at load, so a mistake fails the deploy instead of a partition at 3 a.m.

Every problem is collected (not just the first) and names the state, event, timer or command involved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.errors import WorkflowDefinitionError
from streams.workflow.actions import SCOPES, Action, DataFields, Emit, Issue, PayloadFn, Record
from streams.workflow.definition import (
    UNKNOWN_ENTITY_POLICIES,
    CommandSpec,
    Compensation,
    Definition,
    Reply,
    Rule,
    StateSpec,
    StepSpec,
)
from streams.workflow.fields import state_record_name


@dataclass
class Draft:
    """A workflow as declared, before validation; the builder fills it in."""

    name: str
    input_topic: str
    initial: str
    unknown_entity: str
    history_limit: int
    max_hops: int | None
    description: str
    states: dict[str, StateSpec] = field(default_factory=dict)
    events: set[str] = field(default_factory=set)
    rules: list[Rule] = field(default_factory=list)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    steps: dict[str, StepSpec] = field(default_factory=dict)
    compensations: dict[str, Compensation] = field(default_factory=dict)
    park_events: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    version: int = 1
    state_record: str = ""
    data: dict[str, Any] | None = None  # declared data fields (name -> Avro field); None: not declared
    dropped: set[str] = field(default_factory=set)


def _settings(d: Draft) -> list[str]:
    out = []
    if not d.name:
        out.append("the workflow needs a name")
    if not d.input_topic:
        out.append(f"workflow {d.name!r} needs an input_topic")
    if d.unknown_entity not in UNKNOWN_ENTITY_POLICIES:
        out.append(f"unknown_entity must be one of {', '.join(UNKNOWN_ENTITY_POLICIES)}, not {d.unknown_entity!r}")
    if d.history_limit < 1:
        out.append(f"history_limit must be >= 1, not {d.history_limit}")
    if d.max_hops is not None and d.max_hops < 1:
        out.append(f"max_hops must be >= 1, not {d.max_hops}")
    for name, spec in d.commands.items():
        if not spec.topic:
            out.append(f"command {name!r} needs a topic")
    return out


def _states(d: Draft) -> list[str]:
    out = []
    if d.initial not in d.states:
        out.append(f"initial state {d.initial!r} is not declared")
    elif d.states[d.initial].terminal:
        out.append(f"initial state {d.initial!r} is terminal")
    if not any(s.terminal for s in d.states.values()):
        out.append("no terminal state is declared")
    for r in d.rules:
        if r.source not in d.states:
            out.append(f"transition {r.source} --{r.event}--> {r.target}: unknown source state {r.source!r}")
        if r.target not in d.states:
            out.append(f"transition {r.source} --{r.event}--> {r.target}: unknown target state {r.target!r}")
        elif r.source in d.states and d.states[r.source].terminal:
            out.append(f"terminal state {r.source!r} has a transition on {r.event}")
    return out


def _graph(d: Draft) -> list[str]:
    """Reachability both ways: every state reachable from the initial one, and able to reach an end."""
    out = []
    succ: dict[str, set[str]] = {s: set() for s in d.states}
    pred: dict[str, set[str]] = {s: set() for s in d.states}
    for r in d.rules:
        if r.source in succ and r.target in pred:
            succ[r.source].add(r.target)
            pred[r.target].add(r.source)
    reached = _closure([d.initial] if d.initial in succ else [], succ)
    finishing = _closure([s for s, spec in d.states.items() if spec.terminal], pred)
    for name, spec in d.states.items():
        if name not in reached:
            out.append(f"state {name!r} is unreachable from initial state {d.initial!r}")
        if not spec.terminal and not succ[name]:
            out.append(f"state {name!r} is not terminal but has no transitions out (dead end)")
        elif not spec.terminal and name not in finishing:
            out.append(f"state {name!r} cannot reach any terminal state")
    return out


def _closure(start: list[str], edges: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = deque(start)
    while todo:
        for nxt in edges[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _ambiguity(d: Draft) -> list[str]:
    out = []
    by_key: dict[tuple[str, str], list[Rule]] = {}
    for r in d.rules:
        by_key.setdefault((r.source, r.event), []).append(r)
    for (state, event), rules in by_key.items():
        seen: set[tuple[str, str | None]] = set()
        for i, r in enumerate(rules):
            sig = (r.target, None if r.guard is None else r.guard.label)
            if sig in seen:
                out.append(f"state {state!r}, event {event}: duplicate transition to {r.target!r}")
            seen.add(sig)
            if r.guard is None and i < len(rules) - 1:
                later = ", ".join(repr(x.target) for x in rules[i + 1 :])
                out.append(
                    f"state {state!r}, event {event}: ambiguous transitions, the unguarded one to {r.target!r} "
                    f"always wins over the later ones to {later}"
                )
    return out


def _actions(d: Draft) -> list[tuple[str, Action]]:
    """Every action with the state it runs into (a rule's target; a state's own name for on_enter)."""
    pairs = [(r.target, a) for r in d.rules for a in r.actions]
    pairs += [(s.name, a) for s in d.states.values() for a in s.on_enter]
    return pairs


def _timer_events(d: Draft) -> tuple[dict[str, str], dict[str, set[str]], list[str]]:
    """Timer event -> timer name, state -> its scoped timer names, and problems with timers."""
    out: list[str] = []
    events: dict[str, str] = {}
    scoped: dict[str, set[str]] = {}
    fires_of: dict[str, str] = {}
    handled: dict[str, set[str]] = {}
    for r in d.rules:
        handled.setdefault(r.event, set()).add(r.source)
    for state, action in _actions(d):
        for name, fires, scope in action.timers():
            if scope not in SCOPES:
                out.append(f"timer {name!r}: scope must be one of {SCOPES}, not {scope!r}")
            if fires_of.setdefault(name, fires) != fires:
                out.append(f"timer {name!r} fires two different events: {fires_of[name]} and {fires}")
            events[fires] = name
            if scope == "state":
                scoped.setdefault(state, set()).add(name)
                if state not in handled.get(fires, ()):
                    out.append(
                        f"timer {name!r} armed into state {state!r} fires {fires}, which state {state!r} "
                        "does not handle"
                    )
            elif fires not in handled:
                out.append(f"timer {name!r} fires {fires}, which no state handles")
    issued = {c for _, a in _actions(d) for c in a.commands() if isinstance(a, Issue)}
    issued |= {c.command for c in d.compensations.values()}
    for name in sorted(issued):
        spec = d.commands.get(name)
        if spec is None:
            continue
        wanted = []
        if spec.timeout_ms is not None:
            wanted.append((spec.timeout_timer, spec.timeout_event))
        if spec.retry.max_attempts > 1:
            wanted.append((spec.retry_timer, spec.retry_event))
        if spec.retry.budget_ms is not None:
            wanted.append((spec.deadline_timer, spec.deadline_event))
        for timer, fires in wanted:
            events[fires] = timer
            if fires not in handled:
                out.append(f"timer {timer!r} of command {name!r} fires {fires}, which no state handles")
    for fires in sorted(set(events) & d.events):
        out.append(f"timer {events[fires]!r} fires {fires}, which is also declared as an input event")
    return events, scoped, out


def _events(d: Draft, timer_events: dict[str, str]) -> list[str]:
    out = []
    used = {r.event for r in d.rules}
    for r in d.rules:
        if r.event not in d.events and r.event not in timer_events:
            out.append(f"state {r.source!r} has a transition on undeclared event {r.event}")
    for e in sorted(d.events - used):
        out.append(f"event {e} is declared but no state handles it")
    for e in sorted(d.park_events):
        if e not in d.events:
            out.append(f"parked event {e} is not a declared event")
    return sorted(set(out), key=out.index)


def _commands(d: Draft) -> list[str]:
    out = []
    issued: set[str] = set()
    for state, action in _actions(d):
        for c in action.commands():
            issued.add(c)
            if c not in d.commands:
                out.append(f"a transition into state {state!r} issues undeclared command {c!r}")
    for name in sorted(set(d.commands) - issued):
        out.append(f"command {name!r} is declared but never issued")
    forward = {s.command for s in d.steps.values()}
    for comp in d.compensations.values():
        if comp.command in forward:
            out.append(f"command {comp.command!r} is both a step's command and a compensation")
    return out


def _replies(d: Draft) -> tuple[dict[str, Reply], list[str]]:
    out: list[str] = []
    replies: dict[str, Reply] = {}

    def add(event: str | None, reply: Reply) -> None:
        if event is None:
            return
        old = replies.get(event)
        if old is not None and old != reply:
            out.append(f"event {event} is the reply of both {old.command!r} and {reply.command!r}")
        replies[event] = reply

    for s in d.steps.values():
        add(s.succeeded, Reply("success", s.command, s.name, s.record))
        add(s.failed, Reply("failure", s.command, s.name))
    for c in d.compensations.values():
        add(c.acknowledged_by, Reply("compensated", c.command, c.step))
        add(c.failed_by, Reply("compensation_failed", c.command, c.step))
    return replies, out


def _sites(rules: Iterable[Rule], on_enter: Iterable[tuple[str, tuple[Action, ...]]]) -> Iterator[tuple[str, Action]]:
    """Every action with where it runs, as a problem names it."""
    for r in rules:
        for a in r.actions:
            yield f"transition {r.source} --{r.event}--> {r.target}", a
    for state, actions in on_enter:
        for a in actions:
            yield f"entering state {state!r}", a


def _data(d: Draft) -> list[str]:
    """With declared data fields: nothing may record or read a field that is not declared."""
    if d.data is None:
        return ["drop(...) needs the data fields declared with data(...)"] if d.dropped else []
    out = []
    if d.version < 1:
        out.append(f"version must be >= 1, not {d.version}")
    for name in sorted(d.dropped & set(d.data)):
        out.append(f"data field {name!r} is both declared and dropped")
    declared = d.data
    for where, a in _sites(d.rules, ((st.name, st.on_enter) for st in d.states.values())):
        if isinstance(a, Record):
            out += [f"{where}: record({', '.join(map(repr, a.fields))}) records data field {f!r}, which is not "
                    "declared in data(...)" for f in a.fields if f not in declared]
        elif isinstance(a, Emit) and isinstance(a.payload, DataFields):
            out += [f"{where}: emit({a.record!r}) takes data field {f!r} into its payload, which is not declared "
                    "in data(...)" for f in a.payload.names if f not in declared]
    for name, spec in d.commands.items():
        if isinstance(spec.payload, DataFields):
            out += [f"command {name!r}: its payload takes data field {f!r}, which is not declared in data(...)"
                    for f in spec.payload.names if f not in declared]
    return sorted(set(out), key=out.index)


def payload_problems(
    definition: Definition, required: Callable[[str], Collection[str] | None]
) -> tuple[list[str], dict[str, frozenset[str]]]:
    """Check every output payload against its record's required fields (``required(record)``: the fields without
    a default, or None for a record it does not know). A ``data_fields`` payload is checked here, once; any other
    payload (a function) only shows its keys when it runs, so it comes back as record -> required fields, for the
    runtime to check each such payload it produces. ``attempt`` is added to every command payload by the engine.
    """
    problems: list[str] = []
    dynamic: dict[str, frozenset[str]] = {}

    def check(record: str, payload: PayloadFn, where: str, extra: frozenset[str]) -> None:
        fields = required(record)
        if not fields:
            return
        if not isinstance(payload, DataFields):
            dynamic[record] = frozenset(fields) - extra
            return
        have = payload.keys() | extra
        problems.extend(f"{where}: the payload misses required field {f!r} of record {record}"
                        for f in fields if f not in have)

    issuers: dict[str, str] = {}
    for where, a in _sites(definition.rules, definition.on_enter.items()):
        if isinstance(a, Issue):
            issuers.setdefault(a.command, where)
        elif isinstance(a, Emit):
            check(a.record, a.payload, f"{where}: emit({a.record!r})", frozenset())
    for comp in definition.compensations.values():
        issuers.setdefault(comp.command, f"the compensation of step {comp.step!r}")
    for name, spec in definition.commands.items():
        where = f"command {name!r} issued by {issuers.get(name, 'a retry')}"
        check(name, spec.payload, where, frozenset(("attempt",)))
    return sorted(set(problems), key=problems.index), dynamic


def contract_records(definition: Definition) -> dict[str, str]:
    """Every record the workflow reads or writes, with what it is for: each needs a schema in its contracts."""
    out = {e: "an event it handles" for e in sorted(definition.events)}
    out.update({c: "a command it issues" for c in sorted(definition.commands)})
    for where, a in _sites(definition.rules, definition.on_enter.items()):
        if isinstance(a, Emit):
            out.setdefault(a.record, f"a record it emits ({where})")
    return out


def compile_draft(d: Draft) -> Definition:
    """Validate ``d`` and build the runnable definition, or raise with every problem found."""
    timer_events, scoped, timer_problems = _timer_events(d)
    replies, reply_problems = _replies(d)
    problems = [*d.problems, *_settings(d), *_states(d), *_graph(d)]
    problems += [*_ambiguity(d), *_events(d, timer_events), *timer_problems, *_commands(d), *reply_problems]
    problems += _data(d)
    if problems:
        raise WorkflowDefinitionError(
            f"workflow {d.name!r} is invalid:\n  - " + "\n  - ".join(problems), tuple(problems)
        )
    return Definition(
        name=d.name,
        input_topic=d.input_topic,
        initial=d.initial,
        states=d.states,
        events=frozenset(d.events),
        rules=tuple(d.rules),
        commands=d.commands,
        steps=d.steps,
        compensations=d.compensations,
        timer_events=frozenset(timer_events),
        scoped_timers={s: frozenset(n) for s, n in scoped.items()},
        replies=replies,
        park_events=d.park_events,
        unknown_entity=d.unknown_entity,
        history_limit=d.history_limit,
        max_hops=d.max_hops,
        description=d.description,
        version=d.version,
        data=d.data,
        dropped=frozenset(d.dropped),
        state_record=d.state_record or (state_record_name(d.name) if d.data is not None else ""),
    )
