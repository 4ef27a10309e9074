"""The chaos run's oracle: every order's end and every service effect, from the generated inputs alone.

Independent of the workflow engine on purpose: it never calls ``step`` or builds a definition. It restates the
order saga's contract (pay -> reserve -> ship, each with its declared attempt limit; a failure after earlier
steps succeeded undoes them newest first) and asks the reference services' deterministic :func:`fate` what
each attempt of each order answers. If the engine and this file disagree, one of them is wrong, and the run
says which orders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.processors.services import fate

# The saga's declared retry policy (streams.examples.orders.workflow: PAYMENT_RETRY, STEP_RETRY), stated again here
# as the contract under test, not imported from the engine.
PAYMENT_ATTEMPTS = 3
STEP_ATTEMPTS = 5

CHARGE, REFUND = "MakePayment", "RefundPayment"
RESERVE, RELEASE = "ReserveInventory", "ReleaseInventory"
LABEL = "CreateShippingLabel"
LEDGERS: Mapping[str, tuple[str, ...]] = {"payment": (CHARGE, REFUND), "inventory": (RESERVE, RELEASE),
                                          "shipping": (LABEL,)}


@dataclass(frozen=True)
class Rates:
    """The failure mix the services are started with; the same numbers drive the oracle."""

    seed: int
    transient: float = 0.20  # share of attempts failing TRANSIENT (so 20% of first attempts), every service
    permanent: float = 0.03  # share of orders whose command fails PERMANENT, per service
    no_answer_prefix: str = "nopay-"  # the payment service never answers orders whose id starts with this


@dataclass(frozen=True)
class Outcome:
    """Where an order must end, a substring its reason must contain, and the effects each service applies."""

    state: str
    reason: str | None
    effects: Mapping[str, int] = field(default_factory=dict)

    def matches(self, state: str, reason: str | None) -> bool:
        return state == self.state and (self.reason is None or self.reason in (reason or ""))


_LABELS = {"payment": "card declined", "inventory": "warehouse unavailable", "shipping": "carrier rejected"}


def _step(rates: Rates, order_id: str, what: str, attempts: int) -> str | None:
    """None if the step succeeds within its attempts, else the reason it gives up with (as the saga words it:
    ``<step> failed: <service's reason>`` or ``<step> failed after <n> attempts: <service's reason>``)."""
    if fate(rates.seed, order_id, f"{what}-permanent") < rates.permanent:
        return f"{what} failed: {_LABELS[what]} (permanent)"
    for attempt in range(1, attempts + 1):
        if fate(rates.seed, order_id, f"{what}-transient", attempt) >= rates.transient:
            return None
    return f"{what} failed after {attempts} attempts: {_LABELS[what]} (transient)"


def oracle(rates: Rates, order_id: str) -> Outcome:
    """The terminal state (and service effects) of one order, computed from its id and the rates."""
    if order_id.startswith(rates.no_answer_prefix):
        return Outcome("cancelled", "payment timed out", {})
    failed = _step(rates, order_id, "payment", PAYMENT_ATTEMPTS)
    if failed is not None:
        return Outcome("cancelled", failed, {})
    failed = _step(rates, order_id, "inventory", STEP_ATTEMPTS)
    if failed is not None:
        return Outcome("cancelled", failed, {CHARGE: 1, REFUND: 1})
    failed = _step(rates, order_id, "shipping", STEP_ATTEMPTS)
    if failed is not None:
        return Outcome("cancelled", failed, {CHARGE: 1, REFUND: 1, RESERVE: 1, RELEASE: 1})
    return Outcome("completed", None, {CHARGE: 1, RESERVE: 1, LABEL: 1})


def outcome_class(outcome: Outcome) -> str:
    """A short label for summaries: completed, payment never answered, or which step failed how."""
    reason = outcome.reason or ""
    if outcome.state == "completed":
        return "completed"
    if "timed out" in reason:
        return "payment never answered"
    step = reason.split(" ", 1)[0]
    return f"{step} {'permanent' if '(permanent)' in reason else 'transient, all attempts'}"


def effect_counts(ledger: Mapping[str, object] | None) -> dict[str, int]:
    """Applied effects per command name in one order's service ledger (``{"effects": [[name, cid, reply]]}``)."""
    out: dict[str, int] = {}
    effects = ledger.get("effects", []) if ledger else []
    for item in effects if isinstance(effects, list) else []:
        name = str(item[0])
        out[name] = out.get(name, 0) + 1
    return out
