"""The loan example's reference services: a credit bureau and document verification, each a stream worker
over its command topic, named in the topology as ``streams.examples.loan.services:credit_bureau`` and
``...:document_verification``.

They behave as the order saga's reference services (:mod:`streams.processors.services`) do: idempotent
by command id, replies into the workflow's input topic keyed by the loan id, failures classified TRANSIENT or
PERMANENT. Every outcome is a seeded hash of the loan id (:func:`credit_outcome`, :func:`documents_outcome`),
so a replay behaves the same and the demo's oracle predicts every application's end from the same options.

Documents "arrive" later than the command: a late application's verdict is a durable timer of the service
(the reply is produced when it comes due, after the workflow's first reminders), and some never arrive at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams import ConfigError, InputRecord, OutputRecord, Step, TimerChange
from streams.processors.services import Command, Service, fate
from streams.records import H_EVENT_ID
from streams.runtime.processor import UNCHANGED

DOCUMENT_FATES = ("on_time", "late", "never", "rejected")


def _rate(options: Mapping[str, Any], name: str) -> float:
    value = float(options.get(name, 0.0))
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"option {name} must be within 0..1, got {value}")
    return value


def credit_outcome(seed: int, loan_id: str, attempt: int, reject_rate: float, unavailable_rate: float) -> str:
    """``rejected`` (the same for every attempt), ``unavailable`` (this attempt only) or ``approved``."""
    if fate(seed, loan_id, "credit-reject") < reject_rate:
        return "rejected"
    if fate(seed, loan_id, "credit-unavailable", attempt) < unavailable_rate:
        return "unavailable"
    return "approved"


def documents_outcome(seed: int, loan_id: str, rejected: float, late: float, never: float) -> str:
    """One of :data:`DOCUMENT_FATES` for this application's documents."""
    u = fate(seed, loan_id, "documents")
    for outcome, share in (("rejected", rejected), ("never", never), ("late", late)):
        if u < share:
            return outcome
        u -= share
    return "on_time"


Decision = tuple[str, dict[str, Any], bool]  # reply record, reply payload, whether the effect was applied


class LoanService:
    """The command handling both services share: decode, reply, and idempotency by command id (the first
    attempt whose effect applies stores its reply; every later attempt gets that reply again).

    The order saga's compiled :class:`~streams.processors.services.Service` does the record work (decode, the
    reply with its envelope); a compiled class cannot be subclassed, so this one holds one and decides itself.
    """

    kind = "service"

    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.io = Service(options, outputs)
        self.seed = self.io.seed

    # The runtime's processor interface, delegated to the reference service's record handling.
    def decode(self, record: InputRecord) -> Command:
        return self.io.decode(record)

    def envelope_id(self, record: InputRecord) -> str | None:
        return self.io.envelope_id(record)

    def load_state(self, raw: bytes) -> dict[str, Any]:
        return self.io.load_state(raw)

    def dump_state(self, state: dict[str, Any]) -> bytes:
        return self.io.dump_state(state)

    def describe(self, raw: bytes, now_ms: int) -> dict[str, Any]:
        return {**self.io.describe(raw, now_ms), "service": self.kind}

    def handle(self, name: str, payload: dict[str, Any]) -> Decision | None:
        """The reply to a command seen for the first time, or None for no answer at all."""
        raise NotImplementedError

    def process(self, state: dict[str, Any] | None, command: Command, record: InputRecord,
                now_ms: int) -> Step[dict[str, Any]]:
        name, payload, cid = command
        state = dict(state) if state else {"done": {}, "effects": []}
        done = state["done"].get(cid)
        if done is None:
            decision = self.handle(name, payload)
            if decision is None:
                return Step(UNCHANGED)  # never answers: the workflow's timeout must act
            reply_name, reply, applied = decision
            if applied:
                state = self.applied(state, name, cid, reply_name, reply)
        else:
            reply_name, reply = done
        return Step(state, (self.io._reply(record, reply_name, reply),))

    @staticmethod
    def applied(state: dict[str, Any], name: str, cid: str, reply_name: str, reply: dict[str, Any]
                ) -> dict[str, Any]:
        return {**state, "done": {**state["done"], cid: [reply_name, reply]},
                "effects": [*state["effects"], [name, cid, reply_name]]}


