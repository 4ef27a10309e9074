"""The loan application example: every path driven in memory (fast, pure), then the orchestrator and its
reference services as real workers on the broker, with a reviewer's decision sent by the CLI and over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import streams
from streams.examples.loan.workflow import loan_application

H = 3_600_000
PARAMS: dict[str, Any] = {"reminder_every_ms": 10 * H, "max_reminders": 3, "review_sla_ms": 48 * H,
                          "escalation_ms": 24 * H, "reply_timeout_ms": 60_000}
APPLY = {"loan_id": "L1", "applicant": "ada", "amount_cents": 2_500_000, "term_months": 36}


def records(d: streams.Driver, topic: str) -> list[str]:
    return [o.record for o in d.outputs_for(topic=topic)]


def start(d: streams.Driver, key: str = "L1") -> None:
    """A loan applied for, its credit checked (a hold placed) and its documents verified: now in review."""
    d.send("LoanApplied", key, {**APPLY, "loan_id": key})
    d.send("CreditChecked", key, {"loan_id": key, "hold_id": f"hold-{key}", "score": 710})
    d.send("DocumentsVerified", key, {"loan_id": key})


def declined(d: streams.Driver, key: str = "L1") -> Mapping[str, Any]:
    out = d.outputs_for(key=key, topic="loan.results")
    assert [o.record for o in out] == ["LoanDeclined"]
    return out[0].payload


def test_an_approval_by_signal_completes_the_loan_and_keeps_the_hold() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    assert records(d, "credit.commands") == ["CheckCredit"]
    d.send("CreditChecked", "L1", {"loan_id": "L1", "hold_id": "hold-L1", "score": 710})
    assert records(d, "documents.commands") == ["VerifyDocuments"]
    d.send("DocumentsVerified", "L1", {"loan_id": "L1"})
    st = d.state("L1")
    assert st is not None and st.state == "review"
    [task] = d.outputs_for(topic="loan.reviews")
    assert task.record == "RequestReview" and task.payload["score"] == 710
    d.advance(47 * H)  # within the SLA: no escalation
    d.send("ReviewApproved", "L1", {"reviewer": "ana"})
    st = d.state("L1")
    assert st is not None and st.state == "approved" and d.timers("L1") == ()
    [approved] = d.outputs_for(topic="loan.results")
    assert approved.record == "LoanApproved"
    assert dict(approved.payload) == {"loan_id": "L1", "amount_cents": 2_500_000, "hold_id": "hold-L1",
                                      "reviewer": "ana", "escalated": False}
    assert "ReleaseCreditHold" not in records(d, "credit.commands")
    assert records(d, "loan.notifications") == []


def test_an_unanswered_review_escalates_then_declines_and_releases_the_hold() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    start(d)
    d.advance(48 * H - 1)
    assert records(d, "loan.notifications") == []
    d.advance(1)
    [escalated] = d.outputs_for(topic="loan.notifications")
    assert escalated.record == "ReviewEscalated" and escalated.payload["overdue_ms"] == 48 * H
    st = d.state("L1")
    assert st is not None and st.state == "review" and st.data["escalated"] is True
    d.advance(24 * H)  # the supervisor did not answer either
    st = d.state("L1")
    assert st is not None and st.state == "releasing" and d.outputs_for(topic="loan.results") == []
    assert records(d, "credit.commands") == ["CheckCredit", "ReleaseCreditHold"]
    d.send("CreditHoldReleased", "L1", {"loan_id": "L1", "hold_id": "hold-L1"})
    assert declined(d) == {"loan_id": "L1", "reason": "review_expired", "released_hold_id": "hold-L1",
                           "detail": "review timed out after 1 attempt"}
    st = d.state("L1")
    assert st is not None and st.state == "declined" and st.completed_steps == ("documents",)


def test_an_answer_after_escalation_still_counts() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    start(d)
    d.advance(60 * H)
    d.send("ReviewApproved", "L1", {"reviewer": "supervisor"})
    [approved] = d.outputs_for(topic="loan.results")
    assert approved.record == "LoanApproved" and approved.payload["escalated"] is True


def test_a_declined_loan_releases_its_credit_hold_before_reporting() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    start(d)
    d.send("ReviewDeclined", "L1", {"reviewer": "ana", "reason": "income not verifiable"})
    [release] = [o for o in d.outputs_for(topic="credit.commands") if o.record == "ReleaseCreditHold"]
    assert dict(release.payload) == {"loan_id": "L1", "hold_id": "hold-L1", "attempt": 1}
    assert release.command_id == "loan/L1/ReleaseCreditHold"
    assert d.outputs_for(topic="loan.results") == []  # not before the bureau acknowledged the release
    # The bureau is slow: the release is re-sent on its reply timeout, same command id, next attempt.
    d.advance(60_000)
    due = d.next_due()
    assert due is not None
    d.advance_to(due)
    again = [o for o in d.outputs_for(topic="credit.commands") if o.record == "ReleaseCreditHold"]
    assert [o.payload["attempt"] for o in again] == [1, 2] and again[1].command_id == release.command_id
    d.send("CreditHoldReleased", "L1", {"loan_id": "L1", "hold_id": "hold-L1"})
    assert declined(d) == {"loan_id": "L1", "reason": "review_declined", "released_hold_id": "hold-L1",
                           "detail": "review failed: income not verifiable"}
    # A repeated acknowledgement (the bureau answered both attempts) changes nothing.
    d.send("CreditHoldReleased", "L1", {"loan_id": "L1", "hold_id": "hold-L1"})
    assert d.dead_letters == [] and len(d.outputs_for(topic="loan.results")) == 1


def test_documents_reminders_then_expiry_declines_and_releases() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    d.send("CreditChecked", "L1", {"loan_id": "L1", "hold_id": "hold-L1", "score": 650})
    d.advance(10 * H - 1)
    assert records(d, "loan.notifications") == []
    d.advance(1)
    assert records(d, "loan.notifications") == ["DocumentsReminder"]
    d.advance(20 * H)
    reminders = d.outputs_for(topic="loan.notifications")
    assert [(o.payload["reminder"], o.payload["of"]) for o in reminders] == [(1, 3), (2, 3), (3, 3)]
    st = d.state("L1")
    assert st is not None and st.state == "documents"
    d.advance(10 * H - 1)  # no fourth reminder, and not expired yet
    st = d.state("L1")
    assert st is not None and st.state == "documents" and len(d.outputs_for(topic="loan.notifications")) == 3
    d.advance(1)
    st = d.state("L1")
    assert st is not None and st.state == "releasing"
    d.send("CreditHoldReleased", "L1", {"loan_id": "L1", "hold_id": "hold-L1"})
    assert declined(d)["reason"] == "documents_expired"
    # Documents arriving after the expiry are an operator's matter, not silently taken.
    d.send("DocumentsVerified", "L1", {"loan_id": "L1"})
    assert len(d.dead_letters) == 1


def test_late_documents_within_the_window_stop_the_reminders() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    d.send("CreditChecked", "L1", {"loan_id": "L1", "hold_id": "hold-L1", "score": 650})
    d.advance(25 * H)
    d.send("DocumentsVerified", "L1", {"loan_id": "L1"})
    d.advance(40 * H)
    assert records(d, "loan.notifications") == ["DocumentsReminder", "DocumentsReminder"]
    st = d.state("L1")
    assert st is not None and st.state == "review" and [t.name for t in d.timers("L1")] == [
        "RequestReview.timeout", "escalation"]


def test_rejected_documents_decline_after_the_release() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    d.send("CreditChecked", "L1", {"loan_id": "L1", "hold_id": "hold-L1", "score": 650})
    d.send("DocumentsRejected", "L1", {"loan_id": "L1", "reason": "payslip unreadable", "failure": "PERMANENT",
                                       "attempt": 1})
    d.send("CreditHoldReleased", "L1", {"loan_id": "L1", "hold_id": "hold-L1"})
    assert declined(d)["reason"] == "documents_rejected"


def test_a_credit_rejection_declines_at_once_with_nothing_to_release() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    d.send("CreditRejected", "L1", {"loan_id": "L1", "reason": "score below 500", "failure": "PERMANENT",
                                    "attempt": 1})
    assert declined(d) == {"loan_id": "L1", "reason": "credit_rejected", "released_hold_id": None,
                           "detail": "credit failed: score below 500"}
    assert records(d, "credit.commands") == ["CheckCredit"]


def test_a_bureau_that_is_down_is_retried_then_declines_as_unavailable() -> None:
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    d.send("CreditRejected", "L1", {"loan_id": "L1", "reason": "bureau down", "failure": "TRANSIENT",
                                    "attempt": 1})
    d.advance(H)  # attempts 2 and 3 go out after a backoff and time out unanswered
    assert [o.payload["attempt"] for o in d.outputs_for(topic="credit.commands")] == [1, 2, 3]
    assert declined(d)["reason"] == "credit_unavailable"


def test_every_delay_is_a_parameter_and_bad_ones_are_refused() -> None:
    fast = loan_application(reminder_every_ms=100, max_reminders=0, review_sla_ms=50, escalation_ms=50)
    d = streams.Driver(fast)
    start(d)
    d.advance(100)
    st = d.state("L1")
    assert st is not None and st.state == "releasing"
    assert loan_application(topic_prefix="t1.").input_topic == "t1.loan.events"
    with pytest.raises(streams.WorkflowDefinitionError, match="review_sla_ms must be a positive"):
        loan_application(review_sla_ms=0)
    with pytest.raises(streams.WorkflowDefinitionError, match="must come after the last of 3 reminders"):
        loan_application(reminder_every_ms=10, max_reminders=3, documents_expire_ms=30)
