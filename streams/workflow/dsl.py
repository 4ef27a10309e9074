"""Declaring workflows: a builder that reads like the business process.

A workflow is a per-entity state machine fed by one input topic keyed by the entity id::

    wf = WorkflowBuilder("orders", input_topic="orders.events", initial="new", version=1)
    wf.data(order_id=str, amount_cents=int, payment_id=str | None)             # the entity's data, typed
    wf.states("new", "paying", "reserving", "compensating")
    wf.terminal("completed", on_enter=[emit("OrderCompleted", "orders.results", data_fields("order_id"))])
    wf.terminal("cancelled", on_enter=[emit("OrderCancelled", "orders.results", cancelled_payload)])
    wf.events("OrderPlaced", "PaymentCompleted", "PaymentFailed", ...)          # the input contract
    wf.command("MakePayment", topic="payments.commands", payload=data_fields("order_id", "amount_cents"),
               retry=RetryPolicy(max_attempts=3, base_ms=500), timeout_ms=900_000,
               timeout_event="PaymentTimedOut", retry_on_timeout=False)
    wf.on("OrderPlaced", "new", "paying", do=[record("order_id", "amount_cents"), issue("MakePayment")])
    wf.step("payment", state="paying", command="MakePayment", succeeded="PaymentCompleted",
            failed="PaymentFailed", record=("payment_id",), next_state="reserving",
            then=[issue("ReserveInventory")], compensation="RefundPayment", compensated="PaymentRefunded")
    wf.on_failure(cancelled="cancelled", compensating="compensating", stuck="compensation_failed")
    definition = wf.build()                                                     # validated here

Vocabulary:

* ``on(event, source, target, when=guard, do=[actions])`` is a plain transition. Several rules for one
  (state, event) are tried in declaration order; the first whose guard holds wins. Guards are pure
  predicates over the :class:`~streams.workflow.context.StepContext` (``ctx.data``, ``ctx.payload``, ...).
* ``data(name=type, ...)`` declares the entity's data once (:mod:`streams.workflow.fields`): the engine derives
  and versions the stored-state record from it, and ``build()`` refuses an action that records, or a
  ``data_fields`` payload that reads, an undeclared field. Raise ``version`` when the fields change; a field
  added later needs a default, and one removed is named in ``drop(...)``.
* Actions: ``emit`` an event, ``issue`` a declared command, ``record`` event fields into the entity's data,
  ``set_timer`` / ``cancel_timer``, ``fail`` (set the reason), ``complete_step`` (with its compensation).
  ``on_enter`` actions of a state run on every transition that enters it from another state.
* ``step(...)`` declares a saga step and expands into the rules a reliable remote call needs: success,
  retry of transient failures with backoff (a durable timer), reply timeout, retry budget, and giving up
  into compensation. ``on_failure`` names where giving up leads: ``compensating`` while completed steps
  are being undone (newest first, one at a time), then ``cancelled``; ``stuck`` if a compensation itself
  gives up. Failure replies carry ``failure: "TRANSIENT" | "PERMANENT"`` and the ``attempt`` they answer.
* Timers: ``set_timer(name, after_ms, fires=Event)`` arms a durable timer; the runtime turns it into a
  TimerFired record on the input topic, which reaches the step as ``Event(name=fires)``. A timer is
  scoped to the state it was armed into (cancelled when the entity leaves it) unless ``scope="entity"``;
  entering a terminal state cancels all timers. Clock rule: ``due = max(event.timestamp_ms, now_ms) + delay``
  -- wall clock, so a lagging worker still gives a service the full window from when the command was
  actually sent, with the event time as a lower bound so a clock behind the log cannot fire early.
* ``park(*events, max_ms=...)``: such an event arriving before its state can accept it (out-of-order
  delivery) is held by the runtime and re-offered after each change of the entity, for at most ``max_ms``.
* ``unknown_entity``: what happens to an event for a key with no state that cannot start one:
  ``dead_letter`` (a Failure), ``ignore`` (dropped), ``create`` (the entity is created in the initial state
  with the event in its history and nothing else, so later events find it).

``build()`` validates (unreachable states, non-terminal dead ends, states that cannot finish, events no
state handles, ambiguous or duplicate transitions, unknown states, commands and timer events) and raises
one :class:`~streams.errors.WorkflowDefinitionError` listing every problem by state and event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streams.workflow.actions import (
    AckCompensation,
    Action,
    CancelTimer,
    CompleteStep,
    DataFields,
    Emit,
    Fail,
    Finish,
    GiveUp,
    Guard,
    GuardFn,
    Issue,
    PayloadFn,
    Record,
    RecordWith,
    Reissue,
    ScheduleRetry,
    SetTimer,
    StartCompensation,
    as_guard,
    awaiting_compensation,
    can_retry,
    has_compensable,
)
from streams.workflow.context import StepContext
from streams.workflow.definition import (
    CommandSpec,
    Compensation,
    Definition,
    Rule,
    StateSpec,
    StepSpec,
)
from streams.workflow.fields import declare
from streams.workflow.retry import NO_RETRY, RetryPolicy
from streams.workflow.validate import Draft, compile_draft

__all__ = [
    "WorkflowBuilder",
    "cancel_timer",
    "complete_step",
    "data_fields",
    "emit",
    "fail",
    "guard",
    "issue",
    "record",
    "record_with",
    "set_timer",
]


# --- action and guard factories -------------------------------------------------------------------------------


def emit(record: str, topic: str, payload: PayloadFn) -> Action:
    """Produce event ``record`` to ``topic``, keyed by the entity key, with ``payload(ctx)``."""
    return Emit(record, topic, payload)


def issue(command: str) -> Action:
    """Send the first attempt of a command declared with ``WorkflowBuilder.command``."""
    return Issue(command)


def record(*fields: str) -> Action:
    """Copy these fields of the event payload into the entity's data."""
    return Record(tuple(fields))


