"""The registry's operations with Confluent's semantics and error codes, over a RegistryState and a SchemaLog.

Reads answer from memory. Writes are serialized per instance, start with a log barrier (so the decision sees every
instance's earlier writes), and return only once their records are acknowledged by the log and applied. Across
instances, concurrent registrations are settled by the log order (see ``model``): a losing claim is withdrawn and
the registration retried.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import avro.schema

from streams.contracts import compat
from streams.contracts.avsc import Ref, canonical_text, fingerprint, resolve
from streams.contracts.model import (
    DELETED_VALUE,
    HWM_KEY,
    Claim,
    RegistryState,
    config_key,
    config_value,
    deleted_key,
    hwm_value,
    ref_dicts,
)
from streams.errors import ConfigError, IncompatibleSchemaError, SchemaRegistryError
from streams.registry.log import SchemaLog

T = TypeVar("T")
MAX_VERSION = 2**31 - 1
WRITE_ATTEMPTS = 5


def _err(code: int, message: str) -> SchemaRegistryError:
    return SchemaRegistryError(message, code, int(str(code)[:3]))


def subject_not_found(subject: str) -> SchemaRegistryError:
    return _err(40401, f"Subject '{subject}' not found.")


def parse_version(raw: str) -> int | None:
    """A version number, or None for ``latest`` (also spelled -1)."""
    if raw in ("latest", "-1"):
        return None
    try:
        version = int(raw)
    except ValueError:
        version = 0
    if not 1 <= version <= MAX_VERSION:
        raise _err(42202, f"The specified version '{raw}' is not a valid version id. Allowed values are between "
                          f"[1, {MAX_VERSION}] and the string \"latest\"")
    return version


class RegistryService:
    def __init__(self, log: SchemaLog) -> None:
        self.log = log
        self.state = RegistryState()
        self._lock = threading.RLock()  # guards state: the log's reader thread applies under it
        self._write = threading.Lock()  # one write decision at a time in this instance
        self._sync_lock = threading.Lock()
        self._last_sync = 0.0
        self._parsed: dict[str, avro.schema.Schema] = {}

    def open(self) -> None:
        self.log.open(self._apply)
        if self.state.foreign:
            self.log.close()
            raise ConfigError(
                f"the schema log holds {self.state.foreign} schema record(s) written by another registry "
                f"(Confluent's?); give this registry a topic of its own (streams registry --topic NAME)"
            )

    def close(self) -> None:
        self.log.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        with self._lock:
            self.state.apply(key, value)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _schema(self, body: Any) -> tuple[str, str, avro.schema.Schema, tuple[Ref, ...]]:
        """(text as sent, fingerprint, parsed, references) of a request body's schema; 42201 if it is not usable.

        The text is kept as sent (compacted), so a named type keeps the ``name`` and ``namespace`` it was registered
        with; identity (the fingerprint) is the canonical form plus the references, so a respelling is the same
        schema. Referenced named types are resolved from the referenced versions for parsing and compatibility."""
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise _err(42201, "Invalid schema: the request body must be an object with a string field 'schema'")
        kind = body.get("schemaType") or "AVRO"
        if kind != "AVRO":
            raise _err(42201, f"Invalid schema: schemaType {kind!r} is not supported (only AVRO)")
        refs = self._refs(body.get("references"))
        try:
            raw = json.loads(body["schema"])
            compat.check_bounds(body["schema"], raw)
            text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
            canon = canonical_text(raw)
            with self._lock:
                resolved = canonical_text(resolve(raw, refs, self._fetch)) if refs else canon
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            raise _err(42201, f"Invalid schema: {exc}") from exc
        fp = fingerprint(canon + json.dumps(ref_dicts(refs)) if refs else canon)
        # not cached: a client posting endless candidate schemas must not grow our memory
        return text, fp, self._parsed.get(fp) or compat.parse_avro(resolved), refs

    def _refs(self, raw: Any) -> tuple[Ref, ...]:
        """A request's references, each pinned to an existing version (``-1`` is the latest); 42201 otherwise."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise _err(42201, "Invalid schema: 'references' must be a list")
        out: list[Ref] = []
        for i, ref in enumerate(raw):
            name, subject, version = (ref.get(k) for k in ("name", "subject", "version")) if isinstance(
                ref, dict) else (None, None, None)
            if not (isinstance(name, str) and name and isinstance(subject, str) and subject
                    and isinstance(version, int) and not isinstance(version, bool)):
                raise _err(42201, f"Invalid schema: reference {i} needs a string 'name' and 'subject' and an "
                                  f"integer 'version'")
            with self._lock:
                held = self.state.versions(subject) if version == -1 else [
                    c for c in self.state.versions(subject, deleted=True) if c.version == version]
            if not held:
                raise _err(42201, f"Invalid schema: reference {name!r}: subject {subject!r} version {version} "
                                  f"not found")
            out.append((name, subject, held[-1].version))
        return tuple(out)

    def _fetch(self, subject: str, version: int) -> tuple[str, tuple[Ref, ...]]:
        """A referenced version's text and references (the caller holds the lock)."""
        c = self.state.claim(subject, version)
        if c is None:
            raise ValueError(f"referenced subject {subject!r} version {version} not found")
        return c.schema, c.references

    def _avro(self, c: Claim) -> avro.schema.Schema:
        """The parsed form of a stored schema (cached: stored schemas are few and checked on every write)."""
        parsed = self._parsed.get(c.fp)
        if parsed is None:
            text = c.schema
            if c.references:
                try:
                    text = canonical_text(resolve(json.loads(c.schema), c.references, self._fetch))
                except ValueError as exc:
                    raise _err(50001, f"store error: {c.subject} version {c.version}: {exc}") from exc
            parsed = self._parsed[c.fp] = compat.parse_avro(text)
        return parsed

    def _history(self, subject: str) -> list[tuple[int, avro.schema.Schema]]:
        return [(c.version, self._avro(c)) for c in self.state.versions(subject)]

    def fresh(self, read: Callable[[], T]) -> T:
        """``read()``, retried once after a log barrier if it says "not found": another instance may have
        written it a moment ago. Barriers are shared between concurrent misses and are best-effort."""
        started = time.monotonic()
        try:
            return read()
        except SchemaRegistryError as exc:
            if exc.http_status != 404:
                raise
        with self._sync_lock:
            if self._last_sync < started:
                self._last_sync = time.monotonic()
                with contextlib.suppress(SchemaRegistryError):  # best-effort: answer the miss as it is
                    self.log.sync()
        return read()

    @staticmethod
    def _registered(c: Claim) -> dict[str, Any]:
        out = {"subject": c.subject, "version": c.version, "id": c.id, "schema": c.schema}
        if c.references:
            out["references"] = ref_dicts(c.references)
        return out

    def _find(self, subject: str, raw: str, deleted: bool) -> Claim:
        version = parse_version(raw)
        every = self.state.versions(subject, deleted=True)
        if not every:
            raise subject_not_found(subject)
        candidates = every if deleted else self.state.versions(subject)
        if version is None:
            if not candidates:
                raise _err(40402, f"Version {raw} not found.")
            return candidates[-1]
        for c in candidates:
            if c.version == version:
                return c
        raise _err(40402, f"Version {version} not found.")

    # -- reads -----------------------------------------------------------------------------------------------

    def subjects(self, deleted: bool, deleted_only: bool, prefix: str) -> list[str]:
        with self._lock:
            live = set(self.state.subjects())
            every = self.state.subjects(deleted=True)
        if deleted_only:
            return [s for s in every if s not in live and s.startswith(prefix)]
        chosen = every if deleted else sorted(live)
        return [s for s in chosen if s.startswith(prefix)]

    def versions(self, subject: str, deleted: bool, deleted_only: bool) -> list[int]:
        def read() -> list[int]:
            with self._lock:
                every = self.state.versions(subject, deleted=True)
                live = {c.version for c in self.state.versions(subject)}
            if deleted_only:
                out = [c.version for c in every if c.version not in live]
            else:
                out = [c.version for c in every if deleted or c.version in live]
            if not out and not (deleted_only and every):
                raise subject_not_found(subject)
            return out

        return self.fresh(read)

    def version(self, subject: str, raw: str, deleted: bool) -> dict[str, Any]:
        parse_version(raw)

        def read() -> dict[str, Any]:
            with self._lock:
                return self._registered(self._find(subject, raw, deleted))

        return self.fresh(read)

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            with self._lock:
                known = self.state.schema_by_id.get(schema_id)
            if known is None:
                raise _err(40403, f"Schema {schema_id} not found")
            refs = self.state.refs_by_id.get(schema_id)
            return {"schema": known[1], "references": ref_dicts(refs)} if refs else {"schema": known[1]}

        return self.fresh(read)

    def id_versions(self, schema_id: int, deleted: bool) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with self._lock:
                if schema_id not in self.state.schema_by_id:
                    raise _err(40403, f"Schema {schema_id} not found")
                return [{"subject": c.subject, "version": c.version} for c in self.state.slots_of(schema_id)
                        if deleted or not self.state.is_deleted(c)]

        return self.fresh(read)

    def referenced_by(self, subject: str, raw: str) -> list[int]:
        """Ids of the schemas that reference a version of ``subject``."""
        parse_version(raw)

        def read() -> list[int]:
            with self._lock:
                return self.state.referenced_by(subject, self._find(subject, raw, deleted=True).version)

        return self.fresh(read)

    def lookup(self, subject: str, body: Any, deleted: bool) -> dict[str, Any]:
        """The registration of the body's schema under ``subject``; for a record of a multi-type topic looked up
        under ``<topic>-value``, its registration under ``<topic>-<full name>`` (see ``_member``)."""
        _, fp, parsed, _ = self._schema(body)

        def find(where: str) -> dict[str, Any]:
            with self._lock:
                candidates = self.state.versions(where, deleted=deleted)
                if not candidates:
                    raise subject_not_found(where)
                for c in reversed(candidates):
                    if c.fp == fp:
                        return self._registered(c)
            raise _err(40403, "Schema not found")

        def read() -> dict[str, Any]:
            try:
                return find(subject)
            except SchemaRegistryError:
                with self._lock:
                    member = self._member(subject, parsed)
                if member is None:
                    raise
                return find(member)

        return self.fresh(read)

    def _member(self, subject: str, parsed: avro.schema.Schema) -> str | None:
        """Where a record sent to ``<topic>-value`` belongs when the topic carries several record types: the
        TopicRecordNameStrategy subject ``<topic>-<full name>``, if it exists or if ``<topic>-value`` holds a union
        with a branch of that name. A stock serializer (TopicNameStrategy, auto-register) sends each record type of
        such a topic to ``<topic>-value``; registered there, one type after another would fail the subject's
        compatibility (or, under NONE, replace the union ``use.latest.version`` readers rely on)."""
        name = getattr(parsed, "fullname", None)
        if not subject.endswith("-value") or not isinstance(parsed, avro.schema.RecordSchema) or not name:
            return None
        member = f"{subject.removesuffix('-value')}-{name}"
        if self.state.versions(member):
            return member
        return member if self._union_branches(subject, name) else None

    def _union_branches(self, subject: str, name: str) -> list[tuple[int, avro.schema.Schema]]:
        """(version, branch) for every version of ``subject`` that is a union with a branch named ``name``."""
        out = []
        for c in self.state.versions(subject):
            branch = (compat.branches(self._avro(c)) or {}).get(name)
            if branch is not None:
                out.append((c.version, branch))
        return out

    def test_compatibility(self, subject: str, raw: str | None, body: Any, verbose: bool) -> dict[str, Any]:
        """Against one version (``raw``; the level's direction, never transitive) or, with ``raw`` None, against
        the versions the subject's level says, as registering it would be judged (see ``_verdict``)."""
        _, fp, parsed, _ = self._schema(body)
        with self._lock:
            level = self.state.level(subject)
            if raw is None:
                _, messages = self._verdict(subject, fp, parsed)
            else:
                version = parse_version(raw)
                if version is None and not self.state.versions(subject):
                    messages = []  # nothing registered yet: anything is compatible
                else:
                    target = self._find(subject, raw, deleted=False)
                    old = self._avro(target)
                    if self._member(subject, parsed) is not None:  # a record of the union: against its branch
                        old = (compat.branches(old) or {}).get(str(getattr(parsed, "fullname", ""))) or old
                    messages = compat.check(level.removesuffix("_TRANSITIVE"), parsed, [(target.version, old)])
        out: dict[str, Any] = {"is_compatible": not messages}
        if verbose:
            out["messages"] = messages
        return out

    def config(self, subject: str | None, default_to_global: bool) -> dict[str, Any]:
        with self._lock:
            if subject is None or subject in self.state.configs:
                return {"compatibilityLevel": self.state.level(subject)}
            if default_to_global:
                return {"compatibilityLevel": self.state.level(None)}
        raise _err(40408, f"Subject '{subject}' does not have subject-level compatibility configured")

    # -- writes ----------------------------------------------------------------------------------------------

    def register(self, subject: str, body: Any) -> dict[str, Any]:
        """Register under ``subject``, or, for a record of a multi-type topic sent to ``<topic>-value``, under its
        own subject ``<topic>-<full name>`` (see ``_member``), checked against that subject's versions and against
        the union's branch of that name, each under its subject's level. The answer names where it went."""
        text, fp, parsed, refs = self._schema(body)
        if not subject or len(subject) > 1024:
            raise _err(42201, "Invalid subject: must be 1..1024 characters")
        for _ in range(WRITE_ATTEMPTS):
            with self._write:
                self.log.sync()
                with self._lock:
                    where, messages = self._verdict(subject, fp, parsed)
                    if messages:
                        raise self._incompatible(where, messages)
                    existing = self.state.live_version(where, fp)
                    if existing is not None:
                        return {"id": existing.id, "version": existing.version, "subject": where}
                    schema_id = self.state.id_for(fp)
                    stored = self.state.schema_by_id.get(schema_id, (fp, text))[1]  # one id, one text
                    claim = Claim(where, self.state.next_version(where), schema_id, fp, stored, refs)
                self.log.append([(claim.key, claim.value)])
                with self._lock:
                    if self.state.claim(where, claim.version) == claim:
                        return {"id": claim.id, "version": claim.version, "subject": where}
                self.log.append([(claim.key, None)])  # another instance's claim came first: withdraw ours
        raise _err(50001, f"could not register under {subject}: concurrent registrations won {WRITE_ATTEMPTS} times")

    def _verdict(self, subject: str, fp: str, parsed: avro.schema.Schema) -> tuple[str, list[str]]:
        """(where registering the schema under ``subject`` puts it, why it may not: empty if it may). ``where`` is
        ``subject``, or a multi-type topic's record subject (``_member``), which the record must suit as well as
        the union's branch of its name under ``subject``'s level; on a refusal, the subject that refused."""
        if self.state.live_version(subject, fp) is not None:
            return subject, []
        member = self._member(subject, parsed)
        if member is None:
            return subject, compat.check(self.state.level(subject), parsed, self._history(subject))
        branches = self._union_branches(subject, str(getattr(parsed, "fullname", "")))
        messages = compat.check(self.state.level(subject), parsed, branches)  # the union's readers must read it
        if messages:
            return subject, messages
        if self.state.live_version(member, fp) is not None:
            return member, []
        return member, compat.check(self.state.level(member), parsed, self._history(member))

    def _incompatible(self, subject: str, messages: list[str]) -> IncompatibleSchemaError:
        return IncompatibleSchemaError(
            f"Schema being registered is incompatible with an earlier schema for subject \"{subject}\" "
            f"({self.state.level(subject)}), details: {'; '.join(messages)}", 409, 409,
        )

    def set_config(self, subject: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "compatibility" not in body:
            raise _err(42203, f"Invalid compatibility level: the body must be {{\"compatibility\": LEVEL}} with "
                              f"LEVEL one of {', '.join(compat.LEVELS)}")
        level = compat.parse_level(body["compatibility"])
        with self._write:
            self.log.append([(config_key(subject), config_value(level))])
        return {"compatibility": level}

    def delete_config(self, subject: str | None) -> dict[str, Any]:
        with self._write:
            self.log.sync()
            with self._lock:
                if subject is not None and subject not in self.state.configs:
                    raise _err(40408, f"Subject '{subject}' does not have subject-level compatibility configured")
                old = self.state.level(subject)
            self.log.append([(config_key(subject), None)])
        return {"compatibilityLevel": old}

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self._write:
            self.log.sync()
            with self._lock:
                every = self.state.versions(subject, deleted=True)
                live = self.state.versions(subject)
                if not every:
                    raise subject_not_found(subject)
                if not permanent:
                    if not live:
                        raise _err(40404, f"Subject '{subject}' was soft deleted. Set permanent=true to delete "
                                          f"permanently")
                    for c in live:
                        self._unreferenced(c)
                    records: list[tuple[bytes, bytes | None]] = [
                        (deleted_key(subject, c.version), DELETED_VALUE) for c in live
                    ]
                    chosen = live
                else:
                    if live:
                        raise _err(40405, f"Subject '{subject}' was not deleted first before being permanently "
                                          f"deleted")
                    records = [r for c in every for r in self._purge(c)]
                    if subject in self.state.configs:
                        records.append((config_key(subject), None))
                    chosen = every
            self.log.append(records)
        return [c.version for c in chosen]

    def delete_version(self, subject: str, raw: str, permanent: bool) -> int:
        parse_version(raw)
        with self._write:
            self.log.sync()
            with self._lock:
                claim = self._find(subject, raw, deleted=permanent or raw != "latest")
                soft = self.state.is_deleted(claim)
                if not permanent:
                    if soft:
                        raise _err(40406, f"Subject '{subject}' Version {claim.version} was soft deleted. Set "
                                          f"permanent=true to delete permanently")
                    self._unreferenced(claim)
                    records: list[tuple[bytes, bytes | None]] = [(deleted_key(subject, claim.version), DELETED_VALUE)]
                else:
                    if not soft:
                        raise _err(40407, f"Subject '{subject}' Version {claim.version} was not deleted first "
                                          f"before being permanently deleted")
                    records = self._purge(claim)
            self.log.append(records)
        return claim.version

    def _unreferenced(self, claim: Claim) -> None:
        """42206 if another schema references this version: deleting it would leave that schema unreadable."""
        ids = self.state.referenced_by(claim.subject, claim.version)
        if ids:
            raise _err(42206, f"One or more references exist to the schema {{subject={claim.subject}, "
                              f"version={claim.version}}}: schema id(s) {', '.join(map(str, ids))}")

    def _purge(self, claim: Claim) -> list[tuple[bytes, bytes | None]]:
        """Tombstones that remove a version for good, its losing rivals too, and the id high-water mark that
        keeps its id from being reused once compaction has dropped the claim."""
        slot = (claim.subject, claim.version)
        out: list[tuple[bytes, bytes | None]] = [(claim.key, None), (deleted_key(*slot), None)]
        out += [(k, None) for k in sorted(self.state.rejected.get(slot, ()))]
        out.append((HWM_KEY, hwm_value(self.state.max_id)))
        return out
