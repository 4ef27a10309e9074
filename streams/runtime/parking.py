"""Parked events: inputs that arrived before their entity could accept them, held for a bounded wait.

A processor parks an input by returning ``Step(UNCHANGED, park_until_ms=deadline)``. The runtime keeps the
record, untouched, as an entry of the partition's durable timer index, due at the deadline, named
``park:<event id>``. So a parked event is changelogged, restored and counted exactly like a timer, and needs
no place in the processor's own state schema:

* after every step that changes the entity, the runtime offers its parked events again, oldest deadline
  first, until none is accepted; an accepted one is applied in the same batch as the input that unblocked it
  (and leaves the index), so the commit protocol covers it like any other effect;
* at the deadline the timer fires the record back into its input partition with ``streams-parked-until``.
  That copy is offered once more (the processor sees the deadline has passed and either accepts it or fails
  it, which dead-letters it with its original headers). A copy whose entry is already gone was applied by an
  earlier re-offer and is dropped as a duplicate.
"""

from __future__ import annotations

from streams.records import (
    H_EVENT_ID,
    H_PARKED_OFFSET,
    H_PARKED_TS,
    H_PARKED_UNTIL,
    InputRecord,
    OutputRecord,
    header,
)
from streams.state import timers

NAME_PREFIX = "park:"
_MARK = b"\x00" + NAME_PREFIX.encode()
_OURS = frozenset({H_PARKED_UNTIL, H_PARKED_TS, H_PARKED_OFFSET})


def entry_key(deadline_ms: int, key: bytes, event_id: str) -> bytes:
    return timers.index_key(deadline_ms, key, NAME_PREFIX + event_id)


def parse(tkey: bytes) -> tuple[bytes, str] | None:
    """(entity key, event id) of a parked entry's index key; None for an ordinary timer."""
    at = tkey.find(_MARK, 9)
    if at < 0:
        return None
    return tkey[9:at], tkey[at + len(_MARK):].decode("utf-8", "replace")


def deadline_of(rec: InputRecord) -> int | None:
    """The park deadline a record carries: set on a parked record's expiry copy and on re-offers."""
    raw = header(rec.headers, H_PARKED_UNTIL)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def held(rec: InputRecord, deadline_ms: int) -> OutputRecord:
    """What the index keeps for ``rec``: the record as it was, plus its deadline, its original timestamp and
    offset, and its event id made explicit (an id derived from the log position would change with the copy)."""
    headers = [h for h in rec.headers if h[0] not in _OURS]
    if header(headers, H_EVENT_ID) is None:
        headers.append((H_EVENT_ID, rec.event_id.encode()))
    headers += [(H_PARKED_UNTIL, str(deadline_ms).encode()), (H_PARKED_TS, str(rec.timestamp_ms).encode()),
                (H_PARKED_OFFSET, f"{rec.topic}/{rec.partition}/{rec.offset}".encode())]
    return OutputRecord(rec.topic, rec.key, rec.value, tuple(headers))


def reoffered(stored: OutputRecord, trigger: InputRecord) -> InputRecord:
    """A held record offered again while ``trigger`` is processed. It takes the trigger's position, so what
    it causes is committed, restored and deduplicated with the trigger; it keeps its own timestamp."""
    raw_ts = header(stored.headers, H_PARKED_TS)
    ts = int(raw_ts) if raw_ts is not None and raw_ts.isdigit() else trigger.timestamp_ms
    return InputRecord(trigger.topic, trigger.partition, trigger.offset, stored.key, stored.value, ts,
                       stored.headers)


class ParkedIndex:
    """Which entities of which partition have parked events: memory only, rebuilt from the timer index on
    activation, so the hot path checks a dict instead of scanning RocksDB after every step."""

    def __init__(self) -> None:
        self._by_part: dict[int, dict[bytes, dict[str, bytes]]] = {}

    def load(self, p: int, index_keys: list[bytes]) -> int:
        part: dict[bytes, dict[str, bytes]] = {}
        for tkey in index_keys:
            parsed = parse(tkey)
            if parsed is not None:
                part.setdefault(parsed[0], {})[parsed[1]] = tkey
        self._by_part[p] = part
        return sum(len(v) for v in part.values())

    def drop(self, p: int) -> None:
        self._by_part.pop(p, None)

    def add(self, p: int, key: bytes, event_id: str, tkey: bytes) -> None:
        self._by_part.setdefault(p, {}).setdefault(key, {})[event_id] = tkey

    def get(self, p: int, key: bytes, event_id: str) -> bytes | None:
        return self._by_part.get(p, {}).get(key, {}).get(event_id)

    def remove(self, p: int, key: bytes, event_id: str) -> bytes | None:
        part = self._by_part.get(p, {})
        entries = part.get(key)
        if not entries:
            return None
        tkey = entries.pop(event_id, None)
        if not entries:
            del part[key]
        return tkey

    def has(self, p: int, key: bytes) -> bool:
        """Whether the entity has parked events: asked after every changed step, so a dict lookup only."""
        return bool(self._by_part.get(p, {}).get(key))

    def of(self, p: int, key: bytes) -> list[tuple[str, bytes]]:
        """(event id, index key) of the entity's parked events, earliest deadline first."""
        entries = self._by_part.get(p, {}).get(key)
        return sorted(entries.items(), key=lambda kv: kv[1]) if entries else []

    def count(self) -> int:
        return sum(len(v) for part in self._by_part.values() for v in part.values())
