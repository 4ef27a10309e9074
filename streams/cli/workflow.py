"""``streams workflow list|diagram|validate [REF]``: inspect workflow definitions (no broker needed).

A workflow is named by reference, ``package.module:factory`` as in a topology, or by a built-in alias
(``orders``); a bad reference is a WorkflowDefinitionError naming it and what failed (exit 2).

``validate REF --topology F`` also checks the definition against the contracts of the topology that runs it
(payloads against their records' required fields, the derived state record against the catalogue) and, given
a broker, reads the workflow's changelog: entities stored in a state this definition no longer has are listed
and the exit status is 1, so a deployment that would strand them is stopped before it starts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.common import DEVELOP, app, bootstrap_given, emit_json, examples
from streams.cli.options import Bootstrap, Registry, flag
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

workflow = typer.Typer(help="List, draw or validate workflows.", no_args_is_help=True,
                       epilog=examples("streams workflow list", "streams workflow diagram orders",
                                       "streams workflow validate myproj.flows:loan --topology topology.yaml"))
app.add_typer(workflow, name="workflow", rich_help_panel=DEVELOP)


@workflow.command("list", epilog=examples("streams workflow list --json", "streams workflow list orders loan"))
def list_(refs: Annotated[list[str] | None, typer.Argument(metavar="REF...", help=_REF)] = None,
          json: Annotated[bool, flag("--json", "print a JSON array of summaries")] = False) -> int:
    """Summarize workflows (default: the built-in ones)."""
    summaries = {name: create(name).summary() for name in refs or names()}
    if json:
        return emit_json([{"ref": name, **s} for name, s in summaries.items()])
    for name, s in summaries.items():
        print(f"{name}\tinput={s['input_topic']}\tstates={s['states']}\tterminal={','.join(s['terminal'])}")
        if s["description"]:
            print(f"\t{s['description']}")
    return 0


@workflow.command("diagram", epilog=examples("streams workflow diagram orders > orders.mmd"))
def diagram(name: Ref) -> int:
    """Print a workflow as a Mermaid stateDiagram-v2."""
    print(create(name).diagram(), end="")
    return 0


@workflow.command("validate", epilog=examples(
    "streams workflow validate orders --param max_attempts=5",
    "streams workflow validate myproj.flows:loan --topology topology.yaml --bootstrap kafka:9092"))
def validate(
    name: Ref,
    param: Annotated[list[str] | None, typer.Option(metavar="KEY=INT", help="a factory parameter, as a "
                                                    "topology's options.params would give it (integers)")] = None,
    topology: Annotated[str | None, typer.Option(metavar="FILE", help="also check it against this topology's "
                                                 "contracts and, with a broker, its stored states")] = None,
    processor: Annotated[str | None, typer.Option(help="the topology's processor running REF (default: the one "
                                                  "that does)")] = None,
    registry: Registry = None,
    bootstrap: Bootstrap = None,
) -> int:
    """Build a workflow and check it (exit 2 and the reason when invalid)."""
    params: dict[str, int] = {}
    for item in param or []:
        key, _, value = item.partition("=")
        if not key or not value.lstrip("-").isdigit():
            raise ConfigError(f"--param {item!r}: expected KEY=INTEGER")
        params[key] = int(value)
    proc = None if topology is None else _processor(name, topology, processor)
    definition = create(name, {**dict(proc.options.get("params") or {}), **params} if proc else params)
    s = definition.summary()
    print(f"{name}: valid ({s['states']} states, {len(s['terminal'])} terminal, input {s['input_topic']})")
    if proc is None:
        return 0
    files = Catalogue.load(proc.options.get("schemas") or default_schemas())
    state_topic = str(proc.options.get("state_topic", f"{definition.name}-state"))
    contract = state_contract(definition, files, state_topic, proc.options.get("state_record"))
    check_payloads(definition, contract.catalogue)
    print(f"{name}: fits the contracts of processor {proc.name!r} (state record {contract.record}, "
          f"version {definition.version})")
    return _stored_states(name, bootstrap, registry, proc, definition, files, contract, state_topic)


def _processor(name: str, topology: str, processor: str | None) -> ProcessorSpec:
    topo = load(topology)
    if processor is not None:
        proc = topo.processor(processor)
        if proc.processor != "workflow":
            raise ConfigError(f"--processor {processor}: it runs {proc.processor!r}, not a workflow")
        return proc
    runs = [p for p in topo.processors.values()
            if p.processor == "workflow" and str(p.options.get("workflow", "orders")) == name]
    if len(runs) != 1:
        found = ", ".join(p.name for p in runs) or "none"
        raise ConfigError(f"--topology {topology}: {len(runs)} processors run workflow {name!r} "
                          f"({found}); name one with --processor")
    return runs[0]


def _stored_states(name: str, bootstrap: str | None, registry: str | None, proc: ProcessorSpec,
                   definition: Definition, files: Catalogue, contract: StateContract, state_topic: str) -> int:
    """Refuse data fields lost without ``drop``, then count the changelog's entities by state; 1 if some are in
    a state ``definition`` no longer has."""
    bootstrap = bootstrap_given(bootstrap)
    if not bootstrap:
        print(f"{name}: stored states not checked (no --bootstrap or KAFKA_BOOTSTRAP_SERVERS)")
        return 0
    client = RegistryClient(RegistrySettings.from_env(registry))
    if contract.derived:
        strategy = str(proc.options.get("subject_strategy", "topic"))
        check_removals(definition, client, contract.catalogue.subject(state_topic, contract.record, strategy))
    serde = Serde(client, files, auto_register=False)
    records = ((m.key(), m.value()) for m in read_to_end(KafkaSettings.from_env(bootstrap), proc.changelog))
    found = census(records, serde)
    total = sum(len(keys) for keys in found.by_state.values())
    versions = ", ".join(f"version {v}: {n}" for v, n in sorted(found.versions.items())) or "none"
    print(f"{name}: changelog {proc.changelog}: {total} entities ({versions})")
    for key in found.undecodable:
        print(f"{name}: cannot read the stored state of {key}")
    stranded = found.missing(definition)
    for state, keys in stranded.items():
        shown = ", ".join(sorted(keys)[:5]) + (", ..." if len(keys) > 5 else "")
        print(f"{name}: {len(keys)} in-flight entities are in state {state!r}, which version "
              f"{definition.version} no longer has: {shown}")
    return 1 if stranded or found.undecodable else 0
