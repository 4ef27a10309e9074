"""The loan demo's oracle: each application's end, from the seeded fates of the services and the reviewers.

The credit bureau and document verification answer by :func:`~streams.examples.loan.services.credit_outcome` and
``documents_outcome``; the demo's simulated reviewers by :func:`review_outcome`. From those alone (never running
the workflow) :func:`predict` says how an application ends, so a run that ends otherwise has found a bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.examples.loan.services import credit_outcome, documents_outcome
from streams.examples.loan.workflow import CREDIT_RETRY
from streams.processors.services import fate

SEED = 1
SLA_MS, ESCALATION_MS = 4_000, 4_000
# The topology's knobs (``${VAR}`` in streams/examples/loan/topology.yaml) for a demo that ends in seconds.
SETTINGS = {
    "LOAN_SEED": str(SEED), "LOAN_REPLY_TIMEOUT_MS": "5000",
    "LOAN_REMINDER_EVERY_MS": "1500", "LOAN_MAX_REMINDERS": "2",  # documents expire after 4.5 s
    "LOAN_REVIEW_SLA_MS": str(SLA_MS), "LOAN_ESCALATION_MS": str(ESCALATION_MS),
    "LOAN_CREDIT_REJECT_RATE": "0.15", "LOAN_CREDIT_UNAVAILABLE_RATE": "0.1",
    "LOAN_DOCUMENTS_REJECT_RATE": "0.05", "LOAN_DOCUMENTS_LATE_RATE": "0.2", "LOAN_DOCUMENTS_NEVER_RATE": "0.05",
    "LOAN_DOCUMENTS_LATE_MS": "2500",  # after the first reminder, well before the expiry
}
# What the simulated reviewers do with a task: answer at once, answer after it was escalated (half way between
# the SLA and the final decline), or never.
REVIEWS = (("approve", 0.55), ("decline", 0.20), ("late_approve", 0.15), ("never", 0.10))
THINK_MS = 300


def review_outcome(seed: int, loan_id: str) -> str:
    """What the reviewers do with this application (one of :data:`REVIEWS`)."""
    u = fate(seed, loan_id, "review")
    for outcome, share in REVIEWS:
        if u < share:
            return outcome
        u -= share
    return REVIEWS[-1][0]


@dataclass(frozen=True)
class End:
    outcome: str  # LoanApproved | LoanDeclined
    reason: str | None = None
    escalated: bool = False
    released: bool = False  # a decline released the credit hold placed for it


def predict(loan_id: str, settings: Mapping[str, str] = SETTINGS) -> End:
    """The end the seeded services and reviewers lead this application to."""
    seed = int(settings["LOAN_SEED"])
    rates = [float(settings[f"LOAN_CREDIT_{n}_RATE"]) for n in ("REJECT", "UNAVAILABLE")]
    credit = [credit_outcome(seed, loan_id, a, *rates) for a in range(1, CREDIT_RETRY.max_attempts + 1)]
    if credit[0] == "rejected":
        return End("LoanDeclined", "credit_rejected")
    if "approved" not in credit:
        return End("LoanDeclined", "credit_unavailable")
    docs = documents_outcome(seed, loan_id, *(float(settings[f"LOAN_DOCUMENTS_{n}_RATE"])
                                              for n in ("REJECT", "LATE", "NEVER")))
    if docs in ("rejected", "never"):
        return End("LoanDeclined", "documents_rejected" if docs == "rejected" else "documents_expired",
                   released=True)
    review = review_outcome(seed, loan_id)
    if review == "decline":
        return End("LoanDeclined", "review_declined", released=True)
    if review == "never":
        return End("LoanDeclined", "review_expired", escalated=True, released=True)
    return End("LoanApproved", escalated=review == "late_approve")
