"""``streams status KEY``: one entity's state, pending timers and history, from whichever worker owns it.

Ask any worker (``--url``) or let the command find one in the group's endpoints topic; the worker that is asked
forwards to the owner of the key's partition.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from streams.cli.common import add_kafka_args, kafka_or_embedded, log
from streams.config import secret
from streams.errors import ConfigError
from streams.ops.status import Endpoints, get_entity, partition_for
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show one workflow entity by key")
    p.add_argument("key")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="any worker's HTTP endpoint, e.g. http://127.0.0.1:9400")
    where.add_argument("--topology", help="find a worker through the group's endpoints topic")
    p.add_argument("--processor", help="with --topology: which processor (default: the only one)")
    p.add_argument("--group", help="with --topology: consumer group (default: <topology>-<processor>)")
    p.add_argument("--token", help="bearer token, if required (default: $STREAMS_HTTP_TOKEN; on the command line it "
                   "shows in ps)")
    p.add_argument("--token-file", metavar="PATH", help="read the bearer token from this file (mode 600)")
    add_kafka_args(p)
    p.set_defaults(func=run)


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
