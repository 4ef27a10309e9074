"""What the worker checks of a consumed record before its processor sees it: that its key is in the format its
topic declares, that it sits on the partition its key belongs to, and which id it is deduplicated by.

Why the partition check: an entity's state lives on one partition, the one Kafka's default partitioner (the
Java client's murmur2, streams.kafka.partition) gives its key, and the engine's own producers send its
commands and replies there. A producer with another partitioner (librdkafka's default is CRC32) puts the
entity's first event elsewhere; every reply then lands where the entity is not. So a record off its key's
partition is re-routed there (or dead-lettered, ``misrouted: dlq``) before anything acts on it.

The partition a record belongs to is that of its entity key as the engine itself keys records (UTF-8 text):
for a ``string`` topic those are the raw key bytes; for an ``avro`` or ``json`` topic they are the decoded
key, because the commands and replies the engine produces for the entity carry the decoded key. The raw bytes
(as the producer hashed them) tell the operator which partitioner the producer used.

Compiled with mypyc (streams/_native.py): :meth:`Router.admit` runs for every record; its common case is a
dict lookup, one byte test and one murmur2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

import orjson

from streams.errors import BadKeyError, MisroutedError
from streams.kafka.client import partition_count
from streams.kafka.io import Consumer, Producer
from streams.kafka.partition import crc32_partition_of, partition_of
from streams.records import H_EVENT_ID, H_RAW_KEY, Headers, InputRecord, header
from streams.runtime.metrics import Metrics

# Headers a producer may name itself in; librdkafka does not put its client.id in records.
PRODUCER_HEADERS = ("client.id", "client-id", "producer")
_FIX = "set partitioner=murmur2_random in the producer"
# First bytes a plain string key would rarely start with, but other formats do (Confluent framing, JSON).
_SUSPECT: Final = frozenset(b'\x00{["')
_PLAIN: Final = "a plain string"


class Router:
    """One worker's check of its input records' keys and partitions."""

    def __init__(self, key_formats: Mapping[str, str], partitioner: str, misrouted: str, metrics: Metrics,
                 log: Callable[[str], None]) -> None:
        self.formats: dict[str, str] = {t: f for t, f in key_formats.items() if f != "string"}
        self.check = partitioner != "none"
        self.reroute = misrouted == "reroute"
        self.partitions: dict[str, int] = {}
        self.metrics = metrics
        self.log = log
        self._told: set[tuple[str, str]] = set()

    def learn(self, client: Consumer | Producer, topics: Iterable[str]) -> None:
        """The partition counts of ``topics``, from the cluster (a topic created by hand can differ from the
        file); on every assignment, since partitions can be added. The worker asks through its producer: see
        :func:`~streams.kafka.client.partition_count`."""
        for t in topics:
            n = partition_count(client, t, f"reading the partition count of {t}")
            if n is not None:
                self.partitions[t] = n

    def admit(self, rec: InputRecord) -> bytes:
        """The entity key of ``rec`` (whose key is the raw, non-empty bytes); raises BadKeyError for a key not
        in the declared format and MisroutedError for a record off its key's partition."""
        raw = rec.key
        topic = rec.topic
        fmt = self.formats.get(topic) if self.formats else None
        if fmt is None:
            key = raw if raw[0] not in _SUSPECT else _plain(raw, topic)
        else:
            key = decode_key(raw, fmt, topic, rec.headers)
        if self.check:
            n = self.partitions.get(topic, 0)
            if n > 1:
                home = partition_of(key, n)
                if home != rec.partition:
                    raise self._misrouted(rec, key, home, n)
        return key

    def _misrouted(self, rec: InputRecord, key: bytes, home: int, n: int) -> MisroutedError:
        topic = rec.topic
        self.metrics.misrouted_by_topic[topic] += 1
        cause = diagnose(rec.key, key, rec.partition, n)
        err = MisroutedError(f"{topic}[{rec.partition}] holds key {_show(key)}, which belongs to partition {home} "
                             f"(murmur2 of {n}): {cause}", home)
        producer = next((v.decode("utf-8", "replace") for k, v in rec.headers
                         if k in PRODUCER_HEADERS and v is not None), "")
        if (topic, producer) not in self._told:
            self._told.add((topic, producer))
            who = f"producer {producer!r}" if producer else "a producer (records do not name their client id)"
            action = "re-routing such records" if self.reroute else "dead-lettering such records (misrouted)"
            self.log(f"worker: {who} of {topic} puts keys on other partitions than the Java default partitioner "
                     f"does: {err}; {action}; streams_misrouted_total counts them")
        return err


