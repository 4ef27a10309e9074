"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

The per-record path is one codec call plus a few bytes of header: a codec generated for the schema
(:mod:`streams.contracts.fastcodec`: fastavro's bytes, about twice as fast), or fastavro itself for what the
generator does not take. Writers resolve their schema id once per (topic, record) and readers resolve a writer
schema once per id, both cached. A reader decodes into its own
(reader) schema through Avro schema resolution, so producers built against old and new contracts coexist.

Subject strategies (``Catalogue.subject``):

- ``record``: one subject per record, its full name (Confluent's RecordNameStrategy).
- ``topic``: ``<topic>-value`` for a topic of one record type (TopicNameStrategy); a topic that carries several
  (declared in ``subjects.yaml``) gets one subject per record, ``<topic>-<full name>`` (TopicRecordNameStrategy),
  so every record is written with its own schema's id, exactly as a stock Confluent serializer writes it.

Readers go by the writer's id whatever the strategy, so records written under any of Confluent's strategies, or
as a branch of a union (the index in front of the body, as earlier versions wrote multi-type topics), decode.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.contracts.avsc import canonical, named_types, standalone, type_name, without_time_types
from streams.contracts.catalogue import STRATEGIES, Catalogue, SchemaEntry, entry
from streams.contracts.client import RegistryClient
from streams.contracts.fastcodec import Reader as FastReader
from streams.contracts.fastcodec import compile_reader, compile_writer
from streams.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    SchemaMismatchError,
    SchemaRegistryError,
    UnknownMagicByteError,
    UnknownSchemaError,
)

MAGIC = 0
HEADER = struct.Struct(">bI")
Record = dict[str, Any]
Encoder = Callable[[Mapping[str, Any]], bytes]
_Reader = Callable[[bytes], tuple[str, Record]]

# How long an id the registry said it does not know is answered from memory: a burst of poison records must not
# become a burst of registry calls, yet a schema registered a moment later is found soon.
UNKNOWN_ID_TTL_S = 5.0


def header(schema_id: int) -> bytes:
    return HEADER.pack(MAGIC, schema_id)


class Serde:
    """Encoders and a decoder bound to one registry and one catalogue.

    ``readers`` optionally maps a record's full name to the schema it should be decoded into (a catalogue entry,
    e.g. from another Catalogue, or a self-contained schema as JSON); by default records decode into this
    catalogue's schema of the same name, and records whose name the catalogue does not know decode with their
    writer's schema.

    Date and time logical types (``occurred_at`` is a ``timestamp-millis``) decode as plain ints (epoch millis)
    unless ``logical_types=True``: the runtime compares, hashes and stores them, and ints round-trip exactly and
    cost nothing to build. Encoders accept ints or datetimes either way.
    """

    def __init__(self, registry: RegistryClient, catalogue: Catalogue, strategy: str = "topic", *,
                 auto_register: bool = True, readers: Mapping[str, SchemaEntry | Any] | None = None,
                 logical_types: bool = False) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown subject strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        self.registry = registry
        self.catalogue = catalogue
        self.strategy = strategy
        self.auto_register = auto_register
        self.logical_types = logical_types
        self._readers_override = dict(readers or {})
        self._reader_entries: dict[str, SchemaEntry | None] = {}
        self._encoders: dict[tuple[str, str], Encoder] = {}
        self._decoders: dict[int, _Reader] = {}
        self._unknown: dict[int, float] = {}
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------------------

    def subject(self, topic: str, record_name: str) -> str:
        return self.catalogue.subject(topic, record_name, self.strategy)

    def encoder(self, topic: str, record_name: str) -> Encoder:
        """A function record → bytes for ``record_name`` on ``topic``; registers or looks up the id once."""
        key = (topic, record_name)
        enc = self._encoders.get(key)
        if enc is None:
            enc = self._encoders[key] = self._make_encoder(topic, record_name)
        return enc

    def register_topic(self, topic: str) -> int | None:
        """Register (or, without auto-registration, look up) a multi-type topic's union under ``<topic>-value``;
        None for any other topic. No record is written with it, but it declares to the registry which records the
        topic carries: a stock producer (TopicNameStrategy) that sends one of them to ``<topic>-value`` gets it
        filed under its own subject, ``<topic>-<full name>``. A workflow registers its input topic at startup."""
        union = self.catalogue.topic_entry(topic)
        if self.strategy != "topic" or union is None or not union.branches:
            return None
        subject = f"{topic}-value"
        if self.auto_register:
            return self.registry.register(subject, union.text)
        return self.registry.lookup(subject, union.text).id

    def encode(self, topic: str, record_name: str, record: Mapping[str, Any]) -> bytes:
        """Convenience for one record; hot loops should hold on to ``encoder(...)`` instead."""
        return self.encoder(topic, record_name)(record)

    def _make_encoder(self, topic: str, record_name: str) -> Encoder:
        name = self.catalogue.resolve(record_name)
        registered = self.catalogue.get(name)
        body_schema = registered.parsed
        declared = self.catalogue.topics.get(topic)
        if self.strategy == "topic" and declared and name not in declared:
            raise ConfigError(f"{name} is not declared for topic {topic} in subjects.yaml (it carries "
                              f"{', '.join(declared)})")
        subject = self.subject(topic, name)
        if self.auto_register:
            schema_id = self.registry.register(subject, registered.text)
        else:
            schema_id = self.registry.lookup(subject, registered.text).id
        head = header(schema_id)
        what = f"{name} for topic {topic}"

        def encode_reference(record: Mapping[str, Any]) -> bytes:
            buf = BytesIO()
            buf.write(head)
            try:
                schemaless_writer(buf, body_schema, record)
            except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/... for a bad record
                raise EncodeError(f"cannot encode {what}: {exc}") from exc
            return buf.getvalue()

        fast = compile_writer(body_schema, head)
        if fast is None:
            return encode_reference

        def encode(record: Mapping[str, Any]) -> bytes:
            try:
                return fast(record)
            except Exception:  # a datum the generated writer does not take as is: fastavro decides
                return encode_reference(record)

        return encode

    # -- reading ---------------------------------------------------------------------------------------------

    def decode(self, data: bytes | None) -> tuple[str, Record]:
        """(record full name, record) of a wire-format value, decoded into the reader schema of that name.

        Raises UnknownMagicByteError, UnknownSchemaError, SchemaMismatchError (all dead-letter RecordErrors);
        a registry that cannot be reached raises the retryable SchemaRegistryUnavailableError instead.
        """
        if not data or len(data) < 5 or data[0] != MAGIC:
            raise _header_error(data)
        schema_id = HEADER.unpack_from(data)[1]
        read = self._decoders.get(schema_id)
        if read is None:
            read = self._load_reader(schema_id)
        return read(data)

    def _load_reader(self, schema_id: int) -> _Reader:
        with self._lock:
            read = self._decoders.get(schema_id)
            if read is not None:
                return read
            until = self._unknown.get(schema_id)
            if until is not None and time.monotonic() < until:
                raise UnknownSchemaError(f"schema id {schema_id} is not known to the registry at {self.registry.url}")
            try:
                read = self._build_reader(schema_id, self.registry.resolved(schema_id))
            except SchemaRegistryError as exc:
                if exc.http_status == 404:
                    self._unknown[schema_id] = time.monotonic() + UNKNOWN_ID_TTL_S
                    raise UnknownSchemaError(
                        f"schema id {schema_id} is not known to the registry at {self.registry.url}"
                    ) from exc
                raise
            except ValueError as exc:
                read = _failing(SchemaMismatchError(
                    f"schema id {schema_id}: the registry returned an unusable schema: {exc}"))
            except SchemaMismatchError as exc:
                read = _failing(exc)  # cached too: every record with this id fails the same way, without a call
            self._decoders[schema_id] = read
            return read

    def _decoding(self, schema: Any) -> Any:
        return schema if self.logical_types else without_time_types(schema)

    def _reader_for(self, name: str, writer: SchemaEntry) -> Any:
        """The parsed reader schema for records named ``name``, or None when it equals the writer's."""
        if name not in self._reader_entries:
            found = self._readers_override.get(name) or self.catalogue.find(name)
            if found is None:
                self._reader_entries[name] = None
            else:
                schema = found.schema if isinstance(found, SchemaEntry) else canonical(found)
                self._reader_entries[name] = entry(name, self._decoding(schema))
        reader = self._reader_entries[name]
        if reader is None or reader.text == writer.text:
            return None
        return reader.parsed

    def _build_reader(self, schema_id: int, resolved: Any) -> _Reader:
        schema = self._decoding(resolved)
        if not isinstance(schema, list):
            name = type_name(schema)
            writer = _entry(schema_id, name, schema)
            return _plain_reader(schema_id, name, writer.parsed, self._reader_for(name, writer))
        defs = named_types(schema)
        branches: list[tuple[str, Any, Any]] = []
        for branch in schema:
            name = type_name(branch)
            w = _entry(schema_id, name, standalone(name, defs) if name in defs else branch)
            branches.append((name, w.parsed, self._reader_for(name, w)))
        return _union_reader(schema_id, tuple(branches))


def _entry(schema_id: int, name: str, schema: Any) -> SchemaEntry:
    try:
        return entry(name, schema)
    except ConfigError as exc:
        raise SchemaMismatchError(f"schema id {schema_id}: {exc}") from exc


def _failing(error: SchemaMismatchError) -> _Reader:
    def read(data: bytes) -> tuple[str, Record]:
        raise SchemaMismatchError(str(error))

    return read


def _header_error(data: bytes | None) -> DecodeError:
    if not data:
        return DecodeError("empty value: expected the Confluent wire format (magic byte 0 + 4-byte schema id)")
    if data[0] != MAGIC:
        return UnknownMagicByteError(
            f"unknown magic byte 0x{data[0]:02x}: value is not in the Confluent wire format (magic byte 0x00)"
        )
    return DecodeError(f"value is {len(data)} bytes, shorter than the 5-byte Confluent header")


def _body(data: bytes, pos: int, schema_id: int, name: str, writer: Any, reader: Any,
          fast: FastReader | None = None) -> Any:
    if fast is not None:
        try:
            value, end = fast(data, pos)
        except Exception:  # malformed: let fastavro name the problem below
            pass
        else:
            if end == len(data):
                return value
    fo = BytesIO(data)
    fo.seek(pos)
    try:
        value = schemaless_reader(fo, writer, reader)
    except Exception as exc:  # any failure inside fastavro means these bytes do not fit the schema
        raise SchemaMismatchError(f"body does not match schema id {schema_id} ({name}): {exc!r}") from exc
    if fo.tell() != len(data):
        raise SchemaMismatchError(
            f"body does not match schema id {schema_id} ({name}): {len(data) - fo.tell()} trailing bytes"
        )
    return value


def _plain_reader(schema_id: int, name: str, writer: Any, reader: Any) -> _Reader:
    fast = compile_reader(writer) if reader is None else None

    def read(data: bytes) -> tuple[str, Record]:
        return name, _body(data, 5, schema_id, name, writer, reader, fast)

    return read


def _union_reader(schema_id: int, branches: tuple[tuple[str, Any, Any], ...]) -> _Reader:
    n_branches = len(branches)
    fast = tuple(compile_reader(writer) if reader is None else None for _name, writer, reader in branches)

    def read(data: bytes) -> tuple[str, Record]:
        pos, shift, z = 5, 0, 0
        try:
            while True:  # the union branch index: a zigzag varint, one byte for < 64 branches
                b = data[pos]
                pos += 1
                z |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
        except IndexError:
            raise SchemaMismatchError(f"body does not match schema id {schema_id}: no union branch index") from None
        index = (z >> 1) ^ -(z & 1)
        if not 0 <= index < n_branches:
            raise SchemaMismatchError(
                f"body does not match schema id {schema_id}: union branch {index} of {n_branches}"
            )
        name, writer, reader = branches[index]
        return name, _body(data, pos, schema_id, name, writer, reader, fast[index])

    return read
