"""Guards and actions: the things a transition checks and does, as small objects rather than opaque lambdas.

Being objects lets validation ask what an action issues or which timer it arms, and lets the diagram label
edges, while the step only calls ``apply``. User code supplies plain functions only where the business
decides: guard predicates and payload builders, each given the :class:`StepContext`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from streams.workflow.context import StepContext
from streams.workflow.model import command_id

if TYPE_CHECKING:
    from streams.workflow.definition import CommandSpec

PayloadFn = Callable[[StepContext], Mapping[str, Any]]
GuardFn = Callable[[StepContext], bool]
TimerDecl = tuple[str, str, str]  # (timer name, event it fires, scope: "state" | "entity")

TRANSIENT = "TRANSIENT"  # value of a failure reply's ``failure`` field that makes it retryable
SCOPES = ("state", "entity")


class Guard:
    """A named predicate; the name labels the diagram edge."""

    __slots__ = ("fn", "label")

    def __init__(self, fn: GuardFn, label: str) -> None:
        self.fn = fn
        self.label = label

    def __call__(self, ctx: StepContext) -> bool:
        return self.fn(ctx)

    def __and__(self, other: Guard) -> Guard:
        first, second = self.fn, other.fn
        return Guard(lambda c: first(c) and second(c), f"{self.label} and {other.label}")


def as_guard(when: Guard | GuardFn | None, label: str | None = None) -> Guard | None:
    if when is None or isinstance(when, Guard):
        return when
    return Guard(when, label or str(getattr(when, "__name__", "guard")))


class DataFields:
    """A payload taken from the entity's data: its field names are known before any step runs, so validation
    checks them against the declared data fields and a command's schema."""

    __slots__ = ("constants", "names")

    def __init__(self, names: tuple[str, ...], constants: dict[str, Any]) -> None:
        self.names = names
        self.constants = constants

    def __call__(self, ctx: StepContext) -> Mapping[str, Any]:
        d = ctx.data
        out = {n: d[n] for n in self.names}
        if self.constants:
            out.update(self.constants)
        return out

    def keys(self) -> frozenset[str]:
        """The payload's fields, whatever the entity's data holds."""
        return frozenset((*self.names, *self.constants))


class Action:
    """Base of every action. ``commands``/``timers`` tell validation what the action will do."""

    __slots__ = ()

    def apply(self, ctx: StepContext) -> None:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return ""

    def commands(self) -> tuple[str, ...]:
        return ()

    def timers(self) -> tuple[TimerDecl, ...]:
        return ()


class Emit(Action):
    __slots__ = ("payload", "record", "topic")

    def __init__(self, record: str, topic: str, payload: PayloadFn) -> None:
        self.record, self.topic, self.payload = record, topic, payload

    def apply(self, ctx: StepContext) -> None:
        ctx.emit(self.record, self.topic, self.payload(ctx))

    @property
    def label(self) -> str:
        return self.record


class Record(Action):
    """Copy fields of the event payload into the entity's data; a missing field is a handler error."""

    __slots__ = ("fields",)

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields

    def apply(self, ctx: StepContext) -> None:
        p = ctx.event.payload
        ctx.record({f: p[f] for f in self.fields})


class RecordWith(Action):
    __slots__ = ("fn",)

    def __init__(self, fn: PayloadFn) -> None:
        self.fn = fn

    def apply(self, ctx: StepContext) -> None:
        ctx.record(self.fn(ctx))


class Fail(Action):
    """Set the entity's ``reason`` (why it ended where it did)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str | Callable[[StepContext], str]) -> None:
        self.reason = reason

    def apply(self, ctx: StepContext) -> None:
        ctx.reason = self.reason if isinstance(self.reason, str) else self.reason(ctx)


def timer_token(event_id: str) -> int:
    """Attempt number of a plain timer: derived from the event that armed it, so a TimerFired from an earlier
    arming of the same name never matches a re-armed timer, and a replay derives the same token."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class SetTimer(Action):
    __slots__ = ("after_ms", "fires", "name", "scope")

    def __init__(self, name: str, after_ms: int, fires: str, scope: str) -> None:
        self.name, self.after_ms, self.fires, self.scope = name, after_ms, fires, scope

    def apply(self, ctx: StepContext) -> None:
        ctx.set_timer(self.name, ctx.base_ms + self.after_ms, self.fires, timer_token(ctx.event.event_id))

    @property
    def label(self) -> str:
        return f"timer {self.name}"

    def timers(self) -> tuple[TimerDecl, ...]:
        return ((self.name, self.fires, self.scope),)


