"""Frozen settings, parsed once at the edge (the CLI) and handed to each adapter as only its part."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.errors import ConfigError

# The broker kinds whose quirks the engine knows: "kafka" (Apache Kafka or any faithful implementation: the
# default) and "tansu" (the embedded broker, set when we start it or with STREAMS_BROKER=tansu).
BROKER_KINDS = ("kafka", "tansu")

# Consumer defaults chosen per broker kind (why each, in a line):
# - session.timeout.ms is how long a SIGKILLed worker's partitions stay unprocessed. Stock Kafka refuses a
#   JoinGroup under its group.min.session.timeout.ms (6 s), so 6 s is the fastest failover a stock cluster
#   accepts; Tansu has no such floor and 4 s / 400 ms measured failovers of 6.9-7.6 s against 10.9-11.4 s with
#   6 s there (its JoinGroup alone takes ~2 s). Heartbeats every tenth of the session: librdkafka's own
#   thread sends them, not the Python loop, so a busy worker does not miss them.
# - fetch.wait.max.ms: real Kafka answers a waiting fetch as soon as data arrives, so the wait only bounds
#   how long a fetch in flight delays a seek or resume (100 ms); Tansu answers only when the wait ends, so
#   every saga hop waited for it (10 ms there measured p50 154 -> 81 ms at 200 orders/s).
# - `range` assignment keeps co-partitioned inputs (same partition index of every input topic) on one
#   member, which per-partition state stores need; round-robin would split them.
_CONSUMER_DEFAULTS: Mapping[str, Mapping[str, object]] = {
    "kafka": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 600, "fetch.wait.max.ms": 100,
              "partition.assignment.strategy": "range"},
    "tansu": {"session.timeout.ms": 4000, "heartbeat.interval.ms": 400, "fetch.wait.max.ms": 10,
              "partition.assignment.strategy": "range"},
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


class RepeatFilter(logging.Filter):
    """Lets a message through at most once per ``window_s``; the next one carries ``suppressed=N``.

    librdkafka retries a down broker every few tens of ms and logs each failed connect: hundreds of identical
    lines a minute that bury everything else. Digits are ignored when comparing, so "after 0ms" and
    "after 1ms" (or consumer-1 and consumer-2) count as the same message.
    """

    def __init__(self, window_s: float = 30.0, max_keys: int = 1000) -> None:
        super().__init__()
        self.window_s = window_s
        self._max_keys = max_keys
        self._seen: dict[str, tuple[float, int]] = {}  # message shape -> (last let through, dropped since)
        self._lock = threading.Lock()  # log callbacks run on whichever thread polls a client

    def admit(self, text: str) -> int | None:
        """None to drop ``text``; else how many like it were dropped since the last one let through."""
        key = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        with self._lock:
            last, dropped = self._seen.get(key, (-self.window_s, 0))
            if now - last < self.window_s:
                self._seen[key] = (last, dropped + 1)
                return None
            if len(self._seen) >= self._max_keys:
                self._seen.clear()
            self._seen[key] = (now, 0)
        return dropped

    def filter(self, record: logging.LogRecord) -> bool:
        dropped = self.admit(record.getMessage())
        if dropped:
            record.suppressed = dropped
        return dropped is not None


# One gate for librdkafka's log (every client: see KafkaSettings.common) and its error callbacks.
KAFKA_REPEATS = RepeatFilter()
LIBRDKAFKA_LOG = logging.getLogger("streams.librdkafka")
LIBRDKAFKA_LOG.addFilter(KAFKA_REPEATS)


def http_url(text: str, what: str) -> urllib.parse.SplitResult:
    """``text`` split as an http(s) URL with a host and a valid port, or a ConfigError naming ``what`` (the
    URL shown without user info: it may hold a password)."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # "http://[::1", a port that is not a number or out of range
        ok = False
    if not ok:
        scheme, _, rest = text.partition("://")
        shown = f"{scheme}://{rest.rpartition('@')[2]}" if rest else text
        raise ConfigError(f"{what} must be http(s)://host[:port], got {shown!r}")
    return parts


