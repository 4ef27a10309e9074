"""Pure parts of the contracts: canonical form, compatibility explanations, and the registry log's rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.contracts.avsc import canonical_text, fingerprint
from streams.contracts.compat import breaking, check, parse_avro
from streams.contracts.model import Claim, RegistryState
from streams.errors import SchemaRegistryError
from streams.registry import MemorySchemaLog
from streams.registry.log import Records
from streams.registry.service import RegistryService


def rec(fields: list[dict[str, Any]], name: str = "R", ns: str = "t") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": ns, "fields": fields}


def avro(schema: Any) -> Any:
    return parse_avro(json.dumps(schema))


# -- canonical form ------------------------------------------------------------------------------------------


def test_canonical_form_ignores_spelling_but_not_meaning() -> None:
    a = rec([{"name": "x", "type": {"type": "string"}}, {"name": "y", "type": "Inner"}])
    a["fields"][1]["type"] = {"type": "record", "name": "Inner", "fields": [{"name": "z", "type": "int"}]}
    b = {"namespace": "t", "fields": [{"type": "string", "name": "x"},
                                      {"name": "y", "type": {"name": "t.Inner", "type": "record",
                                                             "fields": [{"name": "z", "type": "int"}]}}],
         "type": "record", "name": "R"}
    assert canonical_text(a) == canonical_text(b)
    with_default = json.loads(json.dumps(a))
    with_default["fields"][0]["default"] = "x"
    assert canonical_text(with_default) != canonical_text(a)  # defaults drive resolution: a different schema
    assert fingerprint(canonical_text(a)) == fingerprint(canonical_text(b))


# -- compatibility messages ----------------------------------------------------------------------------------


def test_messages_name_nested_fields_union_branches_and_enums() -> None:
    item = {"type": "record", "name": "Item", "fields": [{"name": "qty", "type": "int"}]}
    old = rec([{"name": "items", "type": {"type": "array", "items": item}},
               {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
               {"name": "ref", "type": ["null", "string"], "default": None}])
    new = json.loads(json.dumps(old))
    new["fields"][0]["type"]["items"]["fields"][0]["type"] = "string"
    new["fields"][1]["type"]["symbols"] = ["A"]
    new["fields"][2]["type"] = ["null", "int"]
    assert breaking(avro(new), avro(old)) == [
        "field t.R.items[].qty: reader type string cannot read writer type int",
        "field t.R.kind: reader enum has no symbol B and no default",
        "field t.R.ref: reader type union has no branch for writer type string",
    ]
    assert breaking(avro(old), avro(old)) == []


def test_unions_of_records_are_compared_branch_by_branch() -> None:
    a = rec([{"name": "id", "type": "string"}], name="A")
    b = rec([{"name": "n", "type": "int"}], name="B")
    b_required = rec([{"name": "n", "type": "int"}, {"name": "extra", "type": "long"}], name="B")
    assert breaking(avro([a, b_required]), avro([a, b])) == [
        "field t.B.extra has no default in the reader and is missing from the writer"
    ]
    assert breaking(avro([a]), avro([a, b])) == ["t.B: the reader union has no branch for this writer type"]
    assert breaking(avro([a, b]), avro([a])) == []  # a new record type on a topic is backward compatible


def test_levels_choose_directions_and_versions() -> None:
    v1 = avro(rec([{"name": "a", "type": "int"}]))
    v2 = avro(rec([{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]))
    dropped_a = avro(rec([{"name": "b", "type": "int", "default": 0}]))
    history = [(1, v1), (2, v2)]
    assert check("BACKWARD", dropped_a, history) == []
    assert check("FORWARD", dropped_a, history) == [
        "version 2 cannot read data written with the new schema: field t.R.a has no default in the reader and is "
        "missing from the writer"]
    assert len(check("FULL_TRANSITIVE", dropped_a, history)) == 2  # versions 2 and 1
    assert check("NONE", dropped_a, history) == []
    needs_c = avro(rec([{"name": "a", "type": "int"}, {"name": "c", "type": "int"}]))
    assert check("BACKWARD", needs_c, history) == [
        "new schema cannot read data written with version 2: field t.R.c has no default in the reader and is "
        "missing from the writer"]


# -- the registry log ----------------------------------------------------------------------------------------


def claim(subject: str, version: int, schema_id: int, schema: dict[str, Any]) -> Claim:
    text = canonical_text(schema)
    return Claim(subject, version, schema_id, fingerprint(text), text)


X = rec([{"name": "x", "type": "int"}], name="X")
Y = rec([{"name": "y", "type": "int"}], name="Y")


def test_the_first_claim_wins_and_replay_agrees() -> None:
    log: list[tuple[bytes, bytes | None]] = []
    winner = claim("s", 1, 1, X)
    log += [
        (winner.key, winner.value),
        (claim("s", 1, 1, Y).key, claim("s", 1, 1, Y).value),  # same slot, other schema: loses
        (claim("t", 1, 1, Y).key, claim("t", 1, 1, Y).value),  # id 1 is X's: loses
        (claim("t", 1, 2, X).key, claim("t", 1, 2, X).value),  # X already has id 1: loses
        (claim("t", 1, 1, X).key, claim("t", 1, 1, X).value),  # same schema, same id, other subject: wins
    ]
    state = RegistryState()
    for key, value in log:
        state.apply(key, value)
    assert [(c.subject, c.version, c.id) for c in state.versions("s") + state.versions("t")] == [
        ("s", 1, 1), ("t", 1, 1)]
    assert len(state.rejected[("s", 1)]) == 1 and len(state.rejected[("t", 1)]) == 2
    state.apply(b"not json", b"{}")
    state.apply(json.dumps({"keytype": "SOMETHING_NEW"}).encode(), b"{}")
    assert state.skipped == 2  # foreign records are skipped, never fatal


def test_a_registration_that_loses_a_race_is_withdrawn_and_retried() -> None:
    class RacingLog(MemorySchemaLog):
        """Another instance's claim for the same slot lands just before ours, once."""

        raced = False

        def append(self, records: Records) -> None:
            if not self.raced and b'"SCHEMA"' in records[0][0]:
                self.raced = True
                rival = claim("s", 1, 1, Y)
                super().append([(rival.key, rival.value)])
            super().append(records)

    log = RacingLog()
    service = RegistryService(log)
    service.open()
    service.set_config("s", {"compatibility": "NONE"})
    answer = service.register("s", {"schema": json.dumps(X)})
    assert answer == {"id": 2, "version": 2, "subject": "s"}
    lost = claim("s", 1, 1, X)
    assert (lost.key, None) in log.records  # the losing claim was withdrawn
    # a second instance replaying the same log reaches the same state
    other = RegistryService(log)
    other.open()
    assert [(c.version, c.id) for c in other.state.versions("s")] == [(1, 1), (2, 2)]
    assert other.state.rejected == {}


