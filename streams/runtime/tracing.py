"""W3C trace context carried through the saga: event → command → reply → next command.

Every output gets a child ``traceparent`` of its input's: same trace id, a new span id. Ids are derived from the
record ids, not drawn at random, so a record produced again after a crash (or by a replay) is byte-identical to
the first copy. An input without trace context starts a trace whose id derives from its event id.
"""

from __future__ import annotations

from hashlib import blake2b

_FLAGS = "01"


def trace_id_of(traceparent: bytes | None) -> str | None:
    if traceparent is None:
        return None
    parts = traceparent.decode("ascii", "replace").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def root(event_id: str) -> bytes:
    """The trace context of an input that arrived without one."""
    h = blake2b(event_id.encode(), digest_size=24).hexdigest()
    return f"00-{h[:32]}-{h[32:48]}-{_FLAGS}".encode()


def child(parent: bytes | None, event_id: str, output_id: str) -> bytes:
    """The traceparent of an output whose id is ``output_id``, caused by ``event_id`` under ``parent``."""
    trace = trace_id_of(parent) or trace_id_of(root(event_id))
    span = blake2b(output_id.encode(), digest_size=8).hexdigest()
    return f"00-{trace}-{span}-{_FLAGS}".encode()
