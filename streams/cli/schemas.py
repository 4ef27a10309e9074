"""``streams schemas register|check|list|show``: put the contracts (``--dir``) into the registry, and gate CI.

``check`` exits 1 when a local schema breaks its subject's compatibility level, printing one line per breaking
field; 2 for a usage or connection problem; 0 when every schema may be registered.
"""

from __future__ import annotations

import argparse
import json

from streams.contracts import LEVELS, STRATEGIES, Catalogue, RegistryClient, RegistrySettings
from streams.errors import IncompatibleSchemaError, SchemaRegistryError
from streams.processors.avro import default_schemas
from streams.topology import load


def _common(p: argparse.ArgumentParser, catalogue: bool = True) -> None:
    p.add_argument("--registry", help="schema registry URL (default: $SCHEMA_REGISTRY_URL or http://127.0.0.1:8081)")
    if catalogue:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--dir", help="schema directory (default: the order-saga example's contracts)")
        where.add_argument("--topology", help="the contracts a topology names (its schemas: key), e.g. a project's")
        p.add_argument("--strategy", choices=STRATEGIES, default="topic",
                       help="subject naming: topic (default) = <topic>-value, and for a topic carrying several "
                            "record types <topic>-<record full name> plus their union as <topic>-value; "
                            "record = record full name")


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schemas", help="register, check, list or show schemas in the registry")
    ssub = p.add_subparsers(dest="schemas_cmd", metavar="ACTION")
    ssub.required = True
    r = ssub.add_parser("register", help="register every schema under its subject (idempotent)")
    _common(r)
    r.add_argument("--dry-run", action="store_true", help="say what would be registered, change nothing")
    r.add_argument("--compatibility", choices=LEVELS, type=str.upper,
                   help="also set this compatibility level on every subject")
    r.set_defaults(func=register)
    c = ssub.add_parser("check", help="test every schema against the registry under each subject's level (CI gate)")
    _common(c)
    c.set_defaults(func=check)
    ls = ssub.add_parser("list", help="list subjects with their latest version and id")
    _common(ls, catalogue=False)
    ls.set_defaults(func=list_)
    s = ssub.add_parser("show", help="show a subject's schema")
    s.add_argument("subject")
    s.add_argument("--version", default="latest", help="version number or 'latest' (default)")
    _common(s, catalogue=False)
    s.set_defaults(func=show)


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
    failed = 0
    for subject, entry in subjects.items():
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
    for subject in client.subjects():
        latest = client.version(subject)
        print(f"{subject}\tversion {latest.version}\tid {latest.id}")
    return 0


def show(args: argparse.Namespace) -> int:
    found = _client(args).version(args.subject, args.version)
    print(f"# subject {found.subject}  version {found.version}  id {found.id}")
    print(json.dumps(json.loads(found.schema), indent=2))
    return 0