def test_hard_delete_purges_rival_claims_and_keeps_ids_unique() -> None:
    log = MemorySchemaLog()
    service = RegistryService(log)
    service.open()
    service.set_config(None, {"compatibility": "NONE"})
    first = service.register("s", {"schema": json.dumps(X)})["id"]
    rival = claim("s", 1, 99, Y)
    log.append([(rival.key, rival.value)])  # a losing claim left behind by a crashed instance
    assert service.delete_subject("s", permanent=False) == [1]
    assert service.delete_subject("s", permanent=True) == [1]
    assert (rival.key, None) in log.records
    with pytest.raises(SchemaRegistryError) as info:
        service.schema_by_id(first)
    assert info.value.code == 40403
    # replaying only what compaction keeps (latest value per key, tombstones dropped) gives the same answers
    latest: dict[bytes, bytes | None] = {}
    for key, value in log.records:
        latest.pop(key, None)
        latest[key] = value
    compacted = MemorySchemaLog()
    compacted.records = [(k, v) for k, v in latest.items() if v is not None]
    replayed = RegistryService(compacted)
    replayed.open()
    assert replayed.state.subjects(deleted=True) == []
    assert replayed.register("s", {"schema": json.dumps(Y)})["id"] == first + 1 == service.state.id_for("new")
