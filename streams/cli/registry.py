"""``streams registry``: run the Confluent-compatible schema registry, its state in the compacted ``_schemas`` topic."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated

import typer

from streams.cli.common import RUN, app, examples, kafka_or_embedded, log
from streams.cli.options import PORT, Bootstrap, flag
from streams.config import secret
from streams.errors import ConfigError
from streams.kafka.admin import check_reachable
from streams.registry import RegistryServer
from streams.web import Access, parse_user


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams registry --port 8081 --bootstrap kafka:9092",
    "streams registry --host 0.0.0.0 --user ci:secret:write --user ops:admin-pw:admin"))
def registry(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(parser=PORT, help="port to listen on (0 = any free port)")] = 8081,
    topic: Annotated[str, typer.Option(help="compacted topic holding the registry's log")] = "_schemas",
    access_log: Annotated[bool, flag("--access-log", "log every request to stderr")] = False,
    token: Annotated[str | None, typer.Option(help="bearer token with every right (default: "
                                              "$STREAMS_REGISTRY_TOKEN; on the command line it shows in ps)",
                                              rich_help_panel="Access")] = None,
    token_file: Annotated[str | None, typer.Option(metavar="PATH", help="read the bearer token from this file "
                                                   "(mode 600)", rich_help_panel="Access")] = None,
    user: Annotated[list[str] | None, typer.Option(
        metavar="NAME:PASSWORD[:RIGHT]", rich_help_panel="Access",
        help="a basic-auth user (right read, write or admin; default write); repeatable, or "
             "$STREAMS_REGISTRY_USERS, comma-separated. Clients on this machine need no credentials; any other "
             "needs them, and binding beyond loopback needs --token or --user")] = None,
    bootstrap: Bootstrap = None,
) -> int:
    """Run the schema registry (Confluent REST API, stored in Kafka)."""
    users = dict(parse_user(u) for u in [*(user or []), *filter(None, os.environ.get("STREAMS_REGISTRY_USERS", "")
                                                                   .split(","))])
    token = secret("--token", token, token_file, "STREAMS_REGISTRY_TOKEN", log)
    if user:
        log("registry: --user passwords on the command line are visible to every user of this machine (ps, /proc); "
            "prefer $STREAMS_REGISTRY_USERS")
    Access(token, users).check_bind(host, "--token or --user")
    with kafka_or_embedded(bootstrap, service=True) as settings:
        check_reachable(settings)  # it cannot start without its log: say so at once, not after its timeouts
        server = RegistryServer(settings, host=host, port=port, topic=topic, access_log=access_log, logger=log,
                                token=token, users=users)
        try:
            server.start()
        except OSError as exc:
            server.stop()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        log(f"streams: schema registry listening on {server.listening} (log topic {topic} at "
            f"{settings.bootstrap_servers})")
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0
