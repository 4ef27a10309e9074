"""The pure step: ``step(definition, state, event, now_ms) -> StepResult``.

Pure in the strict sense: no I/O, no clock (``now_ms`` is passed in), no randomness (ids and jitter are
hashes), and it never raises -- bad input and broken handlers come back as a :class:`Failure`, like
Temporal's workflow activation. The same inputs always give the same result, which is what makes replaying
the input log rebuild the same state.

Order of decisions for one event:

1. hop limit exceeded -> ``Failure("hop_limit")``;
2. no state: a start event (one the initial state handles) creates the entity; any other event is parked
   if declared parkable, else handled by the ``unknown_entity`` policy;
3. a timer event whose timer is not pending (cancelled, already fired, older attempt) -> ignored
   ``stale_timer``: a timer fired twice takes effect once;
4. a failure reply for an attempt that is not the current one, or while a retry is already scheduled ->
   ignored ``stale_reply``;
5. the first rule for (state, event) whose guard holds is applied: its actions, then -- if the state
   changes -- timers scoped to the old state are dropped and the new state's ``on_enter`` actions run;
   entering a terminal state cancels every timer;
6. no rule applies: a reply whose effect is already in the state -> ignored ``duplicate_event``; a late
   failure reply -> ``stale_reply``; a repeated start event -> ``duplicate_event`` if its payload agrees with
   what the entity holds, else ``Failure("conflicting_start")``; a pending timer the state
   has no use for is dropped (``unhandled_timer``); a parkable event is parked (bounded); anything else is
   ``Failure("invalid_transition")`` with the state unchanged.

Clock rule (timers and park bounds): ``max(event.timestamp_ms, now_ms) + delay``. ``now_ms`` is the
worker's wall clock, so a lagging worker still gives a service the full reply window from when the command
was really sent; the event timestamp is a lower bound, so a worker clock behind the log never arms a timer in
the past. History entries and ``updated_at`` use ``now_ms``.
"""

from __future__ import annotations

from streams.workflow.context import StepContext
from streams.workflow.definition import Definition, Reply, Rule
from streams.workflow.model import (
    CONFLICTING_START,
    DUPLICATE_EVENT,
    HANDLER_EXCEPTION,
    HOP_LIMIT,
    INVALID_TRANSITION,
    STALE_REPLY,
    STALE_TIMER,
    UNHANDLED_TIMER,
    UNKNOWN_ENTITY,
    Event,
    Failure,
    Output,
    StepResult,
    Timer,
    Transition,
    WorkflowState,
    event_digest,
)

__all__ = ["step"]


def step(definition: Definition, state: WorkflowState | None, event: Event, now_ms: int) -> StepResult:
    """Apply ``event`` to one entity's ``state`` at wall-clock time ``now_ms``; never raises."""
    try:
        return _step(definition, state, event, now_ms)
    except Exception as exc:  # a guard, payload builder or bad payload: the input is poison, not the worker
        return _fail(state, event, HANDLER_EXCEPTION, f"{event.name}: {type(exc).__name__}: {exc}")


def _fail(state: WorkflowState | None, event: Event, reason: str, message: str) -> StepResult:
    return StepResult(state, failure=Failure(reason, message, None if state is None else state.state, event.name))


def _step(defn: Definition, state: WorkflowState | None, event: Event, now: int) -> StepResult:
    name = event.name
    if defn.max_hops is not None and event.hops > defn.max_hops:
        return _fail(state, event, HOP_LIMIT, f"{name} has travelled {event.hops} hops (limit {defn.max_hops})")
    if state is None:
        if name in defn.start_events:
            return _apply(defn, defn.fresh(now), event, now, None, True)
        return _unknown_entity(defn, event, now)
    if state.workflow != defn.name:
        msg = f"state belongs to workflow {state.workflow!r}, not {defn.name!r}"
        return _fail(state, event, INVALID_TRANSITION, msg)
    fired: Timer | None = None
    if name in defn.timer_events:
        fired = _pending(state, event)
        if fired is None:
            return StepResult(state, ignored=STALE_TIMER)
    else:
        reply = defn.replies.get(name)
        if reply is not None and reply.failure:
            checked = _check_failure_reply(defn, state, event, reply)
            if checked is not None:
                return checked
    return _apply(defn, state, event, now, fired, False)


