"""Avro schema JSON, handled as data: canonical form, named-type extraction, self-contained expansion.

Why our own and not the parsers': the registry must tell "byte-different but the same schema" apart from a real
change (so canonical form keeps defaults, docs and aliases, unlike Avro's Parsing Canonical Form, which drops the
defaults that schema resolution depends on), and a schema sent to a registry must be self-contained, while our
``.avsc`` files reference each other's named types by name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streams.errors import ConfigError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

Json = Any  # a schema as parsed JSON: str | list | dict


def _qualify(name: str, namespace: str) -> str:
    if name in PRIMITIVES or "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _space(fullname: str) -> str:
    return fullname.rpartition(".")[0]


def canonical(schema: Json, namespace: str = "") -> Json:
    """The schema with every name fully qualified, no ``namespace`` keys and primitives in short form.

    Two schemas are the same schema exactly when their canonical texts are equal.
    """
    if isinstance(schema, str):
        return _qualify(schema, namespace)
    if isinstance(schema, list):
        return [canonical(s, namespace) for s in schema]
    if not isinstance(schema, dict):
        raise ValueError(f"a schema must be a string, list or object, not {type(schema).__name__}")
    kind = schema.get("type")
    if isinstance(kind, (list, dict)):  # {"type": {...}} wraps a type
        if len(schema) == 1:
            return canonical(kind, namespace)
        return {**schema, "type": canonical(kind, namespace)}
    if not isinstance(kind, str):
        raise ValueError(f"schema object without a string 'type': {json.dumps(schema)[:80]}")
    if kind in NAMED:
        name = schema.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} without a name")
        ns = schema.get("namespace")
        full = name if "." in name else _qualify(name, ns if isinstance(ns, str) else namespace)
        inner = _space(full)
        out = {k: v for k, v in schema.items() if k != "namespace"}
        out["name"] = full
        if isinstance(schema.get("aliases"), list):
            out["aliases"] = [_qualify(a, inner) for a in schema["aliases"] if isinstance(a, str)]
        if kind in ("record", "error"):
            fields = schema.get("fields")
            if not isinstance(fields, list):
                raise ValueError(f"record {full} has no 'fields' list")
            out["fields"] = [_field(f, inner, full) for f in fields]
        return out
    if kind == "array":
        return {**schema, "items": canonical(schema.get("items"), namespace)}
    if kind == "map":
        return {**schema, "values": canonical(schema.get("values"), namespace)}
    if len(schema) == 1:
        return _qualify(kind, namespace)  # {"type": "string"} is "string"; {"type": "Name"} a reference
    return {**schema, "type": _qualify(kind, namespace)}  # e.g. a logical type


def _field(field: Json, namespace: str, record: str) -> Json:
    if not isinstance(field, dict) or not isinstance(field.get("name"), str) or "type" not in field:
        raise ValueError(f"record {record}: every field needs a 'name' and a 'type'")
    return {**field, "type": canonical(field["type"], namespace)}


def canonical_text(schema: Json) -> str:
    """Canonical form as compact JSON with sorted keys: what the registry stores, compares and hashes."""
    return json.dumps(canonical(schema), sort_keys=True, separators=(",", ":"))


def fingerprint(text: str) -> str:
    """A short stable hash of a canonical text."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def named_types(schema: Json) -> dict[str, Json]:
    """Every named type defined in a canonical schema, each with nested definitions replaced by references."""
    defs: dict[str, Json] = {}

    def flat(node: Json) -> Json:
        if isinstance(node, list):
            return [flat(n) for n in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in NAMED:
            out = dict(node)
            if "fields" in node:
                out["fields"] = [{**f, "type": flat(f["type"])} for f in node["fields"]]
            name = node["name"]
            if name in defs and defs[name] != out:
                raise ValueError(f"{name} is defined twice, differently")
            defs[name] = out
            return name
        if kind == "array":
            return {**node, "items": flat(node["items"])}
        if kind == "map":
            return {**node, "values": flat(node["values"])}
        return node

    flat(schema)
    return defs


def standalone(root: str | Iterable[str], defs: Mapping[str, Json]) -> Json:
    """A self-contained schema for a named type (or a union of them): each referenced named type is defined inline
    at its first use, depth first, and referenced by name after that, as the Avro spec requires."""
    return inline(root if isinstance(root, str) else list(root), defs)


def inline(schema: Json, defs: Mapping[str, Json]) -> Json:
    """A canonical schema with every name it uses but does not define replaced by its definition from ``defs`` at
    the first use (how a schema registered with references becomes self-contained)."""
    seen: set[str] = set()

    def expand(node: Json) -> Json:
        if isinstance(node, str):
            if node in defs and node not in seen:
                seen.add(node)
                return expand(defs[node])
            return node
        if isinstance(node, list):
            return [expand(n) for n in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("record", "error"):
            seen.add(node["name"])
            return {**node, "fields": [{**f, "type": expand(f["type"])} for f in node["fields"]]}
        if kind in NAMED:
            seen.add(node["name"])
            return node
        if kind == "array":
            return {**node, "items": expand(node["items"])}
        if kind == "map":
            return {**node, "values": expand(node["values"])}
        return node

    return expand(schema)


Ref = tuple[str, str, int]  # a schema reference: (the type's name, subject, version), as Confluent's API has it
Fetch = Callable[[str, int], tuple[str, Sequence[Ref]]]  # (subject, version) -> (schema text, its references)


def resolve(schema: Json, refs: Sequence[Ref], fetch: Fetch) -> Json:
    """A self-contained canonical schema for ``schema`` registered with references ``refs``: the named types the
    referenced schemas define (and theirs, transitively) inlined where ``schema`` first uses them. ValueError names
    a type left unresolved or defined differently by two references."""
    defs: dict[str, Json] = {}
    done: set[tuple[str, int]] = set()

    def collect(found: Sequence[Ref]) -> None:
        for _name, subject, version in found:
            if (subject, version) in done:
                continue
            done.add((subject, version))
            text, nested = fetch(subject, version)
            collect(nested)
            for name, definition in named_types(canonical(json.loads(text))).items():
                if defs.setdefault(name, definition) != definition:
                    raise ValueError(f"{name} is defined differently by two referenced schemas")

    collect(refs)
    out = inline(canonical(schema), defs)
    missing = references(out)
    if missing:
        raise ValueError(f"unknown type(s) {', '.join(sorted(missing))}: neither defined nor referenced")
    return out


def references(schema: Json) -> set[str]:
    """Names a canonical schema refers to without defining them (must be empty for a self-contained schema)."""
    defined = set(named_types(schema))
    used: set[str] = set()

    def walk(node: Json) -> None:
        if isinstance(node, str):
            if node not in PRIMITIVES:
                used.add(node)
        elif isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error"):
                for f in node["fields"]:
                    walk(f["type"])
            elif kind == "array":
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])
            elif isinstance(kind, str) and kind not in NAMED:
                walk(kind)

    walk(schema)
    return used - defined


TIME_TYPES = frozenset({
    "date", "time-millis", "time-micros", "timestamp-millis", "timestamp-micros",
    "local-timestamp-millis", "local-timestamp-micros",
})


def without_time_types(schema: Json) -> Json:
    """The schema with date/time logical types removed: same bytes on the wire, read back as plain ints."""
    if isinstance(schema, list):
        return [without_time_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") in TIME_TYPES:
        rest = {k: v for k, v in schema.items() if k != "logicalType"}
        return rest["type"] if len(rest) == 1 else rest
    out = dict(schema)
    if isinstance(schema.get("fields"), list):
        out["fields"] = [{**f, "type": without_time_types(f["type"])} for f in schema["fields"]]
    for key in ("items", "values", "type"):
        if isinstance(schema.get(key), (list, dict)):
            out[key] = without_time_types(schema[key])
    return out


def type_name(schema: Json) -> str:
    """The name a decoded value is reported under: a named type's full name, else its type."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        if schema.get("type") in NAMED:
            return str(schema["name"])
        return type_name(schema.get("type"))
    return "union"


def load_json(path: str) -> Json:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read schema file {path}: {exc}") from exc
