"""An in-memory runtime for tests, and the executable spec of what the real runtime must do around ``step``.

What ``Driver.deliver`` does for one input record is what a stream worker must do, minus the I/O:

1. dedupe: an event id already applied to this entity is dropped before ``step`` (invariant 3);
2. ``step(definition, state, event, now_ms)``;
3. failed -> dead-letter the input, keep the state; parked -> store the input with ``park_until_ms``;
4. changed -> persist the new state, remember the event id, apply ``timers_cancelled`` then ``timers_set``
   to the due-time index, produce the outputs;
5. after a change, re-offer the entity's parked events oldest first (each carrying its first deadline),
   repeating while one of them changes the entity.

Time only moves through ``advance_to``: due timers fire in (due_at, key, name) order, each becoming the
event a TimerFired record on the input topic would (``Event.timer_fired``) at its due time; a parked event
whose bound passes is re-offered one last time and is dead-lettered unless it became acceptable.

A *script* is plain data -- ``[{"at": ms, "send": {"name", "key", "payload", ...}} | {"at": ms}]`` -- so
recorded histories live in JSON (``golden_document`` / ``replay_golden``), replayed and compared like
Temporal's replayer.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.workflow.definition import Definition
from streams.workflow.fields import check_recorded
from streams.workflow.model import DUPLICATE_EVENT, Event, Failure, Output, StepResult, Timer, WorkflowState
from streams.workflow.step import step

Script = Sequence[Mapping[str, Any]]


class Driver:
    """Feed events, move time, inspect states, outputs, timers, parked events and dead letters."""

    def __init__(self, definition: Definition, *, now_ms: int = 0, dedupe: bool = True) -> None:
        self.definition = definition
        self.now_ms = now_ms
        self.dedupe = dedupe
        self.states: dict[str, WorkflowState] = {}
        self.outputs: list[Output] = []
        self.dead_letters: list[tuple[Event, Failure]] = []
        self.ignored: list[tuple[Event, str]] = []
        self.parked: dict[str, list[Event]] = {}
        self.transcript: list[dict[str, Any]] = []
        self._applied: dict[str, set[str]] = {}
        self._index: list[tuple[int, str, str, int, str]] = []  # (due_at, key, name, attempt, fires_event)
        self._seq = 0
        self._taken = 0

    # --- input --------------------------------------------------------------------------------------------------
    def send(
        self,
        name: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
        timestamp_ms: int | None = None,
        hops: int = 0,
    ) -> StepResult:
        """Deliver a record of the input topic, produced now unless ``timestamp_ms`` says otherwise."""
        if event_id is None:
            self._seq += 1
            event_id = f"{key}/{name}/{self._seq}"
        ts = self.now_ms if timestamp_ms is None else timestamp_ms
        return self.deliver(Event(name, event_id, key, dict(payload or {}), ts, hops))

    def deliver(self, event: Event) -> StepResult:
        """One input record through the runtime path (see the module docstring)."""
        key = event.key
        if self.dedupe and event.event_id in self._applied.get(key, ()):
            result = StepResult(self.states.get(key), ignored=DUPLICATE_EVENT)
            self._handle(event, result, reoffer=False)
            return result
        result = step(self.definition, self.states.get(key), event, self.now_ms)
        self._handle(event, result, reoffer=False)
        if result.changed:
            self._reoffer(key)
        return result

    def fire(self, key: str, timer_name: str) -> StepResult:
        """Fire a pending timer now, early: what a runtime does if it fires twice or before a crash."""
        state = self.states.get(key)
        timer = None if state is None else state.timer(timer_name)
        if timer is None:
            raise KeyError(f"no pending timer {timer_name!r} for {key!r}")
        return self.deliver(Event.timer_fired(key, timer, self.now_ms))

    # --- time ---------------------------------------------------------------------------------------------------
    def advance(self, delta_ms: int) -> None:
        """Move the clock forward by ``delta_ms``, firing due timers on the way."""
        self.advance_to(self.now_ms + delta_ms)

    def advance_to(self, t: int) -> None:
        """Move the clock to ``t``, firing due timers and expiring parked events in time order on the way."""
        while True:
            timer = self._next_timer()
            park = self._next_park_expiry()
            due = min((x[0] for x in (timer, park) if x is not None), default=None)
            if due is None or due > t:
                break
            self.now_ms = max(self.now_ms, due)
            if timer is not None and timer[0] == due:
                heapq.heappop(self._index)
                key, fired = timer[1], timer[2]
                self.deliver(Event.timer_fired(key, fired, self.now_ms))
            elif park is not None:
                self._expire(park[1], park[2])
        self.now_ms = max(self.now_ms, t)

    def _next_timer(self) -> tuple[int, str, Timer] | None:
        while self._index:
            due, key, name, attempt, fires = self._index[0]
            state = self.states.get(key)
            timer = Timer(name, due, fires, attempt)
            if state is not None and timer in state.timers:
                return due, key, timer
            heapq.heappop(self._index)  # cancelled or already fired: the runtime deleted it from its index
        return None

    def _next_park_expiry(self) -> tuple[int, str, Event] | None:
        best: tuple[int, str, Event] | None = None
        for key, events in self.parked.items():
            for ev in events:
                deadline = ev.park_deadline_ms
                if deadline is not None and (best is None or deadline < best[0]):
                    best = (deadline, key, ev)
        return best

    def _expire(self, key: str, event: Event) -> None:
        self.parked[key].remove(event)
        result = step(self.definition, self.states.get(key), event, self.now_ms)
        self._handle(event, result, reoffer=True, final=True)
        if result.changed:
            self._reoffer(key)

    # --- the runtime's bookkeeping ------------------------------------------------------------------------------
    def _handle(self, event: Event, result: StepResult, *, reoffer: bool, final: bool = False) -> None:
        key = event.key
        if result.failure is not None:
            self.dead_letters.append((event, result.failure))
        elif result.park_until_ms is not None:
            if final:  # cannot happen: a re-offer at the deadline never parks again; keep the spec honest
                raise AssertionError(f"{event.name} parked again after its deadline")
            if not reoffer:
                self.parked.setdefault(key, []).append(event.reoffer(result.park_until_ms))
        else:
            if result.ignored is not None:
                self.ignored.append((event, result.ignored))
            if result.changed and result.state is not None:
                if self.definition.data is not None:  # as the worker refuses to store an undeclared field
                    check_recorded(result.state, self.definition.data, self.definition.state_record)
                self.states[key] = result.state
                self._applied.setdefault(key, set()).add(event.event_id)
                for t in result.timers_set:
                    heapq.heappush(self._index, (t.due_at, key, t.name, t.attempt, t.fires_event))
                self.outputs.extend(result.outputs)
        self.transcript.append(_entry(self.now_ms, event, result, reoffer))

    def _reoffer(self, key: str) -> None:
        progress = True
        while progress and self.parked.get(key):
            progress = False
            for ev in list(self.parked[key]):
                result = step(self.definition, self.states.get(key), ev, self.now_ms)
                if result.park_until_ms is not None:
                    continue
                self.parked[key].remove(ev)
                self._handle(ev, result, reoffer=True)
                if result.changed:
                    progress = True
                    break

    # --- inspection ---------------------------------------------------------------------------------------------
    def state(self, key: str) -> WorkflowState | None:
        """The entity's current state, or None if it does not exist."""
        return self.states.get(key)

    def timers(self, key: str) -> tuple[Timer, ...]:
        """The entity's pending timers."""
        state = self.states.get(key)
        return () if state is None else state.timers

    def outputs_for(self, key: str | None = None, topic: str | None = None) -> list[Output]:
        """Every output so far, filtered by entity key and/or topic."""
        return [o for o in self.outputs if (key is None or o.key == key) and (topic is None or o.topic == topic)]

    def take(self) -> list[Output]:
        """Outputs produced since the previous ``take``: what a fake service consumes next."""
        new = self.outputs[self._taken :]
        self._taken = len(self.outputs)
        return new

    def next_due(self) -> int | None:
        """When the next timer fires or parked event expires; None when nothing is pending."""
        timer, park = self._next_timer(), self._next_park_expiry()
        return min((x[0] for x in (timer, park) if x is not None), default=None)

    # --- scripts and golden histories ---------------------------------------------------------------------------
    def run_script(self, script: Iterable[Mapping[str, Any]]) -> None:
        """Replay a recorded history: entries of ``at`` (ms) with an event to ``send``."""
        for entry in script:
            self.advance_to(int(entry["at"]))
            send = entry.get("send")
            if send is not None:
                self.send(
                    send["name"], send["key"], send.get("payload"),
                    event_id=send.get("event_id"), timestamp_ms=send.get("timestamp_ms"), hops=send.get("hops", 0),
                )

    def snapshot(self) -> dict[str, Any]:
        """Everything observable, as JSON-ready data: the transcript, final states, parked events."""
        return _plain(
            {
                "transcript": self.transcript,
                "states": {k: self.states[k].to_record() for k in sorted(self.states)},
                "parked": {k: [e.event_id for e in v] for k, v in sorted(self.parked.items()) if v},
            }
        )