def record_with(fn: PayloadFn) -> Action:
    """Merge ``fn(ctx)`` into the entity's data."""
    return RecordWith(fn)


def set_timer(name: str, after_ms: int, *, fires: str, scope: str = "state") -> Action:
    """Arm durable timer ``name``; when due the entity receives event ``fires``. Re-arming replaces it."""
    return SetTimer(name, after_ms, fires, scope)


def cancel_timer(name: str) -> Action:
    """Cancel durable timer ``name`` if it is pending (no effect otherwise)."""
    return CancelTimer(name)


def fail(reason: str | Callable[[StepContext], str]) -> Action:
    """Record why the entity ends where it does (``WorkflowState.reason``)."""
    return Fail(reason)


def complete_step(
    step: str,
    *,
    compensation: str | None = None,
    acknowledged_by: str | None = None,
    failed_by: str | None = None,
) -> Action:
    """Mark a saga step completed; ``compensation`` is the command that undoes it, acknowledged by an event."""
    return CompleteStep(step, compensation, acknowledged_by, failed_by)


def guard(fn: GuardFn, label: str | None = None) -> Guard:
    """Name a predicate for the diagram (plain functions are named after ``__name__``)."""
    return Guard(fn, label or str(getattr(fn, "__name__", "guard")))


def data_fields(*names: str, **constants: Any) -> PayloadFn:
    """A payload builder taking these fields from the entity's data (after this step's records)."""
    return DataFields(tuple(names), dict(constants))


# --- the builder ----------------------------------------------------------------------------------------------


