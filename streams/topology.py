"""Topology files: which topics exist, and which processor reads what and writes what.

A topology is plain data, validated once at load. Co-partitioning is checked twice: here against the file
(every input of a processor and its changelog share one partition count), and by the worker against the
cluster, because a topic created by hand can disagree with the file.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from streams.config import GUARANTEES, parse_yaml
from streams.errors import TopologyError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CLEANUP = {"delete", "compact", "compact,delete", "delete,compact"}
# How a topic's keys are written (decoded to the entity key by the worker): UTF-8 text, Confluent-framed Avro
# (a string, or a record of one string field), or JSON (a string, or an object of one string field).
KEY_FORMATS = ("string", "avro", "json")
# The partitioner every producer of an input topic must use: Kafka's Java default (librdkafka calls it
# murmur2_random), which the engine's own producers use; ``none`` turns the worker's check off (producers that
# choose partitions themselves, by a rule of their own).
PARTITIONERS = {"murmur2": "murmur2", "murmur2_random": "murmur2", "none": "none"}
MISROUTED = ("reroute", "dlq")
# The built-in example topologies by name (``--topology orders``): package data beside each example, located
# through importlib.resources so an installed wheel finds them as a checkout does. Package names as strings:
# the engine imports no example until one is asked for.
EXAMPLES: Mapping[str, str] = MappingProxyType({"orders": "streams.examples.orders",
                                                "loan": "streams.examples.loan",
                                                "counter": "streams.examples.counter"})


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    cleanup_policy: str = "delete"
    retention_ms: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    key_format: str = "string"

    def kafka_config(self) -> dict[str, str]:
        conf = {"cleanup.policy": self.cleanup_policy, **self.config}
        if self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        return conf


@dataclass(frozen=True)
class ProcessorSpec:
    name: str
    processor: str  # a built-in name or "package.module:attribute"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    store: str
    changelog: str
    options: Mapping[str, Any] = field(default_factory=dict)
    processing_guarantee: str | None = None  # None: the worker's flag decides (default at_least_once)


@dataclass(frozen=True)
class Topology:
    name: str
    topics: Mapping[str, TopicSpec]
    processors: Mapping[str, ProcessorSpec]
    dlq_topic: str
    source: str = "<memory>"
    partitioner: str = "murmur2"
    misrouted: str = "reroute"  # what a worker does with a record on the wrong partition
    schemas: Path | None = None  # the Avro contracts (``schemas:``, relative to the file); None: the default

    def processor(self, name: str | None) -> ProcessorSpec:
        if name is None:
            if len(self.processors) != 1:
                raise TopologyError(
                    f"{self.source}: several processors ({', '.join(self.processors)}); choose one with --processor"
                )
            return next(iter(self.processors.values()))
        try:
            return self.processors[name]
        except KeyError:
            raise TopologyError(
                f"{self.source}: no processor {name!r} (have: {', '.join(self.processors)})"
            ) from None

    def key_formats(self, proc: ProcessorSpec) -> dict[str, str]:
        return {t: self.topics[t].key_format for t in proc.inputs}

    def default_group(self, proc: ProcessorSpec) -> str:
        return f"{self.name}-{proc.name}"

    def all_topics(self) -> list[TopicSpec]:
        """Declared topics plus one compacted changelog per store and the dead-letter topic."""
        out = dict(self.topics)
        for proc in self.processors.values():
            parts = self.topics[proc.inputs[0]].partitions
            repl = self.topics[proc.inputs[0]].replication
            out.setdefault(proc.changelog, TopicSpec(proc.changelog, parts, repl, "compact"))
        if self.dlq_topic not in out:
            repl = max((t.replication for t in self.topics.values()), default=1)
            out[self.dlq_topic] = TopicSpec(self.dlq_topic, 1, repl, "delete")
        return list(out.values())


def _comments(text: str) -> list[tuple[int, int]]:
    """Where the comments are: the ``#...`` runs between YAML tokens, by YAML's own rule (a ``#`` inside a value
    or a quoted string is none). Tokens, unlike a parse, also accept a ``${VAR}`` inside ``[...]`` or ``{...}``."""
    spans: list[tuple[int, int]] = []
    end = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        start = token.start_mark.index
        if start > end:
            spans += [(end + m.start(), end + m.end()) for m in re.finditer(r"#[^\n]*", text[end:start])]
        end = max(end, token.end_mark.index)
    return spans


def _expand(text: str, env: Mapping[str, str], source: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` expanded in keys and values, never in comments."""
    try:
        comments = _comments(text)
    except yaml.YAMLError:
        parse_yaml(text, source, TopologyError)  # raises the scanner's error as ours, naming line and column
        raise  # not reached: parsing scans the same tokens
    pos = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal pos
        while pos < len(comments) and comments[pos][1] <= m.start():
            pos += 1
        if pos < len(comments) and comments[pos][0] <= m.start():
            return m.group(0)
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        line, column = text.count("\n", 0, m.start()) + 1, m.start() - text.rfind("\n", 0, m.start())
        raise TopologyError(f"{source}:{line}:{column}: ${{{name}}} is not set and has no default")

    return _VAR.sub(sub, text)


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TopologyError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TopologyError(f"{where}: expected a list of topic names, got {value!r}")
    return tuple(value)