def _entry(now: int, event: Event, result: StepResult, reoffer: bool) -> dict[str, Any]:
    if result.failure is not None:
        outcome = f"failed:{result.failure.reason}"
    elif result.park_until_ms is not None:
        outcome = f"parked:{result.park_until_ms}"
    elif result.ignored is not None:
        outcome = f"ignored:{result.ignored}"
    else:
        outcome = "applied"
    entry: dict[str, Any] = {"at": now, "key": event.key, "event": event.name, "event_id": event.event_id}
    if reoffer:
        entry["reoffer"] = True
    entry["outcome"] = outcome
    entry["state"] = None if result.state is None else result.state.state
    if result.outputs:
        entry["outputs"] = [o.to_record() for o in result.outputs]
    if result.timers_set:
        entry["timers_set"] = [[t.name, t.due_at, t.fires_event, t.attempt] for t in result.timers_set]
    if result.timers_cancelled:
        entry["timers_cancelled"] = [t.name for t in result.timers_cancelled]
    return entry


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """Tuples become lists, as after a JSON round trip, so recorded and replayed snapshots compare equal."""
    plain: dict[str, Any] = json.loads(json.dumps(value, sort_keys=True))
    return plain


def golden_document(
    definition: Definition, workflow: str, params: Mapping[str, Any], script: Script
) -> dict[str, Any]:
    """Record a history: run ``script`` and keep what happened as the expectation."""
    driver = Driver(definition)
    driver.run_script(script)
    return _plain({"workflow": workflow, "params": dict(params), "script": list(script), "expected": driver.snapshot()})


