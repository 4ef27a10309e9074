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

from streams.cli.common import SECONDS, add_kafka_args, kafka_or_embedded, log
from streams.config import secret
from streams.errors import ConfigError
from streams.ops.dashboard import Dashboard, DashboardSettings, groups_of
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve a live web dashboard of lag, throughput, latency and dead letters")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (127.0.0.1); any other needs a bearer token")
    p.add_argument("--port", type=int, default=8088, help="port to serve on (8088; 0 picks a free one)")
    p.add_argument("--group", action="append", default=[], metavar="G",
                   help="watch this consumer group (repeatable; default: every group the cluster lists)")
    p.add_argument("--topic", action="append", default=[], metavar="TOPIC",
                   help="a topic the groups read, shown before they commit on it (repeatable)")
    p.add_argument("--topology", metavar="FILE", help="watch the groups of this topology's processors")
    p.add_argument("--worker", action="append", default=[], metavar="URL",
                   help="a worker's metrics endpoint, e.g. http://127.0.0.1:9400/metrics, or dns+http://NAME:PORT "
                        "for every address NAME resolves to (repeatable; default: the workers the groups announce)")
    p.add_argument("--interval", type=SECONDS, default=2.0, metavar="S", help="seconds between samples (2)")
    p.add_argument("--history", type=int, default=300, metavar="N", help="samples kept for the charts (300)")
    p.add_argument("--token", default=None,
                   help="bearer token required by /api/snapshot and sent to --worker endpoints "
                        "(default: $STREAMS_HTTP_TOKEN; on the command line it shows in ps)")
    p.add_argument("--token-file", metavar="PATH", help="read the bearer token from this file (mode 600)")
    add_kafka_args(p)
    p.set_defaults(func=run)


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
