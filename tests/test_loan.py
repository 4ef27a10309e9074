"""The loan application example: every path driven in memory (fast, pure), then the orchestrator and its
reference services as real workers on the broker, with a reviewer's decision sent by the CLI and over HTTP."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

import streams
from streams.config import KafkaSettings
from streams.contracts import Catalogue, RegistryClient, Serde
from streams.examples.loan.services import documents_outcome
from streams.examples.loan.workflow import loan_application
from streams.kafka.admin import Admin
from streams.kafka.embedded import free_port
from streams.ops.signal import Signaller, signal_target
from streams.processors import resolve
from streams.records import H_EVENT_ID
from streams.registry import RegistryServer
from streams.topology import load
from support import WorkerProc, committed, read_all, wait_until

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
    # Down for every attempt, answering each time: the same, not a verdict on the applicant.
    d = streams.Driver(loan_application(**PARAMS))
    d.send("LoanApplied", "L1", APPLY)
    for attempt in (1, 2, 3):
        d.send("CreditRejected", "L1", {"loan_id": "L1", "reason": "bureau down", "failure": "TRANSIENT",
                                        "attempt": attempt})
        d.advance(10_000)  # past the backoff, within the reply timeout
    assert declined(d)["reason"] == "credit_unavailable"
    assert declined(d)["detail"] == "credit failed after 3 attempts: bureau down"


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


# --- the example on the broker: orchestrator and services as workers, reviewers' signals by CLI and HTTP ---------

TIMINGS = {"LOAN_REPLY_TIMEOUT_MS": "20000", "LOAN_REMINDER_EVERY_MS": "4000", "LOAN_MAX_REMINDERS": "3",
           "LOAN_REVIEW_SLA_MS": "6000", "LOAN_ESCALATION_MS": "6000", "LOAN_SEED": "1",
           "LOAN_CREDIT_REJECT_RATE": "0", "LOAN_CREDIT_UNAVAILABLE_RATE": "0", "LOAN_DOCUMENTS_REJECT_RATE": "0",
           "LOAN_DOCUMENTS_LATE_RATE": "0.5", "LOAN_DOCUMENTS_NEVER_RATE": "0", "LOAN_DOCUMENTS_LATE_MS": "6000",
           # Apache Kafka refuses a session timeout below its group.min.session.timeout.ms (6 s by default)
           "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000", "KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS": "600"}


def _decoded(kafka: KafkaSettings, serde: Serde, topic: str) -> list[tuple[str, str, dict[str, Any], str | None]]:
    """(key, record short name, body, id header) of every record on ``topic``."""
    out = []
    for key, value, headers in read_all(kafka, topic, 4):
        name, body = serde.decode(value)
        body.pop("envelope", None)
        eid = next((v.decode() for k, v in headers if k == H_EVENT_ID), None)
        out.append(((key or b"").decode(), name.rsplit(".", 1)[-1], body, eid))
    return out


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, orjson.dumps(body), {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def _processing(workers: list[WorkerProc]) -> None:
    """Until every worker has its partitions: an application sent before would wait for a service to start
    (long enough, on a busy machine, for a reminder an on-time application never gets)."""
    wait_until(lambda: all("restored; processing" in w.log_text() for w in workers), 90, "the workers to start")


def _pick(fate: str, taken: set[str]) -> str:
    """A loan id the seeded document service treats as ``fate`` (with TIMINGS' rates)."""
    for i in range(1000):
        loan = f"loan-{i}"
        if loan not in taken and documents_outcome(1, loan, 0.0, 0.5, 0.0) == fate:
            taken.add(loan)
            return loan
    raise AssertionError(f"no loan id with documents {fate}")


@pytest.mark.kafka
def test_the_loan_example_runs_on_the_broker_with_signals_from_the_cli_and_http(
        kafka: KafkaSettings, subprocess_env: dict[str, str], tmp_path: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = f"t{unique}."
    taken: set[str] = set()
    by_cli, by_http, unanswered, late = (_pick("on_time", taken), _pick("on_time", taken), _pick("on_time", taken),
                                         _pick("late", taken))
    topo = load("loan", {"LOAN_NS": ns})
    assert topo.name == f"{ns}loan" and f"{ns}loan.events" in topo.topics
    Admin(kafka).ensure(topo.all_topics())
    with RegistryServer(port=0) as registry:
        env = {**subprocess_env, **TIMINGS, "LOAN_NS": ns, "SCHEMA_REGISTRY_URL": registry.url}
        for name, value in {**TIMINGS, "LOAN_NS": ns, "SCHEMA_REGISTRY_URL": registry.url}.items():
            monkeypatch.setenv(name, value)
        serde = Serde(RegistryClient(registry.url), Catalogue.load(topo.schemas or ""), strategy="record")
        port = free_port()
        workers = [WorkerProc(Path("loan"), tmp_path / "orchestrator", env, tmp_path / "orchestrator.log",
                              ["--processor", "orchestrator", "--http-port", str(port)])]
        workers += [WorkerProc(Path("loan"), tmp_path / name, env, tmp_path / f"{name}.log", ["--processor", name])
                    for name in ("credit", "documents")]
        try:
            _processing(workers)
            proc = topo.processor("orchestrator")
            target = signal_target(resolve(proc.processor, proc.options, proc.outputs))
            assert target is not None and target.input_topic == f"{ns}loan.events"
            applications = Signaller(kafka, target)
            for loan in (by_cli, by_http, unanswered, late):
                applications.send(loan, "LoanApplied", {"loan_id": loan, "applicant": f"cust-{loan}",
                                                        "amount_cents": 1_000_000, "term_months": 24})

            def in_review() -> set[str]:
                return {k for k, name, _b, _i in _decoded(kafka, serde, f"{ns}loan.reviews") if name == "RequestReview"}

            wait_until(lambda: {by_cli, by_http} <= in_review(), 90, "two loans to reach review")
            # A person approves through the CLI; a payload of the wrong type is refused first, naming the field.
            cli = [sys.executable, "-m", "streams", "signal", by_cli, "ReviewApproved", "--topology", "loan",
                   "--processor", "orchestrator"]
            bad = subprocess.run([*cli, "--data", '{"reviewer": 5}', "--id", f"bad-cli-{unique}"], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert bad.returncode == 2 and "reviewer" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
            ok = subprocess.run([*cli, "--data", '{"reviewer": "ana"}'], env=env, capture_output=True, text=True,
                                timeout=60)
            assert ok.returncode == 0, ok.stderr
            assert orjson.loads(ok.stdout)["topic"] == f"{ns}loan.events"
            # Another declines over HTTP; a body missing a required field is refused with the field named.
            url = f"http://127.0.0.1:{port}/workflows/{by_http}/events"
            code, body = _post(url, {"type": "ReviewDeclined", "data": {"reviewer": "bo"}, "id": f"bad-http-{unique}"})
            assert (code, body.get("field")) == (400, "reason"), body
            code, body = _post(url, {"type": "ReviewDeclined", "data": {"reviewer": "bo", "reason": "debt too high"}})
            assert code == 202, body
            wait_until(lambda: late in in_review(), 60, "the late documents to arrive")
            assert _post(f"http://127.0.0.1:{port}/workflows/{late}/events",
                         {"type": "ReviewApproved", "data": {"reviewer": "cy"}})[0] == 202

            def outcomes() -> dict[str, tuple[str, dict[str, Any]]]:
                return {k: (name, b) for k, name, b, _i in _decoded(kafka, serde, f"{ns}loan.results")}

            wait_until(lambda: len(outcomes()) == 4, 90, "every loan to end")
        finally:
            for w in workers:
                w.stop()
        logs = "".join(w.log_text() for w in workers)
        assert "Traceback" not in logs, logs[-3000:]
        ends = outcomes()
        assert len(ends) == 4, (ends, logs[-3000:])
        assert ends[by_cli][0] == "LoanApproved" and ends[by_cli][1]["reviewer"] == "ana"
        assert ends[late][0] == "LoanApproved" and ends[late][1]["escalated"] is False
        assert ends[by_http] == ("LoanDeclined", {"loan_id": by_http, "reason": "review_declined",
                                                  "detail": "review failed: debt too high",
                                                  "released_hold_id": f"hold-{by_http}"})
        assert ends[unanswered][0] == "LoanDeclined" and ends[unanswered][1]["reason"] == "review_expired"
        # Both declines released the hold at the bureau, which acknowledged it before the outcome was reported.
        credit = _decoded(kafka, serde, f"{ns}credit.commands")
        releases = sorted(k for k, name, _b, _i in credit if name == "ReleaseCreditHold")
        assert releases == sorted([by_http, unanswered]), credit
        events = _decoded(kafka, serde, f"{ns}loan.events")
        assert sorted(k for k, name, _b, _i in events if name == "CreditHoldReleased") == sorted([by_http, unanswered])
        notes = [(k, name) for k, name, _b, _i in _decoded(kafka, serde, f"{ns}loan.notifications")]
        assert (unanswered, "ReviewEscalated") in notes and (late, "DocumentsReminder") in notes
        assert all(k == late for k, name in notes if name == "DocumentsReminder"), notes
        # The refused signals produced nothing; nothing was dead-lettered.
        ids = {i for _k, _n, _b, i in events}
        assert f"bad-cli-{unique}" not in ids and f"bad-http-{unique}" not in ids
        assert read_all(kafka, f"{ns}loan.dlq", 1) == []


@pytest.mark.kafka
def test_the_loan_demo_ends_every_application_as_its_oracle_predicts(subprocess_env: dict[str, str]) -> None:
    with RegistryServer(port=0) as registry:
        env = {**subprocess_env, "SCHEMA_REGISTRY_URL": registry.url}
        run = subprocess.run([sys.executable, "-m", "streams", "demo", "--example", "loan", "--loans", "30"],
                             env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "  oracle          30/30 ended as the seeded fates predict" in lines
    approved, declined = (int(next(x for x in lines if x.strip().startswith(w)).split()[1])
                          for w in ("approved", "declined"))
    assert approved + declined == 30 and approved > 0 and declined > 0
    assert "Traceback" not in run.stderr


def test_the_oracle_follows_the_seeded_fates() -> None:
    from streams.lab.loan_oracle import SETTINGS, End, predict, review_outcome

    ends = [predict(f"loan-{i}") for i in range(400)]
    reasons = {e.reason for e in ends}
    assert reasons >= {None, "credit_rejected", "documents_rejected", "documents_expired", "review_declined",
                       "review_expired"}
    assert all(e.released == (e.reason is not None and not e.reason.startswith("credit")) for e in ends)
    assert all(e.escalated for e in ends if e.reason == "review_expired")
    # Every rate at zero: every application reaches review and ends as its reviewer decides.
    calm = {**SETTINGS, **{k: "0" for k in SETTINGS if k.endswith("_RATE")}}
    for i in range(50):
        review = review_outcome(1, f"loan-{i}")
        want = {"approve": End("LoanApproved"), "late_approve": End("LoanApproved", escalated=True),
                "decline": End("LoanDeclined", "review_declined", released=True),
                "never": End("LoanDeclined", "review_expired", escalated=True, released=True)}[review]
        assert predict(f"loan-{i}", calm) == want


@pytest.mark.kafka
def test_documents_arriving_later_survive_a_crash_of_the_service(
        kafka: KafkaSettings, subprocess_env: dict[str, str], tmp_path: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The service keeps a late verdict as a durable timer: killed while it waits, a new worker (with an empty
    state directory: restored from the changelog) still sends it, once."""
    ns = f"t{unique}."
    settings = {**TIMINGS, "LOAN_NS": ns, "LOAN_DOCUMENTS_LATE_RATE": "1", "LOAN_DOCUMENTS_LATE_MS": "9000",
                "LOAN_REMINDER_EVERY_MS": "4000", "LOAN_MAX_REMINDERS": "3"}
    topo = load("loan", settings)
    Admin(kafka).ensure(topo.all_topics())
    with RegistryServer(port=0) as registry:
        settings["SCHEMA_REGISTRY_URL"] = registry.url
        env = {**subprocess_env, **settings}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        serde = Serde(RegistryClient(registry.url), Catalogue.load(topo.schemas or ""), strategy="record")

        def worker(name: str, run: int) -> WorkerProc:
            return WorkerProc(Path("loan"), tmp_path / f"{name}{run}", env, tmp_path / f"{name}{run}.log",
                              ["--processor", name])

        workers = [worker("orchestrator", 1), worker("credit", 1)]
        documents = worker("documents", 1)
        try:
            _processing([*workers, documents])
            proc = topo.processor("orchestrator")
            target = signal_target(resolve(proc.processor, proc.options, proc.outputs))
            assert target is not None
            Signaller(kafka, target).send("L1", "LoanApplied", {"loan_id": "L1", "applicant": "ada",
                                                                "amount_cents": 900_000, "term_months": 12})
            group = f"{ns}loan-documents"
            wait_until(lambda: sum(max(o, 0) for o in committed(kafka, group, f"{ns}documents.commands", 4).values())
                       == 1, 60, "the document service to commit the command (its timer stored)")
            documents.kill()
            documents = worker("documents", 2)

            def seen(topic: str, record: str) -> list[str]:
                return [k for k, name, _b, _i in _decoded(kafka, serde, f"{ns}{topic}") if name == record]

            wait_until(lambda: seen("loan.reviews", "RequestReview") == ["L1"], 90, "the loan to reach review")
        finally:
            for w in [*workers, documents]:
                w.stop()
        assert seen("loan.events", "DocumentsVerified") == ["L1"]
        # Reminded while it waited (how often depends on how soon the new worker got its partitions), not expired.
        reminders = seen("loan.notifications", "DocumentsReminder")
        assert set(reminders) == {"L1"} and 1 <= len(reminders) <= 3
        # The new worker read no command: the verdict came from the timer it restored from the changelog.
        assert "stopped after 0 records in" in documents.log_text() and "Traceback" not in documents.log_text()
