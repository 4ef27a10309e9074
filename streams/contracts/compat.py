"""Compatibility levels, decided by Apache Avro's checker, explained field by field.

The verdict is ``avro.compatibility.ReaderWriterCompatibilityChecker``'s. Its report, though, merges messages and
locations into two unpaired sets and loses the location inside unions, so the explanation is rebuilt here: each
reported location is walked through the reader and writer schemas to name the breaking field
(``streams.orders.OrderPlaced.items[].sku``), and a union of records (a multi-record topic) is compared branch by
branch, matched by name as Avro's resolution matches them.

Directions, as Confluent defines them: BACKWARD = the new schema reads data written with the old one;
FORWARD = old schemas read data written with the new one; FULL = both. ``*_TRANSITIVE`` checks every live
version instead of only the latest. Removing a field is BACKWARD compatible (the new reader ignores it); only
FORWARD/FULL reject removing a field that has no default, because old readers need it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType, lookup_writer_field

from streams.errors import SchemaRegistryError

LEVELS = (
    "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE",
)
DEFAULT_LEVEL = "BACKWARD"


def parse_level(value: object) -> str:
    level = value.upper() if isinstance(value, str) else ""
    if level not in LEVELS:
        raise SchemaRegistryError(
            f"Invalid compatibility level {value!r}. Valid values are {', '.join(LEVELS)}", 42203, 422
        )
    return level


# Bounds on one schema, so that parsing and checking it is bounded work (a 422 names the bound it passed).
MAX_SCHEMA_CHARS = 1 << 20
MAX_DEPTH = 64
MAX_SYMBOLS = 100_000
MAX_BRANCHES = 1_000
MAX_FIELDS = 10_000


def check_bounds(text: str, doc: Any) -> None:
    """A 42201 naming the limit if the schema ``doc`` (parsed from ``text``) is too big to accept."""
    def refuse(what: str, limit: int) -> SchemaRegistryError:
        return SchemaRegistryError(f"Invalid schema: {what} exceeds the limit of {limit}", 42201, 422)

    if len(text) > MAX_SCHEMA_CHARS:
        raise refuse(f"the schema's {len(text)} characters", MAX_SCHEMA_CHARS)
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise refuse("its nesting depth", MAX_DEPTH)
        if isinstance(node, list):
            if len(node) > MAX_BRANCHES:
                raise refuse(f"a union of {len(node)} branches", MAX_BRANCHES)
            stack.extend((n, depth + 1) for n in node)
        elif isinstance(node, dict):
            symbols, fields = node.get("symbols"), node.get("fields")
            if isinstance(symbols, list) and len(symbols) > MAX_SYMBOLS:
                raise refuse(f"an enum of {len(symbols)} symbols", MAX_SYMBOLS)
            if isinstance(fields, list) and len(fields) > MAX_FIELDS:
                raise refuse(f"a record of {len(fields)} fields", MAX_FIELDS)
            stack.extend((node[k], depth + 1) for k in ("type", "items", "values") if k in node)
            if isinstance(fields, list):
                stack.extend((f, depth + 1) for f in fields)


def parse_avro(text: str) -> avro.schema.Schema:
    """The Apache parser's view of a schema (what the checker needs); 42201 if it is not valid Avro."""
    try:
        return avro.schema.parse(text)
    except Exception as exc:  # avro raises SchemaParseException, AvroException, TypeError, ... on bad input
        raise SchemaRegistryError(f"Invalid schema: {exc}", 42201, 422) from exc


