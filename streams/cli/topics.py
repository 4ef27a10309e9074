"""``streams topics create|list|describe``: apply a topology's topics idempotently and inspect them."""

from __future__ import annotations

import argparse

from streams.cli.common import add_kafka_args, kafka_or_embedded
from streams.kafka.admin import Admin
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="create, list or describe topics")
    tsub = p.add_subparsers(dest="topics_cmd", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("create", help="create the topology's topics (idempotent)")
    c.add_argument("--topology", required=True)
    add_kafka_args(c)
    c.set_defaults(func=create)
    ls = tsub.add_parser("list", help="list topics and partition counts")
    add_kafka_args(ls)
    ls.set_defaults(func=list_)
    d = tsub.add_parser("describe", help="describe the topology's topics as they are on the cluster")
    d.add_argument("--topology", required=True)
    add_kafka_args(d)
    d.set_defaults(func=describe)


def create(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    with kafka_or_embedded(args) as settings:
        created, existing = Admin(settings).ensure(topo.all_topics())
        for proc in topo.processors.values():
            Admin(settings).check_copartitioned(proc)
    for t in created:
        print(f"created  {t}")
    for t in existing:
        print(f"exists   {t}")
    return 0


def list_(args: argparse.Namespace) -> int:
    with kafka_or_embedded(args) as settings:
        topics = Admin(settings).list_topics()
    for name in sorted(topics):
        print(f"{name}\t{topics[name]}")
    return 0


def describe(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    with kafka_or_embedded(args) as settings:
        states = {s.name: s for s in Admin(settings).describe(t.name for t in topo.all_topics())}
    for spec in topo.all_topics():
        st = states.get(spec.name)
        if st is None:
            print(f"{spec.name}\tMISSING\twant partitions={spec.partitions} cleanup={spec.cleanup_policy}")
            continue
        flag = "ok" if st.partitions == spec.partitions else f"MISMATCH(want {spec.partitions})"
        print(f"{spec.name}\tpartitions={st.partitions} {flag}\tcleanup={st.config.get('cleanup.policy', '?')}")
    return 0
