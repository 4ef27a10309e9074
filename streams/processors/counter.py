"""The counter: the simplest stateful processor, used by the runtime tests and the runtime demo.

Per key it keeps how many records it applied and the sum of their ``amount``; every applied record emits the
running totals. Exactly-once in effect is therefore checkable from outside: final count = distinct inputs,
final total = their sum, one output per input id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streams.errors import DecodeError
from streams.records import InputRecord, OutputRecord
from streams.runtime.processor import Step


class CounterProcessor:
    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.output = outputs[0] if outputs else None
        # Test hook: a record whose amount equals this makes the handler raise, to prove dead-lettering.
        self.fail_on = options.get("fail_on_amount")

    def decode(self, record: InputRecord) -> int:
        try:
            body = orjson.loads(record.value or b"")
            amount = body["amount"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise DecodeError(f"counter expects JSON {{\"amount\": int}}: {exc}") from exc
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise DecodeError(f"counter expects an integer amount, got {amount!r}")
        return amount

    def load_state(self, raw: bytes) -> tuple[int, int]:
        count, total = orjson.loads(raw)
        return int(count), int(total)

    def dump_state(self, state: tuple[int, int]) -> bytes:
        return orjson.dumps(state)

    def process(
        self, state: tuple[int, int] | None, event: int, record: InputRecord, now_ms: int
    ) -> Step[tuple[int, int]]:
        if self.fail_on is not None and event == self.fail_on:
            raise RuntimeError(f"amount {event} is configured to fail")
        count, total = state or (0, 0)
        new = (count + 1, total + event)
        outputs: tuple[OutputRecord, ...] = ()
        if self.output is not None:
            body = orjson.dumps({"key": record.key.decode("utf-8", "replace"), "count": new[0], "total": new[1],
                                 "event_id": record.event_id})
            outputs = (OutputRecord(self.output, record.key, body),)
        return Step(new, outputs)
