"""What ``streams bench`` is asked (:class:`BenchConfig`), what it answers (:class:`BenchResult`), and how the
answer is shown next to the targets of the issue that asked for it."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from streams import _native
from streams.errors import ConfigError

# Figure → (target, True when higher is better). The targets, printed next to what was measured.
TARGETS: Mapping[str, tuple[float, bool]] = {
    "steps_per_s": (50_000, True), "floor_steps_per_s": (0, True), "ratio": (0.5, True), "p50_ms": (math.inf, False),
    "p99_ms": (100, False), "restore_records_per_s": (200_000, True), "failover_s": (10, False),
    "peak_rss_mb": (400, False),
    # ours against confluent's AvroSerializer/AvroDeserializer: the hot path keeps ours only while it is faster
    "codec_records_per_s": (0, True), "codec_confluent_records_per_s": (0, True), "codec_ratio": (1.0, True),
}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; the defaults are the issue's (``streams bench --quick`` shortens them for CI)."""

    orders: int = 100_000
    partitions: int = 4
    latency_orders_per_s: float = 1000.0
    latency_seconds: float = 30.0
    # Orders offered at the same rate before the measured ones, and not counted: a broker started for the run
    # answers slowly until its JIT has compiled the request paths this load takes.
    latency_warmup_seconds: float = 30.0
    restore_entities: int = 500_000
    failover_events_per_s: float = 2000.0
    codec_records: int = 20_000  # records each codec encodes and decodes per round
    bootstrap: str | None = None  # an external Kafka; None: a fresh embedded broker per phase
    keep_workdir: bool = False
    apache_kafka: bool = False  # a fresh single-node Apache Kafka started for the run, instead of embedded brokers

    def __post_init__(self) -> None:
        for name in ("orders", "partitions", "latency_orders_per_s", "latency_seconds", "restore_entities",
                     "failover_events_per_s", "codec_records"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"bench: {name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.latency_warmup_seconds < 0:
            raise ConfigError(f"bench: latency-warmup-seconds must be >= 0, got {self.latency_warmup_seconds}")
        if self.apache_kafka and self.bootstrap:
            raise ConfigError("bench: --kafka starts its own Apache Kafka; it cannot be combined with --bootstrap "
                              "or KAFKA_BOOTSTRAP_SERVERS")
        if self.partitions < 2:
            raise ConfigError("bench: --partitions must be >= 2 (the failover needs a partition for each worker)")

    def params(self) -> dict[str, object]:
        return {"orders": self.orders, "partitions": self.partitions,
                "latency_orders_per_s": self.latency_orders_per_s, "latency_seconds": self.latency_seconds,
                "latency_warmup_seconds": self.latency_warmup_seconds,
                "restore_entities": self.restore_entities, "codec_records": self.codec_records,
                "kafka": "apache" if self.apache_kafka else "external" if self.bootstrap else "embedded",
                # what this process and the workers it starts run: "compiled" (mypyc) or "pure (why)"
                "hot_path": _native.status()}


@dataclass
class BenchResult:
    """The figures, in the units their names say; ``ratio`` is ``steps_per_s / floor_steps_per_s``, ``codec_ratio``
    ``codec_records_per_s / codec_confluent_records_per_s`` (see :mod:`streams.lab.bench_codec`)."""

    steps_per_s: float
    floor_steps_per_s: float
    ratio: float
    p50_ms: float
    p99_ms: float
    restore_records_per_s: float
    failover_s: float
    peak_rss_mb: float
    codec_records_per_s: float
    codec_confluent_records_per_s: float
    codec_ratio: float

    def to_json(self, config: BenchConfig) -> dict[str, object]:
        return {**{k: round(v, 3) for k, v in asdict(self).items()}, **config.params()}


def table(result: BenchResult, config: BenchConfig) -> str:
    """The figures with their targets, for a terminal."""
    p = config.params()
    lines = [f"streams bench: {p['kafka']} Kafka, {config.partitions} partitions, {config.orders:,} orders, "
             f"latency at {config.latency_orders_per_s:,.0f} orders/s for {config.latency_seconds:g}s "
             f"(after {config.latency_warmup_seconds:g}s of warm-up), "
             f"{config.restore_entities:,} states restored, hot path {p['hot_path']}",
             f"  {'figure':<24}{'measured':>14}   {'target':<14}"]
    for name, value in asdict(result).items():
        target, higher = TARGETS[name]
        if math.isinf(target) or target == 0:
            mark, goal = "", "-"
        else:
            mark = "ok" if (value >= target if higher else value <= target) else "MISS"
            goal = f"{'>=' if higher else '<='} {target:,g}"
        lines.append(f"  {name:<24}{value:>14,.2f}   {goal:<14}{mark}")
    return "\n".join(lines)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
