"""Frozen settings, parsed once at the edge (the CLI) and handed to each adapter as only its part."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import ConfigError

# Why these consumer defaults: on the embedded broker a group join takes ~23 s with librdkafka's default
# session timeout and ~3.6 s with 6 s / 500 ms; on real Kafka they are still sane for a stream worker.
# The session timeout is also how long a SIGKILLed worker's partitions stay unprocessed: the bench's failover
# measured 10.9-11.4 s with 6 s, 6.9-7.6 s with 4 s / 400 ms and 6.9 s with 3 s / 300 ms. 4 s keeps the target
# (<= 10 s) with room, and still allows 10 missed heartbeats: heartbeats come from librdkafka's own thread,
# not from the Python loop, so a busy worker does not miss them; only a starved machine would.
# `range` assignment keeps co-partitioned inputs (same partition index of every input topic) on one member,
# which per-partition state stores need; round-robin would split them.
FAST_GROUP_DEFAULTS: Mapping[str, object] = {
    "session.timeout.ms": 4000,
    "heartbeat.interval.ms": 400,
    "partition.assignment.strategy": "range",
}

# Processing guarantees. at_least_once: deterministic ids and per-entity dedupe make redelivery harmless (any
# Kafka-protocol broker). exactly_once: outputs, changelog and input offsets commit in one Kafka transaction.
AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE = "exactly_once"
GUARANTEES = (AT_LEAST_ONCE, EXACTLY_ONCE)

# Settings that name credentials; their values never reach logs or error messages.
SECRET_KEYS = frozenset(
    {"sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret"}
)

_ENV_PASSTHROUGH = {
    # environment variable -> librdkafka property: security settings reach every client the same way
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka: bootstrap servers plus pass-through client properties (security etc.)."""

    bootstrap_servers: str
    client: Mapping[str, object] = field(default_factory=dict)
    consumer: Mapping[str, object] = field(default_factory=dict)
    producer: Mapping[str, object] = field(default_factory=dict)

    def common(self) -> dict[str, object]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.client}

    def redacted(self) -> dict[str, object]:
        """The client config with secrets masked, for logs and error messages."""
        return {k: ("***" if k in SECRET_KEYS else v) for k, v in self.common().items()}

    @classmethod
    def from_env(cls, bootstrap: str | None = None, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        servers = bootstrap or env.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            raise ConfigError("no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap")
        client = {prop: env[var] for var, prop in _ENV_PASSTHROUGH.items() if env.get(var)}
        poll = env.get("KAFKA_MAX_POLL_INTERVAL_MS")  # consumers only: how long without a poll before eviction
        consumer: dict[str, object] = {"max.poll.interval.ms": poll} if poll else {}
        producer: dict[str, object] = {}
        # Any librdkafka property, per client kind, the way Confluent's images spell it:
        # KAFKA_CONSUMER_FETCH_WAIT_MAX_MS=25 -> fetch.wait.max.ms. Our tuned defaults are measured on the
        # embedded broker; a real cluster (or another trade-off of latency against broker load) may want others.
        for var, value in env.items():
            for prefix, target in (("KAFKA_CONSUMER_", consumer), ("KAFKA_PRODUCER_", producer)):
                if var.startswith(prefix) and len(var) > len(prefix) and value != "":
                    target[var[len(prefix):].lower().replace("_", ".")] = value
        return cls(bootstrap_servers=servers, client=client, consumer=consumer, producer=producer)


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process: its group, where its state lives and how it batches and commits."""

    group: str
    state_dir: Path
    # A commit costs one producer flush (a broker round trip, ~20 ms under load on the embedded broker) and
    # one RocksDB write per partition. At saturation a batch is what one consume() returns, max_batch records:
    # 5000 measured +6-8% steps/s over 2000 with the compiled hot path (a commit every ~0.3 s instead of
    # ~0.12 s). Below saturation batches are smaller and the interval decides.
    # Outputs are produced as each record is handled, not at the commit, so the interval adds nothing to a
    # saga hop's latency; it bounds what a crash makes the worker redo.
    commit_interval_ms: int = 100
    max_batch: int = 5000
    poll_timeout_s: float = 0.05
    # Backpressure: pause consumption when this many produced records are unacknowledged; resume below half.
    max_in_flight: int = 50_000
    # How many recent event ids each entity remembers for dedupe of re-delivered input.
    dedupe_window: int = 32
    # In-place attempts for a record whose handler raises, before it is dead-lettered.
    handler_attempts: int = 3
    restore_batch: int = 5000
    # Records with more hops than this are dead-lettered: they are a loop, not a workflow.
    max_hops: int = 64
    instance_id: str = ""
    # How often due timers are looked for; a timer fires at most this late (plus one commit interval).
    timer_check_ms: int = 100
    processing_guarantee: str = AT_LEAST_ONCE

    def __post_init__(self) -> None:
        if self.commit_interval_ms <= 0:
            raise ConfigError(f"commit_interval_ms must be > 0, got {self.commit_interval_ms}")
        if not 1 <= self.max_batch <= 1_000_000:  # confluent-kafka's consume() takes at most 1,000,000
            raise ConfigError(f"max_batch must be within 1..1000000, got {self.max_batch}")
        if self.max_in_flight < 2:
            raise ConfigError(f"max_in_flight must be >= 2, got {self.max_in_flight}")
        if not 1 <= self.dedupe_window <= 255:
            raise ConfigError(f"dedupe_window must be within 1..255, got {self.dedupe_window}")
        if self.processing_guarantee not in GUARANTEES:
            raise ConfigError(f"processing_guarantee must be one of {', '.join(GUARANTEES)}, "
                              f"got {self.processing_guarantee!r}")
        if self.handler_attempts < 1:
            raise ConfigError(f"handler_attempts must be >= 1, got {self.handler_attempts}")
