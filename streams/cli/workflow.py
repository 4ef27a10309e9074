"""``streams workflow list|diagram NAME``: inspect the registered workflow definitions (no broker needed)."""

from __future__ import annotations

import argparse

from streams.workflow import create, names


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("workflow", help="list workflows or draw one as a Mermaid state diagram")
    wsub = p.add_subparsers(dest="workflow_cmd", metavar="ACTION")
    wsub.required = True
    ls = wsub.add_parser("list", help="list the known workflows")
    ls.set_defaults(func=list_)
    d = wsub.add_parser("diagram", help="print a workflow as a Mermaid stateDiagram-v2")
    d.add_argument("name", help="workflow name (see `streams workflow list`)")
    d.set_defaults(func=diagram)


def list_(args: argparse.Namespace) -> int:
    for name in names():
        s = create(name).summary()
        print(f"{name}\tinput={s['input_topic']}\tstates={s['states']}\tterminal={','.join(s['terminal'])}")
        if s["description"]:
            print(f"\t{s['description']}")
    return 0


def diagram(args: argparse.Namespace) -> int:
    print(create(args.name).diagram(), end="")
    return 0
