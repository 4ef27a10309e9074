"""``streams dashboard``: a live web page of consumer lag, throughput, latency, stuck workflows and dead letters.

Like ``streams lag`` it refuses to start an embedded broker for itself: that broker would be empty. It prints the
URL it serves (useful with ``--port 0``) and never the token.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from types import FrameType
from typing import Annotated

import typer

from streams.cli.common import RUN, SECONDS, Bootstrap, examples, kafka_or_embedded, log, namespace, number
from streams.config import secret
from streams.errors import ConfigError
from streams.ops.dashboard import Dashboard, DashboardSettings, groups_of
from streams.topology import load


def add(app: typer.Typer) -> None:
    @app.command(rich_help_panel=RUN, epilog=examples(
        "streams dashboard --bootstrap 127.0.0.1:9092 --worker http://127.0.0.1:9400/metrics",
        "streams dashboard --port 0 --group orders-orchestrator --worker dns+http://workers:9400",
        "streams dashboard --topology topology.yaml   # the workers its groups announce"))
    def dashboard(
        host: Annotated[str, typer.Option(help="address to bind; any other than loopback needs a bearer token")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option(parser=number(int, 0, 65535), help="port to serve on (0 picks a free "
                                          "one)")] = 8088,
        group: Annotated[list[str] | None, typer.Option(metavar="G", help="watch this consumer group (repeatable; "
                                                        "default: every group the cluster lists)")] = None,
        topic: Annotated[list[str] | None, typer.Option(metavar="TOPIC", help="a topic the groups read, shown "
                                                        "before they commit on it (repeatable)")] = None,
        topology: Annotated[str | None, typer.Option(metavar="FILE", help="watch the groups of this topology's "
                                                     "processors")] = None,
        worker: Annotated[list[str] | None, typer.Option(
            metavar="URL", help="a worker's metrics endpoint, e.g. http://127.0.0.1:9400/metrics, or "
                                "dns+http://NAME:PORT for every address NAME resolves to (repeatable; default: "
                                "the workers the groups announce)")] = None,
        interval: Annotated[float, typer.Option(parser=SECONDS, metavar="S", help="seconds between samples")] = 2.0,
        history: Annotated[int, typer.Option(metavar="N", help="samples kept for the charts")] = 300,
        token: Annotated[str | None, typer.Option(help="bearer token required by /api/snapshot and sent to --worker "
                                                  "endpoints (default: $STREAMS_HTTP_TOKEN; on the command "
                                                  "line it shows in ps)")] = None,
        token_file: Annotated[str | None, typer.Option(metavar="PATH", help="read the bearer token from this file "
                                                       "(mode 600)")] = None,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Serve a live web dashboard of lag, throughput, latency and dead letters."""
        return run(namespace(host=host, port=port, group=group or [], topic=topic or [], topology=topology,
                             worker=worker or [], interval=interval, history=history, token=token,
                             token_file=token_file, bootstrap=bootstrap))


def run(args: argparse.Namespace) -> int:
    if not (args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        raise ConfigError(
            "dashboard needs a running Kafka: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
            "(an embedded broker started just for it would hold no groups)"
        )
    groups = (*args.group, *(groups_of(load(args.topology)) if args.topology else ()))
    settings = DashboardSettings(
        host=args.host, port=args.port, groups=groups, topics=tuple(args.topic),
        workers=tuple(args.worker), interval_s=args.interval, history=args.history,
        token=secret("--token", args.token, args.token_file, "STREAMS_HTTP_TOKEN", log),
    )
    with kafka_or_embedded(args, quiet=True, service=True) as kafka:
        dash = Dashboard(settings, kafka, log=log)

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            dash.stop()

        signal.signal(signal.SIGTERM, _stop)
        with dash:
            auth = "bearer token required" if settings.token else "no token"
            log(f"dashboard: serving on {dash.url} ({auth}), Kafka at {kafka.bootstrap_servers}, "
                f"{len(settings.workers) or 'announced'} worker endpoint(s)")
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it ends
                dash.wait()
    return 0
