"""``streams workflow list|diagram|validate``: workflows by alias and by reference (``package.module:factory``),
and the Mermaid rendering, through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import main
from streams.workflow import create
from support import write_loan_project


def test_list_names_the_registered_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loan\tinput=loan.events\tstates=8\tterminal=approved,declined,release_failed\n")
    assert "\norders\tinput=orders.events\tstates=8\tterminal=cancelled,compensation_failed,completed\n" in out


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
    assert err.strip() == ("streams: WorkflowDefinitionError: unknown workflow 'nope': expected a built-in name "
                           "(loan, orders) or 'package.module:factory'")


@pytest.fixture
def loanflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's workflow package on the path, outside the repository."""
    write_loan_project(tmp_path, "loans")
    (tmp_path / "loanflow" / "broken.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "loanflow.flows:loan"


def test_a_users_workflow_is_listed_drawn_and_validated_by_reference(
        loanflow: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "list", loanflow]) == 0
    assert capsys.readouterr().out == f"{loanflow}\tinput=loans.events\tstates=4\tterminal=approved,expired\n" \
                                      "\tloan review\n"
    assert main(["workflow", "diagram", loanflow]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "    new --> review: LoanRequested / timer review" in lines, lines
    assert "    review --> expired: ReviewExpired" in lines
    assert main(["workflow", "validate", loanflow, "--param", "review_ms=500"]) == 0
    assert capsys.readouterr().out == f"{loanflow}: valid (4 states, 2 terminal, input loans.events)\n"
    assert create(loanflow, {"review_ms": 500}).name == "loans"


@pytest.mark.parametrize(("ref", "why"), [
    ("loanflow.nope:loan", "cannot import module 'loanflow.nope': No module named 'loanflow.nope'"),
    ("loanflow.flows:nope", "module 'loanflow.flows' has no attribute 'nope'"),
    ("loanflow.flows:not_a_factory", "the factory returned str, not a Definition"),
    ("loanflow.flows:", "expected a built-in name (loan, orders) or 'package.module:factory'"),
    ("loanflow.flows:raises", "the factory raised ValueError: no loans on Sundays"),
    ("loanflow.broken:loan", "importing 'loanflow.broken' raised ZeroDivisionError: division by zero"),
])
def test_a_bad_reference_says_which_and_what_failed(loanflow: str, ref: str, why: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "validate", ref]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streams: WorkflowDefinitionError: ") and repr(ref) in err and why in err, err
    assert "\n" not in err


def test_bad_parameters_and_bad_param_syntax_are_one_line(loanflow: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflow", "validate", loanflow, "--param", "nope=1"]) == 2
    assert "bad parameters" in capsys.readouterr().err
    assert main(["workflow", "validate", loanflow, "--param", "review_ms"]) == 2
    assert capsys.readouterr().err.strip() == "streams: ConfigError: --param 'review_ms': expected KEY=INTEGER"
