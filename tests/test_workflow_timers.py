"""Durable timers as data: arming, the clock rule, scopes, cancellation, and firing at most once in effect."""

from __future__ import annotations

import random

from streams.workflow import (
    Definition,
    Driver,
    Event,
    Timer,
    WorkflowBuilder,
    WorkflowState,
    data_fields,
    emit,
    set_timer,
    step,
)
from test_workflow_support import FAST, failed, paid, placed, saga


def reminders() -> Definition:
    """Periodic nudges while waiting (state-scoped) and one expiry for the whole entity (entity-scoped)."""
    wf = WorkflowBuilder("reminders", input_topic="reminders.events", initial="new")
    wf.states("new", "waiting", "snoozed")
    wf.terminal("done", "expired")
    wf.events("Opened", "Snooze", "Wake", "Close")
    nudge = set_timer("nudge", 1_000, fires="Nudge")
    wf.on("Opened", "new", "waiting", do=[nudge, set_timer("expiry", 10_000, fires="Expire", scope="entity")])
    wf.on("Nudge", "waiting", "waiting", do=[emit("Reminder", "reminders.out", data_fields()), nudge])
    wf.on("Snooze", "waiting", "snoozed")
    wf.on("Wake", "snoozed", "waiting", do=[nudge])
    wf.on("Expire", "waiting", "expired")
    wf.on("Close", ("waiting", "snoozed"), "done")
    return wf.build()


def open_at(defn: Definition, ts: int, now: int) -> WorkflowState:
    r = step(defn, None, Event("Opened", "e1", "r1", {}, ts), now)
    assert r.state is not None
    return r.state


def test_due_time_is_wall_clock_with_the_event_time_as_lower_bound() -> None:
    defn = reminders()
    ahead = open_at(defn, ts=5_000, now=1_000)  # worker clock behind the log: never arm in the past
    assert ahead.timer("nudge") == Timer("nudge", 6_000, "Nudge", ahead.timers[0].attempt)
    lagging = open_at(defn, ts=1_000, now=5_000)  # worker catching up: the full window from now
    assert lagging.timer("nudge").due_at == 6_000  # type: ignore[union-attr]
    assert lagging.timer("expiry").due_at == 15_000  # type: ignore[union-attr]


def test_a_re_armed_timer_fires_again_and_each_arming_has_its_own_attempt_token() -> None:
    d = Driver(reminders())
    d.send("Opened", "r1")
    first = d.state("r1").timer("nudge")  # type: ignore[union-attr]
    d.advance(3_500)
    assert [o.record for o in d.outputs] == ["Reminder"] * 3
    assert [e["at"] for e in d.transcript if e["event"] == "Nudge"] == [1_000, 2_000, 3_000]
    now = d.state("r1").timer("nudge")  # type: ignore[union-attr]
    assert now is not None and first is not None and now.due_at == 4_000 and now.attempt != first.attempt
    fired = next(e for e in d.transcript if e["event"] == "Nudge")
    assert fired["timers_cancelled"] == ["nudge"] and fired["timers_set"][0][:3] == ["nudge", 2_000, "Nudge"]


def test_leaving_the_state_cancels_its_timers_but_not_entity_timers() -> None:
    d = Driver(reminders())
    d.send("Opened", "r1")
    d.advance(100)
    r = d.send("Snooze", "r1")
    assert [t.name for t in r.timers_cancelled] == ["nudge"] and r.timers_set == ()
    assert [t.name for t in d.timers("r1")] == ["expiry"]
    d.advance(5_000)
    assert d.outputs == []  # no nudge while snoozed


def test_an_entity_timer_firing_where_it_is_not_handled_is_dropped_quietly() -> None:
    d = Driver(reminders())
    d.send("Opened", "r1")
    d.send("Snooze", "r1")
    d.advance(10_000)
    [(event, why)] = d.ignored
    assert (event.name, why) == ("Expire", "unhandled_timer")
    s = d.state("r1")
    assert s is not None and s.state == "snoozed" and s.timers == () and d.dead_letters == []


def test_a_firing_from_an_earlier_arming_is_stale() -> None:
    d = Driver(reminders())
    d.send("Opened", "r1")
    old = d.state("r1").timer("nudge")  # type: ignore[union-attr]
    assert old is not None
    d.advance(10)
    d.send("Snooze", "r1")
    d.advance(10)
    d.send("Wake", "r1")  # re-armed by another event: a new token
    new = d.state("r1").timer("nudge")  # type: ignore[union-attr]
    assert new is not None and new.attempt != old.attempt
    before = d.state("r1")
    # the runtime had already written the old firing to the log before the cancel was processed
    r = d.deliver(Event("Nudge", "late-firing", "r1", old.fired_payload(), d.now_ms))
    assert r.ignored == "stale_timer" and not r.changed and d.state("r1") is before
    assert d.outputs == []


def test_entering_a_terminal_state_cancels_every_timer() -> None:
    d = Driver(reminders())
    d.send("Opened", "r1")
    r = d.send("Close", "r1")
    assert r.state is not None and r.state.timers == ()
    assert sorted(t.name for t in r.timers_cancelled) == ["expiry", "nudge"]
    d.advance(20_000)
    assert d.transcript[-1]["event"] == "Close"  # nothing fired afterwards


