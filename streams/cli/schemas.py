"""``streams schemas register|check|list|show``: put the contracts (``--dir``) into the registry, and gate CI.

``check`` exits 1 when a local schema breaks its subject's compatibility level, printing one line per breaking
field; 2 for a usage or connection problem; 0 when every schema may be registered.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Annotated, Any

import orjson
import typer

from streams.cli.common import OPERATE, BadValue, choice, examples, flag, namespace, one_of
from streams.cli.progress import progress
from streams.contracts import LEVELS, STRATEGIES, Catalogue, RegistryClient, RegistrySettings
from streams.contracts.catalogue import SchemaEntry
from streams.errors import IncompatibleSchemaError, SchemaRegistryError
from streams.processors.avro import default_schemas
from streams.progress import Progress
from streams.topology import load

Registry = Annotated[str | None, typer.Option(help="schema registry URL (default: $SCHEMA_REGISTRY_URL or "
                                               "http://127.0.0.1:8081)", rich_help_panel="Connection")]
Dir = Annotated[str | None, typer.Option(help="schema directory (default: the order-saga example's contracts)",
                                         rich_help_panel="Contracts")]
Topology = Annotated[str | None, typer.Option(help="the contracts a topology names (its schemas: key), e.g. a "
                                              "project's", rich_help_panel="Contracts")]
Strategy = Annotated[str, typer.Option(
    parser=choice(*STRATEGIES), metavar=one_of(*STRATEGIES), rich_help_panel="Contracts",
    help="subject naming: topic (default) = <topic>-value, and for a topic carrying several record types "
         "<topic>-<record full name> plus their union as <topic>-value; record = record full name")]
Json = Annotated[bool, flag("--json", "print JSON (one object per subject) instead of text")]


def add(app: typer.Typer) -> None:
    schemas = typer.Typer(help="Register, check, list or show schemas in the registry.", no_args_is_help=True,
                          epilog=examples("streams schemas register --topology topology.yaml",
                                          "streams schemas check --dir schemas/   # the CI gate"))
    app.add_typer(schemas, name="schemas", rich_help_panel=OPERATE)

    @schemas.command("register", epilog=examples("streams schemas register --dry-run",
                                                 "streams schemas register --compatibility FULL_TRANSITIVE"))
    def register_(
        dry_run: Annotated[bool, flag("--dry-run", "say what would be registered, change nothing")] = False,
        compatibility: Annotated[str | None, typer.Option(parser=choice(*LEVELS, upper=True), metavar="LEVEL",
                                                          help="also set this compatibility level on every subject: "
                                                               + ", ".join(LEVELS))] = None,
        registry: Registry = None, dir: Dir = None, topology: Topology = None,
        strategy: Strategy = "topic",
    ) -> int:
        """Register every schema under its subject (idempotent)."""
        return register(_args(registry=registry, dir=dir, topology=topology, strategy=strategy, dry_run=dry_run,
                              compatibility=compatibility))

    @schemas.command("check", epilog=examples("streams schemas check --topology topology.yaml"))
    def check_(registry: Registry = None, dir: Dir = None, topology: Topology = None,
               strategy: Strategy = "topic") -> int:
        """Test every schema against the registry under each subject's level (CI gate: exit 1 on a break)."""
        return check(_args(registry=registry, dir=dir, topology=topology, strategy=strategy))

    @schemas.command("list", epilog=examples("streams schemas list --json"))
    def list_cmd(registry: Registry = None, json: Json = False) -> int:
        """List subjects with their latest version and id."""
        return list_(namespace(registry=registry, json=json))

    @schemas.command("show", epilog=examples("streams schemas show orders.events-value --version 2"))
    def show_(subject: Annotated[str, typer.Argument(help="the subject, e.g. orders.events-value")],
              version: Annotated[str, typer.Option(help="version number or 'latest'")] = "latest",
              registry: Registry = None, json: Json = False) -> int:
        """Show a subject's schema."""
        return show(namespace(subject=subject, version=version, registry=registry, json=json))


def _args(**values: Any) -> argparse.Namespace:
    if values["dir"] and values["topology"]:
        raise BadValue("not allowed with argument --topology", param_hint="--dir")
    return namespace(**values)


def _catalogue(args: argparse.Namespace) -> Catalogue:
    if args.topology:
        return Catalogue.load(load(args.topology).schemas or default_schemas())
    return Catalogue.load(args.dir or default_schemas())


def _client(args: argparse.Namespace) -> RegistryClient:
    return RegistryClient(RegistrySettings.from_env(args.registry))


def _registered(client: RegistryClient, subject: str) -> bool:
    try:
        client.versions(subject)
    except SchemaRegistryError as exc:
        if exc.code == 40401:
            return False
        raise
    return True


def register(args: argparse.Namespace) -> int:
    subjects = _catalogue(args).subjects(args.strategy)
    client = _client(args)
    with progress() as bar:
        bar.phase(f"{'checking' if args.dry_run else 'registering'} {len(subjects)} subjects", len(subjects))
        return _register(args, client, subjects, bar)


def _register(args: argparse.Namespace, client: RegistryClient, subjects: dict[str, SchemaEntry], bar: Progress) -> int:
    failed = 0
    for i, (subject, entry) in enumerate(subjects.items()):
        bar.advance(i)
        if args.dry_run:
            if not _registered(client, subject):
                print(f"new        {subject}")
                continue
            try:
                found = client.lookup(subject, entry.text)
                print(f"unchanged  {subject} (version {found.version}, id {found.id})")
                continue
            except SchemaRegistryError as exc:
                if exc.code != 40403:
                    raise
            ok, messages = client.test_compatibility(subject, entry.text)
            print(f"{'changed' if ok else 'BREAKING':<10} {subject}")
            if not ok:
                failed += _print_breaking(messages)
            continue
        if args.compatibility:
            client.set_compatibility(args.compatibility, subject)
        try:
            schema_id = client.register(subject, entry.text)
        except IncompatibleSchemaError as exc:
            print(f"BREAKING   {subject}: {exc}")
            failed += 1
            continue
        print(f"ok         {subject} (id {schema_id})")
    return 1 if failed else 0


def check(args: argparse.Namespace) -> int:
    subjects = _catalogue(args).subjects(args.strategy)
    client = _client(args)
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


def list_(args: argparse.Namespace) -> int:
    client = _client(args)
    rows = [client.version(subject) for subject in client.subjects()]
    if args.json:
        sys.stdout.write(orjson.dumps([{"subject": r.subject, "version": r.version, "id": r.id} for r in rows])
                         .decode() + "\n")
        return 0
    for latest in rows:
        print(f"{latest.subject}\tversion {latest.version}\tid {latest.id}")
    return 0


def show(args: argparse.Namespace) -> int:
    found = _client(args).version(args.subject, args.version)
    if args.json:
        sys.stdout.write(orjson.dumps({"subject": found.subject, "version": found.version, "id": found.id,
                                       "schema": json.loads(found.schema)}).decode() + "\n")
        return 0
    print(f"# subject {found.subject}  version {found.version}  id {found.id}")
    print(json.dumps(json.loads(found.schema), indent=2))
    return 0
