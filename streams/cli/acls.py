"""``streams acls``: the Kafka ACLs a worker of a topology needs, as ``kafka-acls.sh`` command lines.

Printed, not applied: granting rights is an operator's decision, usually made with the cluster's own tools.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, examples
from streams.cli.options import TopologyFile, choice, flag, one_of
from streams.config import GUARANTEES
from streams.errors import ConfigError
from streams.ops.acls import kafka_acls_commands, worker_grants
from streams.topology import load


@app.command(rich_help_panel=OPERATE, epilog=examples(
    "streams acls --topology orders --principal orders-svc --bootstrap-server kafka:9092",
    "streams acls --topology orders --processor orchestrator --principal User:o --processing-guarantee "
    "exactly_once --http"))
def acls(
    topology: TopologyFile,
    principal: Annotated[str, typer.Option(help="the worker's principal: NAME (meaning User:NAME) or TYPE:NAME")],
    processor: Annotated[str | None, typer.Option(help="which processor (default: every processor of the "
                                                  "topology)")] = None,
    group: Annotated[str | None, typer.Option(help="the worker's consumer group (default: <topology>-<processor>; "
                                              "only with --processor)")] = None,
    processing_guarantee: Annotated[str | None, typer.Option(
        parser=choice(*GUARANTEES), metavar=one_of(*GUARANTEES),
        help="as the worker's flag: exactly_once adds transactional-id grants (default: the topology's)")] = None,
    http: Annotated[bool, flag("--http", "the worker serves HTTP (--http-port): its endpoints topic")] = False,
    no_create_topics: Annotated[bool, flag("--no-create-topics", "the worker runs with --no-create-topics: no "
                                           "Create grants (topics made beforehand)")] = False,
    bootstrap_server: Annotated[str, typer.Option(help="written into each line")] = "BOOTSTRAP",
) -> int:
    """Print the Kafka ACLs a worker of a topology needs (kafka-acls.sh lines)."""
    who = _principal(principal)
    topo = load(topology)
    if group and not processor:
        raise ConfigError("--group names one worker's group: give --processor too")
    procs = [topo.processor(processor)] if processor else list(topo.processors.values())
    eos = None if processing_guarantee is None else processing_guarantee == "exactly_once"
    for proc in procs:
        grants = worker_grants(topo, proc, group, exactly_once=eos, http=http, create_topics=not no_create_topics)
        print(f"# {proc.name} (group {group or topo.default_group(proc)})")
        for line in kafka_acls_commands(grants, who, bootstrap_server):
            print(line)
    return 0


def _principal(text: str) -> str:
    name = text if ":" in text else f"User:{text}"
    kind, _, who = name.partition(":")
    if not kind or not who or any(c.isspace() for c in name):
        raise ConfigError(f"--principal: expected NAME or TYPE:NAME without spaces, got {text!r}")
    return name
