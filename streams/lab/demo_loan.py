"""``streams demo --example loan``'s driver: the loan application end to end.

The orchestrator, the credit bureau and document verification (each its own worker process), applications
submitted as signals, and simulated reviewers: a loop that reads the reviewers' inbox (``loan.reviews``) and
answers by signal, some at once, some only after the review was escalated, some never. Every outcome is seeded
(see :mod:`streams.lab.loan_oracle`), so an oracle predicts each application's end; the demo exits 0 only if
every one ended as predicted. Delays are seconds here where the example's defaults are days.
"""

from __future__ import annotations

import heapq
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.admin import Admin
from streams.kafka.client import follow
from streams.lab.demo import Log, Report, finish, workers
from streams.lab.loan_oracle import ESCALATION_MS, SEED, SETTINGS, SLA_MS, THINK_MS, End, predict, review_outcome
from streams.ops.dashboard import beside, groups_of
from streams.ops.dev import Supervisor
from streams.ops.signal import Signaller, SignalTarget, signal_target
from streams.processors import resolve
from streams.processors.avro import make_serde
from streams.progress import Progress
from streams.topology import Topology, load

LOAN = "loan"  # the built-in example topology (streams.topology.EXAMPLES)
SERVICES = ("orchestrator", "credit", "documents")


def run(kafka: KafkaSettings, registry_url: str, bar: Progress, log: Log, loans: int) -> Report:
    ns = f"demo-{uuid.uuid4().hex[:6]}."  # a fresh set of topics, so a demo never reads an earlier one's records
    settings = {"LOAN_NS": ns, "SCHEMA_REGISTRY_URL": registry_url, **SETTINGS}
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, **settings}
    # Apache Kafka refuses a consumer session timeout below its group.min.session.timeout.ms (6 s by default).
    env.setdefault("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000")
    env.setdefault("KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS", "600")
    os.environ.update(settings)  # the in-process signaller builds the same orchestrator the workers run
    topo = load(LOAN, env)
    Admin(kafka).ensure(topo.all_topics())
    orchestrator = topo.processor("orchestrator")
    target = signal_target(resolve(orchestrator.processor, orchestrator.options, orchestrator.outputs))
    assert target is not None
    with tempfile.TemporaryDirectory(prefix="streams-demo-") as tmp, \
            workers([(n, ["worker", "--topology", LOAN, "--processor", n]) for n in SERVICES], env, Path(tmp),
                    bar) as procs:
        log("demo: started the loan orchestrator, the credit bureau and document verification")
        with beside(kafka, groups_of(topo), log, "demo", linger=True):
            return _drive(loans, kafka, topo, target, procs, bar, log, ns)


