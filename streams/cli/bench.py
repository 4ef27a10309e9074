"""``streams bench``: measure the order saga end to end (see :mod:`streams.lab.bench` for what each figure means).

Progress goes to stderr; stdout carries only the result (one JSON object with ``--json``), so
``streams bench --json > result.json`` works. SIGTERM stops the bench like Ctrl-C: every child and broker it
started is stopped before it exits.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from streams import _native
from streams.cli.common import MEASURE, app, bootstrap_given, emit_json, examples, log
from streams.cli.options import flag
from streams.cli.progress import phases, progress
from streams.config import KafkaSettings
from streams.errors import ConfigError
from streams.kafka.admin import check_reachable
from streams.lab.bench import Bench
from streams.lab.bench_codec import codec_alone
from streams.lab.bench_model import BenchConfig, table

# --quick: the suite's variant; each value applies unless its flag is given explicitly.
QUICK = {"orders": 20_000, "latency_orders_per_s": 500.0, "latency_seconds": 4.0, "restore_entities": 20_000,
         "failover_events_per_s": 1000.0, "codec_records": 5_000}
DEFAULTS = {"orders": 100_000, "latency_orders_per_s": 1000.0, "latency_seconds": 30.0, "restore_entities": 500_000,
            "failover_events_per_s": 2000.0, "codec_records": 20_000}


@app.command(rich_help_panel=MEASURE, epilog=examples("streams bench --quick", "streams bench --json > result.json",
                                                      "streams bench --kafka --orders 200000 --partitions 8"))
def bench(
    orders: Annotated[int | None, typer.Option(help="orders preloaded for the throughput phase (default "
                                               "100,000)")] = None,
    partitions: Annotated[int, typer.Option(help="partitions of every saga topic")] = 4,
    latency_orders_per_s: Annotated[float | None, typer.Option(help="offered load of the latency phase (default "
                                                               "1,000)")] = None,
    latency_seconds: Annotated[float | None, typer.Option(help="duration of the offered load (default 30)")]
    = None,
    latency_warmup_seconds: Annotated[float | None, typer.Option(
        help="the same load offered first and not measured, so a fresh Kafka broker's JIT warms up (default 30 "
             "on Kafka, 1 with --quick; 0 on the embedded broker, which has no JIT and only slows as its "
             "in-memory log grows)")] = None,
    restore_entities: Annotated[int | None, typer.Option(help="order states in the restored changelog (default "
                                                         "500,000)")] = None,
    failover_events_per_s: Annotated[float | None, typer.Option(help="events flowing during the failover "
                                                                "(default 2,000)")] = None,
    codec_records: Annotated[int | None, typer.Option(help="records each codec encodes and decodes in the codec "
                                                      "phase, ours against confluent-kafka's serializer "
                                                      "(default 20,000)")] = None,
    codec_only: Annotated[bool, flag("--codec-only", "run only the codec phase (no Kafka: a registry in "
                                     "memory)")] = False,
    quick: Annotated[bool, flag("--quick", "the short CI variant: " + ", ".join(
        f"{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()))] = False,
    json: Annotated[bool, flag("--json", "print one JSON object (figures and parameters) on stdout")] = False,
    keep: Annotated[bool, flag("--keep", "keep the work directory (logs, state) after success")] = False,
    kafka: Annotated[bool, flag("--kafka", "run every phase on a fresh single-node Apache Kafka started for the "
                                "run (default: a fresh embedded broker per phase)")] = False,
    bootstrap: Annotated[str | None, typer.Option(help="an external Kafka (default: $KAFKA_BOOTSTRAP_SERVERS, "
                                                  "else embedded brokers); refused if the saga's topics exist "
                                                  "there")] = None,
) -> int:
    """Measure throughput, latency, restore, failover and memory of the order saga."""
    given = {"orders": orders, "latency_orders_per_s": latency_orders_per_s, "latency_seconds": latency_seconds,
             "restore_entities": restore_entities, "failover_events_per_s": failover_events_per_s,
             "codec_records": codec_records}
    chosen = {k: v if (g := given[k]) is None else g for k, v in (QUICK if quick else DEFAULTS).items()}
    config = BenchConfig(
        orders=int(chosen["orders"]), partitions=partitions,
        latency_orders_per_s=float(chosen["latency_orders_per_s"]), latency_seconds=float(chosen["latency_seconds"]),
        latency_warmup_seconds=latency_warmup_seconds if latency_warmup_seconds is not None
        else 1.0 if quick else 30.0 if kafka or bootstrap_given(bootstrap) else 0.0,
        restore_entities=int(chosen["restore_entities"]), failover_events_per_s=float(chosen["failover_events_per_s"]),
        codec_records=int(chosen["codec_records"]),
        bootstrap=None if kafka else bootstrap_given(bootstrap),
        keep_workdir=keep, apache_kafka=kafka,
    )
    if kafka and bootstrap:
        raise ConfigError("--kafka starts its own Apache Kafka; drop --bootstrap")
    if codec_only:
        codec = codec_alone(config.codec_records, log=log)
        if json:
            return emit_json({**codec.to_json(), "codec_records": config.codec_records, "hot_path": _native.status()})
        print(f"codec_ratio {codec.ratio:.2f} (ours {codec.ours_per_s:,.0f} records/s, "
              f"confluent's {codec.confluent_per_s:,.0f}: encode + decode)")
        return 0
    if config.bootstrap:
        check_reachable(KafkaSettings.from_env(config.bootstrap))  # at once, not after a metadata timeout
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with progress() as bar:
            result = Bench(config, phases(bar, _phase)).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if json:
        return emit_json(result.to_json(config))
    print(table(result, config), flush=True)
    return 0


def _phase(msg: str) -> str | None:
    return f"bench: the {msg.split()[2]} phase" if msg.startswith("bench: phase ") else None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the bench's cleanup, like KeyboardInterrupt
