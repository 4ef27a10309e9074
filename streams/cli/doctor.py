"""``streams doctor --topology F``: samples every input topic's recent records and reports misrouted records
(and keys not in the declared format) per topic and partition; exit 1 if any are found."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples, kafka_or_embedded, running_kafka
from streams.cli.options import Bootstrap, TopologyFile, flag, number
from streams.ops.doctor import examine, render
from streams.topology import load


@app.command(rich_help_panel=OPERATE, epilog=examples(
    "streams doctor --topology topology.yaml --bootstrap kafka:9092 --sample 5000"))
def doctor(
    topology: TopologyFile,
    sample: Annotated[int, typer.Option(parser=number(int, 1), metavar="N", help="how many of the most recent "
                                        "records of each partition to check")] = 1000,
    json: Annotated[bool, flag("--json", "print one JSON object: per partition sampled, misrouted, bad keys "
                               "and the producers of misrouted records")] = False,
    bootstrap: Bootstrap = None,
) -> int:
    """Check that input records sit on their key's partition, keys as declared (exit 1 if not)."""
    running_kafka(bootstrap, "doctor reads the topics producers write to: set KAFKA_BOOTSTRAP_SERVERS or pass "
                  "--bootstrap (an embedded broker started for this command would be empty)")
    topo = load(topology)
    with kafka_or_embedded(bootstrap, quiet=True) as settings:
        report = examine(settings, topo, sample)
    if json:
        emit_json({"checked": report.checked, "problems": report.problems,
                   "partitions": [asdict(p) for p in report.partitions]})
    else:
        print(render(report), end="")
    return 1 if report.problems else 0
