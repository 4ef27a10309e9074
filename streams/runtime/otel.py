"""Optional OpenTelemetry spans: one per record the worker handles, parented on the record's ``traceparent``.

Active when the ``otel`` extra (opentelemetry-api) is installed and ``STREAMS_OTEL`` is not ``0``; spans go to
whatever tracer provider the process configured (the API alone records nothing). Without the package, or
while no tracer provider is set, the worker never starts a span, so the hot path pays nothing.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from streams.records import H_TRACEPARENT, InputRecord, header


class Spans:
    def __init__(self, group: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._inert = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._tracer = trace.get_tracer("streams")
        self._propagator = TraceContextTextMapPropagator()
        self._group = group

    def enabled(self) -> bool:
        """Whether spans go anywhere: with the API alone (no tracer provider set) every span is a no-op that
        still cost ~15 us a record to start, so the worker skips them until a provider is set."""
        return not isinstance(self._trace.get_tracer_provider(), self._inert)

    def step(self, rec: InputRecord) -> AbstractContextManager[Any]:
        parent = header(rec.headers, H_TRACEPARENT)
        ctx = self._propagator.extract({"traceparent": parent.decode("ascii", "replace")}) if parent else None
        return self._tracer.start_as_current_span(
            f"process {rec.topic}", context=ctx, kind=self._trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": rec.topic,
                        "messaging.kafka.partition": rec.partition, "messaging.kafka.offset": rec.offset,
                        "messaging.kafka.message.key": (rec.key or b"").decode("utf-8", "replace"),
                        "messaging.consumer.group.name": self._group, "streams.event_id": rec.event_id})


def load(group: str) -> Spans | None:
    if os.environ.get("STREAMS_OTEL", "1") == "0":
        return None
    try:
        return Spans(group)
    except ImportError:
        return None
