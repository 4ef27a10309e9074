"""A workflow's data fields, declared once with their types, and the versioned state record derived from them.

``wf.data(order_id=str, amount_cents=int, items=list["streams.orders.LineItem"], note=str | None)`` declares the
entity's data. Types are plain data, so this package stays free of Avro libraries: Python types (``str``,
``int`` as Avro ``long``, ``float`` as ``double``, ``bool``, ``bytes``, ``list[T]``, ``dict[str, T]``,
``T | None``), an Avro type as JSON (``"int"``, a named type's full name, ``{"type": "array", ...}``), or
:class:`Field` to give a default. ``T | None`` defaults to null. A field added in a later version needs a
default, so states stored by the earlier version restore (Avro schema resolution fills it in).

:func:`state_record` derives the stored-state record: the engine's generic fields (state, attempts, timers,
history, ...) around the declared data fields, in declaration order. The runtime registers it under the
``<workflow>-state`` subject and reads every stored state by its writer's schema id into this reader.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from streams.workflow.model import WorkflowState

Json = Any  # an Avro type as parsed JSON

_PRIMITIVES: Mapping[Any, str] = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}
_NO_DEFAULT = object()
# Field names of the engine's own part of the stored state: a data field may not take one of them.
GENERIC_FIELDS = ("workflow", "state", "attempts", "completed_steps", "timers", "history", "reason",
                  "created_at", "updated_at", "schema_version")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
STATE_NAMESPACE = "streams.workflows"
_TIMER = {"type": "record", "name": "Timer", "doc": "A pending durable timer.", "fields": [
    {"name": "name", "type": "string"}, {"name": "due_at", "type": "long", "doc": "Epoch milliseconds."},
    {"name": "fires_event", "type": "string"}, {"name": "attempt", "type": "int"}]}
_TRANSITION = {"type": "record", "name": "Transition", "doc": "One applied transition.", "fields": [
    {"name": "at", "type": "long", "doc": "Epoch milliseconds."}, {"name": "from_state", "type": "string"},
    {"name": "event", "type": "string"}, {"name": "to_state", "type": "string"}]}


@dataclass(frozen=True)
class Field:
    """A data field's type with a default: what a field added in a later version needs."""

    type: Any
    default: Any = _NO_DEFAULT


def avro_type(spec: Any) -> Json:
    """The Avro type JSON of a type declaration; ValueError saying why when it is not one."""
    if isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, type) and spec in _PRIMITIVES:
        return _PRIMITIVES[spec]
    if isinstance(spec, list):
        return [avro_type(s) for s in spec]
    origin = typing.get_origin(spec)
    args = typing.get_args(spec)
    if origin is list and len(args) == 1:
        return {"type": "array", "items": avro_type(args[0])}
    if origin is dict and len(args) == 2:
        if args[0] is not str:
            raise ValueError(f"a map's keys must be str, not {args[0]!r}")
        return {"type": "map", "values": avro_type(args[1])}
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        out = [avro_type(a) for a in rest]
        return ["null", *out] if len(rest) < len(args) else out
    raise ValueError(f"{spec!r} is not a type this DSL maps to Avro (str, int, float, bool, bytes, list[T], "
                     "dict[str, T], T | None, an Avro type as JSON, or Field(type, default=...))")


def field_schema(name: str, spec: Any) -> Json:
    """The Avro field of one declaration: ``T | None`` defaults to null; ``Field`` carries its own default."""
    default = _NO_DEFAULT
    if isinstance(spec, Field):
        spec, default = spec.type, spec.default
    avro = avro_type(spec)
    if default is _NO_DEFAULT and isinstance(avro, list) and avro and avro[0] == "null":
        default = None
    out: dict[str, Any] = {"name": name, "type": avro}
    if default is not _NO_DEFAULT:
        out["default"] = default
    return out


def declare(fields: Mapping[str, Any]) -> tuple[dict[str, Json], list[str]]:
    """Field name -> Avro field, and a problem per bad declaration (named)."""
    out: dict[str, Json] = {}
    problems: list[str] = []
    for name, spec in fields.items():
        if not _NAME.match(name):
            problems.append(f"data field {name!r}: not a valid Avro field name")
        elif name in GENERIC_FIELDS:
            problems.append(f"data field {name!r}: the name is taken by the engine's own state fields")
        else:
            try:
                out[name] = field_schema(name, spec)
            except ValueError as exc:
                problems.append(f"data field {name!r}: {exc}")
    return out, problems


def state_record_name(workflow: str) -> str:
    """The derived state record's full name: ``streams.workflows.<CamelCase workflow>State``."""
    camel = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", workflow) if p)
    if not camel or camel[0].isdigit():
        camel = "W" + camel
    return f"{STATE_NAMESPACE}.{camel}State"


def state_record(name: str, workflow: str, version: int, data: Mapping[str, Json]) -> Json:
    """The versioned stored-state record of a workflow that declares its data (``data``: its Avro fields).

    ``Timer`` and ``Transition`` are defined inside it, in its namespace, as hand-written state records did:
    a record that takes over such a record's name reads its stored states unchanged."""
    namespace, _, short = name.rpartition(".")
    return {
        "type": "record",
        "name": short,
        "namespace": namespace,
        "doc": f"Stored state of workflow {workflow!r}, version {version}: derived by the engine from the "
               "workflow's declared data fields.",
        "fields": [
            {"name": "workflow", "type": "string"},
            {"name": "state", "type": "string"},
            *data.values(),
            {"name": "attempts", "type": {"type": "map", "values": "int"}},
            {"name": "completed_steps", "type": {"type": "array", "items": "string"}},
            {"name": "timers", "type": {"type": "array", "items": _TIMER}},
            {"name": "history", "type": {"type": "array", "items": _TRANSITION}},
            {"name": "reason", "type": ["null", "string"], "default": None},
            {"name": "created_at", "type": "long"},
            {"name": "updated_at", "type": "long"},
            {"name": "schema_version", "type": "int", "default": 1},
        ],
    }


def check_recorded(state: WorkflowState, fields: Collection[str], holder: str) -> None:
    """Raise when ``state`` holds data fields outside ``fields`` (what ``holder``, its state record, can store):
    a ``record_with`` function recorded them, so only a run shows it. Named by the transition that did it."""
    extra = [k for k in state.data if k not in fields]
    if not extra:
        return
    last = state.history[-1] if state.history else None
    where = f"the transition {last.from_state} --{last.event}--> {last.to_state}" if last else "a transition"
    raise WorkflowDefinitionError(
        f"workflow {state.workflow!r}: {where} recorded data field(s) {', '.join(map(repr, extra))} that its "
        f"state record {holder} does not have; declare them (wf.data) or do not record them")