def parse(data: Any, source: str = "<memory>") -> Topology:
    """Build a validated :class:`Topology` from decoded YAML; every error names the file and the key."""
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a mapping at the top level")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise TopologyError(f"{source}: 'name' must be a topic-safe string, got {name!r}")
    raw_topics = data.get("topics") or {}
    if not isinstance(raw_topics, dict):
        raise TopologyError(f"{source}: 'topics' must map topic names to settings")
    topics: dict[str, TopicSpec] = {}
    for tname, raw in raw_topics.items():
        where = f"{source}: topics.{tname}"
        if not isinstance(tname, str) or not _NAME.match(tname):
            raise TopologyError(f"{where}: invalid topic name")
        spec = raw or {}
        if not isinstance(spec, dict):
            raise TopologyError(f"{where}: expected a mapping")
        unknown = set(spec) - {"partitions", "replication", "cleanup_policy", "retention_ms", "config", "key_format"}
        if unknown:
            raise TopologyError(f"{where}: unknown keys {sorted(unknown)}")
        cleanup = spec.get("cleanup_policy", "delete")
        if cleanup not in _CLEANUP:
            raise TopologyError(f"{where}.cleanup_policy: expected one of {sorted(_CLEANUP)}, got {cleanup!r}")
        retention = spec.get("retention_ms")
        key_format = spec.get("key_format", "string")
        if key_format not in KEY_FORMATS:
            raise TopologyError(f"{where}.key_format: expected one of {list(KEY_FORMATS)}, got {key_format!r}")
        topics[tname] = TopicSpec(
            name=tname,
            partitions=_int(spec.get("partitions", 1), f"{where}.partitions"),
            replication=_int(spec.get("replication", 1), f"{where}.replication"),
            cleanup_policy=cleanup,
            retention_ms=None if retention is None else _int(retention, f"{where}.retention_ms", -1),
            config={str(k): str(v) for k, v in (spec.get("config") or {}).items()},
            key_format=key_format,
        )
    raw_procs = data.get("processors") or {}
    if not isinstance(raw_procs, dict) or not raw_procs:
        raise TopologyError(f"{source}: 'processors' must declare at least one processor")
    procs: dict[str, ProcessorSpec] = {}
    for pname, spec in raw_procs.items():
        where = f"{source}: processors.{pname}"
        if not isinstance(spec, dict) or not isinstance(spec.get("processor"), str):
            raise TopologyError(f"{where}: needs 'processor' (a built-in name or module:attribute)")
        inputs = _names(spec.get("inputs"), f"{where}.inputs")
        outputs = _names(spec.get("outputs", []), f"{where}.outputs")
        if not inputs:
            raise TopologyError(f"{where}.inputs: at least one input topic")
        for t in inputs + outputs:
            if t not in topics:
                raise TopologyError(f"{where}: topic {t!r} is not declared under 'topics'")
        counts = {t: topics[t].partitions for t in inputs}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{t}={n}" for t, n in counts.items())
            raise TopologyError(f"{where}: inputs are not co-partitioned ({detail})")
        store = spec.get("store", pname)
        if not isinstance(store, str) or not _NAME.match(store):
            raise TopologyError(f"{where}.store: invalid store name {store!r}")
        changelog = f"{name}-{store}-changelog"
        if changelog in topics and topics[changelog].partitions != counts[inputs[0]]:
            raise TopologyError(
                f"{where}: changelog {changelog} has {topics[changelog].partitions} partitions, "
                f"inputs have {counts[inputs[0]]}"
            )
        options = spec.get("options") or {}
        if not isinstance(options, dict):
            raise TopologyError(f"{where}.options: expected a mapping")
        guarantee = spec.get("processing_guarantee")
        if guarantee is not None and guarantee not in GUARANTEES:
            raise TopologyError(f"{where}.processing_guarantee: expected one of {', '.join(GUARANTEES)}, "
                                f"got {guarantee!r}")
        procs[pname] = ProcessorSpec(pname, spec["processor"], inputs, outputs, store, changelog, options,
                                     guarantee)
    dlq = data.get("dlq_topic", f"{name}.dlq")
    if not isinstance(dlq, str) or not _NAME.match(dlq):
        raise TopologyError(f"{source}: invalid dlq_topic {dlq!r}")
    partitioner = data.get("partitioner", "murmur2")
    if partitioner not in PARTITIONERS:
        raise TopologyError(f"{source}: partitioner: expected one of {sorted(PARTITIONERS)}, got {partitioner!r}")
    misrouted = data.get("misrouted", "reroute")
    if misrouted not in MISROUTED:
        raise TopologyError(f"{source}: misrouted: expected one of {list(MISROUTED)}, got {misrouted!r}")
    schemas = _schemas(data.get("schemas"), source)
    if schemas is not None:  # every processor's serde reads them, unless its own options name others
        procs = {n: p if "schemas" in p.options else
                 ProcessorSpec(p.name, p.processor, p.inputs, p.outputs, p.store, p.changelog,
                               {**p.options, "schemas": str(schemas)}) for n, p in procs.items()}
    return Topology(name=name, topics=topics, processors=procs, dlq_topic=dlq, source=source, schemas=schemas,
                    partitioner=PARTITIONERS[partitioner], misrouted=misrouted)


