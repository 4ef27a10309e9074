"""Runs a workflow definition (``streams.workflow``) as a runtime processor.

The adapter is thin on purpose: decode the Avro record into an :class:`Event`, call the pure ``step``, and
translate its result into the runtime's terms — a failure becomes the typed error that dead-letters the input,
outputs become Avro records with the envelope and a deterministic id, and the step's timer deltas become
changes of the partition's durable timer index, whose records are ``TimerFired`` events written back to the
workflow's own input topic (so a replay of the log replays the timeouts too). A parked event is handed to the
runtime (``Step.park_until_ms``), which holds and re-offers it; its first deadline comes back in a header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streams.processors.avro import envelope, key_of, make_serde
from streams.records import H_EVENT_ID, InputRecord, OutputRecord
from streams.runtime import parking
from streams.runtime.processor import UNCHANGED, Step, TimerChange
from streams.workflow import (
    Event,
    Timer,
    WorkflowState,
    create,
    event_from_record,
    step,
)

H_COMMAND_ID = "streams-command-id"
TIMER_FIRED = "streams.common.TimerFired"
_GENERIC = {"workflow", "state", "attempts", "completed_steps", "timers", "history", "reason", "created_at",
            "updated_at", "schema_version"}


class WorkflowProcessor:
    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        name = str(options.get("workflow", "orders"))
        self.definition = create(name, dict(options.get("params") or {}))
        self.input_topic: str = self.definition.input_topic
        self.serde = make_serde(options)
        state_topic = str(options.get("state_topic", f"{name}-state"))
        state_record = str(options.get("state_record", "streams.orders.OrderState"))
        entry = self.serde.catalogue.get(self.serde.catalogue.resolve(state_record))
        fields = [f["name"] for f in json.loads(entry.text)["fields"]]
        self.data_fields = tuple(f for f in fields if f not in _GENERIC)
        self.schema_version = 1
        self._encode_state = self.serde.encoder(state_topic, state_record)
        self._timer_encoder = self.serde.encoder(self.input_topic, TIMER_FIRED)
        self._encoders: dict[tuple[str, str], Any] = {}
        self._metrics: Any = None
        # Stuck: non-terminal longer than its state's SLA (options.sla_ms: {state: ms, default: ms}).
        sla = dict(options.get("sla_ms") or {})
        self._default_sla = int(sla.pop("default", 15 * 60_000))
        self._sla = {str(k): int(v) for k, v in sla.items()}
        self._terminal = frozenset(self.definition.terminal)

    # -- codec -------------------------------------------------------------------------------------------

    def decode(self, record: InputRecord) -> Event:
        name, body = self.serde.decode(record.value)
        body.pop("envelope", None)
        event = event_from_record(name.rsplit(".", 1)[-1], key_of(record), record.event_id, body,
                                  record.timestamp_ms)
        deadline = parking.deadline_of(record)
        return event if deadline is None else event.reoffer(deadline)

    def load_state(self, raw: bytes) -> WorkflowState:
        _name, rec = self.serde.decode(raw)
        rec["data"] = {f: rec.pop(f) for f in self.data_fields if f in rec}
        return WorkflowState.from_record(rec)

    def dump_state(self, state: WorkflowState) -> bytes:
        rec = state.to_record()
        data = rec.pop("data")
        for f in self.data_fields:
            rec[f] = data.get(f)
        rec["schema_version"] = self.schema_version
        return self._encode_state(rec)

    # -- operators' views -------------------------------------------------------------------------------

    def bind_metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    def _stuck(self, st: WorkflowState, now_ms: int) -> bool:
        return st.state not in self._terminal and now_ms - st.updated_at > self._sla.get(st.state, self._default_sla)

    def summarize(self, raw: bytes, now_ms: int) -> tuple[str, str, bool]:
        st = self.load_state(raw)
        return st.workflow, st.state, self._stuck(st, now_ms)

    def describe(self, raw: bytes, now_ms: int) -> dict[str, Any]:
        """The status-query view of one entity: its state, data, pending timers and recent history."""
        st = self.load_state(raw)
        rec = st.to_record()
        rec["terminal"] = st.state in self._terminal
        rec["stuck"] = self._stuck(st, now_ms)
        return rec

    # -- the step ----------------------------------------------------------------------------------------

    def process(self, state: WorkflowState | None, event: Event, record: InputRecord,
                now_ms: int) -> Step[WorkflowState]:
        res = step(self.definition, state, event, now_ms)
        if res.failure is not None:
            raise res.failure.to_error()
        if res.park_until_ms is not None:
            return Step(UNCHANGED, park_until_ms=res.park_until_ms)
        if not res.changed:
            return Step(UNCHANGED)
        key = event.key
        bkey = record.key
        outputs = []
        for out in res.outputs:
            enc = self._encoders.get((out.topic, out.record))
            if enc is None:
                enc = self._encoders[(out.topic, out.record)] = self.serde.encoder(out.topic, out.record)
            body = {**out.payload, "envelope": envelope(out.output_id, key, out.record, event.timestamp_ms,
                                                        event.event_id)}
            headers: list[tuple[str, bytes]] = [(H_EVENT_ID, out.output_id.encode())]
            if out.command_id is not None:
                headers.append((H_COMMAND_ID, out.command_id.encode()))
                if self._metrics is not None and int(out.payload.get("attempt", 1) or 1) > 1:
                    self._metrics.retry_by_command[(self.definition.name, out.record)] += 1
            outputs.append(OutputRecord(out.topic, bkey, enc(body), tuple(headers)))
        changes = [TimerChange(t.name, t.due_at, None) for t in res.timers_cancelled]
        changes += [TimerChange(t.name, t.due_at, self._fired_record(key, bkey, t)) for t in res.timers_set]
        return Step(res.state, outputs, changes)

    def _fired_record(self, key: str, bkey: bytes, timer: Timer) -> OutputRecord:
        event_id = timer.event_id(key)
        body = {**timer.fired_payload(), "envelope": envelope(event_id, key, TIMER_FIRED, timer.due_at, None)}
        return OutputRecord(self.input_topic, bkey, self._timer_encoder(body), ((H_EVENT_ID, event_id.encode()),))


def factory(options: dict[str, object], outputs: Sequence[str]) -> WorkflowProcessor:
    return WorkflowProcessor(options, outputs)
