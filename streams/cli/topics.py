"""``streams topics create|list|describe``: apply a topology's topics idempotently and inspect them."""

from __future__ import annotations

import argparse
import sys
from typing import Annotated

import orjson
import typer

from streams.cli.common import OPERATE, Bootstrap, examples, flag, kafka_or_embedded, namespace
from streams.cli.progress import progress
from streams.kafka.admin import Admin
from streams.topology import load

Topology = Annotated[str, typer.Option(help="topology YAML file, or a built-in example: orders, loan, counter")]


def add(app: typer.Typer) -> None:
    topics = typer.Typer(help="Create, list or describe topics.", no_args_is_help=True,
                         epilog=examples("streams topics create --topology orders", "streams topics list --json"))
    app.add_typer(topics, name="topics", rich_help_panel=OPERATE)

    @topics.command("create", epilog=examples("streams topics create --topology topology.yaml --bootstrap kafka:9092"))
    def create_(topology: Topology,
                json: Annotated[bool, flag("--json", "print one JSON object: created and existing topics")] = False,
                bootstrap: Bootstrap = None) -> int:
        """Create the topology's topics (idempotent)."""
        return create(namespace(topology=topology, json=json, bootstrap=bootstrap))

    @topics.command("list", epilog=examples("streams topics list", "streams topics list --json"))
    def list_cmd(json: Annotated[bool, flag("--json", "print one JSON object: topic name -> partitions")] = False,
                 bootstrap: Bootstrap = None) -> int:
        """List topics and partition counts."""
        return list_(namespace(json=json, bootstrap=bootstrap))

    @topics.command("describe", epilog=examples("streams topics describe --topology orders --json"))
    def describe_(topology: Topology,
                  json: Annotated[bool, flag("--json", "print a JSON array, one object per topic")] = False,
                  bootstrap: Bootstrap = None) -> int:
        """Describe the topology's topics as they are on the cluster."""
        return describe(namespace(topology=topology, json=json, bootstrap=bootstrap))


def create(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    with kafka_or_embedded(args) as settings, progress() as bar:
        created, existing = Admin(settings).ensure(topo.all_topics(), bar)
        for proc in topo.processors.values():
            Admin(settings).check_copartitioned(proc)
    if args.json:
        sys.stdout.write(orjson.dumps({"created": created, "existing": existing}).decode() + "\n")
        return 0
    for t in created:
        print(f"created  {t}")
    for t in existing:
        print(f"exists   {t}")
    return 0


def list_(args: argparse.Namespace) -> int:
    with kafka_or_embedded(args) as settings:
        topics = Admin(settings).list_topics()
    if args.json:
        sys.stdout.write(orjson.dumps(dict(sorted(topics.items()))).decode() + "\n")
        return 0
    for name in sorted(topics):
        print(f"{name}\t{topics[name]}")
    return 0


def describe(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    with kafka_or_embedded(args) as settings:
        states = {s.name: s for s in Admin(settings).describe(t.name for t in topo.all_topics())}
    if args.json:
        rows = [{"topic": spec.name, "want_partitions": spec.partitions, "want_cleanup": spec.cleanup_policy,
                 "exists": spec.name in states,
                 "partitions": states[spec.name].partitions if spec.name in states else None,
                 "cleanup": states[spec.name].config.get("cleanup.policy") if spec.name in states else None}
                for spec in topo.all_topics()]
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return 0
    for spec in topo.all_topics():
        st = states.get(spec.name)
        if st is None:
            print(f"{spec.name}\tMISSING\twant partitions={spec.partitions} cleanup={spec.cleanup_policy}")
            continue
        verdict = "ok" if st.partitions == spec.partitions else f"MISMATCH(want {spec.partitions})"
        print(f"{spec.name}\tpartitions={st.partitions} {verdict}\tcleanup={st.config.get('cleanup.policy', '?')}")
    return 0