class CancelTimer(Action):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, ctx: StepContext) -> None:
        ctx.cancel_timer(self.name)


class Issue(Action):
    """Send the first attempt of a declared command (payload from its spec, plus ``attempt``)."""

    __slots__ = ("command",)

    def __init__(self, command: str) -> None:
        self.command = command

    def apply(self, ctx: StepContext) -> None:
        issue_command(ctx, ctx.definition.commands[self.command], 1)

    @property
    def label(self) -> str:
        return self.command

    def commands(self) -> tuple[str, ...]:
        return (self.command,)


class CompleteStep(Action):
    """Mark a saga step done; if it declares a compensation, a later failure undoes it with that command."""

    __slots__ = ("acknowledged_by", "compensation", "failed_by", "step")

    def __init__(self, step: str, compensation: str | None, acknowledged_by: str | None, failed_by: str | None):
        self.step, self.compensation = step, compensation
        self.acknowledged_by, self.failed_by = acknowledged_by, failed_by

    def apply(self, ctx: StepContext) -> None:
        ctx.complete(self.step)

    def commands(self) -> tuple[str, ...]:
        return (self.compensation,) if self.compensation else ()


# --- the saga machinery the builder generates -----------------------------------------------------------------


def issue_command(ctx: StepContext, spec: CommandSpec, attempt: int) -> None:
    ctx.set_attempt(spec.name, attempt)
    payload = {**spec.payload(ctx), "attempt": attempt}
    ctx.emit(spec.name, spec.topic, payload, command_id(ctx.definition.name, ctx.event.key, spec.name))
    if spec.timeout_ms is not None:
        ctx.set_timer(spec.timeout_timer, ctx.base_ms + spec.timeout_ms, spec.timeout_event, attempt)
    if attempt == 1 and spec.retry.budget_ms is not None:
        ctx.set_timer(spec.deadline_timer, ctx.base_ms + spec.retry.budget_ms, spec.deadline_event, 1)


def finish_command(ctx: StepContext, spec: CommandSpec) -> None:
    timers = ctx.timers
    if timers:
        names = spec.timer_names
        if any(t.name in names for t in timers):
            ctx.timers = tuple(t for t in timers if t.name not in names)


class Finish(Action):
    """A command got its answer: its reply timeout, pending retry and deadline no longer apply."""

    __slots__ = ("command",)

    def __init__(self, command: str) -> None:
        self.command = command

    def apply(self, ctx: StepContext) -> None:
        finish_command(ctx, ctx.definition.commands[self.command])


def retry_due(ctx: StepContext, spec: CommandSpec, on_timeout: bool) -> int | None:
    """When the next attempt may go out, or None if the command must be given up."""
    memo = ctx.memo
    if memo is not None and spec.retry_timer in memo:
        due: int | None = memo[spec.retry_timer]
        return due
    attempt = ctx.attempt(spec.name)
    policy = spec.retry
    transient = spec.retry_on_timeout if on_timeout else ctx.event.payload.get("failure") == TRANSIENT
    due = None
    if transient and attempt < policy.max_attempts:
        due = ctx.base_ms + policy.backoff_ms(ctx.event.key, spec.name, attempt)
        deadline = ctx.pending(spec.deadline_timer)
        if policy.budget_ms is not None and (deadline is None or due >= deadline.due_at):
            due = None
    ctx.remember(spec.retry_timer, due)
    return due


