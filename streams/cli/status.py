"""``streams status KEY``: one entity's state, pending timers and history, from whichever worker owns it.

Ask any worker (``--url``) or let the command find one in the group's endpoints topic; the worker that is asked
forwards to the owner of the key's partition.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples, kafka_or_embedded, log
from streams.cli.options import Bootstrap, TokenFile, exactly_one
from streams.config import secret
from streams.errors import ConfigError
from streams.ops.endpoints import endpoints_topic
from streams.ops.status import Endpoints, get_entity, partition_for
from streams.topology import load

WHERE = "Where to ask (one of)"


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
    token_file: TokenFile = None,
    bootstrap: Bootstrap = None,
) -> int:
    """Show one workflow entity by key (JSON: state, pending timers, history)."""
    exactly_one("--url/--topology", url, topology)
    token = secret("--token", token, token_file, "STREAMS_HTTP_TOKEN", log)
    if topology is not None:
        topo = load(topology)
        proc = topo.processor(processor)
        group = group or topo.default_group(proc)
        parts = topo.topics[proc.inputs[0]].partitions
        with kafka_or_embedded(bootstrap, quiet=True) as kafka:
            url = Endpoints(kafka, endpoints_topic(group).name, token).owner(partition_for(key.encode(), parts))
        if url is None:
            raise ConfigError(f"no worker of group {group} announces an HTTP endpoint (start them with --http-port)")
    assert url is not None
    code, body = get_entity(url, key, token, 10.0)
    if code == 404:
        print(f"streams: no entity {key!r}: {body.get('message', 'not found')}", file=sys.stderr)
        return 1
    if code != 200:
        raise ConfigError(f"{url} answered {code}: {body.get('message', body)}")
    return emit_json(body, indent=True)
