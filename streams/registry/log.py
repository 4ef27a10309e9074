"""Where the registry's log lives: a compacted Kafka topic (``_schemas``), or memory.

The registry is a state machine over this log; the log is its only storage. Each store delivers every record,
in log order and from the beginning, to one ``apply`` callback, and makes appends read-your-writes: ``append``
returns once the records are acknowledged by the log *and* applied. ``sync`` appends a NOOP barrier, so after it
returns everything any instance wrote before the call has been applied here. That is how the Kafka store finds
"the end" without trusting ``ListOffsets`` (wrong on the embedded broker for multi-record batches).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.config import KafkaSettings
from streams.contracts.model import dumps
from streams.errors import ConfigError, KafkaUnavailableError, SchemaRegistryError
from streams.runtime.heartbeat import MIN_OVERDUE_S, Heartbeats

Apply = Callable[[bytes | None, bytes | None], None]
Records = Sequence[tuple[bytes, bytes | None]]
NOOP_KEY = dumps({"keytype": "NOOP", "magic": 0})
NOOP_VALUE = b"{}"


class SchemaLog(Protocol):
    def open(self, apply: Apply) -> None:
        """Apply every record from the beginning; return once caught up; keep applying new ones in order."""

    def append(self, records: Records) -> None:
        """Durably append ``records`` (value None = tombstone); return once they are applied here."""

    def sync(self) -> None:
        """Return once every record appended anywhere before this call is applied here."""

    def close(self) -> None: ...


class MemorySchemaLog:
    """A log in this process, shared by every registry opened on it (a stand-in for several instances)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self._subscribers: list[Apply] = []
        self._lock = threading.Lock()

    def open(self, apply: Apply) -> None:
        with self._lock:
            for key, value in self.records:
                apply(key, value)
            self._subscribers.append(apply)

    def append(self, records: Records) -> None:
        with self._lock:
            for key, value in records:
                self.records.append((key, value))
                for apply in self._subscribers:
                    apply(key, value)

    def sync(self) -> None:
        """Appends apply synchronously: nothing can be behind."""

    def close(self) -> None:
        return None


