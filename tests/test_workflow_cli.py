"""``streams workflow list|diagram``: the registry and the Mermaid rendering, through the real CLI entry point."""

from __future__ import annotations

import pytest

from streams.cli import main
from streams.workflow import create


def test_list_names_the_registered_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orders\tinput=orders.events\tstates=8\t")
    assert "terminal=cancelled,compensation_failed,completed" in out


def test_diagram_prints_every_rule_as_a_mermaid_edge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "diagram", "orders"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> new" in lines
    assert "    new --> paying: OrderPlaced / MakePayment" in lines
    assert "    paying --> paying: PaymentFailed [retry] / backoff MakePayment" in lines
    assert "    shipping --> compensating: ShippingFailed / give up, compensate" in lines
    assert "    compensating --> cancelled: PaymentRefunded [undoing payment]" in lines
    assert {"    completed --> [*]", "    cancelled --> [*]", "    compensation_failed --> [*]"} <= set(lines)
    edges = [ln for ln in lines if " --> " in ln and "[*]" not in ln]
    assert len(edges) == len(create("orders").rules)  # each rule once, none invented
    assert all(": " in e and ";" not in e.split(": ", 1)[1] for e in edges)


def test_unknown_workflow_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "diagram", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "streams: WorkflowDefinitionError: unknown workflow 'nope'; known: orders"
