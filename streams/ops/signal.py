"""Signals: an event from outside (a person's approval, another system's answer) sent into a workflow.

A signal is an ordinary input event: encoded with the event's registered schema, produced to the workflow's
input topic keyed by the entity, with an event id in the ``streams-id`` header. So it is ordered with every
other event of its entity, deduplicated like them, and replayed with the log. A caller that retries with the
same id cannot apply the signal twice; one that sends no id gets a fresh one back and should keep it.

The payload is checked against the schema before anything is produced: a missing required field, an unknown
field or a value of the wrong type is a :class:`SignalError` naming the field, and nothing reaches Kafka.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from fastavro.validation import ValidationError, validate

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.errors import ConfigError, KafkaUnavailableError
from streams.kafka.client import make_producer, translate
from streams.processors.avro import envelope
from streams.records import H_EVENT_ID

_MAX_ID = 200


class SignalError(ConfigError):
    """A signal that cannot be sent as given: the caller's input is wrong (exit 2, HTTP 400)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SignalTarget(Protocol):
    """What a signal needs of a workflow processor: its input topic, the events it handles and its serde."""

    input_topic: str
    serde: Serde

    @property
    def handled_events(self) -> frozenset[str]: ...


def signal_target(processor: object) -> SignalTarget | None:
    """``processor`` as a signal target when it runs a workflow (has ``handled_events``), else None."""
    needs = ("handled_events", "input_topic", "serde")
    return cast(SignalTarget, processor) if all(hasattr(processor, n) for n in needs) else None


@dataclass(frozen=True)
class Sent:
    id: str
    key: str
    event: str
    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "event": self.event, "topic": self.topic,
                "partition": self.partition, "offset": self.offset}


def parse_data(text: str) -> dict[str, Any]:
    """``--data`` as given on a command line: a JSON object."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SignalError(f"--data is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(data, dict):
        raise SignalError(f"--data must be a JSON object, got {type(data).__name__}")
    return data


class Signaller:
    """Sends signals into one workflow's input topic; one producer, made on first use."""

    def __init__(self, kafka: KafkaSettings, target: SignalTarget) -> None:
        self.kafka = kafka
        self.target = target
        self._producer: Any = None

    def check(self, key: str, event: str, data: Mapping[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The record that would be produced; raises SignalError naming what is wrong."""
        if not key:
            raise SignalError("the entity key is empty", "key")
        handled = self.target.handled_events
        if event not in handled:
            raise SignalError(f"the workflow does not handle {event!r}; it handles: {', '.join(sorted(handled))}",
                              "type")
        if event_id is not None and not 0 < len(event_id) <= _MAX_ID:
            raise SignalError(f"the event id must be 1..{_MAX_ID} characters", "id")
        catalogue = self.target.serde.catalogue
        name = catalogue.resolve(event)
        schema = catalogue.get(name).parsed
        fields = {f["name"]: f for f in json.loads(catalogue.get(name).text)["fields"] if f["name"] != "envelope"}
        for field in data:
            if field not in fields:
                raise SignalError(f"{event} has no field {field!r}; its fields: {', '.join(fields)}", field)
        for field, spec in fields.items():
            if field not in data and "default" not in spec:
                raise SignalError(f"{event} requires field {field!r}", field)
        eid = event_id or f"signal-{uuid.uuid4().hex}"
        record = {"envelope": envelope(eid, key, name, int(time.time() * 1000), None),
                  **{f: data.get(f, spec.get("default")) for f, spec in fields.items()}}
        try:
            validate(record, schema, raise_errors=True)
        except ValidationError as exc:
            raise SignalError(f"{event}: {_first_problem(exc)}", _field_of(exc, fields)) from exc
        return record

    def send(self, key: str, event: str, data: Mapping[str, Any], event_id: str | None = None,
             timeout_s: float = 10.0) -> Sent:
        record = self.check(key, event, data, event_id)
        eid = str(record["envelope"]["id"])
        topic = self.target.input_topic
        value = self.target.serde.encode(topic, event, record)
        if self._producer is None:
            self._producer = make_producer(self.kafka, {"linger.ms": 0})
        outcome: list[Any] = []
        self._producer.produce(topic, value, key.encode(), headers=[(H_EVENT_ID, eid.encode())],
                               on_delivery=lambda err, msg: outcome.append((err, msg)))
        self._producer.flush(timeout_s)
        if not outcome:
            raise KafkaUnavailableError(f"signal {eid} to {topic}: not acknowledged within {timeout_s:.0f}s")
        err, msg = outcome[0]
        if err is not None:
            raise translate(err, f"signal {eid} to {topic}")
        return Sent(eid, key, event, topic, msg.partition(), msg.offset())


def _first_problem(exc: ValidationError) -> str:
    problems = [str(p) for p in getattr(exc, "errors", None) or ()] or [str(exc)]
    return problems[0]


def _field_of(exc: ValidationError, fields: Mapping[str, Any]) -> str | None:
    text = _first_problem(exc)
    return next((f for f in fields if f".{f} " in text or f".{f}." in text), None)

