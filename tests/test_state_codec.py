"""The hot path's shortcuts around Avro must be invisible: same decoded states, same timer records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.lab import bench_data as data
from streams.processors.avro import envelope
from streams.processors.workflow import TIMER_FIRED, WorkflowProcessor
from streams.records import H_EVENT_ID, OutputRecord
from streams.registry import RegistryServer
from streams.state import entity
from streams.workflow import Timer


@pytest.fixture(scope="module")
def processor() -> Iterator[WorkflowProcessor]:
    with RegistryServer(port=0) as registry:  # memory-only
        yield WorkflowProcessor({"workflow": "orders", "registry": registry.url}, [])


def test_a_state_is_decoded_once_and_round_trips(processor: WorkflowProcessor) -> None:
    raw = entity.decode(data.state_templates(processor, "p" * 12, 3)[4]).state or b""
    first = processor.load_state(raw)
    assert processor.load_state(bytes(raw)) is first  # equal bytes, the cached state
    assert first == processor._decode_state(raw)
    again = processor.dump_state(first)
    assert again == raw
    assert processor.load_state(again) == processor._decode_state(again)


def test_a_timer_record_is_built_when_it_fires_and_equals_the_eager_one(processor: WorkflowProcessor) -> None:
    timer = Timer("MakePayment.timeout", 1_700_000_000_123, "PaymentTimedOut", 2)
    stored = processor._fired_record("o-1", b"o-1", timer)
    fired = processor.fire_record(stored)
    event_id = timer.event_id("o-1")
    body = {**timer.fired_payload(), "envelope": envelope(event_id, "o-1", TIMER_FIRED, timer.due_at, None)}
    expected = processor.serde.encoder(processor.input_topic, TIMER_FIRED)(body)
    assert fired == OutputRecord(processor.input_topic, b"o-1", expected, ((H_EVENT_ID, event_id.encode()),))
    assert processor.fire_record(fired) is fired  # a finished record (a parked event) passes unchanged