class ScheduleRetry(Action):
    __slots__ = ("command", "on_timeout")

    def __init__(self, command: str, on_timeout: bool) -> None:
        self.command, self.on_timeout = command, on_timeout

    def apply(self, ctx: StepContext) -> None:
        spec = ctx.definition.commands[self.command]
        due = retry_due(ctx, spec, self.on_timeout)
        if due is None:  # only reachable if the rule was written without the can_retry guard
            raise RuntimeError(f"{self.command}: no retry left")
        ctx.cancel_timer(spec.timeout_timer)
        ctx.set_timer(spec.retry_timer, due, spec.retry_event, ctx.attempt(spec.name) + 1)

    @property
    def label(self) -> str:
        return f"backoff {self.command}"


class Reissue(Action):
    __slots__ = ("command",)

    def __init__(self, command: str) -> None:
        self.command = command

    def apply(self, ctx: StepContext) -> None:
        spec = ctx.definition.commands[self.command]
        issue_command(ctx, spec, ctx.attempt(spec.name) + 1)

    @property
    def label(self) -> str:
        return f"{self.command} again"


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class GiveUp(Action):
    """Stop retrying a command and say why in ``reason``; ``cause`` is failed | timeout | deadline."""

    __slots__ = ("cause", "command", "compensating", "step")

    def __init__(self, command: str, step: str, cause: str, compensating: bool) -> None:
        self.command, self.step, self.cause, self.compensating = command, step, cause, compensating

    def apply(self, ctx: StepContext) -> None:
        spec = ctx.definition.commands[self.command]
        finish_command(ctx, spec)
        n = ctx.attempt(spec.name)
        if self.cause == "timeout":
            detail = f"timed out after {_attempts(n)}"
        elif self.cause == "deadline":
            detail = f"retry budget exhausted after {_attempts(n)}"
        else:
            p = ctx.event.payload
            why = p.get("reason") or "no reason given"
            detail = f"failed after {_attempts(n)}: {why}" if p.get("failure") == TRANSIENT else f"failed: {why}"
        if self.compensating:
            ctx.reason = f"{ctx.reason}; compensation of {self.step} {detail}"
        else:
            ctx.reason = f"{self.step} {detail}"

    @property
    def label(self) -> str:
        return "give up"


def next_compensable(ctx: StepContext) -> tuple[str | None, int]:
    """The most recently completed step that has a compensation, and how many such steps remain."""
    comps = ctx.definition.compensations
    found: str | None = None
    count = 0
    for step in reversed(ctx.completed_steps):
        if step in comps:
            count += 1
            if found is None:
                found = step
    return found, count


class StartCompensation(Action):
    """Undo the most recently completed step; compensations run one at a time, newest first."""

    __slots__ = ()

    def apply(self, ctx: StepContext) -> None:
        step, _ = next_compensable(ctx)
        if step is not None:
            comp = ctx.definition.compensations[step]
            issue_command(ctx, ctx.definition.commands[comp.command], 1)

    @property
    def label(self) -> str:
        return "compensate"


class AckCompensation(Action):
    __slots__ = ("step",)

    def __init__(self, step: str) -> None:
        self.step = step

    def apply(self, ctx: StepContext) -> None:
        comp = ctx.definition.compensations[self.step]
        finish_command(ctx, ctx.definition.commands[comp.command])
        ctx.uncomplete(self.step)


# --- built-in guards ------------------------------------------------------------------------------------------


def can_retry(command: str, on_timeout: bool) -> Guard:
    def check(ctx: StepContext) -> bool:
        return retry_due(ctx, ctx.definition.commands[command], on_timeout) is not None

    return Guard(check, "retry")


def has_compensable() -> Guard:
    return Guard(lambda ctx: next_compensable(ctx)[0] is not None, "steps to undo")


def awaiting_compensation(step: str, more: bool | None = None) -> Guard:
    """The step being undone now is ``step`` (and, if ``more`` is given, others do / do not remain after it)."""

    def check(ctx: StepContext) -> bool:
        found, count = next_compensable(ctx)
        return found == step and (more is None or (count > 1) == more)

    label = "undoing " + step if more is None else ("more to undo" if more else "last undo")
    return Guard(check, label)
