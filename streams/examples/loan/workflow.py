"""The loan application: credit check, documents that may take days, a person's review -- or a decline that
releases the credit hold already placed.

Written as any user of the engine writes a workflow: only the public names of ``streams``.

Every event of an application arrives on ``loan.events`` keyed by ``loan_id``: the services' replies, the
reviewer's decision (a signal: ``streams signal LOAN ReviewApproved --data '{"reviewer": "ana"}'``) and the
timers firing. Outcomes go to ``loan.results``; reminders and escalations to ``loan.notifications``; review
tasks to ``loan.reviews``, the reviewers' inbox. Every topic name takes ``topic_prefix``, so several copies
(tests on a shared broker) never meet.

The path, and the decisions it takes:

* ``CheckCredit`` (credit bureau) answers ``CreditChecked`` with a hold on the applicant's credit line, or
  ``CreditRejected``. A rejection ends the application at once: there is nothing to undo yet. A bureau that
  is down answers TRANSIENT and is retried; one that never answers is retried on the reply timeout.
* ``VerifyDocuments`` waits for the applicant's documents, which may take days: every ``reminder_every_ms``
  a ``DocumentsReminder`` goes out, at most ``max_reminders`` times; with no verdict by ``documents_expire_ms``
  (default: one reminder interval after the last reminder) the application expires.
* ``RequestReview`` puts the application in the reviewers' inbox; a person answers ``ReviewApproved`` or
  ``ReviewDeclined``. Without an answer within ``review_sla_ms`` a ``ReviewEscalated`` goes to a supervisor;
  without one ``escalation_ms`` later the application is declined. An answer after escalation still counts.
* Every decline after the credit check releases the hold first (``ReleaseCreditHold``, retried until the
  bureau acknowledges) and only then reports ``LoanDeclined``, with a reason code and the released hold. A
  release the bureau never acknowledges ends in ``release_failed`` for an operator, with nothing reported:
  the applicant's credit line is not settled.

The steps are saga steps (``WorkflowBuilder.step``): a document rejection, an expiry, a reviewer's decline
and an expired review all "give up" a step, and giving up undoes the completed credit step with its
compensation. The reason code is read from which event gave up (the entity's history), not from text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streams import (
    Definition,
    RetryPolicy,
    StepContext,
    WorkflowBuilder,
    WorkflowDefinitionError,
    data_fields,
    emit,
    guard,
    issue,
    record,
    record_with,
    set_timer,
)

HOUR_MS = 3_600_000
STATES = ("new", "credit_check", "documents", "review", "releasing")

INPUT_EVENTS = (
    "LoanApplied",
    "CreditChecked",
    "CreditRejected",
    "CreditHoldReleased",
    "DocumentsVerified",
    "DocumentsRejected",
    "ReviewApproved",
    "ReviewDeclined",
)
# What a person may send from outside (``streams signal``, ``POST /workflows/{key}/events``).
SIGNALS = ("ReviewApproved", "ReviewDeclined")
APPLICATION_FIELDS = ("loan_id", "applicant", "amount_cents", "term_months")

# The event that made the application give up -> the reason code in LoanDeclined.
DECLINE_CODES: Mapping[str, str] = {
    "CreditRejected": "credit_rejected",
    "CheckCreditTimedOut": "credit_unavailable",
    "DocumentsRejected": "documents_rejected",
    "DocumentsExpired": "documents_expired",
    "ReviewDeclined": "review_declined",
    "ReviewExpired": "review_expired",
}
REASONS = tuple(DECLINE_CODES.values())

CREDIT_RETRY = RetryPolicy(max_attempts=3, base_ms=1_000, cap_ms=60_000)
RELEASE_RETRY = RetryPolicy(max_attempts=10, base_ms=1_000, cap_ms=300_000)


class Topics:
    """The example's topic names under one prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.events = f"{prefix}loan.events"
        self.results = f"{prefix}loan.results"
        self.notifications = f"{prefix}loan.notifications"
        self.reviews = f"{prefix}loan.reviews"
        self.credit = f"{prefix}credit.commands"
        self.documents = f"{prefix}documents.commands"


def decline_code(ctx: StepContext) -> str:
    """Which event made the application give up: the one that left the forward path (into ``releasing``, or
    straight to ``declined`` when there was no hold to release). Read from the entity's history, which keeps
    the last ``history_limit`` transitions: far more than the release's retries add."""
    trigger = ctx.event.name
    if trigger == "CreditRejected" and ctx.event.payload.get("failure") == "TRANSIENT":
        return "credit_unavailable"  # the bureau was down for every attempt: no verdict on the applicant
    if ctx.state.state == "releasing":
        trigger = next((t.event for t in reversed(ctx.state.history)
                        if t.to_state == "releasing" and t.from_state != "releasing"), trigger)
    return DECLINE_CODES.get(trigger, "failed")


def _declined(ctx: StepContext) -> Mapping[str, Any]:
    released = ctx.data.get("hold_id") if ctx.state.state == "releasing" else None
    return {"loan_id": ctx.data["loan_id"], "reason": decline_code(ctx), "detail": ctx.reason or "declined",
            "released_hold_id": released}


def _approved(ctx: StepContext) -> Mapping[str, Any]:
    d = ctx.data
    return {"loan_id": d["loan_id"], "amount_cents": d["amount_cents"], "hold_id": d["hold_id"],
            "reviewer": d["reviewer"], "escalated": bool(d.get("escalated"))}