def breaking(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; empty when it can."""
    r_branches, w_branches = branches(reader), branches(writer)
    if r_branches is not None and w_branches is not None:
        out: list[str] = []
        for name, w in w_branches.items():
            r = r_branches.get(name)
            if r is None:
                out.append(f"{name}: the reader union has no branch for this writer type")
            else:
                out.extend(_pair(r, w))
        return out
    return _pair(reader, writer)


def check(level: str, new: avro.schema.Schema, existing: Sequence[tuple[int, avro.schema.Schema]]) -> list[str]:
    """Messages explaining why ``new`` breaks ``level`` against ``existing`` (version, schema), oldest first."""
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    out: list[str] = []
    for version, old in reversed(against):
        if level.startswith(("BACKWARD", "FULL")):
            out += [f"new schema cannot read data written with version {version}: {m}" for m in breaking(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            out += [f"version {version} cannot read data written with the new schema: {m}"
                    for m in breaking(old, new)]
    return out


def branches(schema: avro.schema.Schema) -> dict[str, avro.schema.Schema] | None:
    """A union whose branches are all named, by full name; else None."""
    if not isinstance(schema, avro.schema.UnionSchema):
        return None
    named = {getattr(s, "fullname", None): s for s in schema.schemas}
    if None in named:
        return None
    return {str(k): v for k, v in named.items()}


def _pair(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)  # type: ignore[no-untyped-call]
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    # "/" is noise from merging with compatible results, or a location the checker lost inside a writer union
    explained = [m for loc in sorted(result.locations - {"/"}) if (m := _explain(reader, writer, loc))]
    return explained + [m for m in sorted(result.messages) if not _covered(m, explained)]


def _covered(raw: str, explained: list[str]) -> bool:
    """Whether one of the checker's (unpaired) messages is already said, with its field, by an explanation.
    Linear in the size of the messages: an enum of many symbols must not make the check quadratic."""
    text = " ".join(explained).lower()
    mismatch = re.fullmatch(r"reader type: (\S+) not compatible with writer type: (\S+)", raw)
    if mismatch:
        return f"reader type {mismatch[1]} cannot read writer type {mismatch[2]}".lower() in text
    lacking = re.fullmatch(r"reader union lacking writer type:? (\S+)", raw)
    if lacking:
        return f"no branch for writer type {lacking[1]}".lower() in text
    if raw.startswith("expected: "):  # a name mismatch
        return f"does not match writer name {raw.removeprefix('expected: ')}".lower() in text
    if raw.startswith("{"):  # missing enum symbols, as a Python set
        return _NO_SYMBOL in text  # the explanation names the enum and its missing symbols (the first few)
    return f".{raw} has no default".lower() in text


_NO_SYMBOL = "reader enum has no symbol "
_SHOWN = 20  # missing symbols named in a message; the rest counted

def _name(schema: Any) -> str:
    return str(getattr(schema, "fullname", None) or getattr(schema, "type", schema))


def _explain(reader: Any, writer: Any, location: str) -> str | None:
    """A sentence naming what breaks at ``location`` (a path like /fields/3/type/items), or None if it is lost."""
    tokens = [t for t in location.split("/") if t]
    if not tokens:
        return None
    path = _name(reader)
    r, w = reader, writer
    what = ""  # "field " once the path goes through a field
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "fields" and i + 1 < len(tokens) and isinstance(r, avro.schema.RecordSchema):
            field = r.fields[int(tokens[i + 1])]
            path += f".{field.name}"
            wf = lookup_writer_field(w, field) if isinstance(w, avro.schema.RecordSchema) else None
            if i + 2 == len(tokens):
                if wf is None:
                    return f"field {path} has no default in the reader and is missing from the writer"
                return f"field {path}: reader type {_name(field.type)} cannot read writer type {_name(wf.type)}"
            r, w, what = field, wf, "field "
            i += 2
            continue
        if tok == "type":
            r, w = r.type, getattr(w, "type", None)
        elif tok == "items":
            path += "[]"
            r, w = r.items, getattr(w, "items", None)
        elif tok == "values":
            path += "{}"
            r, w = r.values, getattr(w, "values", None)
        elif tok == "name":
            return f"{what}{path}: reader name {_name(r)} does not match writer name {_name(w)}"
        elif tok == "symbols":
            extra = sorted(set(getattr(w, "symbols", ())) - set(r.symbols))
            more = f" and {len(extra) - _SHOWN} more" if len(extra) > _SHOWN else ""
            return f"{what}{path}: {_NO_SYMBOL}{', '.join(extra[:_SHOWN])}{more} and no default"
        elif tok == "size":
            return f"{what}{path}: fixed size {r.size} differs from writer size {getattr(w, 'size', '?')}"
        elif tok.isdigit() and isinstance(w, avro.schema.UnionSchema):
            return f"{what}{path}: reader type {_name(r)} has no branch for writer type {_name(w.schemas[int(tok)])}"
        else:
            return None
        i += 1
    return f"{what}{path}: reader type {_name(r)} cannot read writer type {_name(w)}"