def replay_golden(definition: Definition, document: Mapping[str, Any]) -> list[str]:
    """Replay a recorded history against ``definition``; each difference is one human-readable line."""
    driver = Driver(definition)
    driver.run_script(document["script"])
    actual, expected = driver.snapshot(), document["expected"]
    problems: list[str] = []
    got_t, want_t = actual["transcript"], expected["transcript"]
    for i, (got, want) in enumerate(zip(got_t, want_t, strict=False)):
        if got != want:
            problems.append(f"transcript[{i}] differs:\n    expected {want}\n    actual   {got}")
            break
    if len(got_t) != len(want_t):
        problems.append(f"transcript has {len(got_t)} entries, expected {len(want_t)}")
    for key in sorted(set(actual["states"]) | set(expected["states"])):
        got_s, want_s = actual["states"].get(key), expected["states"].get(key)
        if got_s != want_s:
            got_d, want_d = got_s or {}, want_s or {}
            fields = sorted(f for f in set(got_d) | set(want_d) if got_d.get(f) != want_d.get(f))
            problems.append(f"state of {key!r} differs in {fields}: expected {want_s}, actual {got_s}")
    if actual["parked"] != expected["parked"]:
        problems.append(f"parked events differ: expected {expected['parked']}, actual {actual['parked']}")
    return problems