# --- the order saga's timers ----------------------------------------------------------------------------------


def test_a_cancelled_reply_timeout_that_fires_anyway_is_ignored() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    timeout = d.state("o1").timer("MakePayment.timeout")  # type: ignore[union-attr]
    assert timeout is not None
    d.send("PaymentCompleted", "o1", paid("o1"))
    before, n = d.state("o1"), len(d.outputs)
    r = d.deliver(Event.timer_fired("o1", timeout, 1_000))
    assert r.ignored == "stale_timer" and r.failure is None and not r.changed
    assert d.state("o1") is before and len(d.outputs) == n


def test_a_timer_fired_twice_takes_effect_once() -> None:
    for dedupe in (True, False):  # the runtime's event-id dedupe, and the step's own pending check
        d = Driver(saga(retry_payment_on_timeout=True), dedupe=dedupe)
        d.send("OrderPlaced", "o1", placed("o1"))
        timeout = d.state("o1").timer("MakePayment.timeout")  # type: ignore[union-attr]
        assert timeout is not None
        first = d.fire("o1", "MakePayment.timeout")
        assert first.changed and first.state is not None and first.state.timer("MakePayment.retry") is not None
        again = d.deliver(Event.timer_fired("o1", timeout, d.now_ms))
        assert again.ignored == ("duplicate_event" if dedupe else "stale_timer")
        assert d.state("o1") is first.state


def test_a_timeout_of_an_earlier_attempt_is_stale() -> None:
    d = Driver(saga())
    d.send("OrderPlaced", "o1", placed("o1"))
    t1 = d.state("o1").timer("MakePayment.timeout")  # type: ignore[union-attr]
    d.send("PaymentFailed", "o1", failed("o1", "TRANSIENT", 1))
    d.advance_to(d.next_due() or 0)
    t2 = d.state("o1").timer("MakePayment.timeout")  # type: ignore[union-attr]
    assert t1 is not None and t2 is not None and (t1.attempt, t2.attempt) == (1, 2)
    r = d.deliver(Event("PaymentTimedOut", "old", "o1", {**t1.fired_payload(), "attempt": 1}, d.now_ms))
    assert r.ignored == "stale_timer" and d.state("o1").state == "paying"  # type: ignore[union-attr]


def test_timers_fire_in_due_order_across_entities() -> None:
    d = Driver(saga())
    for i, key in enumerate(["a", "b", "c"]):
        d.now_ms = 300 - i * 100  # c placed first, then b, then a
        d.send("OrderPlaced", key, placed(key))
    d.now_ms = 300
    d.advance_to(5_000)
    fired = [(e["at"], e["key"]) for e in d.transcript if e["event"] == "PaymentTimedOut"]
    assert fired == [(1_100, "c"), (1_200, "b"), (1_300, "a")]


def test_timer_deltas_keep_an_index_equal_to_the_pending_timers() -> None:
    """What the runtime's due-time index relies on: applying timers_cancelled then timers_set after each step
    keeps it equal to the union of every entity's pending timers, whatever the events."""
    defn = saga(**{**FAST, "retry_payment_on_timeout": True})
    rng = random.Random(7)
    states: dict[str, WorkflowState] = {}
    index: dict[tuple[str, str], Timer] = {}
    replies = {
        "PaymentCompleted": paid, "InventoryReserved": lambda k: {"order_id": k, "reservation_id": "r"},
        "ShippingLabelCreated": lambda k: {"order_id": k, "label_id": "l", "tracking_number": "t"},
        "PaymentRefunded": paid, "InventoryReleased": lambda k: {"order_id": k, "reservation_id": "r"},
    }
    failures = ["PaymentFailed", "InventoryUnavailable", "ShippingFailed"]
    now = 0
    for n in range(3_000):
        now += rng.randrange(0, 300)
        key = f"o{rng.randrange(12)}"
        state = states.get(key)
        roll = rng.random()
        if state is None or roll < 0.05:
            e = Event("OrderPlaced", f"e{n}", key, placed(key), now)
        elif state.timers and roll < 0.45:
            e = Event.timer_fired(key, rng.choice(state.timers), now)
        elif roll < 0.75:
            name = rng.choice(list(replies))
            e = Event(name, f"e{n}", key, replies[name](key), now)
        else:
            attempt = max(state.attempts.values(), default=1)
            kind = rng.choice(["TRANSIENT", "PERMANENT"])
            e = Event(rng.choice(failures), f"e{n}", key, failed(key, kind, attempt), now)
        r = step(defn, state, e, now)
        if r.changed:
            assert r.state is not None
            states[key] = r.state
            for t in r.timers_cancelled:
                assert index.pop((key, t.name)) == t
            for t in r.timers_set:
                assert (key, t.name) not in index
                index[(key, t.name)] = t
        assert index == {(k, t.name): t for k, s in states.items() for t in s.timers}
    assert any(s.state == "completed" for s in states.values())

