"""The entity envelope: how one entity's state is laid out in RocksDB and in its changelog record.

    version:u8 | source topic crc32:u32 | source offset:i64 | n ids:u8 | (len:u8 id)* | state bytes

The source position says which input record last changed the entity: restore uses it to skip changelog records
of batches whose offsets were never committed, and to refuse a stale write landing after a newer one (a zombie
worker). The recent event ids make redelivered input recognisable (invariant 3). Live store and changelog hold
the same bytes, so a restored store is byte-identical to the live one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from hashlib import blake2b

_HEAD = struct.Struct(">BIqB")
_VERSION = 1
_MAX_ID = 255


def topic_tag(topic: str) -> int:
    """A compact, stable tag for a source topic; offsets are only compared between equal tags."""
    return zlib.crc32(topic.encode())


def _id_bytes(event_id: str) -> bytes:
    raw = event_id.encode()
    return raw if len(raw) <= _MAX_ID else blake2b(raw, digest_size=32).hexdigest().encode()


# __init__ written out, compiled natively: see streams.records.
@dataclass(slots=True)
class Entity:
    """A decoded envelope; ``state`` is the processor's own encoding."""

    source_tag: int
    source_offset: int
    recent_ids: list[bytes]
    state: bytes | None

    def __init__(self, source_tag: int, source_offset: int, recent_ids: list[bytes], state: bytes | None) -> None:
        self.source_tag = source_tag
        self.source_offset = source_offset
        self.recent_ids = recent_ids
        self.state = state

    def seen(self, event_id: str) -> bool:
        return _id_bytes(event_id) in self.recent_ids


def encode(tag: int, offset: int, recent_ids: list[bytes], state: bytes) -> bytes:
    parts = [_HEAD.pack(_VERSION, tag, offset, len(recent_ids))]
    for i in recent_ids:
        parts.append(bytes((len(i),)))
        parts.append(i)
    parts.append(state)
    return b"".join(parts)


def decode(raw: bytes) -> Entity:
    version, tag, offset, n = _HEAD.unpack_from(raw, 0)
    if version != _VERSION:
        raise ValueError(f"unknown entity envelope version {version}")
    pos = _HEAD.size
    ids: list[bytes] = []
    for _ in range(n):
        ln = raw[pos]
        ids.append(raw[pos + 1 : pos + 1 + ln])
        pos += 1 + ln
    return Entity(tag, offset, ids, raw[pos:])


def source_of(raw: bytes) -> tuple[int, int]:
    """Just the source position, without decoding the rest (the restore hot path)."""
    _, tag, offset, _ = _HEAD.unpack_from(raw, 0)
    return tag, offset


def remember(recent: list[bytes], event_id: str, window: int) -> list[bytes]:
    """The recent-id list with ``event_id`` appended, oldest dropped beyond ``window``."""
    out = [*recent, _id_bytes(event_id)]
    return out[-window:] if len(out) > window else out
