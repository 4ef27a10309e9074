"""Workflows as pure per-entity state machines: the DSL, its validation, and the step.

Nothing here does I/O, reads a clock or draws random numbers; the runtime feeds events in and carries the
results out. Start with :mod:`streams.workflow.dsl` (how to declare a workflow) and
:mod:`streams.workflow.step` (what one step decides, and the clock rule).
"""

from streams.workflow.context import StepContext
from streams.workflow.definition import CommandSpec, Definition
from streams.workflow.driver import Driver
from streams.workflow.dsl import (
    WorkflowBuilder,
    cancel_timer,
    complete_step,
    data_fields,
    emit,
    fail,
    guard,
    issue,
    record,
    record_with,
    set_timer,
)
from streams.workflow.fields import Field
from streams.workflow.model import (
    TIMER_FIRED,
    Event,
    Failure,
    Output,
    StepResult,
    Timer,
    Transition,
    WorkflowState,
    command_id,
    event_from_record,
    history_records,
    output_id,
    timer_records,
)
from streams.workflow.registry import ALIASES, create, factory, names
from streams.workflow.retry import NO_RETRY, RetryPolicy
from streams.workflow.step import step

__all__ = [
    "ALIASES",
    "NO_RETRY",
    "TIMER_FIRED",
    "CommandSpec",
    "Definition",
    "Driver",
    "Event",
    "Failure",
    "Field",
    "Output",
    "RetryPolicy",
    "StepContext",
    "StepResult",
    "Timer",
    "Transition",
    "WorkflowBuilder",
    "WorkflowState",
    "cancel_timer",
    "command_id",
    "complete_step",
    "create",
    "data_fields",
    "emit",
    "event_from_record",
    "factory",
    "fail",
    "guard",
    "history_records",
    "issue",
    "names",
    "output_id",
    "record",
    "record_with",
    "set_timer",
    "step",
    "timer_records",
]