def diagnose(raw: bytes, key: bytes, partition: int, n: int) -> str:
    """What the producer of a misrouted record most likely did, and how to fix it."""
    if crc32_partition_of(raw, n) == partition:
        return f"its producer used librdkafka's default partitioner (consistent_random, CRC32): {_FIX}"
    if raw != key and partition_of(raw, n) == partition:
        return ("its producer hashed the encoded key bytes; the engine places an entity by its decoded key: "
                "key the records by the plain string")
    return f"its producer used another partitioner or chose the partition itself: {_FIX}"


def decode_key(raw: bytes, fmt: str, topic: str, headers: Headers = ()) -> bytes:
    """The entity key (UTF-8) of a key written in format ``fmt``; BadKeyError naming what it looks like.

    The engine's own records on such a topic (replies, timers, parked copies) are keyed by the plain entity key:
    a plain string key is accepted from a record that carries the engine's id or raw-key header."""
    key = _avro_string(raw) if fmt == "avro" else _json_string(raw) if fmt == "json" else _plain(raw, topic)
    if key is None and (header(headers, H_EVENT_ID) is not None or header(headers, H_RAW_KEY) is not None) \
            and looks_like(raw) == _PLAIN:
        key = raw
    if key is None:
        raise BadKeyError(f"key {_show(raw)} looks like {looks_like(raw)}; the topology declares {fmt} for {topic}")
    return key


def _plain(raw: bytes, topic: str) -> bytes:
    """A string key that starts like another format: refused only if it is one."""
    what = looks_like(raw)
    if what.startswith(("Confluent", "JSON")) or raw[0] == 0:
        raise BadKeyError(f"key {_show(raw)} looks like {what}; the topology declares string for {topic}")
    return raw


def looks_like(raw: bytes) -> str:
    if len(raw) >= 5 and raw[0] == 0:
        schema_id = int.from_bytes(raw[1:5], "big")
        if _avro_string(raw) is not None:
            return f"Confluent-framed Avro (schema id {schema_id})"
        return f"Confluent-framed (schema id {schema_id}), but not an Avro string"
    if _json_string(raw) is not None:
        return "JSON"
    try:
        raw.decode()
    except UnicodeDecodeError:
        return "binary (not UTF-8)"
    return _PLAIN if raw[:1] != b"\x00" else "binary (a NUL byte first)"


def _avro_string(raw: bytes) -> bytes | None:
    """The string of a Confluent-framed Avro key (magic 0, schema id, then an Avro string: the encoding of a
    record of one string field too), or None. Read without the registry: the bytes say it all."""
    end = len(raw)
    if end < 6 or raw[0] != 0:
        return None
    i = 5
    acc = 0
    shift = 0
    while True:
        if i >= end or shift > 56:
            return None
        b = raw[i]
        i += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    size = (acc >> 1) ^ -(acc & 1)
    if size <= 0 or i + size != end:
        return None
    out = raw[i:]
    try:
        out.decode()
    except UnicodeDecodeError:
        return None
    return out


def _json_string(raw: bytes) -> bytes | None:
    """The string of a JSON key (a string, or an object of one string field), or None."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if isinstance(value, str) and value:
        return value.encode()
    return None


def _show(key: bytes) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def decoded(rec: InputRecord, key: bytes) -> InputRecord:
    """``rec`` under its entity key, the raw key kept in a header so that a dead letter carries the bytes its
    producer wrote (and a replay of it is decoded again)."""
    headers: Headers = (*rec.headers, (H_RAW_KEY, rec.key))
    return InputRecord(rec.topic, rec.partition, rec.offset, key, rec.value, rec.timestamp_ms, headers)


def with_id(rec: InputRecord, event_id: str | None) -> InputRecord:
    """``rec`` carrying ``event_id`` in its id header (None: as it is): every later reader of the record — the
    processor, its outputs' ids, a dead letter, a re-routed copy — then sees the id it was deduplicated by."""
    if event_id is None:
        return rec
    headers: Headers = (*rec.headers, (H_EVENT_ID, event_id.encode()))
    return InputRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value, rec.timestamp_ms, headers)


def settled(rec: InputRecord, envelope_id: Callable[[InputRecord], str | None] | None) -> InputRecord:
    """``rec`` with an id header: its own, else its envelope's id, else its position (which a re-routed copy
    must carry, since the copy's own position differs). Decoding problems leave the position: the record's
    owner decodes it again and dead-letters it if it is bad."""
    if header(rec.headers, H_EVENT_ID) is not None:
        return rec
    eid: str | None = None
    if envelope_id is not None:
        try:
            eid = envelope_id(rec)
        except Exception:  # a bad value is the owner's to dead-letter, not this check's
            eid = None
    return with_id(rec, eid if eid is not None else rec.event_id)