class CreditBureau(LoanService):
    """Checks an applicant and places a hold on their credit line; releases a hold on request."""

    kind = "credit"

    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        super().__init__(options, outputs)
        self.reject_rate = _rate(options, "reject_rate")
        self.unavailable_rate = _rate(options, "unavailable_rate")

    def handle(self, name: str, payload: dict[str, Any]) -> Decision | None:
        loan = payload["loan_id"]
        if name == "ReleaseCreditHold":
            return "CreditHoldReleased", {"loan_id": loan, "hold_id": payload["hold_id"]}, True
        attempt = int(payload["attempt"])
        outcome = credit_outcome(self.seed, loan, attempt, self.reject_rate, self.unavailable_rate)
        if outcome != "approved":
            permanent = outcome == "rejected"
            reason = "score below the lending threshold" if permanent else "bureau temporarily unavailable"
            return "CreditRejected", {"loan_id": loan, "reason": reason, "attempt": attempt,
                                      "failure": "PERMANENT" if permanent else "TRANSIENT"}, False
        score = 600 + int(fate(self.seed, loan, "score") * 250)
        return "CreditChecked", {"loan_id": loan, "hold_id": f"hold-{loan}", "score": score}, True


class DocumentVerification(LoanService):
    """Waits for an applicant's documents and verifies them: at once, ``late_ms`` later, never, or rejected."""

    kind = "documents"

    def __init__(self, options: Mapping[str, Any], outputs: Sequence[str]) -> None:
        super().__init__(options, outputs)
        self.rates = (_rate(options, "reject_rate"), _rate(options, "late_rate"), _rate(options, "never_rate"))
        if sum(self.rates) > 1.0:
            raise ConfigError(f"reject_rate + late_rate + never_rate must not exceed 1, got {sum(self.rates)}")
        self.late_ms = int(options.get("late_ms", 60_000))

    def outcome(self, loan_id: str) -> str:
        return documents_outcome(self.seed, loan_id, *self.rates)

    def handle(self, name: str, payload: dict[str, Any]) -> Decision | None:
        loan = payload["loan_id"]
        outcome = self.outcome(loan)
        if outcome == "never":
            return None
        if outcome == "rejected":
            return "DocumentsRejected", {"loan_id": loan, "reason": "payslips do not match the application",
                                         "failure": "PERMANENT", "attempt": payload["attempt"]}, False
        return "DocumentsVerified", {"loan_id": loan}, True

    def process(self, state: dict[str, Any] | None, command: Command, record: InputRecord,
                now_ms: int) -> Step[dict[str, Any]]:
        name, payload, cid = command
        if self.outcome(payload["loan_id"]) != "late" or (state and cid in state["done"]):
            return super().process(state, command, record, now_ms)
        # The documents come in later: the verdict is stored now and produced by a durable timer when due, so
        # a restart in between neither loses it nor sends it twice (the timer's record carries a fixed id).
        reply = {"loan_id": payload["loan_id"]}
        state = self.applied(state or {"done": {}, "effects": []}, name, cid, "DocumentsVerified", reply)
        out = self.io._reply(record, "DocumentsVerified", reply)
        fire = OutputRecord(out.topic, out.key, out.value, ((H_EVENT_ID, f"{record.event_id}/reply".encode()),))
        due = max(record.timestamp_ms, now_ms) + self.late_ms
        return Step(state, (), (TimerChange(f"documents/{cid}", due, fire),))


def credit_bureau(options: dict[str, object], outputs: Sequence[str]) -> CreditBureau:
    return CreditBureau(options, outputs)


def document_verification(options: dict[str, object], outputs: Sequence[str]) -> DocumentVerification:
    return DocumentVerification(options, outputs)
