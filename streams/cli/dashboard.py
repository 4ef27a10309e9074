"""``streams dashboard``: a live web page of consumer lag, throughput, latency, stuck workflows and dead letters.

Like ``streams lag`` it refuses to start an embedded broker for itself: that broker would be empty. It prints the
URL it serves (useful with ``--port 0``) and never the token.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Annotated

import typer

from streams.cli.common import RUN, app, examples, kafka_or_embedded, log, running_kafka
from streams.cli.options import PORT, SECONDS, Bootstrap, TokenFile
from streams.config import secret
from streams.ops.dashboard import Dashboard, DashboardSettings, groups_of
from streams.topology import load


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams dashboard --bootstrap 127.0.0.1:9092 --worker http://127.0.0.1:9400/metrics",
    "streams dashboard --port 0 --group orders-orchestrator --worker dns+http://workers:9400",
    "streams dashboard --topology topology.yaml   # the workers its groups announce"))
def dashboard(
    host: Annotated[str, typer.Option(help="address to bind; any other than loopback needs a bearer token")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(parser=PORT, help="port to serve on (0 picks a free one)")] = 8088,
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
    token_file: TokenFile = None,
    bootstrap: Bootstrap = None,
) -> int:
    """Serve a live web dashboard of lag, throughput, latency and dead letters."""
    running_kafka(bootstrap, "dashboard needs a running Kafka: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
                  "(an embedded broker started just for it would hold no groups)")
    settings = DashboardSettings(
        host=host, port=port, groups=(*(group or []), *(groups_of(load(topology)) if topology else ())),
        topics=tuple(topic or []), workers=tuple(worker or []), interval_s=interval, history=history,
        token=secret("--token", token, token_file, "STREAMS_HTTP_TOKEN", log),
    )
    with kafka_or_embedded(bootstrap, quiet=True, service=True) as kafka:
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