class KafkaSchemaLog:
    """The log as a one-partition compacted topic, read with ``assign()`` (no consumer group, no join delay)."""

    def __init__(self, settings: KafkaSettings, topic: str = "_schemas", *, replication: int = -1,
                 timeout_s: float = 15.0, logger: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.topic = topic
        self.replication = replication
        self.timeout_s = timeout_s
        self._logger = logger
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._position = 0  # next offset to apply
        self._append_lock = threading.Lock()
        self._failure: str | None = None
        self.heartbeats = Heartbeats()  # the reader thread's; the server's /healthz reads it
        self._name = f"schema-log-{topic}"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def open(self, apply: Apply) -> None:
        common = self.settings.common()
        self._ensure_topic(common)
        extra: dict[str, object] = {}
        if self._logger is not None:
            log = self._logger
            extra["error_cb"] = lambda e: log(f"schema log ({self.topic}): {e.str()}")
        # One request in flight keeps a multi-record append in order across retries; a retried duplicate is
        # harmless (every record is idempotent by key). Idempotence would cost ~0.5 s per start on the embedded
        # broker for no gain here.
        self._producer = Producer({
            **common, **extra, "acks": "all", "enable.idempotence": False, "linger.ms": 0,
            "max.in.flight.requests.per.connection": 1,
        })
        self._consumer = Consumer({
            **common, **extra,
            "group.id": f"streams-schema-registry-{uuid.uuid4().hex[:8]}",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # The embedded broker answers an empty fetch only after this wait, so it bounds write latency.
            "fetch.wait.max.ms": 20,
        })
        # Offset 0 rather than OFFSET_BEGINNING: same result (auto.offset.reset covers a log start above 0) without
        # a ListOffsets round trip, which the embedded broker answers slowly.
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(apply,), name=self._name, daemon=True)
        self.heartbeats.register(self._name, MIN_OVERDUE_S, self._thread)
        self._thread.start()
        try:
            self.sync()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            self.heartbeats.unregister(self._name)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(1)
            self._producer = None

    def _ensure_topic(self, common: dict[str, object]) -> None:
        admin = AdminClient(common)
        try:
            meta = admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            raise KafkaUnavailableError(f"schema log: cannot reach Kafka at {self.settings.bootstrap_servers}: "
                                        f"{err.str() if isinstance(err, KafkaError) else exc}") from exc
        existing = meta.topics.get(self.topic)
        if existing is not None and not existing.error:
            if len(existing.partitions) != 1:
                raise ConfigError(f"schema log topic {self.topic} has {len(existing.partitions)} partitions; "
                                  f"the registry needs exactly 1 (one total order of changes)")
            return
        new = NewTopic(self.topic, 1, self.replication, config={"cleanup.policy": "compact"})
        for fut in admin.create_topics([new], operation_timeout=self.timeout_s).values():
            try:
                fut.result(timeout=self.timeout_s)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # another instance created it first
                raise KafkaUnavailableError(f"schema log: cannot create topic {self.topic}: {err or exc}") from exc
            except TimeoutError as exc:
                raise KafkaUnavailableError(f"schema log: cannot create topic {self.topic}: no answer from Kafka "
                                            f"within {self.timeout_s:g}s") from exc

    # -- reading ---------------------------------------------------------------------------------------------

    def _run(self, apply: Apply) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            try:
                first = consumer.poll(0.1)
                self.heartbeats.ok(self._name)  # a poll that returns is a round, records or not
                if first is None:
                    continue
                batch = [first, *consumer.consume(500, 0)]
            except (KafkaException, RuntimeError) as exc:
                self._failed(f"reading {self.topic}: {exc}")
                continue
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self._failed(f"reading {self.topic}: {err.str()}")
                    continue
                try:
                    apply(msg.key(), msg.value())
                except Exception as exc:  # a bug in apply must not stop the log: report, skip the record
                    self._failed(f"applying {self.topic}@{msg.offset()}: {exc!r}")
                with self._cond:
                    self._position = msg.offset() + 1
                    self._cond.notify_all()

    def _failed(self, message: str) -> None:
        self._failure = message
        self.heartbeats.failed(self._name, message)
        if self._logger is not None:
            self._logger(f"schema log: {message}")

    def _wait(self, position: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._position >= position, timeout=self.timeout_s):
                detail = f" (last error: {self._failure})" if self._failure else ""
                raise SchemaRegistryError(
                    f"store error: timed out after {self.timeout_s}s reading {self.topic} up to offset "
                    f"{position - 1}{detail}", 50002, 500,
                )

    # -- writing ---------------------------------------------------------------------------------------------

    def append(self, records: Records) -> None:
        producer = self._producer
        if producer is None:
            raise SchemaRegistryError("store error: the schema log is not open", 50001, 500)
        offsets: list[int] = []
        errors: list[str] = []

        def delivered(err: KafkaError | None, msg: object) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                offsets.append(msg.offset())  # type: ignore[attr-defined]

        with self._append_lock:
            try:
                for key, value in records:
                    producer.produce(self.topic, key=key, value=value, partition=0, on_delivery=delivered)
            except (KafkaException, BufferError) as exc:
                raise SchemaRegistryError(f"store error: producing to {self.topic}: {exc}", 50001, 500) from exc
            left = producer.flush(self.timeout_s)
        if left or errors or len(offsets) != len(records):
            why = errors[0] if errors else f"{left} record(s) unacknowledged after {self.timeout_s}s"
            raise SchemaRegistryError(f"store error: writing to {self.topic}: {why}", 50001, 500)
        self._wait(max(offsets) + 1)

    def sync(self) -> None:
        self.append([(NOOP_KEY, NOOP_VALUE)])
