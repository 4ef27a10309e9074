"""The durable timer index: one RocksDB key per pending timer, ordered by due time.

    key   = b"t" | due_ms:u64 | entity key | 0x00 | timer name
    value = entity envelope (source position, no ids) around the record to produce when the timer is due

Ordering by due time makes "what is due now" one seek and a short scan. Index entries are written and removed
only by processing input records (a step sets or clears a timer), so they follow the same commit and restore
rules as entity state; firing a timer writes a record to the input topic and changes nothing here.
"""

from __future__ import annotations

import struct

from streams.records import OutputRecord

PREFIX = b"t"
ENTITY = b"d"
_DUE = struct.Struct(">Q")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_NONE = 0xFFFFFFFF


def index_key(due_ms: int, key: bytes, name: str) -> bytes:
    return PREFIX + _DUE.pack(max(due_ms, 0)) + key + b"\x00" + name.encode()


def due_of(index: bytes) -> int:
    return int(_DUE.unpack_from(index, 1)[0])


def encode_record(rec: OutputRecord) -> bytes:
    topic = rec.topic.encode()
    parts = [_U16.pack(len(topic)), topic, _U32.pack(len(rec.key)), rec.key]
    if rec.value is None:
        parts.append(_U32.pack(_NONE))
    else:
        parts += [_U32.pack(len(rec.value)), rec.value]
    parts.append(_U16.pack(len(rec.headers)))
    for name, value in rec.headers:
        n = name.encode()
        parts += [_U16.pack(len(n)), n]
        # a null header value (Kafka allows them; a parked input may carry one) keeps its null
        parts += [_U32.pack(_NONE)] if value is None else [_U32.pack(len(value)), value]
    return b"".join(parts)


def decode_record(raw: bytes) -> OutputRecord:
    pos = 0

    def take(fmt: struct.Struct) -> int:
        nonlocal pos
        (v,) = fmt.unpack_from(raw, pos)
        pos += fmt.size
        return int(v)

    def blob(n: int) -> bytes:
        nonlocal pos
        out = raw[pos : pos + n]
        pos += n
        return out

    topic = blob(take(_U16)).decode()
    key = blob(take(_U32))
    vlen = take(_U32)
    value = None if vlen == _NONE else blob(vlen)
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(take(_U16)):
        name = blob(take(_U16)).decode()
        hlen = take(_U32)
        headers.append((name, None if hlen == _NONE else blob(hlen)))
    return OutputRecord(topic, key, value, tuple(headers))
