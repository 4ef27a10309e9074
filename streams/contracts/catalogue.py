"""The schema catalogue: every ``.avsc`` under a directory, loaded and parsed once.

Files reference each other's named types by full name (``streams.orders.LineItem``); the catalogue resolves those
references and keeps, for each named type, a self-contained schema: the JSON a registry gets, its canonical text,
and fastavro's parsed form that encoders and decoders use on the hot path. ``subjects.yaml`` next to the schemas
says which records travel on which topic (see that file). Files under an ``evolution/`` directory are candidate
future versions and never live; load them explicitly with ``overrides``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from streams.config import parse_yaml
from streams.contracts.avsc import (
    Json,
    canonical,
    canonical_text,
    load_json,
    named_types,
    references,
    standalone,
)
from streams.errors import ConfigError

SUBJECTS_FILE = "subjects.yaml"
# The records the engine itself writes (the envelope, TimerFired, the generic WorkflowState), shipped beside this
# module and part of every catalogue, so a project's schema directory holds only its own contracts. A directory
# may still carry copies: an identical definition is not a conflict.
COMMON_DIR = Path(str(importlib.resources.files("streams.contracts").joinpath("common")))
STRATEGIES = ("topic", "record")


@dataclass(frozen=True)
class SchemaEntry:
    """One registrable schema: a named type, or the union a multi-record topic is registered as."""

    name: str
    schema: Json  # self-contained, canonical JSON
    text: str  # canonical text: what is registered and compared
    parsed: Any = field(repr=False)  # fastavro's parsed schema
    branches: tuple[str, ...] = ()  # for a union: its records' full names, in branch order


def parse(schema: Json) -> Any:
    """fastavro's parsed form of a self-contained schema; our error if it is not valid Avro."""
    try:
        return parse_schema(schema)
    except Exception as exc:  # fastavro raises several unrelated types for invalid schemas
        raise ConfigError(f"invalid Avro schema: {exc}") from exc


def entry(name: str, schema: Json, branches: tuple[str, ...] = ()) -> SchemaEntry:
    return SchemaEntry(name, schema, canonical_text(schema), parse(schema), branches)


