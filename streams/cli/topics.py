"""``streams topics create|list|describe``: apply a topology's topics idempotently and inspect them."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples, kafka_or_embedded
from streams.cli.options import Bootstrap, TopologyFile, flag
from streams.cli.progress import progress
from streams.kafka.admin import Admin
from streams.topology import load

topics = typer.Typer(help="Create, list or describe topics.", no_args_is_help=True,
                     epilog=examples("streams topics create --topology orders", "streams topics list --json"))
app.add_typer(topics, name="topics", rich_help_panel=OPERATE)


@topics.command("create", epilog=examples("streams topics create --topology topology.yaml --bootstrap kafka:9092"))
def create(topology: TopologyFile,
           json: Annotated[bool, flag("--json", "print one JSON object: created and existing topics")] = False,
           bootstrap: Bootstrap = None) -> int:
    """Create the topology's topics (idempotent)."""
    topo = load(topology)
    with kafka_or_embedded(bootstrap) as settings, progress() as bar:
        created, existing = Admin(settings).ensure(topo.all_topics(), bar)
        for proc in topo.processors.values():
            Admin(settings).check_copartitioned(proc)
    if json:
        return emit_json({"created": created, "existing": existing})
    for t in created:
        print(f"created  {t}")
    for t in existing:
        print(f"exists   {t}")
    return 0


@topics.command("list", epilog=examples("streams topics list", "streams topics list --json"))
def list_(json: Annotated[bool, flag("--json", "print one JSON object: topic name -> partitions")] = False,
          bootstrap: Bootstrap = None) -> int:
    """List topics and partition counts."""
    with kafka_or_embedded(bootstrap) as settings:
        found = Admin(settings).list_topics()
    if json:
        return emit_json(dict(sorted(found.items())))
    for name in sorted(found):
        print(f"{name}\t{found[name]}")
    return 0


@topics.command("describe", epilog=examples("streams topics describe --topology orders --json"))
def describe(topology: TopologyFile,
             json: Annotated[bool, flag("--json", "print a JSON array, one object per topic")] = False,
             bootstrap: Bootstrap = None) -> int:
    """Describe the topology's topics as they are on the cluster."""
    topo = load(topology)
    with kafka_or_embedded(bootstrap) as settings:
        states = {s.name: s for s in Admin(settings).describe(t.name for t in topo.all_topics())}
    if json:
        return emit_json([{"topic": spec.name, "want_partitions": spec.partitions, "want_cleanup": spec.cleanup_policy,
                           "exists": spec.name in states,
                           "partitions": states[spec.name].partitions if spec.name in states else None,
                           "cleanup": states[spec.name].config.get("cleanup.policy") if spec.name in states else None}
                          for spec in topo.all_topics()])
    for spec in topo.all_topics():
        st = states.get(spec.name)
        if st is None:
            print(f"{spec.name}\tMISSING\twant partitions={spec.partitions} cleanup={spec.cleanup_policy}")
            continue
        verdict = "ok" if st.partitions == spec.partitions else f"MISMATCH(want {spec.partitions})"
        print(f"{spec.name}\tpartitions={st.partitions} {verdict}\tcleanup={st.config.get('cleanup.policy', '?')}")
    return 0
