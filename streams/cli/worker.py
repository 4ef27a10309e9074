"""``streams worker``: one consumer-group member running one processor of a topology."""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from streams import _native
from streams.cli.common import RUN, app, bootstrap_given, examples, kafka_or_embedded, log
from streams.cli.options import (
    PORT,
    SHARE,
    Bootstrap,
    Group,
    Processor,
    TopologyFile,
    choice,
    flag,
    one_of,
    with_options,
)
from streams.config import GUARANTEES, KafkaSettings, WorkerSettings, secret
from streams.errors import KafkaUnavailableError, SchemaRegistryUnavailableError
from streams.kafka.admin import Admin, check_reachable
from streams.kafka.transactions import check_guarantee
from streams.ops.endpoints import endpoints_topic
from streams.ops.signal import Signaller, signal_target
from streams.ops.status import Endpoints, StatusServer
from streams.processors import resolve
from streams.runtime import gcpolicy
from streams.runtime.faults import Faults
from streams.runtime.worker import Worker, WorkerSpec
from streams.topology import ProcessorSpec, TopicSpec, Topology, load

SERVICES = ("payment", "inventory", "shipping")
TUNING, HTTP = "Tuning", "HTTP status server"  # sections of the help


def prepare(topo: Topology, proc: ProcessorSpec, kafka: KafkaSettings, create: bool,
            extra: list[TopicSpec] | None = None) -> int:
    """Create topics (unless told not to) and refuse a non-co-partitioned layout; wait while Kafka is down.
    Returns the processor's partition count."""
    def once() -> int:
        check_reachable(kafka)  # says at once that Kafka is down, where the first request would take 10 s
        admin = Admin(kafka)
        if create:
            admin.ensure([*topo.all_topics(), *(extra or [])])
        return admin.check_copartitioned(proc)

    return _waiting(once, f"Kafka at {kafka.bootstrap_servers}")


T = TypeVar("T")


