"""The transactional producer's calls, with confluent-kafka's transaction errors translated into ours.

librdkafka sorts every transaction error three ways, and so do we: *retriable* (the call may be repeated, e.g.
the coordinator moved), *abortable* (``txn_requires_abort()``: this transaction is lost, e.g. the group moved
on and refused our offsets with an old generation; abort and redo the batch) and *fatal* (``fatal()``: this
producer is fenced for good, e.g. a newer incarnation with the same ``transactional.id`` called
``init_transactions``, or the coordinator aborted a transaction left open past ``transaction.timeout.ms`` and
bumped the producer's epoch; the worker ends and a restart goes on).

librdkafka (2.16) can block in a transactional call past the timeout it was given: ``send_offsets_to_transaction``
never checks it while the group coordinator it cached is down or gone (librdkafka issues 5456 and 5511), and
a worker in exactly_once mode then stops without a word, ignoring SIGTERM. So the blocking calls run on a
helper thread that the worker waits for, up to the call's timeout and a grace period; past that the producer
counts as fenced (no transactional call may overtake the stuck one), the worker ends, and its restart's
``init_transactions`` aborts what was left open.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.config import EXACTLY_ONCE, GUARANTEES
from streams.errors import ConfigError, KafkaUnavailableError, ProducerFencedError, TransactionAbortedError, backoff
from streams.kafka.client import translate
from streams.kafka.io import flush_waiting


def check_guarantee(guarantee: str, embedded_broker: bool, where: str = "processing_guarantee") -> None:
    """Refuse ``exactly_once`` where transactions cannot work; ``embedded_broker``: the broker is Tansu (the
    embedded one), which accepts transactional requests but shows aborted records to read_committed readers:
    every aborted batch's outputs would be read, then read again when the batch is redone."""
    if guarantee not in GUARANTEES:
        raise ConfigError(f"{where}: expected one of {', '.join(GUARANTEES)}, got {guarantee!r}")
    if guarantee == EXACTLY_ONCE and embedded_broker:
        raise ConfigError(f"{where}: exactly_once needs Apache Kafka transactions; the embedded Tansu broker "
                          "cannot do them correctly (set KAFKA_BOOTSTRAP_SERVERS, or use at_least_once)")


def transactional_id(group: str, instance_id: str) -> str:
    """Stable per worker instance: a restarted instance's ``init_transactions`` aborts what its previous
    incarnation left open at once (read_committed readers would otherwise wait out the transaction timeout),
    and fences that incarnation if it is still alive. A zombie whose partitions went to *another* instance is
    fenced by the group generation its offsets carry (KIP-447), so one producer per process is enough."""
    return f"{group}.{instance_id}" if instance_id else group


# How long past its own timeout a transactional call may take before the producer counts as stuck.
STUCK_GRACE_S = 5.0


class _Caller:
    """Runs one blocking call at a time on a daemon thread (started on first use) and waits for it with a
    deadline. A call that overruns stays on that thread: nothing can cancel it, and the caller gives up."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Callable[[], object], list[BaseException | None], threading.Event]]
        self._calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], object], deadline_s: float) -> bool:
        """Whether ``fn`` returned within ``deadline_s``; its exception, if any, is raised here."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        outcome: list[BaseException | None] = [None]
        done = threading.Event()
        self._calls.put((fn, outcome, done))
        if not done.wait(deadline_s):
            return False
        if outcome[0] is not None:
            raise outcome[0]
        return True

    def _serve(self) -> None:
        while True:
            fn, outcome, done = self._calls.get()
            try:
                fn()
            except BaseException as exc:  # handed to the waiting caller, which raises it
                outcome[0] = exc
            done.set()


class Transactions:
    """One transactional producer's lifecycle; every failure leaves as a StreamsError subclass."""

    def __init__(self, producer: Producer, log: Callable[[str], None], timeout_s: float = 30.0,
                 stuck_grace_s: float = STUCK_GRACE_S) -> None:
        self.producer = producer
        self.log = log
        self.timeout_s = timeout_s
        self.stuck_after_s = timeout_s + stuck_grace_s
        self.fenced = False
        self._caller = _Caller("transactional-calls")

    def init(self, should_give_up: Callable[[], bool] = lambda: False) -> None:
        """Register with the coordinator (aborting what this transactional.id left open), waiting while it is
        unreachable."""
        self._retrying(lambda: self.producer.init_transactions(self.timeout_s), "init_transactions", should_give_up)

    def begin(self) -> None:
        self._call(self.producer.begin_transaction, "begin_transaction", blocking=False)  # local: no broker wait

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: object,
                     should_give_up: Callable[[], bool] = lambda: False) -> None:
        """Add the consumed offsets to the transaction; the broker refuses them when ``group_metadata`` is of
        an old generation (the partitions moved on): that is the zombie fence."""
        self._retrying(lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s),
                       "send_offsets_to_transaction", should_give_up)

    def commit(self, should_give_up: Callable[[], bool] = lambda: False) -> None:
        """Flush and commit; retriable failures are retried (commit_transaction is idempotent)."""
        self._retrying(lambda: self.producer.commit_transaction(self.timeout_s), "commit_transaction",
                       should_give_up)

    def abort(self) -> None:
        """Abort the open transaction: none of its records ever becomes visible to read_committed readers.

        It first lets what was produced be sent (bounded): librdkafka (2.16) otherwise may end a transaction
        whose partitions the coordinator has not registered yet (refused with CONCURRENT_TRANSACTIONS while the
        previous transaction's markers are written, retried a little later), the coordinator answers
        INVALID_TXN_STATE, and that error is fatal. Seen when a worker thawed right after a commit."""
        if not self.fenced:
            flush_waiting(self.producer, min(self.timeout_s, 5.0))
        self._retrying(lambda: self.producer.abort_transaction(self.timeout_s), "abort_transaction")

    def _retrying(self, fn: Callable[[], object], what: str,
                  should_give_up: Callable[[], bool] = lambda: False) -> None:
        pauses = backoff(0.2)
        while True:
            try:
                self._call(fn, what)
                return
            except KafkaUnavailableError as exc:
                if should_give_up():
                    raise
                delay = next(pauses)
                self.log(f"transaction: {exc}; retrying in {delay:.1f}s")
                time.sleep(delay)

    def _call(self, fn: Callable[[], object], what: str, blocking: bool = True) -> None:
        if self.fenced:
            raise ProducerFencedError(f"{what}: this producer was fenced earlier; the worker must restart")
        try:
            if not blocking:
                fn()
            elif not self._caller.call(fn, self.stuck_after_s):
                self.fenced = True
                raise ProducerFencedError(
                    f"{what}: librdkafka did not return within {self.stuck_after_s:g}s (its "
                    "timeout is not enforced while the group coordinator is down); the worker must restart")
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError):
                raise translate(exc, what) from exc
            text = f"{what}: {err.str()} ({err.name()})"
            if err.fatal():
                self.fenced = True
                raise ProducerFencedError(text) from exc
            if err.txn_requires_abort():
                raise TransactionAbortedError(text) from exc
            if err.retriable() or err.code() == KafkaError._TIMED_OUT:
                raise KafkaUnavailableError(text) from exc
            raise translate(exc, what) from exc
