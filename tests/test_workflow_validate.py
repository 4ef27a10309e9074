"""Definitions are validated at load: each rule has a broken definition whose error names the culprit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.errors import ConfigError, WorkflowDefinitionError
from streams.workflow import (
    RetryPolicy,
    WorkflowBuilder,
    cancel_timer,
    complete_step,
    data_fields,
    emit,
    issue,
    names,
    set_timer,
)
from streams.workflow.registry import create


def base(**kw: object) -> WorkflowBuilder:
    """A valid two-step saga; each test breaks one thing."""
    wf = WorkflowBuilder("ticket", input_topic="tickets.events", initial="new", **kw)  # type: ignore[arg-type]
    wf.states("new", "holding", "charging", "undoing")
    wf.terminal("booked", on_enter=[emit("Booked", "tickets.results", data_fields("id"))])
    wf.terminal("failed", "stuck")
    wf.events("Requested", "Held", "HoldFailed", "Charged", "ChargeFailed", "Unheld")
    wf.command("Hold", topic="seats.commands", payload=data_fields("id"), timeout_ms=1_000)
    wf.command("Unhold", topic="seats.commands", payload=data_fields("id"), timeout_ms=1_000)
    wf.command("Charge", topic="cards.commands", payload=data_fields("id"), retry=RetryPolicy(max_attempts=2))
    wf.on("Requested", "new", "holding", do=[issue("Hold")])
    wf.step("hold", state="holding", command="Hold", succeeded="Held", failed="HoldFailed", next_state="charging",
            then=[issue("Charge")], compensation="Unhold", compensated="Unheld")
    wf.step("charge", state="charging", command="Charge", succeeded="Charged", failed="ChargeFailed",
            next_state="booked")
    wf.on_failure(cancelled="failed", compensating="undoing", stuck="stuck")
    return wf


def problems(wf: WorkflowBuilder) -> tuple[str, ...]:
    with pytest.raises(WorkflowDefinitionError) as exc:
        wf.build()
    assert isinstance(exc.value, ConfigError)
    assert all(p in str(exc.value) for p in exc.value.problems)
    return exc.value.problems


def one(wf: WorkflowBuilder, *words: str) -> str:
    found = [p for p in problems(wf) if all(w in p for w in words)]
    assert found, f"no problem mentions {words}: {problems(wf)}"
    return found[0]


def test_the_base_and_the_registered_workflows_are_valid() -> None:
    wf = base()
    first, again = wf.build(), wf.build()  # building twice expands the steps once each time
    assert first.name == "ticket" and len(first.rules) == len(again.rules)
    assert [(r.source, r.event, r.target) for r in first.rules] == [(r.source, r.event, r.target) for r in again.rules]
    for name in names():
        assert create(name).name == name


def test_unreachable_state() -> None:
    wf = base()
    wf.state("limbo")
    wf.on("Held", "limbo", "booked")
    one(wf, "'limbo'", "unreachable")


def test_non_terminal_dead_end() -> None:
    wf = base()
    wf.state("waiting")
    wf.on("Requested", "booked", "waiting")  # also a transition out of a terminal state
    assert one(wf, "'waiting'", "dead end")
    one(wf, "terminal state 'booked'", "Requested")


def test_state_that_cannot_finish() -> None:
    wf = base()
    wf.states("ping", "pong")
    wf.events("Ping")
    wf.on("Ping", "new", "ping")
    wf.on("Ping", "ping", "pong")
    wf.on("Ping", "pong", "ping")
    one(wf, "'ping'", "cannot reach any terminal")


def test_event_no_state_handles() -> None:
    wf = base()
    wf.events("Refunded")
    one(wf, "Refunded", "no state handles")


def test_transition_on_undeclared_event() -> None:
    wf = base()
    wf.on("Cancelled", "holding", "failed")
    one(wf, "'holding'", "undeclared event Cancelled")


def test_unknown_target_and_source_states() -> None:
    wf = base()
    wf.on("Requested", "holding", "nowhere")
    wf.on("Held", "elsewhere", "booked")
    one(wf, "unknown target state 'nowhere'")
    one(wf, "unknown source state 'elsewhere'")


def test_ambiguous_transitions() -> None:
    wf = base()
    wf.on("Requested", "new", "failed")  # the declared one to 'holding' is unguarded and always wins
    one(wf, "'new'", "Requested", "ambiguous")


def test_duplicate_transition() -> None:
    wf = base()
    vip = lambda c: bool(c.payload.get("vip"))  # noqa: E731
    wf.events("Upgrade")
    wf.on("Upgrade", "holding", "charging", when=vip, label="vip")
    wf.on("Upgrade", "holding", "charging", when=vip, label="vip")
    one(wf, "'holding'", "Upgrade", "duplicate")


def test_timer_whose_event_nobody_handles() -> None:
    wf = base()
    wf.on("Held", "charging", "charging", do=[set_timer("remind", 500, fires="Remind")])
    one(wf, "'remind'", "Remind", "'charging'")
    wf2 = base()
    wf2.on("Requested", "new", "holding", when=lambda c: False, do=[set_timer("gc", 9, fires="Sweep", scope="entity")])
    one(wf2, "'gc'", "Sweep", "no state handles")


def test_timer_problems_of_scope_name_and_event_clash() -> None:
    wf = base()
    wf.events("Poke")
    wf.on("Poke", "holding", "holding", do=[set_timer("t", 5, fires="Held", scope="forever")])
    one(wf, "'t'", "scope")
    one(wf, "'t'", "Held", "also declared as an input event")
    wf2 = base()
    wf2.events("Poke")
    wf2.on("Poke", "holding", "holding", do=[set_timer("t", 5, fires="A"), set_timer("t", 5, fires="B")])
    one(wf2, "'t'", "two different events")


def test_command_problems() -> None:
    wf = base()
    wf.command("Audit", topic="audit", payload=data_fields("id"))
    one(wf, "'Audit'", "never issued")
    wf2 = base()
    wf2.events("Poke")
    wf2.on("Poke", "holding", "holding", do=[issue("Teleport")])
    one(wf2, "'holding'", "undeclared command 'Teleport'")
    wf3 = base()
    wf3.step("fly", state="charging", command="Fly", succeeded="Charged", next_state="booked")
    one(wf3, "step 'fly'", "'Fly'")
    wf4 = base()
    wf4.command("Hold", topic="x", payload=data_fields())
    one(wf4, "'Hold'", "declared twice")


def test_reply_event_shared_by_two_commands() -> None:
    wf = base()
    wf.states("extra")
    wf.on("Charged", "charging", "extra", when=lambda c: False, label="never")
    wf.step("extra", state="extra", command="Hold", succeeded="Charged", next_state="booked")
    one(wf, "Charged", "reply of both")


def test_compensation_without_acknowledgement_or_compensating_state() -> None:
    wf = base()
    wf.step("charge2", state="charging", command="Charge", succeeded="ChargeFailed", next_state="booked",
            compensation="Unhold")
    one(wf, "'charge2'", "compensated=")
    wf1 = base()
    wf1.events("Poke")
    wf1.on("Poke", "charging", "charging", do=[complete_step("extra", compensation="Unhold")])
    one(wf1, "'extra'", "acknowledged_by=")
    wf2 = WorkflowBuilder("x", input_topic="x", initial="a")
    wf2.states("a", "b")
    wf2.terminal("z")
    wf2.events("Go", "Done", "Undone")
    wf2.command("Do", topic="t", payload=data_fields())
    wf2.command("Undo", topic="t", payload=data_fields())
    wf2.on("Go", "a", "b", do=[issue("Do")])
    wf2.on("Done", "b", "z", do=[complete_step("s", compensation="Undo", acknowledged_by="Undone")])
    one(wf2, "compensating=")


def test_step_that_can_fail_needs_a_failure_path() -> None:
    wf = WorkflowBuilder("x", input_topic="x", initial="a")
    wf.states("a", "b")
    wf.terminal("z")
    wf.events("Go", "Done", "Broke")
    wf.command("Do", topic="t", payload=data_fields())
    wf.on("Go", "a", "b", do=[issue("Do")])
    wf.step("s", state="b", command="Do", succeeded="Done", failed="Broke", next_state="z")
    one(wf, "step 's'", "on_failure")


def test_compensation_that_can_give_up_needs_a_stuck_state() -> None:
    wf = base()
    wf.on_failure(cancelled="failed", compensating="undoing")
    one(wf, "'Unhold'", "stuck=")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda wf: wf.park("Teleported", max_ms=5), ("Teleported", "parked")),
        (lambda wf: wf.park("Held", max_ms=0), ("max_ms",)),
        (lambda wf: wf.state("new"), ("'new'", "declared twice")),
        (lambda wf: wf.command("Bad", topic="t", payload=data_fields(), timeout_ms=0), ("'Bad'", "timeout_ms")),
    ],
)
def test_misc_declarations(change: Callable[[WorkflowBuilder], object], words: tuple[str, ...]) -> None:
    wf = base()
    change(wf)
    one(wf, *words)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"unknown_entity": "explode"}, ("unknown_entity", "explode")),
        ({"history_limit": 0}, ("history_limit",)),
        ({"max_hops": 0}, ("max_hops",)),
        ({"initial": "start"}, ("initial state 'start'",)),
        ({"input_topic": ""}, ("input_topic",)),
    ],
)
def test_settings(kw: dict[str, object], words: tuple[str, ...]) -> None:
    wf = base(**{k: v for k, v in kw.items() if k not in ("initial", "input_topic")})
    if "initial" in kw:
        wf._draft.initial = str(kw["initial"])
    if "input_topic" in kw:
        wf._draft.input_topic = str(kw["input_topic"])
    one(wf, *words)


def test_initial_terminal_and_no_terminal_at_all() -> None:
    wf = WorkflowBuilder("x", input_topic="x", initial="a")
    wf.terminal("a")
    wf.events("Go")
    wf.on("Go", "a", "a")
    assert one(wf, "initial state 'a' is terminal")
    wf2 = WorkflowBuilder("y", input_topic="y", initial="a")
    wf2.states("a")
    wf2.events("Go")
    wf2.on("Go", "a", "a")
    one(wf2, "no terminal state")


def test_every_problem_is_reported_at_once() -> None:
    wf = base()
    wf.events("Orphan")
    wf.on("Held", "elsewhere", "booked")
    wf.on("Held", "holding", "charging", do=[cancel_timer("x")])
    found = problems(wf)
    assert len(found) >= 3
    assert any("Orphan" in p for p in found) and any("elsewhere" in p for p in found)
    assert any("ambiguous" in p for p in found)


def test_unknown_workflow_name_and_bad_parameters() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"unknown workflow 'nope'.*orders"):
        create("nope")
    with pytest.raises(WorkflowDefinitionError, match="bad parameters"):
        create("orders", {"payment_timeout": 5})
    with pytest.raises(WorkflowDefinitionError, match="max_attempts"):
        create("orders", {"payment_retry": {"max_attempts": 0}})