def _waiting(fn: Callable[[], T], what: str) -> T:
    """``fn()``, again with backoff while Kafka or the schema registry is unavailable: a worker started during
    a broker failover or a registry restart waits for them, as it would once running, instead of exiting."""
    delay = 0.5
    while True:
        try:
            return fn()
        except (KafkaUnavailableError, SchemaRegistryUnavailableError) as exc:
            log(f"worker: {what} unavailable ({exc}); retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def run(
    topology: str, processor: str | None, options: dict[str, Any], /,
    group: Group = None,
    state_dir: Annotated[str | None, typer.Option(help="where this worker keeps its RocksDB stores "
                                                  "(default: .streams/state/<group>/<instance-id>)")] = None,
    instance_id: Annotated[str, typer.Option(help="names this worker's default state directory "
                                             "(default: $STREAMS_INSTANCE_ID or the host name)")] = "",
    commit_interval_ms: Annotated[int, typer.Option(rich_help_panel=TUNING)] = 100,
    max_batch: Annotated[int, typer.Option(rich_help_panel=TUNING)] = WorkerSettings.max_batch,
    max_in_flight: Annotated[int, typer.Option(help="unacknowledged produced records before consumption pauses",
                                               rich_help_panel=TUNING)] = 50_000,
    dedupe_window: Annotated[int, typer.Option(help="recent event ids remembered per entity; redelivery within "
                                               "it is not applied twice", rich_help_panel=TUNING)] = 32,
    http_port: Annotated[int | None, typer.Option(parser=PORT, rich_help_panel=HTTP,
                                                  help="serve /metrics, /healthz and /workflows on this port")]
    = None,
    http_host: Annotated[str, typer.Option(help="bind address (non-loopback needs --http-token)",
                                           rich_help_panel=HTTP)] = "127.0.0.1",
    http_token: Annotated[str | None, typer.Option(help="bearer token for the HTTP endpoints (default: "
                                                   "$STREAMS_HTTP_TOKEN; on the command line it shows in ps: "
                                                   "prefer the variable or --http-token-file)",
                                                   rich_help_panel=HTTP)] = None,
    http_token_file: Annotated[str | None, typer.Option(metavar="PATH", help="read the bearer token from this "
                                                        "file (mode 600)", rich_help_panel=HTTP)] = None,
    http_advertised_url: Annotated[str | None, typer.Option(help="URL other workers forward status queries to "
                                                            "(default: http://<host>:<port>)",
                                                            rich_help_panel=HTTP)] = None,
    processing_guarantee: Annotated[str | None, typer.Option(
        parser=choice(*GUARANTEES), metavar=one_of(*GUARANTEES), help="at_least_once (default; any broker) or "
        "exactly_once (Kafka transactions; real Kafka only); overrides the topology's processing_guarantee")] = None,
    no_create_topics: Annotated[bool, flag("--no-create-topics", "fail instead of creating missing topics")] = False,
    bootstrap: Bootstrap = None,
) -> int:
    """Run ``processor`` of ``topology`` (with ``options`` over its own): the body of ``worker`` and ``service``,
    whose keyword parameters are the options both commands take (see :func:`streams.cli.options.with_options`)."""
    http_token = secret("--http-token", http_token, http_token_file, "STREAMS_HTTP_TOKEN", log)
    instance_id = instance_id or os.environ.get("STREAMS_INSTANCE_ID") or socket.gethostname()  # read when run
    topo = load(topology)
    proc = topo.processor(processor)
    group = group or topo.default_group(proc)
    state = Path(state_dir) if state_dir else Path(".streams/state") / group / instance_id
    guarantee = processing_guarantee or proc.processing_guarantee or WorkerSettings.processing_guarantee
    # Checked before anything starts: with no bootstrap the embedded broker would be started, which is Tansu.
    embedded = not bootstrap_given(bootstrap) or os.environ.get("STREAMS_BROKER") == "tansu"
    check_guarantee(guarantee, embedded, "--processing-guarantee" if processing_guarantee
                    else f"{topology}: processors.{proc.name}.processing_guarantee")
    settings = WorkerSettings(
        group=group, state_dir=state, commit_interval_ms=commit_interval_ms, max_batch=max_batch,
        max_in_flight=max_in_flight, instance_id=instance_id, dedupe_window=dedupe_window,
        processing_guarantee=guarantee,
    )
    handler = _waiting(lambda: resolve(proc.processor, {**proc.options, **options}, proc.outputs),
                       "the schema registry")
    announcements = endpoints_topic(group)
    with kafka_or_embedded(bootstrap, service=True) as kafka:
        extra = [announcements] if http_port is not None else []
        partitions = prepare(topo, proc, kafka, create=not no_create_topics, extra=extra)
        spec = WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic,
                          topo.key_formats(proc), topo.partitioner, topo.misrouted)
        endpoints = (Endpoints(kafka, announcements.name, http_token, log=log)
                     if http_port is not None else None)
        url: list[str] = []

        def announce(parts: list[int]) -> None:
            if endpoints is not None and url:
                endpoints.announce(instance_id + f"-{os.getpid()}", url[0], parts)

        worker = Worker(spec, handler, kafka, settings, log, Faults(), on_assignment=announce)
        server = None
        if http_port is not None:
            describe = getattr(handler, "describe", None)
            target = signal_target(handler)
            signaller = Signaller(kafka, target) if target is not None else None
            server = StatusServer(worker, describe if callable(describe) else None, partitions, http_host,
                                  http_port, http_token, endpoints, signaller).start()
            # Bound to every interface, the bind address is no address to reach us at: use the host name.
            default = (f"http://{socket.gethostname()}:{http_port or server.url.rsplit(':', 1)[1]}"
                       if http_host in ("0.0.0.0", "::") else server.url)
            server.advertised = http_advertised_url or default
            url.append(server.advertised)
            log(f"worker: serving /metrics, /healthz and /workflows on {server.url}")
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        # `kill -USR2 PID` prints every thread's Python stack to the log: how to see where a stuck worker is.
        faulthandler.register(signal.SIGUSR2, all_threads=True)
        log(f"worker: {proc.name} in group {group}, state in {state}, pid {os.getpid()}, "
            f"hot path {_native.status()}")
        gcpolicy.tune()
        try:
            worker.run()
        finally:
            if server is not None:
                server.stop()
            if endpoints is not None:
                endpoints.close()
        s = worker.stats
        log(f"worker: stopped after {s.records_in} records in, {s.records_out} out, {s.duplicates} duplicates, "
            f"{s.dead_letters} dead letters, {s.rerouted} re-routed, {s.commits} commits")
    return 0


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams worker --topology orders --processor orchestrator --http-port 9400",
    "streams worker --topology topology.yaml --processing-guarantee exactly_once --bootstrap kafka:9092"))
@with_options(run)
def worker(topology: TopologyFile, processor: Processor = None, **options: Any) -> int:
    """Run one stream worker (a consumer-group member)."""
    return run(topology, processor, {}, **options)


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams service payment --transient-rate 0.1 --seed 7",
    "streams service inventory --topology orders --shortage-rate 0.05"))
@with_options(run)
def service(
    kind: Annotated[str, typer.Argument(parser=choice(*SERVICES), metavar=one_of(*SERVICES),
                                        help="which reference service")],
    topology: Annotated[str, typer.Option(help="topology YAML file or built-in example")] = "orders",
    latency_ms: Annotated[float, typer.Option(help="simulated work per command")] = 0.0,
    transient_rate: Annotated[float, typer.Option(parser=SHARE, help="share of attempts failing TRANSIENT")] = 0.0,
    permanent_rate: Annotated[float, typer.Option(parser=SHARE, help="share of orders failing PERMANENT")] = 0.0,
    shortage_rate: Annotated[float, typer.Option(parser=SHARE, help="inventory: share of orders out of stock")] = 0.0,
    no_answer_rate: Annotated[float, typer.Option(parser=SHARE, help="payment: share of orders never answered")]
    = 0.0,
    no_answer_customer_prefix: Annotated[str, typer.Option(
        help="payment: never answer orders whose id starts with this")] = "",
    seed: Annotated[int, typer.Option(help="seeds the (deterministic) failure choices")] = 0,
    **options: Any,
) -> int:
    """Run a reference service (payment, inventory, shipping)."""
    return run(topology, kind, {
        "latency_ms": latency_ms, "transient_rate": transient_rate, "permanent_rate": permanent_rate,
        "shortage_rate": shortage_rate, "no_answer_rate": no_answer_rate, "seed": seed,
        "no_answer_customer_prefix": no_answer_customer_prefix,
    }, **options)
