"""``streams signal KEY EVENT --data JSON``: send an event from outside (an approval, a reply) into a workflow.

The event is encoded with its registered schema and produced to the workflow's input topic, keyed by the
entity; a payload that does not match the schema exits 2 naming the field, and nothing is produced. The event
id printed (or given with ``--id``) makes a retry safe: the entity applies one id once.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from streams.cli.common import add_kafka_args, kafka_or_embedded
from streams.errors import ConfigError
from streams.ops.signal import Signaller, parse_data, signal_target
from streams.processors import resolve
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "signal", help="send an event into a workflow (a human decision, an external system's answer)",
        description="Example, in a project directory: streams signal loan-42 ReviewApproved "
                    "--data '{\"reviewer\": \"ana\"}'",
    )
    p.add_argument("key", help="the entity key, e.g. the loan or order id")
    p.add_argument("event", help="the event's record name, e.g. ReviewApproved")
    p.add_argument("--data", default="{}", help="the event's fields as a JSON object (default: {})")
    p.add_argument("--id", dest="event_id", help="the event id (default: a new one, printed): resend with the "
                   "same id to retry safely")
    p.add_argument("--topology", default="topology.yaml",
                   help="topology YAML file naming the workflow (default: ./topology.yaml)")
    p.add_argument("--processor", help="which processor of the topology (default: the only one, or the only "
                   "workflow among them)")
    add_kafka_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = parse_data(args.data)
    topo = load(args.topology)
    flows = [p for p in topo.processors.values() if "workflow" in p.options]
    # Beside its services, a project usually has one workflow: that is what a signal is for.
    proc = flows[0] if args.processor is None and len(topo.processors) > 1 and len(flows) == 1 else \
        topo.processor(args.processor)
    target = signal_target(resolve(proc.processor, proc.options, proc.outputs))
    if target is None:
        raise ConfigError(f"processor {proc.name!r} runs no workflow: nothing to signal")
    with kafka_or_embedded(args, quiet=True) as kafka:
        sent = Signaller(kafka, target).send(args.key, args.event, data, args.event_id)
    sys.stdout.write(orjson.dumps(sent.as_dict()).decode() + "\n")
    return 0