class WorkflowBuilder:
    """Collects a workflow's declarations; ``build()`` expands saga steps, validates and compiles."""

    def __init__(
        self,
        name: str,
        *,
        input_topic: str,
        initial: str,
        unknown_entity: str = "dead_letter",
        history_limit: int = 50,
        max_hops: int | None = None,
        description: str = "",
        version: int = 1,
        state_record: str | None = None,
    ) -> None:
        """``version`` numbers the stored-state record derived from :meth:`data` (raise it when the fields
        change); ``state_record`` names that record (default ``streams.workflows.<Name>State``), e.g. to take
        over a hand-written one whose stored states must keep restoring."""
        self._draft = Draft(
            name=name,
            input_topic=input_topic,
            initial=initial,
            unknown_entity=unknown_entity,
            history_limit=history_limit,
            max_hops=max_hops,
            description=description,
            version=version,
            state_record=state_record or "",
        )
        self._states: dict[str, StateSpec] = {}
        self._steps: list[StepSpec] = []
        self._failure: dict[str, str | None] | None = None
        self._undo = _Undo((), initial, set())

    # declarations
    def states(self, *names: str) -> WorkflowBuilder:
        """Declare non-terminal states without entry actions."""
        for n in names:
            self.state(n)
        return self

    def state(self, name: str, *, on_enter: Iterable[Action] = ()) -> WorkflowBuilder:
        """Declare one non-terminal state, with actions run whenever it is entered."""
        self._declare_state(StateSpec(name, False, tuple(on_enter)))
        return self

    def terminal(self, *names: str, on_enter: Iterable[Action] = ()) -> WorkflowBuilder:
        """Declare terminal states: an entity that reaches one is finished and accepts no more events."""
        actions = tuple(on_enter)
        for n in names:
            self._declare_state(StateSpec(n, True, actions))
        return self

    def _declare_state(self, spec: StateSpec) -> None:
        if spec.name in self._states:
            self._draft.problems.append(f"state {spec.name!r} is declared twice")
        self._states[spec.name] = spec

    def data(self, **fields: Any) -> WorkflowBuilder:
        """Declare the entity's data fields and their types (see :mod:`streams.workflow.fields`). A workflow
        that declares them gets a state record derived by the engine, and ``build()`` refuses an action that
        records, or a ``data_fields`` payload that reads, a field not declared here."""
        declared, problems = declare(fields)
        draft = self._draft
        if draft.data is None:
            draft.data = {}
        for name in declared:
            if name in draft.data:
                problems.append(f"data field {name!r} is declared twice")
        draft.data.update(declared)
        draft.problems.extend(problems)
        return self

    def drop(self, *fields: str) -> WorkflowBuilder:
        """Say that data fields an earlier version stored are gone on purpose: stored values are discarded on
        restore. Without this, a field missing from a new version stops the worker instead of vanishing."""
        self._draft.dropped.update(fields)
        return self

    def events(self, *names: str) -> WorkflowBuilder:
        """Declare the input events (Avro record names) the workflow reacts to."""
        self._draft.events.update(names)
        return self

    def command(
        self,
        name: str,
        *,
        topic: str,
        payload: PayloadFn,
        retry: RetryPolicy = NO_RETRY,
        timeout_ms: int | None = None,
        timeout_event: str | None = None,
        retry_on_timeout: bool = True,
    ) -> WorkflowBuilder:
        """Declare a command (by Avro record name). ``timeout_ms`` arms a reply timer per attempt; when it fires,
        ``retry_on_timeout`` decides between another attempt and giving up."""
        if name in self._draft.commands:
            self._draft.problems.append(f"command {name!r} is declared twice")
        if timeout_ms is not None and timeout_ms <= 0:
            self._draft.problems.append(f"command {name!r}: timeout_ms must be > 0")
        self._draft.commands[name] = CommandSpec(
            name, topic, payload, retry, timeout_ms, timeout_event or "", retry_on_timeout
        )
        return self

    def on(
        self,
        event: str,
        source: str | Iterable[str],
        target: str,
        *,
        when: Guard | GuardFn | None = None,
        do: Iterable[Action] = (),
        label: str | None = None,
    ) -> WorkflowBuilder:
        """In ``source`` (one state or several), on ``event``, if ``when`` holds: run ``do``, go to ``target``."""
        sources = (source,) if isinstance(source, str) else tuple(source)
        g = as_guard(when, label)
        actions = tuple(do)
        for s in sources:
            self._draft.rules.append(Rule(s, event, target, g, actions))
        return self

    def step(
        self,
        name: str,
        *,
        state: str,
        command: str,
        succeeded: str,
        next_state: str,
        failed: str | None = None,
        record: Iterable[str] = (),
        then: Iterable[Action] = (),
        compensation: str | None = None,
        compensated: str | None = None,
        compensation_failed: str | None = None,
    ) -> WorkflowBuilder:
        """A saga step: in ``state`` the entity awaits the reply to ``command`` (issued on entering it).

        ``succeeded`` records ``record`` fields, completes the step and moves to ``next_state`` running
        ``then``; ``failed`` (TRANSIENT) and the command's reply timeout retry under its policy; PERMANENT,
        exhausted attempts or budget give up through ``on_failure``. ``compensation`` (acknowledged by
        ``compensated``) undoes the step if a later one gives up.
        """
        self._steps.append(
            StepSpec(
                name, state, command, succeeded, next_state, failed, tuple(record), tuple(then),
                compensation, compensated, compensation_failed,
            )
        )
        return self

    def on_failure(
        self, *, cancelled: str, compensating: str | None = None, stuck: str | None = None
    ) -> WorkflowBuilder:
        """Where giving up leads: ``compensating`` while steps are undone, then ``cancelled``; ``stuck`` if
        a compensation gives up (a terminal state for an operator to look at)."""
        self._failure = {"cancelled": cancelled, "compensating": compensating, "stuck": stuck}
        return self

    def park(self, *events: str, max_ms: int) -> WorkflowBuilder:
        """Hold these events for up to ``max_ms`` when they arrive before the entity can accept them."""
        if max_ms <= 0:
            self._draft.problems.append(f"park {events}: max_ms must be > 0")
        for e in events:
            self._draft.park_events[e] = max_ms
        return self

    # build
    def build(self) -> Definition:
        """Expand steps and compensations into rules, validate, compile. Safe to call more than once."""
        declared_rules, declared_problems = list(self._draft.rules), list(self._draft.problems)
        try:
            return self._build()
        finally:
            self._draft.rules, self._draft.problems = declared_rules, declared_problems

    def _build(self) -> Definition:
        draft = self._draft
        draft.states = dict(self._states)
        draft.steps = {}
        for spec in self._steps:
            if spec.name in draft.steps:
                draft.problems.append(f"step {spec.name!r} is declared twice")
            draft.steps[spec.name] = spec
            self._success_rule(spec)
        self._collect_compensations()
        self._undo = _Undo(draft.rules, draft.initial, set(draft.compensations))
        may_have, may_lack = self._undo.may_have_any, self._undo.without(set(draft.compensations))
        for spec in self._steps:
            command = draft.commands.get(spec.command)
            if command is not None:
                undo = (spec.state in may_have, spec.state in may_lack)
                self._retry_rules(spec.state, command, spec.failed, spec.name, undo)
        self._expand_compensations()
        return compile_draft(draft)

    def _give_up(
        self, source: str, event: str, command: str, step: str, cause: str, undo: tuple[bool, bool]
    ) -> None:
        failure = self._failure
        if failure is None:
            self._draft.problems.append(
                f"step {step!r} in state {source!r} can give up (on {event}) but on_failure(cancelled=...) "
                "is not declared"
            )
            return
        give_up = GiveUp(command, step, cause, False)
        comp, cancelled = failure["compensating"], failure["cancelled"]
        assert cancelled is not None
        may_have, may_lack = undo
        if comp is not None and may_have:
            when = has_compensable() if may_lack else None
            self.on(event, source, comp, when=when, do=[give_up, StartCompensation()])
            if not may_lack:
                return
        self.on(event, source, cancelled, do=[give_up])

    def _retry_rules(
        self, source: str, spec: CommandSpec, failed: str | None, step: str, undo: tuple[bool, bool]
    ) -> None:
        """The rules that keep one command alive in ``source``: retries, timeout, budget, giving up."""
        retries = spec.retry.max_attempts > 1
        if failed is not None:
            if retries:
                self.on(failed, source, source, when=can_retry(spec.name, False), do=[ScheduleRetry(spec.name, False)])
            self._give_up(source, failed, spec.name, step, "failed", undo)
        if spec.timeout_ms is not None:
            if retries and spec.retry_on_timeout:
                self.on(
                    spec.timeout_event, source, source,
                    when=can_retry(spec.name, True), do=[ScheduleRetry(spec.name, True)],
                )
            self._give_up(source, spec.timeout_event, spec.name, step, "timeout", undo)
        if retries:
            self.on(spec.retry_event, source, source, do=[Reissue(spec.name)])
        if spec.retry.budget_ms is not None:
            self._give_up(source, spec.deadline_event, spec.name, step, "deadline", undo)

    def _success_rule(self, s: StepSpec) -> None:
        if s.command not in self._draft.commands:
            self._draft.problems.append(f"step {s.name!r} uses undeclared command {s.command!r}")
            return
        actions: list[Action] = [Finish(s.command)]
        if s.record:
            actions.append(Record(s.record))
        actions.append(CompleteStep(s.name, s.compensation, s.compensated, s.compensation_failed))
        actions.extend(s.then)
        self.on(s.succeeded, s.state, s.next_state, do=actions)

    def _collect_compensations(self) -> None:
        draft = self._draft
        seen: dict[str, Compensation] = {}
        for rule in draft.rules:
            for a in rule.actions:
                if isinstance(a, CompleteStep) and a.compensation is not None and a.acknowledged_by is None:
                    draft.problems.append(
                        f"step {a.step!r}: compensation {a.compensation!r} needs the event that acknowledges it "
                        "(compensated= on a step, acknowledged_by= on complete_step)"
                    )
                elif isinstance(a, CompleteStep) and a.compensation is not None and a.acknowledged_by is not None:
                    comp = Compensation(a.step, a.compensation, a.acknowledged_by, a.failed_by)
                    if seen.get(a.step, comp) != comp:
                        draft.problems.append(f"step {a.step!r} is completed with two different compensations")
                    seen[a.step] = comp
        draft.compensations = seen

    def _expand_compensations(self) -> None:
        draft = self._draft
        if not draft.compensations:
            return
        failure = self._failure
        if failure is None or failure["compensating"] is None:
            steps = ", ".join(sorted(draft.compensations))
            draft.problems.append(f"steps {steps} declare compensations but on_failure(compensating=...) is not set")
            return
        comp_state, cancelled, stuck = failure["compensating"], failure["cancelled"], failure["stuck"]
        assert comp_state is not None and cancelled is not None
        for step, comp in draft.compensations.items():
            spec = draft.commands.get(comp.command)
            if spec is None:
                draft.problems.append(f"step {step!r}: compensation uses undeclared command {comp.command!r}")
                continue
            ack = [AckCompensation(step)]
            more, last = self._undo.after(step)
            both = more and last
            if more:
                self.on(comp.acknowledged_by, comp_state, comp_state,
                        when=awaiting_compensation(step, True if both else None), do=[*ack, StartCompensation()])
            if last:
                self.on(comp.acknowledged_by, comp_state, cancelled,
                        when=awaiting_compensation(step, False if both else None), do=ack)
            can_fail = (
                comp.failed_by is not None or spec.timeout_ms is not None or spec.retry.budget_ms is not None
            )
            if not can_fail:
                continue
            if stuck is None:
                draft.problems.append(
                    f"compensation {comp.command!r} of step {step!r} can give up but on_failure(stuck=...) is not set"
                )
                continue
            retries = spec.retry.max_attempts > 1
            give_up = [GiveUp(comp.command, step, "failed", True)]
            if comp.failed_by is not None:
                undoing = awaiting_compensation(step)
                if retries:
                    self.on(comp.failed_by, comp_state, comp_state,
                            when=undoing & can_retry(comp.command, False), do=[ScheduleRetry(comp.command, False)])
                self.on(comp.failed_by, comp_state, stuck, when=undoing, do=give_up)
            if spec.timeout_ms is not None:
                if retries and spec.retry_on_timeout:
                    self.on(spec.timeout_event, comp_state, comp_state,
                            when=can_retry(comp.command, True), do=[ScheduleRetry(comp.command, True)])
                self.on(spec.timeout_event, comp_state, stuck, do=[GiveUp(comp.command, step, "timeout", True)])
            if retries:
                self.on(spec.retry_event, comp_state, comp_state, do=[Reissue(comp.command)])
            if spec.retry.budget_ms is not None:
                self.on(spec.deadline_event, comp_state, stuck, do=[GiveUp(comp.command, step, "deadline", True)])