def _schemas(value: Any, source: str) -> Path | None:
    """The ``schemas:`` directory, relative to the topology file so a project carries its contracts beside it."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TopologyError(f"{source}: 'schemas' must be a directory path, got {value!r}")
    base = Path(source).parent if source != "<memory>" else Path.cwd()
    path = (base / value).resolve()
    if not path.is_dir():
        raise TopologyError(f"{source}: schemas: {path} is not a directory")
    return path


def locate(ref: str | Path) -> Path:
    """The file a ``--topology`` names: a path, or the name of a built-in example (when no such file exists)."""
    path = Path(ref)
    if isinstance(ref, str) and ref in EXAMPLES and not path.exists():
        return Path(str(importlib.resources.files(EXAMPLES[ref]).joinpath("topology.yaml")))
    return path


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Topology:
    """Load a topology file (or a built-in example by name: :data:`EXAMPLES`), expanding ``${VAR}`` and
    ``${VAR:-default}`` from the environment."""
    p = locate(path)
    try:
        text = p.read_text()
    except OSError as exc:
        builtin = f" (nor a built-in: {', '.join(EXAMPLES)})" if p.parent == Path() else ""
        raise TopologyError(f"cannot read topology {p}: {exc.strerror}{builtin}") from exc
    data = parse_yaml(_expand(text, os.environ if env is None else env, str(p)), str(p), TopologyError)
    return parse(data, str(p))
