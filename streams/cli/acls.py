"""``streams acls``: the Kafka ACLs a worker of a topology needs, as ``kafka-acls.sh`` command lines.

Printed, not applied: granting rights is an operator's decision, usually made with the cluster's own tools.
"""

from __future__ import annotations

import argparse

from streams.config import GUARANTEES
from streams.errors import ConfigError
from streams.ops.acls import kafka_acls_commands, worker_grants
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("acls", help="print the Kafka ACLs a worker of a topology needs (kafka-acls.sh lines)")
    p.add_argument("--topology", required=True, help="topology YAML file, or a built-in example: orders, counter")
    p.add_argument("--processor", help="which processor (default: every processor of the topology)")
    p.add_argument("--principal", required=True, help="the worker's principal: NAME (meaning User:NAME) or TYPE:NAME")
    p.add_argument("--group", help="the worker's consumer group (default: <topology>-<processor>; "
                   "only with --processor)")
    p.add_argument("--processing-guarantee", choices=GUARANTEES,
                   help="as the worker's flag: exactly_once adds transactional-id grants (default: the topology's)")
    p.add_argument("--http", action="store_true", help="the worker serves HTTP (--http-port): its endpoints topic")
    p.add_argument("--no-create-topics", action="store_true",
                   help="the worker runs with --no-create-topics: no Create grants (topics made beforehand)")
    p.add_argument("--bootstrap-server", default="BOOTSTRAP", help="written into each line (default: BOOTSTRAP)")
    p.set_defaults(func=run)


def principal(text: str) -> str:
    name = text if ":" in text else f"User:{text}"
    kind, _, who = name.partition(":")
    if not kind or not who or any(c.isspace() for c in name):
        raise ConfigError(f"--principal: expected NAME or TYPE:NAME without spaces, got {text!r}")
    return name


def run(args: argparse.Namespace) -> int:
    who = principal(args.principal)
    topo = load(args.topology)
    if args.group and not args.processor:
        raise ConfigError("--group names one worker's group: give --processor too")
    procs = [topo.processor(args.processor)] if args.processor else list(topo.processors.values())
    eos = None if args.processing_guarantee is None else args.processing_guarantee == "exactly_once"
    for proc in procs:
        grants = worker_grants(topo, proc, args.group, exactly_once=eos, http=args.http,
                               create_topics=not args.no_create_topics)
        print(f"# {proc.name} (group {args.group or topo.default_group(proc)})")
        for line in kafka_acls_commands(grants, who, args.bootstrap_server):
            print(line)
    return 0
