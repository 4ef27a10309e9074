"""Many generated orders, each with a fate for its services, judged by a tiny independent oracle.

The oracle knows nothing of the engine: it reads the business rules off the issue ("payment timeout ->
OrderCancelled", "ShippingFailed -> ReleaseInventory + RefundPayment, newest first", ...). The same idea works
against a real broker: generate fates, run the services, compare terminal states.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from streams.workflow import Driver
from test_workflow_support import FAST, Fate, fake_services, placed, saga, simulate

MAX_PAYMENT_ATTEMPTS = FAST["payment_retry"]["max_attempts"]


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str | None
    payment_attempts: int
    undo: tuple[str, ...]  # compensating commands, in the order they must be sent
    result: str | None  # the record emitted to orders.results


def oracle(f: Fate, max_payment_attempts: int = MAX_PAYMENT_ATTEMPTS) -> Verdict:
    """What must happen to an order with fate ``f``."""
    if f.payment_silent:
        reason = "payment timed out after 1 attempt"
        return Verdict("cancelled", reason, 1, (), "OrderCancelled")
    if f.payment_transient >= max_payment_attempts:
        reason = f"payment failed after {max_payment_attempts} attempts: gateway busy"
        return Verdict("cancelled", reason, max_payment_attempts, (), "OrderCancelled")
    attempts = f.payment_transient + 1
    if f.payment_permanent:
        return Verdict("cancelled", "payment failed: card declined", attempts, (), "OrderCancelled")
    if f.inventory_short:
        return Verdict("cancelled", "inventory failed: out of stock", attempts, ("RefundPayment",), "OrderCancelled")
    if f.shipping_fails:
        undo = ("ReleaseInventory", "RefundPayment")
        return Verdict("cancelled", "shipping failed: address rejected", attempts, undo, "OrderCancelled")
    return Verdict("completed", None, attempts, (), "OrderCompleted")


def random_fate(rng: random.Random) -> Fate:
    return Fate(
        payment_transient=rng.choice([0, 0, 0, 1, 2, 3, 4]),
        payment_permanent=rng.random() < 0.1,
        payment_silent=rng.random() < 0.08,
        inventory_short=rng.random() < 0.12,
        shipping_fails=rng.random() < 0.12,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_orders_end_where_the_oracle_says(seed: int) -> None:
    rng = random.Random(seed)
    fates = {f"o{seed}-{i}": random_fate(rng) for i in range(150)}
    d = Driver(saga())
    at, arrivals = 0, []
    for key in fates:  # orders arrive spread over time, so their events and timers interleave
        at += rng.randrange(0, 40)
        arrivals.append((at, "OrderPlaced", key, placed(key)))
    simulate(d, fake_services(fates), arrivals, latency_ms=7)

    outcomes = set()
    for key, fate in fates.items():
        want = oracle(fate)
        s = d.state(key)
        assert s is not None
        got_cmds = [o.record for o in d.outputs_for(key)]
        undo = tuple(r for r in got_cmds if r in ("RefundPayment", "ReleaseInventory"))
        results = [o.record for o in d.outputs_for(key, topic="orders.results")]
        got = Verdict(s.state, s.reason, s.attempts.get("MakePayment", 0), undo, results[0] if results else None)
        assert got == want, (key, fate)
        assert len(results) == 1 and s.timers == ()
        outcomes.add((want.state, want.undo))
    assert d.dead_letters == []
    assert len(outcomes) >= 4  # the generator really exercised completion and the several failure paths
