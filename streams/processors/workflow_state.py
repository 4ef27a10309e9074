"""Where a workflow's state is stored, and the checks that join a definition to its contracts.

Three ways, by what the workflow says:

* it declares its data fields (``wf.data(...)``): the engine derives a versioned state record from them
  (:meth:`Definition.stored_record`), adds it to the catalogue for ``<workflow>-state`` and registers it there.
  A stored state is read by its writer's schema id into that record (Avro schema resolution), so states of an
  older version restore. A data field the registered record has and the new version neither declares nor
  drops (``wf.drop``) stops the worker: nothing is dropped silently;
* its contracts name a state record for ``<workflow>-state`` in ``subjects.yaml``: each data field is a field
  of that record;
* neither: the generic ``streams.common.WorkflowState`` keeps the data as one JSON document.

Payloads are checked against the records they are written as, at start: a ``data_fields`` payload that lacks
a required field fails the definition; a payload function is checked each time it runs (see
:meth:`WorkflowProcessor.process`), since only then are its keys known.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.contracts import Catalogue, RegistryClient, Serde
from streams.errors import ConfigError, RecordError, SchemaRegistryError, WorkflowDefinitionError
from streams.state import entity, timers
from streams.workflow import Definition
from streams.workflow.fields import GENERIC_FIELDS
from streams.workflow.validate import contract_records, payload_problems

# The state record for contracts that declare none of their own: the entity's data as one JSON document.
GENERIC_STATE = "streams.common.WorkflowState"


@dataclass(frozen=True)
class StateContract:
    """The record states are stored in, and the catalogue that holds it."""

    catalogue: Catalogue
    record: str  # full name
    data_fields: tuple[str, ...]  # the record's own fields for the entity's data (empty: JSON data)
    json_data: bool
    derived: bool


def state_contract(definition: Definition, catalogue: Catalogue, state_topic: str,
                   state_record: str | None = None) -> StateContract:
    """The state record of ``definition`` (see the module doc); ``state_record`` is ``options.state_record``."""
    derived = definition.stored_record()
    if derived is not None:
        declared = catalogue.topics.get(state_topic, ())
        if state_record or (declared and declared != (definition.state_record,)):
            raise ConfigError(f"workflow {definition.name!r} declares its data fields, so the engine derives its "
                              f"state record; remove the state record named for {state_topic!r} "
                              f"({state_record or ', '.join(declared)}) from its contracts")
        catalogue = catalogue.with_record(derived, state_topic)
        name = definition.state_record
    else:
        name = catalogue.resolve(state_record or _declared_record(catalogue, state_topic))
    fields = [f["name"] for f in catalogue.get(name).schema["fields"]]
    json_data = "data" in fields and derived is None
    data = () if json_data else tuple(f for f in fields if f not in GENERIC_FIELDS)
    return StateContract(catalogue, name, data, json_data, derived is not None)


def _declared_record(catalogue: Catalogue, state_topic: str) -> str:
    records = catalogue.topics.get(state_topic, ())
    if not records:
        return GENERIC_STATE
    if len(records) != 1:
        raise ConfigError(f"{catalogue.source}: subjects.yaml lists several records for the state topic "
                          f"{state_topic!r} ({', '.join(records)}); list one, or set options.state_record")
    return records[0]


def undeclared_removals(definition: Definition, registered: Any) -> list[str]:
    """Data fields the registered state record (JSON) stores that ``definition`` neither declares nor drops."""
    if definition.data is None or not isinstance(registered, dict):
        return []
    kept = set(definition.data) | definition.dropped | set(GENERIC_FIELDS)
    return [str(f["name"]) for f in registered.get("fields", ()) if f.get("name") not in kept]


def check_removals(definition: Definition, registry: RegistryClient, subject: str) -> None:
    """Refuse a version that silently loses a data field of the latest registered state record."""
    if definition.data is None:
        return
    try:
        latest = registry.version(subject)
    except SchemaRegistryError as exc:
        if exc.http_status == 404:
            return  # nothing registered yet: no stored state to lose
        raise
    registered = json.loads(latest.schema)
    lost = undeclared_removals(definition, registered)
    if lost:
        was = registered.get("doc", "")
        names = ", ".join(repr(f) for f in lost)
        raise WorkflowDefinitionError(
            f"workflow {definition.name!r} version {definition.version} no longer declares data field(s) {names} "
            f"that its stored states hold (subject {subject}, version {latest.version}: {was}); declare them "
            f"again, or discard them on restore with drop({names})")


def required_fields(catalogue: Catalogue, record: str) -> frozenset[str] | None:
    """The fields of ``record`` a payload must carry (no default; the envelope is the engine's to add), or None
    for a record the catalogue does not know (its encoder reports that)."""
    try:
        entry = catalogue.get(record)
    except ConfigError:
        return None
    fields = entry.schema.get("fields", ()) if isinstance(entry.schema, dict) else ()
    return frozenset(f["name"] for f in fields if "default" not in f and f["name"] != "envelope")


def check_schemas(definition: Definition, catalogue: Catalogue) -> None:
    """Refuse to start, in one line naming each, when a record the workflow handles, issues or emits has no
    schema in its contracts: otherwise the first such record would fail at run time, far from the cause."""
    missing = [f"{name} ({what})" for name, what in contract_records(definition).items()
               if not catalogue.has(name)]
    if missing:
        raise WorkflowDefinitionError(
            f"workflow {definition.name!r}: no schema in {catalogue.source or 'its contracts'} for "
            + "; ".join(missing), tuple(missing))


def check_payloads(definition: Definition, catalogue: Catalogue) -> dict[str, frozenset[str]]:
    """Raise naming the command, the field and the action when a ``data_fields`` payload lacks a required field;
    return record -> required fields for the payloads only a run can check (functions)."""
    problems, dynamic = payload_problems(definition, lambda record: required_fields(catalogue, record))
    if problems:
        raise WorkflowDefinitionError(  # one line: what a worker refusing to start prints
            f"workflow {definition.name!r} does not fit its contracts: " + "; ".join(problems), tuple(problems))
    return dynamic


@dataclass
class Census:
    """The entities a workflow's changelog holds, by state, as ``streams workflow validate`` reports them."""

    by_state: dict[str, list[str]]
    versions: dict[int, int]  # schema_version -> entities stored by it
    undecodable: list[str]

    def missing(self, definition: Definition) -> dict[str, list[str]]:
        """Entities in states ``definition`` no longer has: they could take no transition under it."""
        return {s: keys for s, keys in sorted(self.by_state.items()) if s not in definition.states}


def census(records: Iterable[tuple[bytes | None, bytes | None]], serde: Serde) -> Census:
    """Read a store's changelog records (key, value) in log order: the latest value of each entity key wins."""
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key and key[:1] == timers.ENTITY:
            latest[key] = value
    out = Census({}, {}, [])
    for key, value in latest.items():
        name = key[1:].decode("utf-8", "replace")
        raw = entity.decode(value).state if value is not None else None
        if not raw:
            continue
        try:
            _record, rec = serde.decode(raw)
        except RecordError as exc:
            out.undecodable.append(f"{name} ({exc})")
            continue
        out.by_state.setdefault(str(rec["state"]), []).append(name)
        version = int(rec.get("schema_version") or 1)
        out.versions[version] = out.versions.get(version, 0) + 1
    return out
