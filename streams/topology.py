"""Topology files: which topics exist, and which processor reads what and writes what.

A topology is plain data, validated once at load. Co-partitioning is checked twice: here against the file
(every input of a processor and its changelog share one partition count), and by the worker against the
cluster, because a topic created by hand can disagree with the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.config import GUARANTEES
from streams.errors import TopologyError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CLEANUP = {"delete", "compact", "compact,delete", "delete,compact"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    cleanup_policy: str = "delete"
    retention_ms: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

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


def _expand(text: str, env: Mapping[str, str], source: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise TopologyError(f"{source}: ${{{name}}} is not set and has no default")

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
        unknown = set(spec) - {"partitions", "replication", "cleanup_policy", "retention_ms", "config"}
        if unknown:
            raise TopologyError(f"{where}: unknown keys {sorted(unknown)}")
        cleanup = spec.get("cleanup_policy", "delete")
        if cleanup not in _CLEANUP:
            raise TopologyError(f"{where}.cleanup_policy: expected one of {sorted(_CLEANUP)}, got {cleanup!r}")
        retention = spec.get("retention_ms")
        topics[tname] = TopicSpec(
            name=tname,
            partitions=_int(spec.get("partitions", 1), f"{where}.partitions"),
            replication=_int(spec.get("replication", 1), f"{where}.replication"),
            cleanup_policy=cleanup,
            retention_ms=None if retention is None else _int(retention, f"{where}.retention_ms", -1),
            config={str(k): str(v) for k, v in (spec.get("config") or {}).items()},
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
    return Topology(name=name, topics=topics, processors=procs, dlq_topic=dlq, source=source)


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Topology:
    """Load a topology file, expanding ``${VAR}`` and ``${VAR:-default}`` from the environment."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read topology {p}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(_expand(text, os.environ if env is None else env, str(p)))
    except yaml.YAMLError as exc:
        raise TopologyError(f"{p}: not valid YAML: {exc}".splitlines()[0]) from exc
    return parse(data, str(p))
