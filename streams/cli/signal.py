"""``streams signal KEY EVENT --data JSON``: send an event from outside (an approval, a reply) into a workflow.

The event is encoded with its registered schema and produced to the workflow's input topic, keyed by the
entity; a payload that does not match the schema exits 2 naming the field, and nothing is produced. The event
id printed (or given with ``--id``) makes a retry safe: the entity applies one id once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples, kafka_or_embedded
from streams.cli.options import Bootstrap
from streams.errors import ConfigError
from streams.ops.signal import Signaller, parse_data, signal_target
from streams.processors import resolve
from streams.topology import load


@app.command(rich_help_panel=OPERATE, epilog=examples(
    "streams signal loan-42 ReviewApproved --data '{\"reviewer\": \"ana\"}'",
    "streams signal loan-42 ReviewApproved --id 7f3c... --topology topology.yaml   # a safe retry"))
def signal(
    key: Annotated[str, typer.Argument(help="the entity key, e.g. the loan or order id")],
    event: Annotated[str, typer.Argument(help="the event's record name, e.g. ReviewApproved")],
    data: Annotated[str, typer.Option(help="the event's fields as a JSON object")] = "{}",
    event_id: Annotated[str | None, typer.Option("--id", help="the event id (default: a new one, printed): "
                                                 "resend with the same id to retry safely")] = None,
    topology: Annotated[str, typer.Option(help="topology YAML file naming the workflow")] = "topology.yaml",
    processor: Annotated[str | None, typer.Option(help="which processor of the topology (default: the only one, "
                                                  "or the only workflow among them)")] = None,
    bootstrap: Bootstrap = None,
) -> int:
    """Send an event into a workflow (a human decision, an external system's answer)."""
    fields = parse_data(data)
    topo = load(topology)
    flows = [p for p in topo.processors.values() if "workflow" in p.options]
    # Beside its services, a project usually has one workflow: that is what a signal is for.
    proc = flows[0] if processor is None and len(topo.processors) > 1 and len(flows) == 1 else \
        topo.processor(processor)
    target = signal_target(resolve(proc.processor, proc.options, proc.outputs))
    if target is None:
        raise ConfigError(f"processor {proc.name!r} runs no workflow: nothing to signal")
    with kafka_or_embedded(bootstrap, quiet=True) as kafka:
        sent = Signaller(kafka, target).send(key, event, fields, event_id)
    return emit_json(sent.as_dict())
