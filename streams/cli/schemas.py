"""``streams schemas register|check|list|show``: put the contracts (``--dir``) into the registry, and gate CI.

``check`` exits 1 when a local schema breaks its subject's compatibility level, printing one line per breaking
field; 2 for a usage or connection problem; 0 when every schema may be registered.
"""

from __future__ import annotations

import json as json_
from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, emit_json, examples
from streams.cli.options import BadValue, Registry, choice, flag, one_of
from streams.cli.progress import progress
from streams.contracts import LEVELS, STRATEGIES, Catalogue, RegistryClient, RegistrySettings
from streams.contracts.catalogue import SchemaEntry
from streams.errors import IncompatibleSchemaError, SchemaRegistryError
from streams.processors.avro import default_schemas
from streams.topology import load

Dir = Annotated[str | None, typer.Option(help="schema directory (default: the order-saga example's contracts)",
                                         rich_help_panel="Contracts")]
Topology = Annotated[str | None, typer.Option(help="the contracts a topology names (its schemas: key), e.g. a "
                                              "project's", rich_help_panel="Contracts")]
Strategy = Annotated[str, typer.Option(
    parser=choice(*STRATEGIES), metavar=one_of(*STRATEGIES), rich_help_panel="Contracts",
    help="subject naming: topic (default) = <topic>-value, and for a topic carrying several record types "
         "<topic>-<record full name> plus their union as <topic>-value; record = record full name")]
Json = Annotated[bool, flag("--json", "print JSON (one object per subject) instead of text")]

schemas = typer.Typer(help="Register, check, list or show schemas in the registry.", no_args_is_help=True,
                      epilog=examples("streams schemas register --topology topology.yaml",
                                      "streams schemas check --dir schemas/   # the CI gate"))
app.add_typer(schemas, name="schemas", rich_help_panel=OPERATE)


def _subjects(dir: str | None, topology: str | None, strategy: str) -> dict[str, SchemaEntry]:
    if dir and topology:
        raise BadValue("not allowed with argument --topology", param_hint="--dir")
    files = (load(topology).schemas if topology else dir) or default_schemas()
    return Catalogue.load(files).subjects(strategy)


def _client(registry: str | None) -> RegistryClient:
    return RegistryClient(RegistrySettings.from_env(registry))


def _registered(client: RegistryClient, subject: str) -> bool:
    try:
        client.versions(subject)
    except SchemaRegistryError as exc:
        if exc.code == 40401:
            return False
        raise
    return True


@schemas.command("register", epilog=examples("streams schemas register --dry-run",
                                             "streams schemas register --compatibility FULL_TRANSITIVE"))
def register(
    dry_run: Annotated[bool, flag("--dry-run", "say what would be registered, change nothing")] = False,
    compatibility: Annotated[str | None, typer.Option(parser=choice(*LEVELS, upper=True), metavar="LEVEL",
                                                      help="also set this compatibility level on every subject: "
                                                           + ", ".join(LEVELS))] = None,
    registry: Registry = None, dir: Dir = None, topology: Topology = None, strategy: Strategy = "topic",
) -> int:
    """Register every schema under its subject (idempotent)."""
    subjects = _subjects(dir, topology, strategy)
    client = _client(registry)
    failed = 0
    with progress() as bar:
        bar.phase(f"{'checking' if dry_run else 'registering'} {len(subjects)} subjects", len(subjects))
        for i, (subject, entry) in enumerate(subjects.items()):
            bar.advance(i)
            if dry_run:
                failed += _dry_run(client, subject, entry)
                continue
            if compatibility:
                client.set_compatibility(compatibility, subject)
            try:
                schema_id = client.register(subject, entry.text)
            except IncompatibleSchemaError as exc:
                print(f"BREAKING   {subject}: {exc}")
                failed += 1
                continue
            print(f"ok         {subject} (id {schema_id})")
    return 1 if failed else 0


def _dry_run(client: RegistryClient, subject: str, entry: SchemaEntry) -> int:
    """Says what registering would do to ``subject``; the number of breaking changes it found."""
    if not _registered(client, subject):
        print(f"new        {subject}")
        return 0
    try:
        found = client.lookup(subject, entry.text)
        print(f"unchanged  {subject} (version {found.version}, id {found.id})")
        return 0
    except SchemaRegistryError as exc:
        if exc.code != 40403:
            raise
    ok, messages = client.test_compatibility(subject, entry.text)
    print(f"{'changed' if ok else 'BREAKING':<10} {subject}")
    return 0 if ok else _print_breaking(messages)


@schemas.command("check", epilog=examples("streams schemas check --topology topology.yaml"))
def check(registry: Registry = None, dir: Dir = None, topology: Topology = None, strategy: Strategy = "topic") -> int:
    """Test every schema against the registry under each subject's level (CI gate: exit 1 on a break)."""
    subjects = _subjects(dir, topology, strategy)
    client = _client(registry)
    failed = 0
    for subject, entry in subjects.items():
        if not _registered(client, subject):
            print(f"new        {subject} (not registered yet)")
            continue
        ok, messages = client.test_compatibility(subject, entry.text)
        level = client.compatibility(subject)
        print(f"{'ok' if ok else 'BREAKING':<10} {subject} ({level})")
        if not ok:
            failed += _print_breaking(messages)
    if failed:
        print(f"{failed} breaking change(s)")
    return 1 if failed else 0


def _print_breaking(messages: list[str]) -> int:
    for m in messages:
        print(f"           - {m}")
    return max(len(messages), 1)


@schemas.command("list", epilog=examples("streams schemas list --json"))
def list_(registry: Registry = None, json: Json = False) -> int:
    """List subjects with their latest version and id."""
    client = _client(registry)
    rows = [client.version(subject) for subject in client.subjects()]
    if json:
        return emit_json([{"subject": r.subject, "version": r.version, "id": r.id} for r in rows])
    for latest in rows:
        print(f"{latest.subject}\tversion {latest.version}\tid {latest.id}")
    return 0


@schemas.command("show", epilog=examples("streams schemas show orders.events-value --version 2"))
def show(subject: Annotated[str, typer.Argument(help="the subject, e.g. orders.events-value")],
         version: Annotated[str, typer.Option(help="version number or 'latest'")] = "latest",
         registry: Registry = None, json: Json = False) -> int:
    """Show a subject's schema."""
    found = _client(registry).version(subject, version)
    if json:
        return emit_json({"subject": found.subject, "version": found.version, "id": found.id,
                          "schema": json_.loads(found.schema)})
    print(f"# subject {found.subject}  version {found.version}  id {found.id}")
    print(json_.dumps(json_.loads(found.schema), indent=2))
    return 0