class _Watch:
    """Outcomes and notifications as they arrive, and the reviewers answering their inbox."""

    def __init__(self, kafka: KafkaSettings, topo: Topology, target: SignalTarget, ns: str) -> None:
        self.kafka, self.target = kafka, target
        self.serde: Serde = make_serde(topo.processor("orchestrator").options)
        self.topics = {t: f"{ns}{t}" for t in ("loan.results", "loan.notifications", "loan.reviews")}
        self.ends: dict[str, End] = {}
        self.notes: Counter[str] = Counter()
        self.escalated: set[str] = set()
        self.signals = 0
        self.stop = threading.Event()

    def results(self) -> None:
        for batch in follow(self.kafka, [self.topics["loan.results"], self.topics["loan.notifications"]], self.stop):
            for m in batch:
                name, body = self.serde.decode(m.value())
                name = name.rsplit(".", 1)[-1]
                loan = str(body["loan_id"])
                if name == "LoanApproved":
                    self.ends.setdefault(loan, End(name, None, bool(body["escalated"])))
                elif name == "LoanDeclined":
                    self.ends.setdefault(loan, End(name, str(body["reason"]),  # escalated: see _drive
                                                   released=body["released_hold_id"] == f"hold-{loan}"))
                else:
                    self.notes[name] += 1
                    if name == "ReviewEscalated":
                        self.escalated.add(loan)

    def reviewers(self) -> None:
        """Answer each review task as its seeded reviewer would, at its time (from when the task was sent)."""
        signaller = Signaller(self.kafka, self.target)
        due: list[tuple[float, str, str, dict[str, Any]]] = []
        for batch in follow(self.kafka, [self.topics["loan.reviews"]], self.stop, poll_s=0.1):
            for m in batch:
                _name, body = self.serde.decode(m.value())
                loan, sent_ms = str(body["loan_id"]), m.timestamp()[1]
                what = review_outcome(SEED, loan)
                at_ms = sent_ms + (SLA_MS + ESCALATION_MS // 2 if what == "late_approve" else THINK_MS)
                if what == "decline":
                    heapq.heappush(due, (at_ms, loan, "ReviewDeclined",
                                         {"reviewer": "bo", "reason": "debt-to-income ratio too high"}))
                elif what != "never":
                    heapq.heappush(due, (at_ms, loan, "ReviewApproved",
                                         {"reviewer": "supervisor" if what == "late_approve" else "ana"}))
            while due and due[0][0] <= time.time() * 1000:
                _at, loan, event, data = heapq.heappop(due)
                signaller.send(loan, event, data, event_id=f"review-{loan}")
                self.signals += 1


def _drive(loans: int, kafka: KafkaSettings, topo: Topology, target: SignalTarget, procs: Supervisor,
           bar: Progress, log: Log, ns: str) -> Report:
    watch = _Watch(kafka, topo, target, ns)
    threads = [threading.Thread(target=watch.results, daemon=True),
               threading.Thread(target=watch.reviewers, daemon=True)]
    for t in threads:
        t.start()
    run_id = uuid.uuid4().hex[:6]
    ids = [f"loan-{run_id}-{i:04d}" for i in range(loans)]
    t0 = time.monotonic()
    applications = Signaller(kafka, target)
    for i, loan in enumerate(ids):
        applications.send(loan, "LoanApplied", {"loan_id": loan, "applicant": f"cust-{i % 97}",
                                                "amount_cents": 500_000 + 10_000 * (i % 50), "term_months": 36},
                          event_id=f"applied-{loan}")
    if not finish(f"demo: {len(ids)} loan applications decided", len(ids), lambda: len(watch.ends),
                  time.monotonic() + 90, bar, procs, log, every_s=1.0):
        watch.stop.set()
        return Report([], False)
    elapsed = time.monotonic() - t0
    watch.stop.set()
    for t in threads:
        t.join(5)
    # Whether a declined review was escalated first is read from the notifications, complete only now.
    ends = {k: End(e.outcome, e.reason, k in watch.escalated, e.released) if e.outcome == "LoanDeclined" else e
            for k, e in watch.ends.items()}
    return _summary(ids, ends, watch.notes, elapsed)


def _summary(ids: list[str], ends: dict[str, End], notes: Counter[str], elapsed: float) -> Report:
    outcomes = Counter(ends[i].outcome for i in ids if i in ends)
    reasons = Counter(ends[i].reason for i in ids if i in ends and ends[i].outcome == "LoanDeclined")
    after_escalation = sum(1 for i in ids if i in ends and ends[i].outcome == "LoanApproved" and ends[i].escalated)
    wrong = [(i, ends[i], predict(i)) for i in ids if i in ends and ends[i] != predict(i)]
    unfinished = [i for i in ids if i not in ends]
    out: list[str] = []
    say = out.append
    say("streams demo: loan applications")
    say(f"  applications    {len(ids)} ended in {elapsed:.1f}s")
    say(f"  approved        {outcomes['LoanApproved']} ({after_escalation} after escalation to a supervisor)")
    say(f"  declined        {outcomes['LoanDeclined']}")
    for reason, n in reasons.most_common():
        say(f"    {n:>6}  {reason}")
    released = sum(1 for i in ids if i in ends and ends[i].released)
    say(f"  holds released  {released} credit holds released before declining")
    say(f"  escalated       {notes['ReviewEscalated']} reviews passed their SLA")
    say(f"  reminders       {notes['DocumentsReminder']} document reminders sent")
    say(f"  oracle          {len(ids) - len(wrong) - len(unfinished)}/{len(ids)} ended as the seeded fates predict")
    for loan, got, want in wrong[:5]:
        say(f"  MISMATCH        {loan}: ended {got}, predicted {want}")
    if unfinished:
        say(f"  UNFINISHED      {len(unfinished)} applications did not end in time")
    return Report(out, not wrong and not unfinished)
