"""exactly_once wiring for a worker: its transactional producer's settings and the first transaction.

The commit steps themselves are in :mod:`streams.runtime.commit` (E1-E5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from hashlib import blake2b

from streams.config import EXACTLY_ONCE, KafkaSettings, WorkerSettings
from streams.kafka.transactions import Transactions, transactional_id
from streams.runtime.commit import CommitContext, begin

# A transaction open longer than this is aborted by the coordinator. It bounds how long read_committed readers
# of a crashed worker's output partitions wait when no instance with its transactional.id comes back (Kafka
# Streams uses the same 10 s); a commit happens every commit interval, far below it.
TRANSACTION_TIMEOUT_MS = 10_000

# Test-only: switch off the fences one by one, so a test can show what each one prevents. "transaction": the
# freeze guard is off, the transaction (offsets with the group generation) is the only fence. "off": the
# offsets are committed outside the transaction too, so nothing fences a zombie's outputs.
TEST_FENCING = "STREAMS_TEST_FENCING"


def producer_overrides(kafka: KafkaSettings, settings: WorkerSettings) -> dict[str, object]:
    """Extra producer settings for the worker's guarantee (none for at_least_once)."""
    if settings.processing_guarantee != EXACTLY_ONCE:
        return {}
    # The state directory tells two instances on one host apart (the instance id defaults to the host name)
    # and stays the same across an instance's restarts, as its stores do.
    where = blake2b(str(settings.state_dir.resolve()).encode(), digest_size=4).hexdigest()
    instance = f"{settings.instance_id}-{where}" if settings.instance_id else where
    out: dict[str, object] = {"transactional.id": transactional_id(settings.group, instance)}
    if "transaction.timeout.ms" not in kafka.producer:
        out["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    return out


def transaction_timeout_s(kafka: KafkaSettings) -> float:
    """The producer's ``transaction.timeout.ms``, in seconds: the coordinator aborts a transaction open longer."""
    return float(str(kafka.producer.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))) / 1000


def attach(ctx: CommitContext, settings: WorkerSettings, env: Mapping[str, str] | None = None,
           timeout_s: float = TRANSACTION_TIMEOUT_MS / 1000) -> None:
    """Make ``ctx`` transactional (exactly_once only): register the producer and open the first transaction.
    A transactional call waits up to ``timeout_s`` (the transaction timeout: the coordinator aborts a
    transaction open longer anyway), and the producer counts as stuck a grace period after that."""
    if settings.processing_guarantee != EXACTLY_ONCE:
        return
    env = os.environ if env is None else env
    mode = env.get(TEST_FENCING) or None
    if mode not in (None, "transaction", "off"):
        raise ValueError(f"{TEST_FENCING}={mode!r} is not transaction or off")
    ctx.txn = Transactions(ctx.producer, ctx.log, timeout_s)
    ctx.txn.init(ctx.should_give_up)
    begin(ctx)
    if mode is not None:
        ctx.frozen = lambda: False
        ctx.offsets_in_txn = mode != "off"
        ctx.log(f"worker: TEST ONLY: fencing {mode!r} ({TEST_FENCING})")
