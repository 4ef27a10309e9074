"""Runs a workflow definition (``streams.workflow``) as a runtime processor.

The adapter is thin on purpose: decode the Avro record into an :class:`Event`, call the pure ``step``, and
translate its result into the runtime's terms — a failure becomes the typed error that dead-letters the input,
outputs become Avro records with the envelope and a deterministic id, and the step's timer deltas become
changes of the partition's durable timer index, whose records are ``TimerFired`` events written back to the
workflow's own input topic (so a replay of the log replays the timeouts too). A parked event is handed to the
runtime (``Step.park_until_ms``), which holds and re-offers it; its first deadline comes back in a header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streams.contracts import Serde
from streams.errors import ProcessingError, WorkflowDefinitionError
from streams.processors.avro import envelope, envelope_id, key_of, make_serde
from streams.processors.workflow_state import check_payloads, check_removals, check_schemas, state_contract
from streams.records import H_EVENT_ID, InputRecord, OutputRecord
from streams.runtime import parking
from streams.runtime.processor import UNCHANGED, Step, TimerChange
from streams.workflow import (
    Event,
    Timer,
    WorkflowState,
    create,
    event_from_record,
    history_records,
    step,
    timer_records,
)
from streams.workflow.fields import check_recorded

H_COMMAND_ID = "streams-command-id"
TIMER_FIRED = "streams.common.TimerFired"
# Marks a timer index value that describes a timer instead of holding its record (see fire_record). Never the
# start of a Confluent wire-format value, whose first byte is 0.
_DEFERRED = b"\xffstreams-timer\x00"


class WorkflowProcessor:
    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.definition = create(str(options.get("workflow", "orders")), dict(options.get("params") or {}))
        self.input_topic: str = self.definition.input_topic
        serde = make_serde(options)
        state_topic = str(options.get("state_topic", f"{self.definition.name}-state"))
        contract = state_contract(self.definition, serde.catalogue, state_topic, options.get("state_record"))
        self.serde = serde if contract.catalogue is serde.catalogue else Serde(
            serde.registry, contract.catalogue, serde.strategy, auto_register=serde.auto_register)
        self.state_record = contract.record
        # A record with a ``data`` field keeps the entity's data as JSON (the generic record); any other stores each
        # data field as a typed field of its own.
        self._json_data = contract.json_data
        self.data_fields = contract.data_fields
        self.schema_version = self.definition.version
        # Payload functions whose record has required fields: checked as they run (see process).
        check_schemas(self.definition, contract.catalogue)
        self._checked_payloads = check_payloads(self.definition, contract.catalogue)
        if contract.derived:
            check_removals(self.definition, self.serde.registry, self.serde.subject(state_topic, contract.record))
        self._encode_state = self.serde.encoder(state_topic, contract.record)
        self._timer_encoder = self.serde.encoder(self.input_topic, TIMER_FIRED)
        self.serde.register_topic(self.input_topic)  # so stock producers' records find their subjects
        self._encoders: dict[tuple[str, str], Any] = {}
        self._states: dict[bytes, WorkflowState] = {}
        self._states_old: dict[bytes, WorkflowState] = {}
        self._metrics: Any = None
        # Stuck: non-terminal longer than its state's SLA (options.sla_ms: {state: ms, default: ms}).
        sla = dict(options.get("sla_ms") or {})
        self._default_sla = int(sla.pop("default", 15 * 60_000))
        self._sla = {str(k): int(v) for k, v in sla.items()}
        self._terminal = frozenset(self.definition.terminal)

    @property
    def handled_events(self) -> frozenset[str]:
        """The events this workflow accepts from outside (what a signal may send)."""
        return frozenset(self.definition.events)

    # -- codec -------------------------------------------------------------------------------------------

    def decode(self, record: InputRecord) -> Event:
        name, body = self.serde.decode(record.value)
        body.pop("envelope", None)
        event = event_from_record(name.rsplit(".", 1)[-1], key_of(record), record.event_id, body,
                                  record.timestamp_ms)
        deadline = parking.deadline_of(record)
        return event if deadline is None else event.reoffer(deadline)

    def envelope_id(self, record: InputRecord) -> str | None:
        return envelope_id(self.serde, record)

    def load_state(self, raw: bytes) -> WorkflowState:
        st = self._cached_state(raw)
        if st is None:
            st = self._decode_state(raw)
            self._cache_state(raw, st)
        return st

    def dump_state(self, state: WorkflowState) -> bytes:
        if self._json_data:
            return self._dump_json_state(state)
        data = state.data
        stored = {f: data.get(f) for f in self.data_fields}  # exactly what load_state gives back
        # Built here rather than from state.to_record(), whose copies (for callers that keep the dict) and
        # pop-and-merge of "data" were waste here (dump_state 2.2 -> 1.8-2.0 us measured): the encoder only
        # reads, so the state's own (immutable by convention) mappings and tuples are passed as they are.
        rec = {
            **stored,
            "workflow": state.workflow,
            "state": state.state,
            "attempts": state.attempts,
            "completed_steps": state.completed_steps,
            "timers": timer_records(state.timers),
            "history": history_records(state.history),
            "reason": state.reason,
            "created_at": state.created_at,
            "updated_at": state.updated_at,
            "schema_version": self.schema_version,
        }
        padded = stored != data  # fields not recorded yet are stored as null; any other difference is refused
        if padded:
            # A field recorded (by a ``record_with`` function: ``record`` is checked at build) that the state
            # record cannot hold is a bug of the definition, not of the input: raised here, outside the
            # runtime's per-record error handling, it stops the worker before anything of the step is staged,
            # rather than being dropped or dead-lettering every entity that takes the transition.
            check_recorded(state, stored, self.state_record)
        raw = self._encode_state(rec)
        if padded:
            state = WorkflowState(state.workflow, state.state, stored, state.attempts, state.completed_steps,
                                  state.timers, state.history, state.reason, state.created_at, state.updated_at)
        self._cache_state(raw, state)
        return raw

    def _dump_json_state(self, state: WorkflowState) -> bytes:
        try:
            text = orjson.dumps(dict(state.data)).decode()
        except TypeError as exc:
            raise ProcessingError(f"workflow {state.workflow!r}: its data does not fit the generic JSON state "
                                  f"record ({exc}); declare a state record for it in subjects.yaml") from exc
        rec = {**state.to_record(), "data": text, "schema_version": self.schema_version}
        raw = self._encode_state(rec)
        # Cached as load_state would give it back after a restart (JSON turns tuples into lists).
        self._cache_state(raw, WorkflowState.from_record({**rec, "data": orjson.loads(text)}))
        return raw

    # The decoded-state cache. An entity's next event usually comes long after its last one (the services
    # answer in between), so its state is read back from RocksDB as bytes; decoding them again (fastavro,
    # ~25 us for a 350-byte order) was the largest single cost of a step. The cache is keyed by the encoded
    # bytes themselves, so it can never be stale: equal bytes decode to an equal state, whatever happened to
    # the store in between (revoke, restore, replay). States are immutable, so sharing one is safe. Two
    # generations of STATE_CACHE entries bound its memory (measured ~3 KB per order state).
    STATE_CACHE = 8192

    def _cached_state(self, raw: bytes) -> WorkflowState | None:
        st = self._states.get(raw)
        return self._states_old.get(raw) if st is None else st

    def _cache_state(self, raw: bytes, state: WorkflowState) -> None:
        states = self._states
        if len(states) >= self.STATE_CACHE:
            self._states_old, self._states = states, {}
            states = self._states
        states[raw] = state

    def _decode_state(self, raw: bytes) -> WorkflowState:
        _name, rec = self.serde.decode(raw)
        if self._json_data:
            rec["data"] = orjson.loads(rec["data"])
            return WorkflowState.from_record(rec)
        rec["data"] = {f: rec.pop(f) for f in self.data_fields if f in rec}
        return WorkflowState.from_record(rec)

    def _peek_state(self, raw: bytes) -> WorkflowState:
        """A state for a look that must not push the working set out of the cache (census, status)."""
        st = self._cached_state(raw)
        return self._decode_state(raw) if st is None else st

    # -- operators' views -------------------------------------------------------------------------------

    def bind_metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    def _stuck(self, st: WorkflowState, now_ms: int) -> bool:
        return st.state not in self._terminal and now_ms - st.updated_at > self._sla.get(st.state, self._default_sla)

    def summarize(self, raw: bytes, now_ms: int) -> tuple[str, str, bool]:
        st = self._peek_state(raw)
        return st.workflow, st.state, self._stuck(st, now_ms)

    def describe(self, raw: bytes, now_ms: int) -> dict[str, Any]:
        """The status-query view of one entity: its state, data, pending timers and recent history."""
        st = self._peek_state(raw)
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
        checked = self._checked_payloads
        for out in res.outputs:
            if checked:
                self._check_payload(out, event, state)
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

    def _check_payload(self, out: Any, event: Event, state: WorkflowState | None) -> None:
        """A payload function's output lacks a required field of its record: the definition is wrong, so the
        worker stops with this message (the runtime lets a WorkflowDefinitionError through) instead of
        dead-lettering every input that takes this transition."""
        required = self._checked_payloads.get(out.record)
        if required is None or required <= out.payload.keys():
            return
        missing = ", ".join(repr(f) for f in sorted(required - out.payload.keys()))
        where = state.state if state is not None else self.definition.initial
        raise WorkflowDefinitionError(
            f"workflow {self.definition.name!r}: in state {where!r} on {event.name}, the payload of {out.record} "
            f"misses required field(s) {missing} of its record")

    def _fired_record(self, key: str, bkey: bytes, timer: Timer) -> OutputRecord:
        """What the timer index keeps for a timer: its id header and a compact description of the timer. Most
        timers are cancelled before they are due (a reply arrives), so the Avro TimerFired record is only built
        when one fires (:meth:`fire_record`): encoding it on every set cost ~15 us a step."""
        value = _DEFERRED + f"{timer.name}\0{timer.fires_event}\0{timer.due_at}\0{timer.attempt}".encode()
        return OutputRecord(self.input_topic, bkey, value, ((H_EVENT_ID, timer.event_id(key).encode()),))

    def fire_record(self, rec: OutputRecord) -> OutputRecord:
        """The record to produce for a due timer index entry: a compact timer description becomes its
        TimerFired record (deterministic: the same bytes however often it fires); anything else (a parked
        event) is produced as it was stored."""
        value = rec.value
        if value is None or not value.startswith(_DEFERRED):
            return rec
        name, fires_event, due_at, attempt = value[len(_DEFERRED):].decode().split("\0")
        timer = Timer(name, int(due_at), fires_event, int(attempt))
        key = rec.key.decode("utf-8", "replace")
        event_id = timer.event_id(key)
        body = {**timer.fired_payload(), "envelope": envelope(event_id, key, TIMER_FIRED, timer.due_at, None)}
        return OutputRecord(rec.topic, rec.key, self._timer_encoder(body), rec.headers)


def factory(options: dict[str, object], outputs: Sequence[str]) -> WorkflowProcessor:
    return WorkflowProcessor(options, outputs)