def _pending(state: WorkflowState, event: Event) -> Timer | None:
    """The pending timer this TimerFired event is for, if it is still pending at that attempt.

    Not matched on the due time: a replay re-arms timers at new wall-clock due times, and the firings recorded
    in the log must still take effect on them for the replay to repeat the original history."""
    p = event.payload
    name, attempt = p.get("timer"), p.get("attempt")
    for t in state.timers:
        if t.name == name and t.attempt == attempt and t.fires_event == event.name:
            return t
    return None


def _check_failure_reply(defn: Definition, state: WorkflowState, event: Event, reply: Reply) -> StepResult | None:
    """Stale (ignored) or impossible (failed) failure replies; None if it may be acted upon."""
    attempt = event.payload.get("attempt")
    if isinstance(attempt, int):
        current = state.attempts.get(reply.command, 0)
        if 0 < attempt < current:
            return StepResult(state, ignored=STALE_REPLY)  # answers an attempt that has been superseded
        if attempt > current > 0:
            msg = f"{event.name} answers attempt {attempt} of {reply.command}, but only {current} were sent"
            return _fail(state, event, INVALID_TRANSITION, msg)
    if state.timer(defn.commands[reply.command].retry_timer) is not None:
        # that attempt was already given up on (timeout), or this repeats the failure that scheduled the retry
        return StepResult(state, ignored=STALE_REPLY)
    return None


def _apply(
    defn: Definition, state: WorkflowState, event: Event, now: int, fired: Timer | None, created: bool
) -> StepResult:
    by_event = defn.table.get(state.state)
    if by_event is None:
        return _fail(state, event, INVALID_TRANSITION, f"state {state.state!r} is not part of {defn.name!r}")
    rules = by_event.get(event.name)
    if rules:
        ctx = StepContext(defn, state, event, now)
        for rule in rules:
            if rule.guard is None or rule.guard(ctx):
                return _run(defn, ctx, rule, fired, created)
    return _unhandled(defn, None if created else state, event, now, fired)


def _run(defn: Definition, ctx: StepContext, rule: Rule, fired: Timer | None, created: bool) -> StepResult:
    old = ctx.state
    source, target = old.state, rule.target
    if fired is not None:
        ctx.drop_timer(fired)
    if target != source:
        scoped = defn.scoped_timers.get(source)
        if scoped and ctx.timers:
            ctx.timers = tuple(t for t in ctx.timers if t.name not in scoped)
    for action in rule.actions:
        action.apply(ctx)
    if target != source:
        for action in defn.on_enter[target]:
            action.apply(ctx)
        if target in defn.terminal:
            ctx.timers = ()
    event, now = ctx.event, ctx.now_ms
    new = WorkflowState(
        old.workflow,
        target,
        ctx.data,
        ctx.attempts,
        ctx.completed_steps,
        ctx.timers,
        defn.append_history(old.history, Transition(now, source, event.name, target)),
        ctx.reason,
        old.created_at,
        now,
    )
    outputs: tuple[Output, ...] = ()
    if ctx.outputs:
        key, hops = event.key, event.hops + 1
        digest = event_digest(key, event.event_id)
        outputs = tuple(
            Output(record, topic, key, payload, f"{digest}-{i}", cid, hops)
            for i, (record, topic, payload, cid) in enumerate(ctx.outputs)
        )
    after = ctx.timers
    before = () if created else old.timers
    if after is before:
        return StepResult(new, outputs, changed=True)
    return StepResult(new, outputs, _missing(after, before), _missing(before, after), changed=True)


def _missing(timers: tuple[Timer, ...], other: tuple[Timer, ...]) -> tuple[Timer, ...]:
    """Timers of ``timers`` not in ``other``, by identity: the step never rebuilds a timer it keeps."""
    out = []
    for t in timers:
        for o in other:
            if t is o:
                break
        else:
            out.append(t)
    return tuple(out)