class _Undo:
    """Which steps with a compensation may be completed in which states, from the forward rules alone.

    Generated give-up and acknowledgement rules get a guard only where both outcomes are possible, so
    the diagram (and the transition coverage a test can demand) shows no dead edges."""

    def __init__(self, rules: Iterable[Rule], initial: str, compensable: set[str]) -> None:
        self.rules = list(rules)
        self.initial = initial
        self.succ: dict[str, set[str]] = {}
        self.completing: dict[str, list[Rule]] = {}
        for r in self.rules:
            self.succ.setdefault(r.source, set()).add(r.target)
            for a in r.actions:
                if isinstance(a, CompleteStep) and a.step in compensable:
                    self.completing.setdefault(a.step, []).append(r)
        self.may_have = {s: _closure((r.target for r in rs), self.succ) for s, rs in self.completing.items()}
        self.may_have_any = set().union(*self.may_have.values()) if self.may_have else set()

    def without(self, steps: set[str]) -> set[str]:
        """States reachable from the initial one without completing any of ``steps``."""
        clean: dict[str, set[str]] = {}
        for r in self.rules:
            if not any(isinstance(a, CompleteStep) and a.step in steps for a in r.actions):
                clean.setdefault(r.source, set()).add(r.target)
        return _closure([self.initial], clean)

    def after(self, step: str) -> tuple[bool, bool]:
        """Whether undoing ``step`` may be followed by more undoing, and whether it may be the last."""
        sources = {r.source for r in self.completing.get(step, ())}
        others = set(self.completing) - {step}
        more = any(src in self.may_have[o] for o in others for src in sources)
        last = bool(sources & self.without(others))
        return more, last


def _closure(start: Iterable[str], succ: Mapping[str, Iterable[str]]) -> set[str]:
    seen = set(start)
    todo = list(seen)
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
