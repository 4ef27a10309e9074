"""``streams workflow list|diagram|validate [REF]``: inspect workflow definitions (no broker needed).

A workflow is named by reference, ``package.module:factory`` as in a topology, or by a built-in alias
(``orders``); a bad reference is a WorkflowDefinitionError naming it and what failed (exit 2).
"""

from __future__ import annotations

import argparse

from streams.errors import ConfigError
from streams.workflow import create, names

_REF = "workflow: a built-in name (see `streams workflow list`) or package.module:factory"


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("workflow", help="list, draw or validate workflows")
    wsub = p.add_subparsers(dest="workflow_cmd", metavar="ACTION")
    wsub.required = True
    ls = wsub.add_parser("list", help="summarize workflows (default: the built-in ones)")
    ls.add_argument("refs", nargs="*", metavar="REF", help=_REF)
    ls.set_defaults(func=list_)
    d = wsub.add_parser("diagram", help="print a workflow as a Mermaid stateDiagram-v2")
    d.add_argument("name", metavar="REF", help=_REF)
    d.set_defaults(func=diagram)
    v = wsub.add_parser("validate", help="build a workflow and check it (exit 2 and the reason when invalid)")
    v.add_argument("name", metavar="REF", help=_REF)
    v.add_argument("--param", action="append", default=[], metavar="KEY=INT",
                   help="a factory parameter, as a topology's options.params would give it (integers)")
    v.set_defaults(func=validate)


def list_(args: argparse.Namespace) -> int:
    for name in args.refs or names():
        s = create(name).summary()
        print(f"{name}\tinput={s['input_topic']}\tstates={s['states']}\tterminal={','.join(s['terminal'])}")
        if s["description"]:
            print(f"\t{s['description']}")
    return 0


def diagram(args: argparse.Namespace) -> int:
    print(create(args.name).diagram(), end="")
    return 0


def validate(args: argparse.Namespace) -> int:
    params: dict[str, int] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        if not key or not value.lstrip("-").isdigit():
            raise ConfigError(f"--param {item!r}: expected KEY=INTEGER")
        params[key] = int(value)
    s = create(args.name, params).summary()
    print(f"{args.name}: valid ({s['states']} states, {len(s['terminal'])} terminal, input {s['input_topic']})")
    return 0
