"""``streams doctor --topology F``: samples every input topic's recent records and reports misrouted records
(and keys not in the declared format) per topic and partition; exit 1 if any are found."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from typing import Annotated

import orjson
import typer

from streams.cli.common import OPERATE, Bootstrap, examples, flag, kafka_or_embedded, namespace, number
from streams.errors import ConfigError
from streams.ops.doctor import examine, render
from streams.topology import load


def add(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE, epilog=examples(
        "streams doctor --topology topology.yaml --bootstrap kafka:9092 --sample 5000"))
    def doctor(
        topology: Annotated[str, typer.Option(help="topology YAML file")],
        sample: Annotated[int, typer.Option(parser=number(int, 1), metavar="N", help="how many of the most recent "
                                            "records of each partition to check")] = 1000,
        json: Annotated[bool, flag("--json", "print one JSON object: per partition sampled, misrouted, bad keys "
                                   "and the producers of misrouted records")] = False,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Check that input records sit on their key's partition, keys as declared (exit 1 if not)."""
        return run(namespace(topology=topology, sample=sample, json=json, bootstrap=bootstrap))


def run(args: argparse.Namespace) -> int:
    if not (args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")):
        raise ConfigError("doctor reads the topics producers write to: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
                          "(an embedded broker started for this command would be empty)")
    topo = load(args.topology)
    with kafka_or_embedded(args, quiet=True) as settings:
        report = examine(settings, topo, args.sample)
    if args.json:
        sys.stdout.write(orjson.dumps({"checked": report.checked, "problems": report.problems,
                                       "partitions": [asdict(p) for p in report.partitions]}).decode() + "\n")
    else:
        print(render(report), end="")
    return 1 if report.problems else 0
