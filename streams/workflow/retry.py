"""Retry policies: exponential backoff with full jitter, made deterministic for replay.

The jitter is a hash of (entity key, command, attempt), not ``random``: replaying an entity's log yields the
same backoff, while different entities still spread out (the point of jitter: no retry storms after an
outage). The delay after the n-th retry-able failure (``failed_attempt`` = n >= 1) lies in
``[0, min(cap_ms, base_ms * 2**(n-1))]``.

``budget_ms`` bounds the whole command, all attempts included, from its first issue (like Temporal's
schedule-to-close timeout). The engine enforces it with a durable deadline timer, so it survives restarts:
a retry that would start after the deadline is not scheduled, and the deadline firing while an attempt is
outstanding gives the command up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.errors import WorkflowDefinitionError

_MAX_SHIFT = 62  # beyond this every realistic cap is reached; keeps 2**n from growing without bound


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast a failed command is re-issued. ``max_attempts`` counts the first attempt."""

    max_attempts: int = 5
    base_ms: int = 1_000
    cap_ms: int = 60_000
    budget_ms: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise WorkflowDefinitionError(f"retry policy: max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_ms < 0 or self.cap_ms < 0:
            raise WorkflowDefinitionError(f"retry policy: base_ms and cap_ms must be >= 0, got {self}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise WorkflowDefinitionError(f"retry policy: budget_ms must be > 0, got {self.budget_ms}")

    def ceiling_ms(self, failed_attempt: int) -> int:
        """Upper bound of the delay after attempt ``failed_attempt`` (1-based) failed."""
        shift = min(max(failed_attempt - 1, 0), _MAX_SHIFT)
        return min(self.cap_ms, self.base_ms << shift)

    def backoff_ms(self, key: str, command: str, failed_attempt: int) -> int:
        """Full-jitter delay before the next attempt, uniform over ``[0, ceiling]`` by a hash."""
        ceiling = self.ceiling_ms(failed_attempt)
        if ceiling <= 0:
            return 0
        digest = hashlib.blake2b(f"{key}\x00{command}\x00{failed_attempt}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % (ceiling + 1)

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any]) -> RetryPolicy:
        """Accept a policy or its fields as plain data (from JSON, YAML or CLI parameters)."""
        if isinstance(value, RetryPolicy):
            return value
        unknown = set(value) - {"max_attempts", "base_ms", "cap_ms", "budget_ms"}
        if unknown:
            raise WorkflowDefinitionError(f"retry policy: unknown fields {sorted(unknown)}")
        return cls(**value)


NO_RETRY = RetryPolicy(max_attempts=1, base_ms=0, cap_ms=0)