class Catalogue:
    """Named types by full name, plus the topic → records mapping; immutable once loaded."""

    def __init__(self, definitions: Mapping[str, Json], topics: Mapping[str, Sequence[str]] | None = None,
                 messages: Iterable[str] | None = None, source: str = "") -> None:
        self.source = source
        self._defs = dict(definitions)
        self._entries: dict[str, SchemaEntry] = {}
        for name in self._defs:
            schema = standalone(name, self._defs)
            missing = references(schema)
            if missing:
                raise ConfigError(f"{source or 'catalogue'}: {name} references unknown type(s) {sorted(missing)}")
            self._entries[name] = entry(name, schema)
        self.topics: dict[str, tuple[str, ...]] = {}
        for topic, names in (topics or {}).items():
            self.topics[topic] = tuple(self.resolve(n) for n in names)
        listed = [n for names in self.topics.values() for n in names]
        self.messages: tuple[str, ...] = tuple(dict.fromkeys(
            [self.resolve(n) for n in messages] if messages is not None else listed
        ))
        self._unions: dict[str, SchemaEntry] = {}

    # -- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path, overrides: Iterable[str | Path] = ()) -> Catalogue:
        """The engine's own records (:data:`COMMON_DIR`), every ``*.avsc`` under ``directory`` (but not under
        ``evolution/``), then ``overrides``, whose named types replace the live ones of the same name (how a test
        or a CI check tries a future version)."""
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(f"schema directory {root} does not exist")
        files = sorted(p for p in root.rglob("*.avsc") if "evolution" not in p.relative_to(root).parts)
        if not files:
            raise ConfigError(f"no .avsc files under {root}")
        defs = _definitions([*sorted(COMMON_DIR.glob("*.avsc")), *files], replace=False)
        defs.update(_definitions([Path(p) for p in overrides], replace=True))
        topics: dict[str, list[str]] = {}
        messages: list[str] | None = None
        subjects = root / SUBJECTS_FILE
        if subjects.is_file():
            topics = _read_topics(subjects)
        else:  # without a mapping every file's top-level record is a message
            messages = [n for p in files for n in [_top_name(p)] if defs.get(n, {}).get("type") == "record"]
        return cls(defs, topics, messages, source=str(root))

    def with_record(self, schema: Json, topic: str) -> Catalogue:
        """This catalogue plus one record that travels alone on ``topic``: how a workflow's derived state record
        joins its contracts. Its named types must be new or defined identically; it may reference the others."""
        schema = canonical(schema)
        found = named_types(schema)
        for name, definition in found.items():
            if name in self._defs and self._defs[name] != definition:
                raise ConfigError(f"{self.source or 'catalogue'}: {name} is already defined differently (a "
                                  f"schema file defines it); the engine derives it for topic {topic}: delete the file")
        top = str(schema["name"])
        topics = {**self.topics, topic: (top,)}
        messages = list(self.messages) if top in self.messages else [*self.messages, top]
        return Catalogue({**self._defs, **found}, topics, messages, source=self.source)

    # -- lookup ----------------------------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether ``name`` (full, or short and unambiguous) names a schema here."""
        return name in self._entries or sum(n.rpartition(".")[2] == name for n in self._entries) == 1

    def resolve(self, name: str) -> str:
        """A full name for ``name``; a short name is accepted when exactly one namespace defines it."""
        if name in self._entries:
            return name
        matches = [n for n in self._entries if n.rpartition(".")[2] == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(f"record name {name!r} is ambiguous: {', '.join(sorted(matches))}")
        raise ConfigError(f"no schema named {name!r} in {self.source or 'the catalogue'}")

    def get(self, name: str) -> SchemaEntry:
        return self._entries[self.resolve(name)]

    def find(self, name: str) -> SchemaEntry | None:
        """The entry of a full name, or None: decoders use it to pick a reader schema, never guessing."""
        return self._entries.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def topic_entry(self, topic: str) -> SchemaEntry | None:
        """The schema registered as ``<topic>-value`` under the topic strategy: its record, or the union of its
        records (the topic's reader contract)."""
        names = self.topics.get(topic)
        if not names:
            return None
        if len(names) == 1:
            return self._entries[names[0]]
        if topic not in self._unions:
            self._unions[topic] = entry(f"{topic}-value", standalone(names, self._defs), names)
        return self._unions[topic]

    def subject(self, topic: str, name: str, strategy: str) -> str:
        """The subject records named ``name`` are written with on ``topic``: ``record``: the full name (Confluent's
        RecordNameStrategy); ``topic``: ``<topic>-value`` (TopicNameStrategy) for a topic of one record type,
        ``<topic>-<full name>`` (TopicRecordNameStrategy) for a topic that carries several."""
        full = self.resolve(name)
        if strategy == "record":
            return full
        if strategy == "topic":
            return f"{topic}-{full}" if len(self.topics.get(topic, ())) > 1 else f"{topic}-value"
        raise ConfigError(f"unknown subject strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")

    def subjects(self, strategy: str) -> dict[str, SchemaEntry]:
        """Subject → schema for every message, as ``streams schemas register`` registers them. With ``topic``, a
        multi-type topic also gets the union of its records under ``<topic>-value``: no record is written with it,
        but it is the reader schema of ``use.latest.version`` consumers and tells the registry which records a
        stock producer (TopicNameStrategy) may send to the topic (see docs/adopting.md)."""
        if strategy == "record":
            return {n: self._entries[n] for n in self.messages}
        if strategy == "topic":
            out: dict[str, SchemaEntry] = {}
            for topic, names in self.topics.items():
                union = self.topic_entry(topic)
                if union is not None:
                    out[f"{topic}-value"] = union
                if len(names) > 1:
                    out.update({self.subject(topic, n, strategy): self._entries[n] for n in names})
            return out
        raise ConfigError(f"unknown subject strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")


def _top_name(path: Path) -> str:
    raw = canonical(_load(path))
    return str(raw.get("name", "")) if isinstance(raw, dict) else ""


def _load(path: Path) -> Json:
    return load_json(str(path))


def _definitions(files: Iterable[Path], replace: bool) -> dict[str, Json]:
    defs: dict[str, Json] = {}
    origin: dict[str, Path] = {}
    for path in files:
        try:
            found = named_types(canonical(_load(path)))
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not found:
            raise ConfigError(f"{path}: defines no named type (a schema file must hold a record, enum or fixed)")
        for name, definition in found.items():
            if not replace and name in defs and defs[name] != definition:
                raise ConfigError(f"{name} is defined differently in {origin[name]} and {path}")
            defs[name] = definition
            origin[name] = path
    return defs


def _read_topics(path: Path) -> dict[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    doc = parse_yaml(text, str(path)) or {}
    topics = doc.get("topics") if isinstance(doc, dict) else None
    if not isinstance(topics, dict):
        raise ConfigError(f"{path}: expected a 'topics:' mapping of topic -> list of record names")
    out: dict[str, list[str]] = {}
    for topic, names in topics.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: topic {topic!r} needs a non-empty list of record names")
        out[str(topic)] = names
    return out