def _ms(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WorkflowDefinitionError(f"loan_application: {name} must be a positive number of ms, got {value!r}")
    return value


def loan_application(
    *,
    topic_prefix: str | None = "",
    reply_timeout_ms: int = 5 * 60_000,
    reminder_every_ms: int = 24 * HOUR_MS,
    max_reminders: int = 3,
    documents_expire_ms: int | None = None,
    review_sla_ms: int = 48 * HOUR_MS,
    escalation_ms: int = 24 * HOUR_MS,
    credit_retry: RetryPolicy | Mapping[str, Any] = CREDIT_RETRY,
    release_retry: RetryPolicy | Mapping[str, Any] = RELEASE_RETRY,
    history_limit: int = 50,
) -> Definition:
    """Build the loan application; every delay is a parameter in milliseconds, so tests shorten them."""
    t = Topics(topic_prefix or "")
    reminder_ms = _ms("reminder_every_ms", reminder_every_ms)
    if isinstance(max_reminders, bool) or not isinstance(max_reminders, int) or max_reminders < 0:
        raise WorkflowDefinitionError(f"loan_application: max_reminders must be >= 0, got {max_reminders!r}")
    expire_ms = _ms("documents_expire_ms", documents_expire_ms or reminder_ms * (max_reminders + 1))
    if expire_ms <= reminder_ms * max_reminders:
        raise WorkflowDefinitionError(
            f"loan_application: documents_expire_ms ({expire_ms}) must come after the last of {max_reminders} "
            f"reminders every {reminder_ms} ms")
    sla_ms, escalate_ms = _ms("review_sla_ms", review_sla_ms), _ms("escalation_ms", escalation_ms)
    release = RetryPolicy.coerce(release_retry)

    wf = WorkflowBuilder(
        "loan", input_topic=t.events, initial="new", unknown_entity="dead_letter", history_limit=history_limit,
        description="loan application: credit check -> documents -> manual review; a decline releases the hold",
    )
    wf.states(*STATES)
    wf.terminal("approved", on_enter=[emit("LoanApproved", t.results, _approved)])
    wf.terminal("declined", on_enter=[emit("LoanDeclined", t.results, _declined)])
    wf.terminal("release_failed")
    wf.events(*INPUT_EVENTS)

    wf.command("CheckCredit", topic=t.credit, payload=data_fields("loan_id", "applicant", "amount_cents"),
               retry=RetryPolicy.coerce(credit_retry), timeout_ms=_ms("reply_timeout_ms", reply_timeout_ms))
    wf.command("ReleaseCreditHold", topic=t.credit, payload=data_fields("loan_id", "hold_id"),
               retry=release, timeout_ms=reply_timeout_ms)
    # No retry: the service waits for the applicant; only the expiry ends the wait.
    wf.command("VerifyDocuments", topic=t.documents, payload=data_fields("loan_id", "applicant"),
               timeout_ms=expire_ms, timeout_event="DocumentsExpired", retry_on_timeout=False)
    wf.command("RequestReview", topic=t.reviews,
               payload=data_fields("loan_id", "applicant", "amount_cents", "term_months", "score"),
               timeout_ms=sla_ms + escalate_ms, timeout_event="ReviewExpired", retry_on_timeout=False)

    wf.on("LoanApplied", "new", "credit_check", do=[record(*APPLICATION_FIELDS), issue("CheckCredit")])

    remind = [set_timer("reminder", reminder_ms, fires="DocumentsReminderDue")] if max_reminders else []
    wf.step(
        "credit", state="credit_check", command="CheckCredit",
        succeeded="CreditChecked", failed="CreditRejected", record=("hold_id", "score"),
        next_state="documents", then=[issue("VerifyDocuments"), *remind],
        compensation="ReleaseCreditHold", compensated="CreditHoldReleased",
    )
    if max_reminders:
        _reminders(wf, t, reminder_ms, max_reminders)
    wf.step(
        "documents", state="documents", command="VerifyDocuments",
        succeeded="DocumentsVerified", failed="DocumentsRejected", next_state="review",
        then=[issue("RequestReview"), set_timer("escalation", sla_ms, fires="ReviewOverdue")],
    )
    wf.on("ReviewOverdue", "review", "review",
          do=[record_with(lambda ctx: {"escalated": True}),
              emit("ReviewEscalated", t.notifications, _escalated(sla_ms))])
    wf.step(
        "review", state="review", command="RequestReview",
        succeeded="ReviewApproved", failed="ReviewDeclined", record=("reviewer",), next_state="approved",
    )
    wf.on_failure(cancelled="declined", compensating="releasing", stuck="release_failed")
    return wf.build()


def _reminders(wf: WorkflowBuilder, t: Topics, every_ms: int, limit: int) -> None:
    """Each due reminder is sent and counted; the timer is re-armed until ``limit`` reminders went out."""

    def sent(ctx: StepContext) -> int:
        return int(ctx.data.get("reminders_sent", 0))

    def reminder(ctx: StepContext) -> Mapping[str, Any]:
        d = ctx.data
        return {"loan_id": d["loan_id"], "applicant": d["applicant"], "reminder": sent(ctx), "of": limit}

    count = record_with(lambda ctx: {"reminders_sent": sent(ctx) + 1})
    more = guard(lambda ctx: sent(ctx) + 1 < limit, "more reminders left")
    wf.on("DocumentsReminderDue", "documents", "documents", when=more,
          do=[count, emit("DocumentsReminder", t.notifications, reminder),
              set_timer("reminder", every_ms, fires="DocumentsReminderDue")])
    wf.on("DocumentsReminderDue", "documents", "documents",
          do=[count, emit("DocumentsReminder", t.notifications, reminder)])


def _escalated(sla_ms: int) -> Callable[[StepContext], Mapping[str, Any]]:
    def payload(ctx: StepContext) -> Mapping[str, Any]:
        d = ctx.data
        return {"loan_id": d["loan_id"], "applicant": d["applicant"], "amount_cents": d["amount_cents"],
                "overdue_ms": sla_ms}

    return payload
