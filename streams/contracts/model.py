"""The schema registry's state, rebuilt by applying the ``_schemas`` log in order. Pure: no I/O, no locks.

Log records (key and value are compact JSON; the topic is compacted, so a key's latest value is what survives):

=============================================================  ===============================================
key                                                            value
=============================================================  ===============================================
``{"keytype":"SCHEMA","subject","version","id","fp"}``         ``{"subject","version","id","schema"}``: a *claim*
                                                               that ``schema`` (text as first registered,
                                                               fingerprint ``fp`` of its canonical form and its
                                                               references) is ``version`` of ``subject`` with
                                                               ``id``; plus ``"references"`` (a list of
                                                               ``{"name","subject","version"}``) when it has any;
                                                               a tombstone is a hard delete
``{"keytype":"DELETED","subject","version"}``                  ``{"deleted":true}``: soft delete of that version
``{"keytype":"CONFIG","subject":s|null}``                      ``{"compatibilityLevel":L}``; tombstone = unset
``{"keytype":"ID_HWM"}``                                       ``{"id":n}``: ids up to n were used (survives the
                                                               compaction of hard-deleted schemas: never reused)
``{"keytype":"NOOP"}``                                         ``{}``: a barrier (see ``SchemaLog.sync``)
=============================================================  ===============================================

Why claims and "first claim wins": several registry instances may write concurrently. Each allocates an id and a
version from what it has read, then writes a claim. Every instance applies the log in the same order and accepts
a claim only if nothing earlier took its (subject, version), its id for another schema, or another id for its
schema; so all instances agree, and a writer whose claim lost sees that and retries. The claim's key names
everything it claims, and a claim is never rewritten (soft deletes use their own key), so compaction never moves
an accepted claim behind a losing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streams.contracts.avsc import Ref
from streams.contracts.compat import DEFAULT_LEVEL, LEVELS

Slot = tuple[str, int]  # (subject, version)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Claim:
    subject: str
    version: int
    id: int
    fp: str
    schema: str
    references: tuple[Ref, ...] = ()

    @property
    def key(self) -> bytes:
        return dumps({"keytype": "SCHEMA", "subject": self.subject, "version": self.version, "id": self.id,
                      "fp": self.fp, "magic": 1})

    @property
    def value(self) -> bytes:
        out: dict[str, Any] = {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}
        if self.references:
            out["references"] = ref_dicts(self.references)
        return dumps(out)


def ref_dicts(refs: tuple[Ref, ...]) -> list[dict[str, Any]]:
    """References in the API's shape."""
    return [{"name": n, "subject": s, "version": v} for n, s, v in refs]


def parse_refs(raw: Any) -> tuple[Ref, ...]:
    """References from the log (already validated when registered)."""
    return tuple((str(r["name"]), str(r["subject"]), int(r["version"])) for r in raw or ())


def deleted_key(subject: str, version: int) -> bytes:
    return dumps({"keytype": "DELETED", "subject": subject, "version": version, "magic": 1})


def config_key(subject: str | None) -> bytes:
    return dumps({"keytype": "CONFIG", "subject": subject, "magic": 0})


def config_value(level: str) -> bytes:
    return dumps({"compatibilityLevel": level})


HWM_KEY = dumps({"keytype": "ID_HWM", "magic": 0})
DELETED_VALUE = dumps({"deleted": True})


def hwm_value(schema_id: int) -> bytes:
    return dumps({"id": schema_id})