def secret(flag: str, given: str | None, path: str | None, env_var: str, warn: Callable[[str], None],
           env: Mapping[str, str] = os.environ) -> str | None:
    """A token or password given as ``flag VALUE``, ``flag-file PATH`` or ``$env_var`` (in that order), or None.

    On the command line it works but ``warn`` says so: every user of the machine sees it in ``ps``. A file
    readable by its group or others gets a warning too; a missing, unreadable or empty file is a ConfigError.
    """
    if given is not None and path is not None:
        raise ConfigError(f"pass {flag} or {flag}-file, not both")
    if given is not None:
        warn(f"{flag} on the command line is visible to every user of this machine (ps, /proc); "
             f"prefer ${env_var} or {flag}-file")
        return given or None
    if path is None:
        return env.get(env_var) or None
    try:
        mode = os.stat(path).st_mode
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}-file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not value:
        raise ConfigError(f"{flag}-file {path} is empty")
    if mode & 0o077:
        warn(f"{flag}-file {path} is readable by other users (mode {mode & 0o777:o}); chmod 600 it")
    return value


def parse_yaml(text: str, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The decoded YAML document; a syntax error becomes ``error`` naming ``source:line:column`` and the problem."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark, start = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = f" ({exc.context}" if exc.context and exc.problem else ""
        if context and start is not None and start is not mark:
            context += f" that starts at line {start.line + 1}, column {start.column + 1}"
        context += ")" if context else ""
        raise error(f"{where}: not valid YAML: {exc.problem or exc.context}{context}") from exc
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow; its message holds the position
        raise error(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka: bootstrap servers plus pass-through client properties (security etc.), and which
    kind of broker it is (one of BROKER_KINDS), the one place that decides the broker-specific settings."""

    bootstrap_servers: str
    client: Mapping[str, object] = field(default_factory=dict)
    consumer: Mapping[str, object] = field(default_factory=dict)
    producer: Mapping[str, object] = field(default_factory=dict)
    broker: str = "kafka"

    def __post_init__(self) -> None:
        if self.broker not in BROKER_KINDS:
            raise ConfigError(f"STREAMS_BROKER must be one of {', '.join(BROKER_KINDS)}, got {self.broker!r}")

    @property
    def tansu(self) -> bool:
        """The embedded broker, whose quirks need workarounds no real Kafka does (see docs/kafka.md)."""
        return self.broker == "tansu"

    def child_env(self) -> dict[str, str]:
        """The environment that makes a `streams` subprocess reach this broker and know its kind."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, "STREAMS_BROKER": self.broker}

    def consumer_defaults(self) -> dict[str, object]:
        """The group and fetch settings chosen for this kind of broker (before the user's own)."""
        return dict(_CONSUMER_DEFAULTS[self.broker])

    def common(self) -> dict[str, object]:
        # Every client is built from this, so every client's librdkafka log goes through the rate limit below.
        return {"bootstrap.servers": self.bootstrap_servers, "logger": LIBRDKAFKA_LOG, **self.client}

    def redacted(self) -> dict[str, object]:
        """The client config with secrets masked, for logs and error messages."""
        return {k: ("***" if k in SECRET_KEYS else v) for k, v in self.common().items() if k != "logger"}

    @classmethod
    def from_env(cls, bootstrap: str | None = None, env: Mapping[str, str] | None = None,
                 broker: str | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        servers = bootstrap or env.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            raise ConfigError("no Kafka bootstrap servers: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap")
        client = {prop: env[var] for var, prop in _ENV_PASSTHROUGH.items() if env.get(var)}
        poll = env.get("KAFKA_MAX_POLL_INTERVAL_MS")  # consumers only: how long without a poll before eviction
        consumer: dict[str, object] = {"max.poll.interval.ms": poll} if poll else {}
        producer: dict[str, object] = {}
        # Any librdkafka property, per client kind, the way Confluent's images spell it:
        # KAFKA_CONSUMER_FETCH_WAIT_MAX_MS=25 -> fetch.wait.max.ms. They win over the defaults chosen per
        # broker kind, for another trade-off of latency against broker load.
        for var, value in env.items():
            for prefix, target in (("KAFKA_CONSUMER_", consumer), ("KAFKA_PRODUCER_", producer)):
                if var.startswith(prefix) and len(var) > len(prefix) and value != "":
                    target[var[len(prefix):].lower().replace("_", ".")] = value
        kind = broker or env.get("STREAMS_BROKER") or "kafka"
        return cls(bootstrap_servers=servers, client=client, consumer=consumer, producer=producer, broker=kind)


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
    # /healthz answers 503 when the loop (which also fires the timers) has not come round for this long: stuck
    # in a commit waiting for the broker, say. Long enough for a rebalance or a slow commit.
    loop_overdue_s: float = 30.0

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
        if self.loop_overdue_s <= 0:
            raise ConfigError(f"loop_overdue_s must be > 0, got {self.loop_overdue_s}")
        if self.handler_attempts < 1:
            raise ConfigError(f"handler_attempts must be >= 1, got {self.handler_attempts}")
