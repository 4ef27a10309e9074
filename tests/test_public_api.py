"""The public API: `import streams` is enough to write and test a workflow; every public name is documented
and docs/reference.md is generated from those docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import streams

ROOT = Path(__file__).resolve().parents[1]
PURE = {**os.environ, "STREAMS_PURE": "1", "PYTHONPATH": str(ROOT)}  # compiled functions carry no signatures


def approval() -> streams.Definition:
    """A loan's human review: approve, decline, or escalate after 48 h and decline after another 24 h."""
    wf = streams.WorkflowBuilder("approval", input_topic="approvals.events", initial="new")
    wf.states("new", "review", "escalated")
    wf.terminal("approved", on_enter=[streams.emit("LoanApproved", "approvals.results",
                                                   streams.data_fields("loan_id"))])
    wf.terminal("declined", on_enter=[streams.emit("LoanDeclined", "approvals.results",
                                                   streams.data_fields("loan_id"))])
    wf.events("LoanApplied", "ReviewApproved", "ReviewDeclined")
    wf.on("LoanApplied", "new", "review",
          do=[streams.record("loan_id", "amount_cents"), streams.set_timer("sla", 48 * 3600_000,
                                                                           fires="ReviewOverdue")])
    wf.on("ReviewApproved", ["review", "escalated"], "approved", do=[streams.record("reviewer")])
    wf.on("ReviewDeclined", ["review", "escalated"], "declined", do=[streams.fail("declined by reviewer")])
    wf.on("ReviewOverdue", "review", "escalated",
          do=[streams.set_timer("escalation", 24 * 3600_000, fires="EscalationOverdue")])
    wf.on("EscalationOverdue", "escalated", "declined", do=[streams.fail("review expired")])
    return wf.build()


def test_a_workflow_is_written_and_tested_with_the_public_names_alone() -> None:
    d = streams.Driver(approval())
    d.send("LoanApplied", "L1", {"loan_id": "L1", "amount_cents": 500_000})
    d.send("LoanApplied", "L2", {"loan_id": "L2", "amount_cents": 900_000})
    d.send("ReviewApproved", "L1", {"reviewer": "ana"})
    d.advance(48 * 3600_000 + 1)
    l1, l2 = d.state("L1"), d.state("L2")
    assert l1 is not None and l1.state == "approved" and l1.data["reviewer"] == "ana"
    assert l2 is not None and l2.state == "escalated"
    d.advance(24 * 3600_000 + 1)
    l2 = d.state("L2")
    assert l2 is not None and l2.state == "declined" and l2.reason == "review expired"
    assert [o.record for o in d.outputs_for(topic="approvals.results")] == ["LoanApproved", "LoanDeclined"]


def test_every_public_name_and_method_has_a_docstring() -> None:
    code = ("import inspect, streams\n"
            "for n in streams.__all__:\n"
            "    o = getattr(streams, n)\n"
            "    if callable(o) and not (o.__doc__ or '').strip(): print(n)\n"
            "    if inspect.isclass(o):\n"
            "        for m, f in vars(o).items():\n"
            "            if not m.startswith('_') and callable(f) and not f.__doc__: print(n + '.' + m)\n")
    out = subprocess.run([sys.executable, "-c", code], env=PURE, capture_output=True, text=True, check=True)
    assert out.stdout == "", f"undocumented public names:\n{out.stdout}"


def test_the_reference_is_generated_from_the_docstrings_and_current() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference.py"), "--check"], env=PURE,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = (ROOT / "docs" / "reference.md").read_text()
    assert all(f"`{name}" in text or f"`class {name}" in text for name in streams.__all__)


def test_importing_streams_loads_no_kafka_client_and_no_store() -> None:
    code = "import sys, streams; print(sorted(m for m in ('confluent_kafka', 'rocksdict') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=PURE, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
