"""``streams status KEY``: one entity's state, pending timers and history, from whichever worker owns it.

Ask any worker (``--url``) or let the command find one in the group's endpoints topic; the worker that is asked
forwards to the owner of the key's partition.
"""

from __future__ import annotations

import argparse
import sys
from typing import Annotated

import orjson
import typer

from streams.cli.common import OPERATE, BadValue, Bootstrap, examples, kafka_or_embedded, log, namespace
from streams.config import secret
from streams.errors import ConfigError
from streams.ops.status import Endpoints, get_entity, partition_for
from streams.topology import load

WHERE = "Where to ask (one of)"


def add(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE, epilog=examples(
        "streams status order-42 --url http://127.0.0.1:9400",
        "streams status loan-7 --topology topology.yaml --bootstrap kafka:9092"))
    def status(
        key: Annotated[str, typer.Argument(help="the entity key, e.g. an order id")],
        url: Annotated[str | None, typer.Option(help="any worker's HTTP endpoint, e.g. http://127.0.0.1:9400",
                                                rich_help_panel=WHERE)] = None,
        topology: Annotated[str | None, typer.Option(help="find a worker through the group's endpoints topic",
                                                     rich_help_panel=WHERE)] = None,
        processor: Annotated[str | None, typer.Option(help="with --topology: which processor (default: the only "
                                                      "one)")] = None,
        group: Annotated[str | None, typer.Option(help="with --topology: consumer group (default: "
                                                  "<topology>-<processor>)")] = None,
        token: Annotated[str | None, typer.Option(help="bearer token, if required (default: $STREAMS_HTTP_TOKEN; on "
                                                  "the command line it shows in ps)")] = None,
        token_file: Annotated[str | None, typer.Option(metavar="PATH", help="read the bearer token from this file "
                                                       "(mode 600)")] = None,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Show one workflow entity by key (JSON: state, pending timers, history)."""
        if (url is None) == (topology is None):
            raise BadValue("give exactly one of them", param_hint="--url/--topology")
        return run(namespace(key=key, url=url, topology=topology, processor=processor, group=group,
                             token=token, token_file=token_file, bootstrap=bootstrap))


def run(args: argparse.Namespace) -> int:
    args.token = secret("--token", args.token, args.token_file, "STREAMS_HTTP_TOKEN", log)
    url = args.url
    if url is None:
        topo = load(args.topology)
        proc = topo.processor(args.processor)
        group = args.group or topo.default_group(proc)
        parts = topo.topics[proc.inputs[0]].partitions
        with kafka_or_embedded(args, quiet=True) as kafka:
            url = Endpoints(kafka, f"{group}.endpoints", args.token).owner(partition_for(args.key.encode(), parts))
        if url is None:
            raise ConfigError(f"no worker of group {group} announces an HTTP endpoint (start them with --http-port)")
    code, body = get_entity(url, args.key, args.token, 10.0)
    if code == 404:
        print(f"streams: no entity {args.key!r}: {body.get('message', 'not found')}", file=sys.stderr)
        return 1
    if code != 200:
        raise ConfigError(f"{url} answered {code}: {body.get('message', body)}")
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
