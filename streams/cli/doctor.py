"""``streams doctor --topology F``: samples every input topic's recent records and reports misrouted records
(and keys not in the declared format) per topic and partition; exit 1 if any are found."""

from __future__ import annotations

import argparse
import os

from streams.cli.common import add_kafka_args, kafka_or_embedded
from streams.errors import ConfigError
from streams.ops.doctor import examine, render
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check that input records sit on their key's partition, keys as declared")
    p.add_argument("--topology", required=True, help="topology YAML file")
    p.add_argument("--sample", type=int, default=1000, metavar="N",
                   help="how many of the most recent records of each partition to check (1000)")
    add_kafka_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sample < 1:
        raise ConfigError(f"--sample must be >= 1, got {args.sample}")
    if not (args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        raise ConfigError("doctor reads the topics producers write to: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
                          "(an embedded broker started for this command would be empty)")
    topo = load(args.topology)
    with kafka_or_embedded(args, quiet=True) as settings:
        report = examine(settings, topo, args.sample)
    print(render(report), end="")
    return 1 if report.problems else 0
