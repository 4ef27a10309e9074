"""``streams registry``: run the Confluent-compatible schema registry, its state in the compacted ``_schemas`` topic."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from streams.cli.common import add_kafka_args, kafka_or_embedded, log
from streams.config import secret
from streams.errors import ConfigError
from streams.kafka.admin import check_reachable
from streams.registry import RegistryServer
from streams.web import Access, parse_user


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("registry", help="run the schema registry (Confluent REST API, stored in Kafka)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="port to listen on (default: 8081; 0 = any free port)")
    p.add_argument("--topic", default="_schemas", help="compacted topic holding the registry's log (default: _schemas)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--token", help="bearer token with every right (default: $STREAMS_REGISTRY_TOKEN; on the command "
                   "line it shows in ps)")
    p.add_argument("--token-file", metavar="PATH", help="read the bearer token from this file (mode 600)")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD[:RIGHT]",
                   help="a basic-auth user (right read, write or admin; default write); repeatable, or "
                        "$STREAMS_REGISTRY_USERS, comma-separated. Clients on this machine need no credentials; "
                        "any other needs them, and binding beyond loopback needs --token or --user")
    add_kafka_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    users = dict(parse_user(u) for u in [*args.user, *filter(None, os.environ.get("STREAMS_REGISTRY_USERS", "")
                                                                .split(","))])
    args.token = secret("--token", args.token, args.token_file, "STREAMS_REGISTRY_TOKEN", log)
    if args.user:
        log("registry: --user passwords on the command line are visible to every user of this machine (ps, /proc); "
            "prefer $STREAMS_REGISTRY_USERS")
    Access(args.token, users).check_bind(args.host, "--token or --user")
    with kafka_or_embedded(args, service=True) as settings:
        check_reachable(settings)  # it cannot start without its log: say so at once, not after its timeouts
        server = RegistryServer(settings, host=args.host, port=args.port, topic=args.topic,
                                access_log=args.access_log, logger=log, token=args.token, users=users)
        try:
            server.start()
        except OSError as exc:
            server.stop()
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        log(f"streams: schema registry listening on {server.listening} (log topic {args.topic} at "
            f"{settings.bootstrap_servers})")
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0