def _unhandled(
    defn: Definition, state: WorkflowState | None, event: Event, now: int, fired: Timer | None
) -> StepResult:
    name = event.name
    if state is not None:
        if name in defn.start_events and state.state != defn.initial:
            return _repeated_start(state, event)
        reply = defn.replies.get(name)
        if reply is not None:
            late = _late_reply(state, event, reply)
            if late is not None:
                return StepResult(state, ignored=late)
        if fired is not None:
            timers = tuple(t for t in state.timers if t != fired)
            new = WorkflowState(
                state.workflow, state.state, state.data, state.attempts, state.completed_steps, timers,
                state.history, state.reason, state.created_at, now,
            )
            return StepResult(new, timers_cancelled=(fired,), ignored=UNHANDLED_TIMER, changed=True)
        if state.state in defn.terminal:
            return _fail(state, event, INVALID_TRANSITION, f"{name} arrived after the entity ended in {state.state!r}")
    park = _park(defn, event, now)
    if park is not None:
        deadline, expired = park
        if not expired:
            return StepResult(state, park_until_ms=deadline)
        where = "(none)" if state is None else repr(state.state)
        return _fail(
            state, event, INVALID_TRANSITION, f"{name} was parked until {deadline} and is still not accepted in {where}"
        )
    where = "before the entity started" if state is None else f"in state {state.state!r}"
    return _fail(state, event, INVALID_TRANSITION, f"{name} is not accepted {where}")


def _repeated_start(state: WorkflowState, event: Event) -> StepResult:
    """A start event for an entity that exists (the runtime already dropped a repeat of the same id). A copy
    sent again under another id agrees with what the entity recorded from its start: a duplicate. Another
    payload is a second, different thing claiming the same key: it must reach a human, never be dropped."""
    data = state.data
    differ = sorted(f for f, v in event.payload.items() if data.get(f) is not None and data.get(f) != v)
    if not differ:
        return StepResult(state, ignored=DUPLICATE_EVENT)
    msg = (f"{event.name} {event.event_id!r} for existing entity {event.key!r} (in {state.state!r}) differs from "
           f"its start in {', '.join(differ)}")
    return _fail(state, event, CONFLICTING_START, msg)


def _late_reply(state: WorkflowState, event: Event, reply: Reply) -> str | None:
    """A reply the current state does not await: harmless repeat (ignored) or a real surprise (None)."""
    kind = reply.kind
    if kind == "success":
        if reply.record:  # the same result as recorded: the step ran (and may have been undone since)
            data, p = state.data, event.payload
            same = all(data.get(f) is not None and data.get(f) == p.get(f) for f in reply.record)
            return DUPLICATE_EVENT if same else None  # a different result (a second charge?) needs a human
        return DUPLICATE_EVENT if reply.step in state.completed_steps else None
    if state.attempts.get(reply.command, 0) == 0:
        return None
    if kind == "compensated":
        return DUPLICATE_EVENT if reply.step not in state.completed_steps else None
    return STALE_REPLY  # a failure of a command no longer awaited changed nothing


def _park(defn: Definition, event: Event, now: int) -> tuple[int, bool] | None:
    """(park deadline, whether it has passed), or None if the event is not parkable.

    The deadline is fixed at the first park; re-offers carry it in ``event.park_deadline_ms``."""
    max_ms = defn.park_events.get(event.name)
    if max_ms is None:
        return None
    deadline = event.park_deadline_ms
    if deadline is None:
        deadline = (event.timestamp_ms if event.timestamp_ms > now else now) + max_ms
    return deadline, now >= deadline


def _unknown_entity(defn: Definition, event: Event, now: int) -> StepResult:
    name = event.name
    if name in defn.timer_events:
        return StepResult(None, ignored=STALE_TIMER)
    park = _park(defn, event, now)
    if park is not None and not park[1]:
        return StepResult(None, park_until_ms=park[0])
    policy = defn.unknown_entity
    if policy == "ignore":
        return StepResult(None, ignored=UNKNOWN_ENTITY)
    if policy == "create":
        history = (Transition(now, defn.initial, name, defn.initial),)
        new = WorkflowState(defn.name, defn.initial, {}, {}, (), (), history, None, now, now)
        return StepResult(new, changed=True)
    expired = "" if park is None else f" (parked until {park[0]})"
    return _fail(None, event, UNKNOWN_ENTITY, f"{name} for unknown entity {event.key!r}{expired}")
