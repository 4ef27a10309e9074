"""``streams lag``: committed offset, log end and lag per consumer group and partition, once or ``--watch``-ed.

It refuses to run without ``--bootstrap``/``$KAFKA_BOOTSTRAP_SERVERS`` instead of starting an embedded broker:
a broker started for this command is empty and memory-only, so its answer ("no groups") would always be
true and never useful. The error line says how to point it at a running one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict
from time import sleep
from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples, kafka_or_embedded, running_kafka
from streams.cli.options import SECONDS, Bootstrap, flag
from streams.kafka.lag import GroupLag, LagReader

_HEADER = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG")


@app.command(rich_help_panel=OPERATE, epilog=examples(
    "streams lag --bootstrap 127.0.0.1:9092", "streams lag --group orders-orchestrator --watch --interval 5",
    "streams lag --json | jq '.[] | select(.lag > 1000)'"))
def lag(
    group: Annotated[str | None, typer.Option(help="only this consumer group (default: every group the cluster "
                                              "lists)")] = None,
    topic: Annotated[list[str] | None, typer.Option(metavar="TOPIC", help="a topic the group reads, reported even "
                                                    "if the group committed nothing on it (repeatable)")] = None,
    watch: Annotated[bool, flag("--watch", "refresh until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(parser=SECONDS, metavar="S", help="seconds between refreshes")] = 2.0,
    json: Annotated[bool, flag("--json", "print a JSON array of partitions (one per refresh)")] = False,
    bootstrap: Bootstrap = None,
) -> int:
    """Show consumer lag per group and partition."""
    running_kafka(bootstrap, "lag needs a running Kafka: set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
                  "(an embedded broker started just for this command would hold no groups; "
                  "run `streams broker` and point the workers and this command at 127.0.0.1:9092)")
    with kafka_or_embedded(bootstrap, quiet=True) as settings:
        reader = LagReader(settings)
        clear = watch and not json and sys.stdout.isatty()
        try:
            while True:
                groups = reader.read(group, topic or [])
                if clear:
                    sys.stdout.write("\x1b[H\x1b[2J")
                if json:
                    emit_json([asdict(p) for g in groups for p in g.partitions])
                else:
                    sys.stdout.write(render_table(groups))
                    sys.stdout.flush()
                if not watch:
                    return 0
                sleep(interval)
        except KeyboardInterrupt:
            return 0  # Ctrl-C is how --watch ends


def render_table(groups: Sequence[GroupLag]) -> str:
    rows: list[tuple[str, ...]] = [_HEADER]
    for g in groups:
        if not g.partitions:
            rows.append((g.group, "(nothing committed: name its topics with --topic)", "", "", "", ""))
            continue
        for p in g.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            rows.append((g.group, p.topic, str(p.partition), committed, str(p.log_end), str(p.lag)))
        rows.append((g.group, "(total)", "", "", "", str(g.total)))
    if len(rows) == 1:
        return "no consumer groups\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