class RegistryState:
    """Subjects, versions, ids and configs as of the last applied log record."""

    def __init__(self) -> None:
        self.claims: dict[str, dict[int, Claim]] = {}  # subject -> version -> accepted claim
        self.soft_deleted: set[Slot] = set()
        self.rejected: dict[Slot, set[bytes]] = {}  # losing claim keys, tombstoned along with their slot
        self.schema_by_id: dict[int, tuple[str, str]] = {}  # id -> (fp, schema)
        self.id_by_fp: dict[str, int] = {}
        self.refs_by_id: dict[int, tuple[Ref, ...]] = {}  # id -> the references it was registered with
        self.refs: dict[int, set[Slot]] = {}
        self.configs: dict[str | None, str] = {}
        self.max_id = 0
        self.applied = 0
        self.skipped = 0  # records that are not ours or not understood: counted, never fatal
        self.foreign = 0  # schema records in another registry's format (Confluent's has no "fp" in its keys)

    # -- applying the log ------------------------------------------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        self.applied += 1
        try:
            k: Any = json.loads(key) if key else None
            v: Any = json.loads(value) if value else None
            kind = k.get("keytype") if isinstance(k, dict) else None
            if kind == "SCHEMA":
                self._apply_claim(k, v)
            elif kind == "DELETED":
                slot = (str(k["subject"]), int(k["version"]))
                if v and v.get("deleted"):
                    self.soft_deleted.add(slot)
                else:
                    self.soft_deleted.discard(slot)
            elif kind == "CONFIG":
                subject = k.get("subject")
                if v and v.get("compatibilityLevel") in LEVELS:
                    self.configs[subject] = v["compatibilityLevel"]
                else:
                    self.configs.pop(subject, None)
            elif kind == "ID_HWM":
                self.max_id = max(self.max_id, int(v["id"])) if v else self.max_id
            elif kind != "NOOP":
                self.skipped += 1
        except (ValueError, TypeError, KeyError, AttributeError):
            self.skipped += 1

    def _apply_claim(self, k: dict[str, Any], v: dict[str, Any] | None) -> None:
        if "fp" not in k:
            self.foreign += 1
            return
        slot = (str(k["subject"]), int(k["version"]))
        raw_key = Claim(slot[0], slot[1], int(k["id"]), str(k["fp"]), "").key
        if v is None:  # hard delete of this claim (or cleanup of a losing one)
            current = self.claim(*slot)
            if current is not None and current.key == raw_key:
                del self.claims[slot[0]][slot[1]]
                if not self.claims[slot[0]]:
                    del self.claims[slot[0]]
                self.soft_deleted.discard(slot)
                self._unref(current.id, slot)
            losers = self.rejected.get(slot)
            if losers is not None:
                losers.discard(raw_key)
                if not losers:
                    del self.rejected[slot]
            return
        claim = Claim(slot[0], slot[1], int(v["id"]), str(k["fp"]), str(v["schema"]), parse_refs(v.get("references")))
        current = self.claim(*slot)
        if current is not None and current.key == raw_key:
            return  # the same claim again
        known = self.schema_by_id.get(claim.id)
        if (
            current is not None
            or (known is not None and known[0] != claim.fp)
            or self.id_by_fp.get(claim.fp, claim.id) != claim.id
            or self.live_version(claim.subject, claim.fp) is not None
        ):
            self.rejected.setdefault(slot, set()).add(raw_key)
            return
        self.claims.setdefault(claim.subject, {})[claim.version] = claim
        self.schema_by_id[claim.id] = (claim.fp, claim.schema)
        self.refs_by_id[claim.id] = claim.references
        self.id_by_fp[claim.fp] = claim.id
        self.refs.setdefault(claim.id, set()).add(slot)
        self.max_id = max(self.max_id, claim.id)

    def _unref(self, schema_id: int, slot: Slot) -> None:
        slots = self.refs.get(schema_id)
        if slots is None:
            return
        slots.discard(slot)
        if not slots:  # no subject holds the schema any more: its id is gone, like Confluent's hard delete
            del self.refs[schema_id]
            fp, _ = self.schema_by_id.pop(schema_id)
            self.refs_by_id.pop(schema_id, None)
            self.id_by_fp.pop(fp, None)

    # -- queries ---------------------------------------------------------------------------------------------

    def claim(self, subject: str, version: int) -> Claim | None:
        return self.claims.get(subject, {}).get(version)

    def versions(self, subject: str, deleted: bool = False) -> list[Claim]:
        """The subject's versions in order; soft-deleted ones only with ``deleted``."""
        held = self.claims.get(subject, {})
        return [held[v] for v in sorted(held) if deleted or (subject, v) not in self.soft_deleted]

    def is_deleted(self, claim: Claim) -> bool:
        return (claim.subject, claim.version) in self.soft_deleted

    def subjects(self, deleted: bool = False) -> list[str]:
        return sorted(s for s, held in self.claims.items()
                      if deleted or any((s, v) not in self.soft_deleted for v in held))

    def live_version(self, subject: str, fp: str) -> Claim | None:
        for c in self.versions(subject):
            if c.fp == fp:
                return c
        return None

    def next_version(self, subject: str) -> int:
        return max((c.version for c in self.versions(subject, deleted=True)), default=0) + 1

    def id_for(self, fp: str) -> int:
        """The schema's id if any subject holds it, else the next unused id."""
        return self.id_by_fp.get(fp) or self.max_id + 1

    def slots_of(self, schema_id: int) -> Iterator[Claim]:
        for subject, version in sorted(self.refs.get(schema_id, ())):
            yield self.claims[subject][version]

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of the schemas that reference that version (which therefore must not be deleted)."""
        return sorted(i for i, refs in self.refs_by_id.items() if any(r[1:] == (subject, version) for r in refs))

    def level(self, subject: str | None) -> str:
        """The compatibility level that applies to ``subject``."""
        if subject is not None and subject in self.configs:
            return self.configs[subject]
        return self.configs.get(None, DEFAULT_LEVEL)
