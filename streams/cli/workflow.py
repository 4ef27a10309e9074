"""``streams workflow list|diagram|validate [REF]``: inspect workflow definitions (no broker needed).

A workflow is named by reference, ``package.module:factory`` as in a topology, or by a built-in alias
(``orders``); a bad reference is a WorkflowDefinitionError naming it and what failed (exit 2).

``validate REF --topology F`` also checks the definition against the contracts of the topology that runs it
(payloads against their records' required fields, the derived state record against the catalogue) and, given
a broker, reads the workflow's changelog: entities stored in a state this definition no longer has are listed
and the exit status is 1, so a deployment that would strand them is stopped before it starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Annotated

import orjson
import typer

from streams.cli.common import DEVELOP, Bootstrap, examples, flag, namespace
from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, RegistrySettings, Serde
from streams.errors import ConfigError
from streams.kafka.client import read_to_end
from streams.processors.avro import default_schemas
from streams.processors.workflow_state import (
    StateContract,
    census,
    check_payloads,
    check_removals,
    state_contract,
)
from streams.topology import ProcessorSpec, load
from streams.workflow import Definition, create, names

_REF = "workflow: a built-in name (see `streams workflow list`) or package.module:factory"


Ref = Annotated[str, typer.Argument(metavar="REF", help=_REF)]


def add(app: typer.Typer) -> None:
    workflow = typer.Typer(help="List, draw or validate workflows.", no_args_is_help=True,
                           epilog=examples("streams workflow list", "streams workflow diagram orders",
                                           "streams workflow validate myproj.flows:loan --topology topology.yaml"))
    app.add_typer(workflow, name="workflow", rich_help_panel=DEVELOP)

    @workflow.command("list", epilog=examples("streams workflow list --json", "streams workflow list orders loan"))
    def list_cmd(refs: Annotated[list[str] | None, typer.Argument(metavar="REF...", help=_REF)] = None,
                 json: Annotated[bool, flag("--json", "print a JSON array of summaries")] = False) -> int:
        """Summarize workflows (default: the built-in ones)."""
        return list_(namespace(refs=refs or [], json=json))

    @workflow.command("diagram", epilog=examples("streams workflow diagram orders > orders.mmd"))
    def diagram_(name: Ref) -> int:
        """Print a workflow as a Mermaid stateDiagram-v2."""
        return diagram(namespace(name=name))

    @workflow.command("validate", epilog=examples(
        "streams workflow validate orders --param max_attempts=5",
        "streams workflow validate myproj.flows:loan --topology topology.yaml --bootstrap kafka:9092"))
    def validate_(
        name: Ref,
        param: Annotated[list[str] | None, typer.Option(metavar="KEY=INT", help="a factory parameter, as a "
                                                        "topology's options.params would give it (integers)")]
        = None,
        topology: Annotated[str | None, typer.Option(metavar="FILE", help="also check it against this topology's "
                                                     "contracts and, with a broker, its stored states")] = None,
        processor: Annotated[str | None, typer.Option(help="the topology's processor running REF (default: the one "
                                                      "that does)")] = None,
        registry: Annotated[str | None, typer.Option(help="schema registry URL (default: $SCHEMA_REGISTRY_URL)")]
        = None,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Build a workflow and check it (exit 2 and the reason when invalid)."""
        return validate(namespace(name=name, param=param or [], topology=topology, processor=processor,
                                  registry=registry, bootstrap=bootstrap))


def list_(args: argparse.Namespace) -> int:
    summaries = {name: create(name).summary() for name in args.refs or names()}
    if args.json:
        sys.stdout.write(orjson.dumps([{"ref": name, **s} for name, s in summaries.items()], default=str).decode()
                         + "\n")
        return 0
    for name, s in summaries.items():
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
    if args.topology is None:
        s = create(args.name, params).summary()
        print(f"{args.name}: valid ({s['states']} states, {len(s['terminal'])} terminal, input {s['input_topic']})")
        return 0
    proc = _processor(args)
    definition = create(args.name, {**dict(proc.options.get("params") or {}), **params})
    s = definition.summary()
    print(f"{args.name}: valid ({s['states']} states, {len(s['terminal'])} terminal, input {s['input_topic']})")
    files = Catalogue.load(proc.options.get("schemas") or default_schemas())
    state_topic = str(proc.options.get("state_topic", f"{definition.name}-state"))
    contract = state_contract(definition, files, state_topic, proc.options.get("state_record"))
    check_payloads(definition, contract.catalogue)
    print(f"{args.name}: fits the contracts of processor {proc.name!r} (state record {contract.record}, "
          f"version {definition.version})")
    return _stored_states(args, proc, definition, files, contract, state_topic)


def _processor(args: argparse.Namespace) -> ProcessorSpec:
    topo = load(args.topology)
    if args.processor is not None:
        proc = topo.processor(args.processor)
        if proc.processor != "workflow":
            raise ConfigError(f"--processor {args.processor}: it runs {proc.processor!r}, not a workflow")
        return proc
    runs = [p for p in topo.processors.values()
            if p.processor == "workflow" and str(p.options.get("workflow", "orders")) == args.name]
    if len(runs) != 1:
        found = ", ".join(p.name for p in runs) or "none"
        raise ConfigError(f"--topology {args.topology}: {len(runs)} processors run workflow {args.name!r} "
                          f"({found}); name one with --processor")
    return runs[0]


def _stored_states(args: argparse.Namespace, proc: ProcessorSpec, definition: Definition, files: Catalogue,
                   contract: StateContract, state_topic: str) -> int:
    """Refuse data fields lost without ``drop``, then count the changelog's entities by state; 1 if some are in
    a state ``definition`` no longer has."""
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print(f"{args.name}: stored states not checked (no --bootstrap or KAFKA_BOOTSTRAP_SERVERS)")
        return 0
    registry = RegistryClient(RegistrySettings.from_env(args.registry))
    if contract.derived:
        strategy = str(proc.options.get("subject_strategy", "topic"))
        check_removals(definition, registry, contract.catalogue.subject(state_topic, contract.record, strategy))
    serde = Serde(registry, files, auto_register=False)
    records = ((m.key(), m.value()) for m in read_to_end(KafkaSettings.from_env(bootstrap), proc.changelog))
    found = census(records, serde)
    total = sum(len(keys) for keys in found.by_state.values())
    versions = ", ".join(f"version {v}: {n}" for v, n in sorted(found.versions.items())) or "none"
    print(f"{args.name}: changelog {proc.changelog}: {total} entities ({versions})")
    for key in found.undecodable:
        print(f"{args.name}: cannot read the stored state of {key}")
    stranded = found.missing(definition)
    for state, keys in stranded.items():
        shown = ", ".join(sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")
        print(f"{args.name}: {len(keys)} in-flight entities are in state {state!r}, which version "
              f"{definition.version} no longer has: {shown}")
    return 1 if stranded or found.undecodable else 0
