"""Retry backoff: full jitter within [0, min(cap, base * 2**(n-1))], deterministic per (key, command, attempt).

Property-style with a seeded generator (many keys, commands, attempts and policies), so a failure reproduces.
"""

from __future__ import annotations

import random
import statistics

import pytest

from streams.errors import ConfigError, WorkflowDefinitionError
from streams.workflow import Driver, RetryPolicy
from test_workflow_support import failed, placed, saga


def policies(rng: random.Random, n: int) -> list[RetryPolicy]:
    out = [RetryPolicy(max_attempts=10, base_ms=0, cap_ms=0), RetryPolicy(max_attempts=10, base_ms=1, cap_ms=1)]
    for _ in range(n):
        base = rng.choice([1, 7, 100, 1_000, 60_000])
        out.append(RetryPolicy(max_attempts=rng.randrange(1, 20), base_ms=base, cap_ms=rng.randrange(0, 200 * base)))
    return out


def test_backoff_stays_within_full_jitter_bounds() -> None:
    rng = random.Random(20261122)
    for policy in policies(rng, 60):
        for _ in range(150):
            key = f"order-{rng.randrange(10**9)}"
            command = rng.choice(["MakePayment", "ReserveInventory", "RefundPayment"])
            n = rng.randrange(1, 80)
            delay = policy.backoff_ms(key, command, n)
            assert 0 <= delay <= min(policy.cap_ms, policy.base_ms * 2 ** (n - 1)), (policy, key, command, n)


def test_ceiling_doubles_until_the_cap_and_never_overflows() -> None:
    p = RetryPolicy(base_ms=100, cap_ms=1_000)
    assert [p.ceiling_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1_000, 1_000]
    assert p.ceiling_ms(10_000) == 1_000
    assert 0 <= p.backoff_ms("k", "c", 10**6) <= 1_000


def test_backoff_is_deterministic_but_spread_over_keys() -> None:
    p = RetryPolicy(base_ms=1_000, cap_ms=1_000_000)
    assert [p.backoff_ms("o1", "MakePayment", n) for n in range(1, 6)] == [
        p.backoff_ms("o1", "MakePayment", n) for n in range(1, 6)
    ]
    delays = [p.backoff_ms(f"o{i}", "MakePayment", 3) for i in range(4_000)]  # ceiling 4000
    assert len(set(delays)) > 2_500  # jitter: no thundering herd
    assert 1_800 < statistics.mean(delays) < 2_200  # uniform over [0, 4000] has mean 2000
    assert min(delays) < 100 and max(delays) > 3_900
    differ = sum(p.backoff_ms(f"o{i}", "MakePayment", 3) != p.backoff_ms(f"o{i}", "ReserveInventory", 3)
                 for i in range(100))
    assert differ > 95  # the command is part of the hash too


def test_the_engine_schedules_exactly_the_policy_backoff() -> None:
    defn = saga()
    policy = defn.commands["MakePayment"].retry
    d = Driver(defn)
    for i in range(200):
        key = f"o{i}"
        d.send("OrderPlaced", key, placed(key))
        r = d.send("PaymentFailed", key, failed(key, "TRANSIENT", 1))
        assert r.state is not None
        retry = r.state.timer("MakePayment.retry")
        assert retry is not None and retry.due_at - d.now_ms == policy.backoff_ms(key, "MakePayment", 1)


@pytest.mark.parametrize(
    "fields",
    [{"max_attempts": 0}, {"base_ms": -1}, {"cap_ms": -5}, {"budget_ms": 0}],
)
def test_invalid_policies_are_definition_errors(fields: dict[str, int]) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        RetryPolicy(**fields)
    assert isinstance(exc.value, ConfigError) and next(iter(fields)) in str(exc.value)


def test_policies_from_plain_data() -> None:
    assert RetryPolicy.coerce({"max_attempts": 2, "base_ms": 5}) == RetryPolicy(max_attempts=2, base_ms=5)
    p = RetryPolicy(max_attempts=4)
    assert RetryPolicy.coerce(p) is p
    with pytest.raises(WorkflowDefinitionError, match="jitter"):
        RetryPolicy.coerce({"jitter": 1})
